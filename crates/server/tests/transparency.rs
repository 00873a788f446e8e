#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Key transparency against a compromised server. The server is not trusted: a test-only
//! harness ([`CompromisedDirectory`]) makes its key directory leave a device unlogged, or
//! show one user another root, and real devices (the client library, real MLS, TLS on
//! 127.0.0.1) must notice or refuse.

mod support;

use std::sync::Arc;
use std::time::Duration;

use redoubt_client::{Messenger, NoticeKind, SecurityNotice};
use redoubt_proto::{Event, PolicyScope, PolicySettings, Request, Response};
use redoubt_server::CompromisedDirectory;
use support::{TestServer, admin_session, enroll, user};

/// New-device notices about the ghost.
fn ghost_notices(messenger: &Messenger) -> Vec<SecurityNotice> {
    notices_of(messenger, NoticeKind::NewDevice)
        .into_iter()
        .filter(|n| n.device_name.as_deref() == Some("ghost"))
        .collect()
}

fn notices_of(messenger: &Messenger, kind: NoticeKind) -> Vec<SecurityNotice> {
    messenger
        .security_notices()
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == kind)
        .collect()
}

/// A ghost device: validly certified for alice by the organisation's key, its key packages
/// on the server, but not in the key directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlogged_device_is_refused_and_once_logged_its_owner_notices() {
    let harness = Arc::new(CompromisedDirectory::default());
    let server = TestServer::start_compromised(harness.clone()).await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let alice_code = admin.admin_user_add(user("alice"), None).await.unwrap();
    let alice_laptop = enroll(profiles.path(), "alice-laptop", &alice_code.code).await;
    let tablet_code = admin.admin_device_add(user("alice")).await.unwrap();
    let alice_tablet = enroll(profiles.path(), "alice-tablet", &tablet_code.code).await;
    let bob_code = admin.admin_user_add(user("bob"), None).await.unwrap();
    let bob_phone = enroll(profiles.path(), "bob-phone", &bob_code.code).await;
    let mut laptop = Messenger::open(&alice_laptop).await.unwrap();
    let mut bob = Messenger::open(&bob_phone).await.unwrap();
    // The tablet was seen once (so it knows alice's devices then), then goes offline.
    Messenger::open(&alice_tablet).await.unwrap().close().await;

    // The compromised server enrols a device for alice and does not log it.
    harness.withhold(&user("alice"), true);
    let ghost_code = admin.admin_device_add(user("alice")).await.unwrap();
    let ghost_profile = enroll(profiles.path(), "ghost", &ghost_code.code).await;
    let mut ghost = Messenger::open(&ghost_profile).await.unwrap();

    // Bob starts a conversation with alice: the server offers the ghost's key package
    // beside the laptop's and tablet's; bob's device adds only the logged ones.
    let conversation = bob
        .create_conversation("plans", &[user("alice")], false)
        .await
        .unwrap();
    let members: Vec<String> = bob
        .members(&conversation)
        .unwrap()
        .into_iter()
        .map(|m| m.device_name)
        .collect();
    assert!(members.contains(&"alice-laptop".to_owned()), "{members:?}");
    assert!(!members.contains(&"ghost".to_owned()), "{members:?}");
    let refused = notices_of(&bob, NoticeKind::UnloggedDevice);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].device_name.as_deref(), Some("ghost"));

    // The ghost makes a group with bob: the Welcome names an unlogged member, and bob's
    // device refuses to join.
    ghost
        .create_conversation("from-ghost", &[user("bob")], false)
        .await
        .unwrap();
    let report = bob.sync().await.unwrap();
    assert!(report.failures >= 1, "{report:?}");
    assert!(bob.conversation("from-ghost").unwrap().is_none());
    assert!(
        bob.conversations()
            .unwrap()
            .iter()
            .all(|c| c.group_id != ghost.conversation("from-ghost").unwrap().unwrap().group_id),
        "bob joined the ghost's group"
    );
    // The same device at the same epoch is noticed once, however often it is offered.
    assert_eq!(notices_of(&bob, NoticeKind::UnloggedDevice).len(), 1);

    // Logged after all: alice's online laptop notices within a couple of epochs...
    laptop.sync().await.unwrap();
    assert!(ghost_notices(&laptop).is_empty());
    // (The laptop was told of no device enrolled after it: the tablet is a notice too.)
    assert_eq!(notices_of(&laptop, NoticeKind::NewDevice).len(), 1);
    harness.withhold(&user("alice"), false);
    let noticed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let event = laptop.next_event().await.unwrap();
            if matches!(event, Event::KtEpoch { .. })
                && let Some(notice) = ghost_notices(&laptop).pop()
            {
                return notice;
            }
        }
    })
    .await
    .expect("the online laptop did not notice the logged ghost");
    assert_eq!(noticed.device_name.as_deref(), Some("ghost"));
    assert_eq!(noticed.user, user("alice"));

    // ...and the offline tablet on its next connection, before it does anything else.
    let tablet = Messenger::open(&alice_tablet).await.unwrap();
    let seen = ghost_notices(&tablet);
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].device_name.as_deref(), Some("ghost"));
    assert_eq!(seen[0].epoch, noticed.epoch);

    // Once logged, the ghost is a device like any other: bob can add it.
    let refused_before = notices_of(&bob, NoticeKind::UnloggedDevice).len();
    bob.add_users(&conversation, &[user("alice")]).await.unwrap();
    assert_eq!(notices_of(&bob, NoticeKind::UnloggedDevice).len(), refused_before);

    // What anyone may read names nobody: the audit answers and heads carry no user name.
    let code = redoubt_proto::ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap();
    let mut public = redoubt_client::Connection::connect(&code.server, &code.pin.0)
        .await
        .unwrap();
    let audit = public
        .call(redoubt_proto::Request::KtAudit {
            after_epoch: 0,
            limit: 256,
        })
        .await
        .unwrap();
    let head = public
        .call(redoubt_proto::Request::KtHead { epoch: None })
        .await
        .unwrap();
    let bytes = [
        postcard::to_stdvec(&audit).unwrap(),
        postcard::to_stdvec(&head).unwrap(),
    ]
    .concat();
    assert!(bytes.len() > 1000, "the audit answer is empty");
    for name in ["alice", "bob", "ghost", "admin"] {
        assert!(
            !support::contains(&bytes, name.as_bytes()),
            "{name} is in the public answers"
        );
    }
    public.close().await;

    for messenger in [laptop, bob, ghost, tablet] {
        messenger.close().await;
    }
    admin.close().await;
    server.stop().await;
}

