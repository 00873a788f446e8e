#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! History for devices that were not there: a user's new device gets the user's history
//! from another of the user's devices, and members added to a conversation that shares its
//! history get the shared span — end to end encrypted, through a real server.

mod support;

use std::collections::BTreeMap;

use redoubt_client::{Messenger, Session};
use redoubt_proto::*;
use support::{TestServer, contains, enroll, messengers, texts, user, walk};

/// Opens an admin session with the admin device `messengers` enrolled.
async fn admin(profiles: &std::path::Path) -> Session {
    let profile = redoubt_client::Profile::load(&profiles.join("admin-laptop"), None).unwrap();
    Session::open(&profile).await.unwrap()
}

/// Enrols another device of `name`'s user and opens it (publishing its key packages).
async fn new_device(admin: &mut Session, profiles: &std::path::Path, name: &str, device: &str) -> Messenger {
    let issued = admin.admin_device_add(user(name)).await.unwrap();
    let profile = enroll(profiles, device, &issued.code).await;
    Messenger::open(&profile).await.unwrap()
}

/// Every message of every conversation: conversation name → (seq, sender, text, history).
fn all_messages(messenger: &Messenger) -> BTreeMap<String, Vec<(u64, String, String, bool)>> {
    messenger
        .conversations()
        .unwrap()
        .into_iter()
        .map(|c| {
            let messages = messenger
                .messages(&c)
                .unwrap()
                .into_iter()
                .map(|m| (m.seq, m.sender_user.to_string(), m.text, m.history))
                .collect();
            (c.name, messages)
        })
        .collect()
}

async fn own_devices(session: &mut Session) -> Vec<DeviceSummary> {
    match session.request(Request::OwnDevices).await.unwrap() {
        Response::Devices(devices) => devices,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_new_device_gets_the_users_history_once_in_order_and_the_server_keeps_none_of_it() {
    const MESSAGES: usize = 2_000;
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "laptop"), ("bob", "b")]).await;
    d[0].create_conversation("ops", &[user("bob")], false)
        .await
        .unwrap();
    d[0].create_conversation("eng", &[user("bob")], false)
        .await
        .unwrap();
    d[0].send_text("bob", "direct hello").await.unwrap();
    d[1].sync().await.unwrap();

    let canary = "CANARY-HISTORY-5b1e-the-vault-opens-at-midnight";
    let file_canary = "canary-file-name-quarterly-merger.txt";
    let mut files = Vec::new();
    let targets = ["ops", "eng", "bob"];
    let mut sent = 1;
    while sent < MESSAGES {
        // Alice and Bob take turns, 100 messages at a time, in three conversations.
        for (i, messenger) in d.iter_mut().enumerate() {
            for k in 0..50 {
                let n = sent + k;
                let target = match targets[n % 3] {
                    "bob" if i == 1 => "alice",
                    other => other,
                };
                let text = if n == 777 {
                    canary.to_owned()
                } else {
                    format!("message {n}")
                };
                messenger.send_text(target, &text).await.unwrap();
            }
            sent += 50;
            messenger.sync().await.unwrap();
        }
        if files.len() < 4 {
            let name = if files.is_empty() {
                file_canary.to_owned()
            } else {
                format!("file-{sent}.bin")
            };
            let path = profiles.path().join(&name);
            let content: Vec<u8> = (0..50_000 + sent).map(|i| (i * 7 + sent) as u8).collect();
            std::fs::write(&path, &content).unwrap();
            d[0].send_file(targets[files.len() % 3], &path, |_, _| {})
                .await
                .unwrap();
            files.push((name, content));
        }
    }
    d[1].sync().await.unwrap();
    d[0].sync().await.unwrap();
    let before = all_messages(&d[0]);
    let total: usize = before.values().map(Vec::len).sum();
    assert!(total >= MESSAGES + files.len(), "{total} messages");

    // Alice's tablet enrols; only her laptop's next sync is needed.
    let mut admin = admin(profiles.path()).await;
    let mut tablet = new_device(&mut admin, profiles.path(), "alice", "tablet").await;
    d[0].sync().await.unwrap();
    tablet.sync().await.unwrap();

    let after = all_messages(&tablet);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, messages) in &before {
        let got = &after[name];
        let strip = |m: &Vec<(u64, String, String, bool)>| -> Vec<(u64, String, String)> {
            m.iter().map(|(s, u, t, _)| (*s, u.clone(), t.clone())).collect()
        };
        assert_eq!(
            strip(got),
            strip(messages),
            "{name}: every message, once, in order"
        );
        assert!(got.iter().all(|m| m.3), "{name}: marked as transferred history");
    }
    // Attachments arrive with their keys: fetchable and byte-identical.
    for (name, content) in &files {
        let (conversation, message) = tablet
            .conversations()
            .unwrap()
            .into_iter()
            .find_map(|c| {
                let m = tablet
                    .messages(&c)
                    .unwrap()
                    .into_iter()
                    .find(|m| m.attachment.as_ref().is_some_and(|a| &a.name == name))?;
                Some((c, m))
            })
            .expect("attachment message transferred");
        let out = profiles.path().join(format!("fetched-{}", conversation.name));
        tablet
            .fetch_attachment(message.attachment.as_ref().unwrap(), &out, |_, _| {})
            .await
            .unwrap();
        assert_eq!(&std::fs::read(&out).unwrap(), content);
    }
    // The tablet is a full member: what is said next reaches it live, once.
    d[1].send_text("ops", "after the tablet").await.unwrap();
    tablet.sync().await.unwrap();
    let ops = texts(&tablet, "ops");
    assert_eq!(ops.last().unwrap().2, "after the tablet");
    assert_eq!(ops.iter().filter(|m| m.2 == "after the tablet").count(), 1);

    // Alice sees where the transfer stands.
    let devices = own_devices(d[0].session()).await;
    let tablet_row = devices.iter().find(|x| x.name.as_str() == "tablet").unwrap();
    let history = tablet_row.history.as_ref().unwrap();
    assert_eq!(history.state, HistoryState::Received);
    assert_eq!(
        history.source,
        Some(
            devices
                .iter()
                .find(|x| x.name.as_str() == "laptop")
                .unwrap()
                .device_id
        )
    );
    assert_eq!(history.messages as usize, total);
    assert!(history.sent_at_unix_s.is_some() && history.received_at_unix_s.is_some());
    assert!(
        devices
            .iter()
            .find(|x| x.name.as_str() == "laptop")
            .unwrap()
            .history
            .is_none()
    );

    // Another sync sends nothing again; the transfer's blobs are gone, the attachments stay.
    d[0].sync().await.unwrap();
    let blobs = std::fs::read_dir(server.data().join("blobs")).unwrap().count();
    assert_eq!(blobs, files.len(), "only the attachments' blobs are left");
    let (dir, _) = server.stop().await;
    let mut scanned = 0;
    for path in walk(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        assert!(
            !contains(&bytes, canary.as_bytes()),
            "canary in {}",
            path.display()
        );
        assert!(
            !contains(&bytes, file_canary.as_bytes()),
            "file name canary in {}",
            path.display()
        );
    }
    assert!(scanned > 100_000, "scanned only {scanned} bytes");
}