/// With `new_device_approval`, the approving device's signature is logged with the new
/// device: the user's other devices name the approver, and the approver is not told of
/// what it approved itself. A device the server lets in without a valid approval is an
/// `unapproved_device` notice on the user's devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_logged_and_a_device_let_in_without_one_is_noticed() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let code = admin.admin_user_add(user("alice"), None).await.unwrap();
    let phone_profile = enroll(profiles.path(), "alice-phone", &code.code).await;
    let settings = PolicySettings {
        new_device_approval: Some(true),
        ..Default::default()
    };
    let set = admin
        .request(Request::AdminPolicySet {
            scope: PolicyScope::Default,
            settings,
        })
        .await
        .unwrap();
    assert!(matches!(set, Response::PolicySet { .. }), "{set:?}");
    let mut phone = Messenger::open(&phone_profile).await.unwrap();
    let approve = async |phone: &mut Messenger, device: &redoubt_client::Profile| {
        let approval = phone
            .profile()
            .approve(device.device_id(), device.certificate())
            .unwrap();
        phone
            .session()
            .request(Request::DeviceApprove {
                device: device.device_id(),
                approval,
            })
            .await
            .unwrap();
    };
    let tablet_code = admin.admin_device_add(user("alice")).await.unwrap();
    let tablet_profile = enroll(profiles.path(), "alice-tablet", &tablet_code.code).await;
    approve(&mut phone, &tablet_profile).await;
    let mut tablet = Messenger::open(&tablet_profile).await.unwrap();
    let laptop_code = admin.admin_device_add(user("alice")).await.unwrap();
    let laptop_profile = enroll(profiles.path(), "alice-laptop", &laptop_code.code).await;
    approve(&mut phone, &laptop_profile).await;

    // The tablet learns of the laptop, approved on the phone.
    let notices = tablet.monitor_own().await.unwrap();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    assert_eq!(notices[0].kind, NoticeKind::NewDevice);
    assert_eq!(notices[0].device_name.as_deref(), Some("alice-laptop"));
    assert!(
        notices[0]
            .detail
            .contains("approved on your device \"alice-phone\""),
        "{}",
        notices[0].detail
    );
    // The phone approved both itself: nothing to tell.
    phone.monitor_own().await.unwrap();
    assert!(phone.security_notices().unwrap().is_empty());

    // A compromised server lets a device in: approved in its database, with an approval
    // it made up (it cannot sign with the phone's key), and marked for logging.
    let ghost_code = admin.admin_device_add(user("alice")).await.unwrap();
    let ghost = enroll(profiles.path(), "ghost", &ghost_code.code).await;
    let forged = redoubt_proto::Signed::sign(
        &redoubt_proto::DeviceApproval {
            org_id: ghost.org_id(),
            user: user("alice"),
            approver: phone_profile.device_id(),
            certificate_hash: redoubt_proto::Bytes(redoubt_proto::certificate_hash(ghost.certificate())),
            approved_at_unix_s: 0,
        },
        &ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
    );
    {
        use sqlx::ConnectOptions;
        let mut database = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(server.data().join("redoubt.db"))
            .connect()
            .await
            .unwrap();
        let approved = sqlx::query("UPDATE devices SET approved_at = 1, approval = ? WHERE name = 'ghost'")
            .bind(forged.to_bytes())
            .execute(&mut database)
            .await
            .unwrap();
        assert_eq!(approved.rows_affected(), 1);
        sqlx::query("INSERT INTO kt_changed (user_name) VALUES ('alice')")
            .execute(&mut database)
            .await
            .unwrap();
    }
    let noticed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let notices = tablet.monitor_own().await.unwrap();
            if let Some(notice) = notices
                .into_iter()
                .find(|n| n.device_name.as_deref() == Some("ghost"))
            {
                return notice;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the tablet did not notice the device let in without approval");
    assert_eq!(noticed.kind, NoticeKind::UnapprovedDevice, "{noticed:#?}");
    assert!(noticed.detail.contains("does not verify"), "{}", noticed.detail);
    // The phone too, though it approved nothing of the kind.
    phone.monitor_own().await.unwrap();
    let unapproved = notices_of(&phone, NoticeKind::UnapprovedDevice);
    assert_eq!(unapproved.len(), 1, "{unapproved:#?}");
    assert_eq!(unapproved[0].device_name.as_deref(), Some("ghost"));

    for messenger in [phone, tablet] {
        messenger.close().await;
    }
    admin.close().await;
    server.stop().await;
}