#[tokio::test]
async fn conversations_share_history_with_new_members_as_set_within_the_organisations_cap() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(
        &server,
        profiles.path(),
        &[("alice", "a"), ("bob", "b"), ("carol", "c"), ("dave", "d")],
    )
    .await;
    let shared = d[0]
        .create_group_sharing_history("ops", &[user("bob")], 30)
        .await
        .unwrap();
    d[0].create_conversation("quiet", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    // Every member sees the setting (and its change as an event).
    assert_eq!(d[0].settings(&shared).unwrap().share_history_days, 30);
    let bobs = d[1].conversation("ops").unwrap().unwrap();
    assert_eq!(d[1].settings(&bobs).unwrap().share_history_days, 30);
    let event = d[1]
        .messages(&bobs)
        .unwrap()
        .into_iter()
        .find(|m| m.event)
        .unwrap();
    assert!(event.text.contains("30 days"), "{}", event.text);

    // Forty days ago (as the server saw it), then today.
    server.clock.advance(-40 * 86_400);
    d[1].send_text("ops", "old news").await.unwrap();
    d[1].send_text("quiet", "old quiet").await.unwrap();
    server.clock.advance(40 * 86_400);
    d[1].send_text("ops", "fresh news").await.unwrap();
    d[1].send_text("quiet", "fresh quiet").await.unwrap();
    d[0].sync().await.unwrap();

    // Carol joins both: she gets the last 30 days of ops, nothing of quiet.
    let ops = d[0].conversation("ops").unwrap().unwrap();
    let quiet = d[0].conversation("quiet").unwrap().unwrap();
    d[0].add_users(&ops, &[user("carol")]).await.unwrap();
    d[0].add_users(&quiet, &[user("carol")]).await.unwrap();
    d[2].sync().await.unwrap();
    let carol_ops: Vec<String> = texts(&d[2], "ops").into_iter().map(|m| m.2).collect();
    assert!(carol_ops.contains(&"fresh news".to_owned()), "{carol_ops:?}");
    assert!(!carol_ops.contains(&"old news".to_owned()), "{carol_ops:?}");
    let carol_quiet: Vec<String> = texts(&d[2], "quiet").into_iter().map(|m| m.2).collect();
    assert!(
        carol_quiet.iter().all(|t| !t.contains("quiet")),
        "{carol_quiet:?}"
    );
    let carols = d[2].conversation("ops").unwrap().unwrap();
    assert_eq!(d[2].settings(&carols).unwrap().share_history_days, 30);

    // Turned off, the next member gets nothing from before.
    d[1].sync().await.unwrap();
    d[1].set_share_history(&bobs, 0).await.unwrap();
    d[0].sync().await.unwrap();
    assert_eq!(d[0].settings(&ops).unwrap().share_history_days, 0);
    d[0].add_users(&ops, &[user("dave")]).await.unwrap();
    d[3].sync().await.unwrap();
    assert!(
        texts(&d[3], "ops").iter().all(|m| !m.2.contains("news")),
        "{:?}",
        texts(&d[3], "ops")
    );

    // The organisation caps it: a longer setting is refused, naming the policy.
    let mut admin = admin(profiles.path()).await;
    let settings = PolicySettings {
        group_history_sharing_max_days: Some(7),
        ..PolicySettings::default()
    };
    admin
        .request(Request::AdminPolicySet {
            scope: PolicyScope::Default,
            settings,
        })
        .await
        .unwrap();
    d[0].session().refresh_policy().await.unwrap();
    let refused = d[0].set_share_history(&ops, 30).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::PolicyViolation));
    assert!(
        refused.to_string().contains("group_history_sharing_max_days"),
        "{refused}"
    );
    let refused = d[0]
        .create_group_sharing_history("capped", &[user("bob")], 8)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("at most 7 days"), "{refused}");
    assert!(d[0].conversation("capped").unwrap().is_none(), "nothing was made");
    d[0].set_share_history(&ops, 7).await.unwrap();
}