/// The server shows alice another root than everyone else: alice and bob find out from
/// each other's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_directory_is_detected_at_the_next_message_exchange() {
    let harness = Arc::new(CompromisedDirectory::default());
    let server = TestServer::start_compromised(harness.clone()).await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let alice_code = admin.admin_user_add(user("alice"), None).await.unwrap();
    let alice_profile = enroll(profiles.path(), "alice-laptop", &alice_code.code).await;
    let bob_code = admin.admin_user_add(user("bob"), None).await.unwrap();
    let bob_profile = enroll(profiles.path(), "bob-phone", &bob_code.code).await;
    let mut alice = Messenger::open(&alice_profile).await.unwrap();
    let mut bob = Messenger::open(&bob_profile).await.unwrap();
    alice.send_text("bob", "before the fork").await.unwrap();
    bob.sync().await.unwrap();
    assert!(notices_of(&alice, NoticeKind::Fork).is_empty());
    assert!(notices_of(&bob, NoticeKind::Fork).is_empty());

    // A new epoch (carol enrols); alice is shown another root for it than bob.
    harness.fork_for(Some(user("alice")));
    let carol_code = admin.admin_user_add(user("carol"), None).await.unwrap();
    let carol = enroll(profiles.path(), "carol-phone", &carol_code.code).await;
    Messenger::open(&carol).await.unwrap().close().await;
    alice.monitor_own().await.ok();
    bob.monitor_own().await.unwrap();

    // Alice's message carries the root she was shown; bob holds another for that epoch.
    alice.send_text("bob", "after the fork").await.unwrap();
    bob.sync().await.unwrap();
    let at_bob = notices_of(&bob, NoticeKind::Fork);
    assert_eq!(at_bob.len(), 1, "{at_bob:#?}");
    assert_eq!(at_bob[0].user, user("alice"));

    // Bob's answer carries his root: alice finds out too.
    bob.send_text("alice", "did you see that?").await.unwrap();
    alice.sync().await.unwrap();
    let at_alice = notices_of(&alice, NoticeKind::Fork);
    assert!(!at_alice.is_empty(), "alice did not notice the fork");
    assert_eq!(at_alice[0].epoch, at_bob[0].epoch);

    alice.close().await;
    bob.close().await;
    admin.close().await;
    server.stop().await;
}