#[tokio::test]
async fn history_goes_to_the_users_own_approved_active_devices_only() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut d = messengers(&server, profiles.path(), &[("alice", "a"), ("bob", "b")]).await;
    d[0].send_text("bob", "secret plans").await.unwrap();
    d[1].sync().await.unwrap();
    let mut admin = admin(profiles.path()).await;

    // A new device of Alice's that gets revoked before anyone sends it anything.
    let mut stolen = new_device(&mut admin, profiles.path(), "alice", "stolen").await;
    let stolen_id = stolen.session().info().device_id;
    admin
        .request(Request::AdminDeviceRevoke { device: stolen_id })
        .await
        .unwrap();
    // Bob's device cannot take Alice's new device's history job, nor Alice's another's.
    let mut tablet = new_device(&mut admin, profiles.path(), "alice", "tablet").await;
    let tablet_id = tablet.session().info().device_id;
    let group = d[1]
        .create_conversation("probe", &[], false)
        .await
        .unwrap()
        .group_id;
    let refused = d[1]
        .session()
        .request(Request::HistoryBegin {
            target: tablet_id,
            group_id: group,
            own: true,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    // A device waiting for history cannot send any.
    let own_group = tablet
        .create_conversation("mine", &[], false)
        .await
        .unwrap()
        .group_id;
    let refused = tablet
        .session()
        .request(Request::HistoryBegin {
            target: d[0].session().info().device_id,
            group_id: own_group,
            own: true,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");

    // Alice's laptop syncs: the tablet gets the history, the revoked device nothing.
    d[0].sync().await.unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(texts(&tablet, "bob")[0].2, "secret plans");
    let devices = own_devices(d[0].session()).await;
    let state = |name: &str| {
        devices
            .iter()
            .find(|x| x.name.as_str() == name)
            .and_then(|x| x.history.as_ref())
            .map(|h| h.state)
    };
    assert_eq!(state("tablet"), Some(HistoryState::Received));
    assert_eq!(state("stolen"), Some(HistoryState::Waiting));
    assert!(stolen.sync().await.is_err(), "the revoked device is refused");
    drop(stolen);

    // With the policy off, nothing is sent to the next new device.
    let settings = PolicySettings {
        history_transfer: Some(false),
        ..PolicySettings::default()
    };
    admin
        .request(Request::AdminPolicySet {
            scope: PolicyScope::Default,
            settings,
        })
        .await
        .unwrap();
    let mut phone = new_device(&mut admin, profiles.path(), "alice", "phone").await;
    d[0].session().refresh_policy().await.unwrap();
    tablet.session().refresh_policy().await.unwrap();
    d[0].sync().await.unwrap();
    tablet.sync().await.unwrap();
    phone.sync().await.unwrap();
    assert!(phone.conversation("bob").unwrap().is_some(), "the phone joined");
    assert!(texts(&phone, "bob").is_empty(), "but got no history");
    let devices = own_devices(d[0].session()).await;
    let phone_row = devices.iter().find(|x| x.name.as_str() == "phone").unwrap();
    assert_eq!(phone_row.history.as_ref().unwrap().state, HistoryState::Waiting);
}
