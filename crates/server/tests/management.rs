#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Device management through a real server: policies, approval, remote lock and wipe,
//! revocation, roles and the audit log, with real device clients.

mod support;

use std::path::Path;

use redoubt_client::{ClientError, Messenger, Profile, Session};
use redoubt_proto::*;
use support::{TestServer, admin_session, enroll};

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

fn group(name: &str) -> GroupName {
    GroupName::parse(name).unwrap()
}

fn code_of(error: &ClientError) -> ErrorCode {
    error
        .code()
        .unwrap_or_else(|| panic!("not a server error: {error}"))
}

async fn call(session: &mut Session, request: Request) -> Result<Response, ClientError> {
    session.request(request).await
}

async fn set_policy(admin: &mut Session, scope: PolicyScope, settings: PolicySettings) -> u64 {
    match call(admin, Request::AdminPolicySet { scope, settings })
        .await
        .unwrap()
    {
        Response::PolicySet { version } => version,
        other => panic!("{other:?}"),
    }
}

async fn add_user(admin: &mut Session, name: &str) -> String {
    admin.admin_user_add(user(name), None).await.unwrap().code
}

async fn audit_log(admin: &mut Session) -> (Vec<AuditEntry>, Vec<Signed<CheckpointBody>>) {
    match call(
        admin,
        Request::AdminAuditList {
            after_seq: 0,
            limit: 1000,
        },
    )
    .await
    .unwrap()
    {
        Response::Audit {
            entries, checkpoints, ..
        } => (entries, checkpoints),
        other => panic!("{other:?}"),
    }
}

async fn devices(admin: &mut Session) -> Vec<DeviceSummary> {
    admin.admin_device_list(None).await.unwrap()
}

fn files_exist(dir: &Path) -> bool {
    dir.exists() && std::fs::read_dir(dir).unwrap().next().is_some()
}

#[tokio::test]
async fn precedence_is_reported_with_sources_and_groups_take_the_strictest_value() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    add_user(&mut admin, "alice").await;
    for name in ["finance", "traders"] {
        call(&mut admin, Request::AdminGroupCreate { group: group(name) })
            .await
            .unwrap();
        call(
            &mut admin,
            Request::AdminGroupMember {
                group: group(name),
                user: user("alice"),
                add: true,
            },
        )
        .await
        .unwrap();
    }
    set_policy(
        &mut admin,
        PolicyScope::Default,
        PolicySettings {
            passcode_min_length: Some(8),
            message_retention_days: Some(90),
            ..Default::default()
        },
    )
    .await;
    set_policy(
        &mut admin,
        PolicyScope::Group(group("finance")),
        PolicySettings {
            passcode_min_length: Some(10),
            attachments_allowed: Some(false),
            ..Default::default()
        },
    )
    .await;
    set_policy(
        &mut admin,
        PolicyScope::Group(group("traders")),
        PolicySettings {
            passcode_min_length: Some(12),
            attachments_allowed: Some(true),
            ..Default::default()
        },
    )
    .await;
    let version = set_policy(
        &mut admin,
        PolicyScope::User(user("alice")),
        PolicySettings {
            message_retention_days: Some(7),
            ..Default::default()
        },
    )
    .await;
    let Response::PolicyReport(report) = call(
        &mut admin,
        Request::AdminPolicyShow {
            user: Some(user("alice")),
        },
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(report.version, version);
    assert_eq!(report.documents.len(), 4);
    let effective = report.effective.unwrap();
    let origin = |name: &str| {
        effective
            .origins
            .iter()
            .find(|o| o.setting == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        origin("message_retention_days").source,
        PolicySource::User(user("alice"))
    );
    assert_eq!(origin("message_retention_days").value, "7");
    assert_eq!(
        origin("passcode_min_length").source,
        PolicySource::Group(group("traders"))
    );
    assert_eq!(
        origin("attachments_allowed").source,
        PolicySource::Group(group("finance"))
    );
    assert_eq!(origin("passcode_required").source, PolicySource::BuiltIn);
    assert_eq!(effective.policy.passcode_min_length, 12);

    // Bad values and unknown scopes are refused and change nothing.
    let error = call(
        &mut admin,
        Request::AdminPolicySet {
            scope: PolicyScope::Default,
            settings: PolicySettings {
                passcode_min_length: Some(1),
                ..Default::default()
            },
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::InvalidArgument);
    assert!(error.to_string().contains("passcode_min_length"), "{error}");
    let error = call(
        &mut admin,
        Request::AdminPolicySet {
            scope: PolicyScope::Group(group("nobody")),
            settings: PolicySettings::default(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::NotFound);
    let Response::PolicyReport(after) = call(&mut admin, Request::AdminPolicyShow { user: None })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(after.version, version);
}

#[tokio::test]
async fn a_device_on_an_old_policy_is_refused_until_it_acknowledges() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let code = add_user(&mut admin, "alice").await;
    let phone = enroll(profiles.path(), "alice-phone", &code).await;
    let mut session = Session::open(&phone).await.unwrap();
    // Raw calls below: `Session::request` would refresh by itself.
    session.connection().call(Request::GroupList).await.unwrap();

    let version = set_policy(
        &mut admin,
        PolicyScope::Default,
        PolicySettings {
            message_retention_days: Some(30),
            ..Default::default()
        },
    )
    .await;
    for request in [
        Request::GroupList,
        Request::InboxFetch,
        Request::UserDevices {
            users: vec![user("alice")],
        },
    ] {
        let error = session.connection().call(request).await.unwrap_err();
        assert_eq!(code_of(&error), ErrorCode::PolicyRefreshRequired);
    }
    // Only fetching and acknowledging (and commands) are served meanwhile.
    let Response::Policy(signed) = session.connection().call(Request::PolicyFetch).await.unwrap() else {
        panic!()
    };
    let body = redoubt_client::verify_policy(&phone, &signed).unwrap();
    assert_eq!(body.version, version);
    assert_eq!(body.policy.message_retention_days, 30);
    let error = session
        .connection()
        .call(Request::PolicyAck { version: version + 1 })
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&error),
        ErrorCode::InvalidArgument,
        "cannot acknowledge the future"
    );
    session
        .connection()
        .call(Request::PolicyAck { version })
        .await
        .unwrap();
    session.connection().call(Request::GroupList).await.unwrap();

    // The admin's list shows what each device acknowledged.
    let list = devices(&mut admin).await;
    let row = list.iter().find(|d| d.name.as_str() == "alice-phone").unwrap();
    assert_eq!(row.policy_version_acked, version);

    // A client-side refresh happens by itself through `request`.
    set_policy(&mut admin, PolicyScope::Default, PolicySettings::default()).await;
    call(&mut session, Request::GroupList).await.unwrap();
}

#[tokio::test]
async fn a_policy_with_a_bad_signature_or_for_another_device_is_rejected() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let code = add_user(&mut admin, "alice").await;
    let phone = enroll(profiles.path(), "alice-phone", &code).await;
    let mut session = Session::open(&phone).await.unwrap();
    let Response::Policy(signed) = session.connection().call(Request::PolicyFetch).await.unwrap() else {
        panic!()
    };
    redoubt_client::verify_policy(&phone, &signed).unwrap();

    let mut tampered = signed.clone();
    let last = tampered.body.len() - 1;
    tampered.body[last] ^= 1;
    let error = redoubt_client::verify_policy(&phone, &tampered).unwrap_err();
    assert!(matches!(error, ClientError::PolicyInvalid(_)), "{error}");

    let mut body = signed
        .verify(&ed25519_dalek::VerifyingKey::from_bytes(&server.org_public_key).unwrap())
        .unwrap();
    body.policy.passcode_required = false;
    let forged = Signed::sign(&body, &ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
    let error = redoubt_client::verify_policy(&phone, &forged).unwrap_err();
    assert!(matches!(error, ClientError::PolicyInvalid(_)), "{error}");

    // The admin's own (valid) policy is for the admin's device, not alice's.
    let Response::Policy(admins) = admin.connection().call(Request::PolicyFetch).await.unwrap() else {
        panic!()
    };
    let error = redoubt_client::verify_policy(&phone, &admins).unwrap_err();
    assert!(matches!(error, ClientError::PolicyInvalid(_)), "{error}");
}

#[tokio::test]
async fn required_passcode_encrypts_the_profile_and_failed_attempts_wipe_it() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let alice_code = add_user(&mut admin, "alice").await;
    let bob_code = add_user(&mut admin, "bob").await;
    let alice = enroll(profiles.path(), "alice-phone", &alice_code).await;
    let bob = enroll(profiles.path(), "bob-phone", &bob_code).await;
    let mut bob = Messenger::open(&bob).await.unwrap();
    Messenger::open(&alice).await.unwrap();

    set_policy(
        &mut admin,
        PolicyScope::User(user("alice")),
        PolicySettings {
            passcode_required: Some(true),
            passcode_min_length: Some(6),
            wipe_after_failed_passcodes: Some(3),
            ..Default::default()
        },
    )
    .await;
    let error = Session::open(&alice).await.unwrap_err();
    assert!(
        matches!(error, ClientError::PasscodeSetupRequired { min_length: 6 }),
        "{error}"
    );
    let dir = alice.dir().to_owned();
    let mut alice = alice;
    alice.set_passcode(Some("correct horse")).unwrap();
    drop(alice);

    let alice = Profile::load(&dir, Some("correct horse")).unwrap();
    let mut alice_messenger = Messenger::open(&alice).await.unwrap();
    let canary = format!("canary-{}", std::process::id());
    bob.send_text("alice", &canary).await.unwrap();
    alice_messenger.sync().await.unwrap();
    let conversation = alice_messenger.conversation("bob").unwrap().unwrap();
    assert!(
        alice_messenger
            .messages(&conversation)
            .unwrap()
            .iter()
            .any(|m| m.text == canary)
    );
    drop(alice_messenger);

    // Nothing in the profile folder holds the message in the clear.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{} holds the canary in plaintext",
            path.display()
        );
    }
    assert!(matches!(
        Profile::load(&dir, None).unwrap_err(),
        ClientError::PasscodeRequired
    ));
    for left in [2, 1] {
        let error = Profile::load(&dir, Some("wrong")).unwrap_err();
        assert!(
            matches!(error, ClientError::PasscodeWrong { attempts_left: Some(n) } if n == left),
            "{error}"
        );
    }
    let error = Profile::load(&dir, Some("wrong")).unwrap_err();
    assert!(matches!(error, ClientError::ProfileWiped), "{error}");
    assert!(!files_exist(&dir), "the profile is erased");
}

#[tokio::test]
async fn remote_wipe_of_an_online_and_an_offline_device_is_acknowledged_and_audited() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let code = add_user(&mut admin, "alice").await;
    let online = enroll(profiles.path(), "alice-online", &code).await;
    let code = admin.admin_device_add(user("alice")).await.unwrap().code;
    let offline = enroll(profiles.path(), "alice-offline", &code).await;
    Session::open(&offline).await.unwrap().close().await;
    let mut session = Session::open(&online).await.unwrap();

    let list = devices(&mut admin).await;
    let id = |name: &str| list.iter().find(|d| d.name.as_str() == name).unwrap().device_id;
    for device in [id("alice-online"), id("alice-offline")] {
        call(
            &mut admin,
            Request::AdminDeviceCommand {
                device,
                kind: CommandKind::Wipe,
            },
        )
        .await
        .unwrap();
    }
    let pending = devices(&mut admin).await;
    assert!(
        pending
            .iter()
            .filter(|d| d.user == user("alice"))
            .all(|d| d.commands.len() == 1
                && d.commands[0].kind == CommandKind::Wipe
                && d.commands[0].acknowledged_at_unix_s.is_none())
    );

    // The online device gets the command pushed and acts on it.
    let event = session.next_event().await.unwrap();
    assert!(matches!(event, Event::Command(_)));
    let error = session.handle_event(event).await.unwrap_err();
    assert!(matches!(error, ClientError::RemotelyWiped), "{error}");
    assert!(!files_exist(online.dir()));
    // The offline device wipes itself when it next connects.
    let error = Session::open(&offline).await.unwrap_err();
    assert!(matches!(error, ClientError::RemotelyWiped), "{error}");
    assert!(!files_exist(offline.dir()));

    let after = devices(&mut admin).await;
    for d in after.iter().filter(|d| d.user == user("alice")) {
        assert!(d.commands[0].acknowledged_at_unix_s.is_some(), "{d:?}");
        assert!(d.revoked_at_unix_s.is_some(), "a wiped device is revoked");
    }
    let (entries, _) = audit_log(&mut admin).await;
    let acknowledged = entries
        .iter()
        .filter(|e| e.action == "device.wipe.acknowledged")
        .count();
    assert_eq!(acknowledged, 2);
    assert_eq!(entries.iter().filter(|e| e.action == "device.wipe").count(), 2);
}

#[tokio::test]
async fn remote_lock_holds_until_an_admin_unlocks_a_device_without_passcode() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let code = add_user(&mut admin, "alice").await;
    let phone = enroll(profiles.path(), "alice-phone", &code).await;
    let id = phone.device_id();
    call(
        &mut admin,
        Request::AdminDeviceCommand {
            device: id,
            kind: CommandKind::Lock,
        },
    )
    .await
    .unwrap();
    let error = Session::open(&phone).await.unwrap_err();
    assert!(matches!(error, ClientError::DeviceLocked), "{error}");
    let error = Session::open(&Profile::load(phone.dir(), None).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::DeviceLocked),
        "still locked: {error}"
    );
    call(
        &mut admin,
        Request::AdminDeviceCommand {
            device: id,
            kind: CommandKind::Unlock,
        },
    )
    .await
    .unwrap();
    Session::open(&Profile::load(phone.dir(), None).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn new_devices_wait_for_approval_and_the_device_cap_holds() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let code = add_user(&mut admin, "alice").await;
    let phone = enroll(profiles.path(), "alice-phone", &code).await;
    set_policy(
        &mut admin,
        PolicyScope::Default,
        PolicySettings {
            new_device_approval: Some(true),
            devices_per_user_max: Some(2),
            ..Default::default()
        },
    )
    .await;
    let code = admin.admin_device_add(user("alice")).await.unwrap().code;
    let laptop = enroll(profiles.path(), "alice-laptop", &code).await;
    let mut laptop_session = Session::open(&laptop).await.unwrap();
    let error = call(&mut laptop_session, Request::GroupList).await.unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::DeviceApprovalRequired);

    let mut phone_session = Session::open(&phone).await.unwrap();
    // Another user's device cannot approve it.
    let bob_code = add_user(&mut admin, "bob").await;
    let bob_phone = enroll(profiles.path(), "bob-phone", &bob_code).await;
    let mut bob = Session::open(&bob_phone).await.unwrap();
    let error = call(
        &mut bob,
        Request::DeviceApprove {
            device: laptop.device_id(),
            approval: Signed::sign(
                &DeviceApproval {
                    org_id: phone.org_id(),
                    user: user("bob"),
                    approver: bob_phone.device_id(),
                    certificate_hash: Bytes(certificate_hash(laptop.certificate())),
                    approved_at_unix_s: 0,
                },
                &ed25519_dalek::SigningKey::from_bytes(&bob_phone.device_key_seed_for_tests()),
            ),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::Forbidden);
    // The approval is logged with the device: the phone's own, for the laptop's certificate.
    let refused = [
        // Signed by the laptop itself, not by the approving phone.
        laptop.approve(laptop.device_id(), laptop.certificate()).unwrap(),
        // The phone's, for another certificate (its own).
        phone.approve(phone.device_id(), phone.certificate()).unwrap(),
    ];
    for approval in refused {
        let error = call(
            &mut phone_session,
            Request::DeviceApprove {
                device: laptop.device_id(),
                approval,
            },
        )
        .await
        .unwrap_err();
        assert_eq!(code_of(&error), ErrorCode::InvalidArgument, "{error}");
        assert!(error.to_string().contains("approval refused"), "{error}");
    }
    let error = call(&mut laptop_session, Request::GroupList).await.unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::DeviceApprovalRequired);
    call(
        &mut phone_session,
        Request::DeviceApprove {
            device: laptop.device_id(),
            approval: phone.approve(laptop.device_id(), laptop.certificate()).unwrap(),
        },
    )
    .await
    .unwrap();
    call(&mut laptop_session, Request::GroupList).await.unwrap();

    // A third device is over the cap of two.
    let code = admin.admin_device_add(user("alice")).await.unwrap().code;
    let error = redoubt_client::enroll(
        &profiles.path().join("alice-tablet"),
        &ActivationCode::parse(&code).unwrap(),
        DeviceName::parse("alice-tablet").unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::PolicyViolation);
}

#[tokio::test]
async fn a_revoked_device_is_disconnected_cannot_reconnect_and_is_removed_from_its_groups() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let alice_code = add_user(&mut admin, "alice").await;
    let bob_code = add_user(&mut admin, "bob").await;
    let phone = enroll(profiles.path(), "alice-phone", &alice_code).await;
    let laptop_code = admin.admin_device_add(user("alice")).await.unwrap().code;
    let laptop = enroll(profiles.path(), "alice-laptop", &laptop_code).await;
    let bob = enroll(profiles.path(), "bob-phone", &bob_code).await;
    let mut alice_phone = Messenger::open(&phone).await.unwrap();
    let mut alice_laptop = Messenger::open(&laptop).await.unwrap();
    let mut bob = Messenger::open(&bob).await.unwrap();
    bob.send_text("alice", "before").await.unwrap();
    alice_phone.sync().await.unwrap();
    alice_laptop.sync().await.unwrap();
    let conversation = bob.conversation("alice").unwrap().unwrap();
    assert_eq!(bob.members(&conversation).unwrap().len(), 3);

    let Response::Revoked { groups } = call(
        &mut admin,
        Request::AdminDeviceRevoke {
            device: laptop.device_id(),
        },
    )
    .await
    .unwrap() else {
        panic!()
    };
    // The conversation, and the group the laptop's history came through from the phone.
    assert_eq!(groups, 2);
    // Its open session is closed at once.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Err(error) = alice_laptop.next_event().await {
                return error;
            }
        }
    })
    .await
    .expect("the revoked device's session is closed");
    assert!(closed.to_string().contains("revoked"), "{closed}");
    let error = Session::open(&laptop).await.unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::DeviceRevoked);

    // The next member online commits the organisation's Remove; then the laptop is out.
    bob.sync().await.unwrap();
    let epoch_before = bob.epoch(&conversation).unwrap();
    bob.send_text("alice", "after").await.unwrap();
    let members = bob.members(&conversation).unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().all(|m| m.device_id != laptop.device_id()));
    assert!(bob.epoch(&conversation).unwrap() >= epoch_before);
    alice_phone.sync().await.unwrap();
    let on_phone = alice_phone.conversation("bob").unwrap().unwrap();
    assert!(
        alice_phone
            .messages(&on_phone)
            .unwrap()
            .iter()
            .any(|m| m.text == "after")
    );
    // The laptop never got "after": it cannot connect, and its keys are for older epochs.
    let laptop_texts: Vec<_> = {
        let conversation = alice_laptop.conversation("bob").unwrap().unwrap();
        alice_laptop
            .messages(&conversation)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect()
    };
    assert_eq!(laptop_texts, vec!["before".to_owned()]);
    let (entries, _) = audit_log(&mut admin).await;
    assert!(
        entries
            .iter()
            .any(|e| e.action == "device.revoke" && e.subject.contains(&laptop.device_id().to_string()))
    );
}

/// Every admin request × {admin, helpdesk, auditor, plain user}: what the role allows
/// gets past authorisation; every refusal is `forbidden` and changes nothing.
#[tokio::test]
async fn authorisation_matrix_of_admin_requests_by_role() {
    // Hundreds of requests from one admin device: lift the rate limit for this test.
    let server = TestServer::start_with_config(
        "[limits]\ndevice_requests_per_second = 100000\ndevice_request_burst = 100000\n",
    )
    .await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let mut sessions = Vec::new();
    for (name, role) in [
        ("helen", Some(Role::Helpdesk)),
        ("audrey", Some(Role::Auditor)),
        ("ursula", None),
    ] {
        let code = add_user(&mut admin, name).await;
        if let Some(role) = role {
            call(
                &mut admin,
                Request::AdminRole {
                    user: user(name),
                    role,
                    grant: true,
                },
            )
            .await
            .unwrap();
        }
        let profile = enroll(profiles.path(), name, &code).await;
        sessions.push((name, Session::open(&profile).await.unwrap()));
    }
    let code = add_user(&mut admin, "target").await;
    let target_device = enroll(profiles.path(), "target-phone", &code).await.device_id();
    call(
        &mut admin,
        Request::AdminGroupCreate {
            group: group("staff"),
        },
    )
    .await
    .unwrap();

    let requests: Vec<(&str, Request)> = vec![
        (
            "user add",
            Request::AdminUserAdd {
                user: user("newbie"),
                display_name: None,
            },
        ),
        ("device add", Request::AdminDeviceAdd { user: user("target") }),
        ("user list", Request::AdminUserList),
        ("device list", Request::AdminDeviceList { user: None }),
        (
            "policy set",
            Request::AdminPolicySet {
                scope: PolicyScope::Default,
                settings: PolicySettings {
                    message_retention_days: Some(1),
                    ..Default::default()
                },
            },
        ),
        ("policy show", Request::AdminPolicyShow { user: None }),
        (
            "group create",
            Request::AdminGroupCreate {
                group: group("new-group"),
            },
        ),
        (
            "group add",
            Request::AdminGroupMember {
                group: group("staff"),
                user: user("target"),
                add: true,
            },
        ),
        ("group list", Request::AdminGroupList),
        (
            "user import",
            Request::AdminUserImport {
                users: vec![ImportedUser {
                    user: user("imported"),
                    display_name: None,
                    groups: vec![],
                    roles: vec![Role::Admin],
                }],
            },
        ),
        (
            "device lock",
            Request::AdminDeviceCommand {
                device: target_device,
                kind: CommandKind::Lock,
            },
        ),
        (
            "device unlock",
            Request::AdminDeviceCommand {
                device: target_device,
                kind: CommandKind::Unlock,
            },
        ),
        (
            "device wipe",
            Request::AdminDeviceCommand {
                device: target_device,
                kind: CommandKind::Wipe,
            },
        ),
        (
            "device revoke",
            Request::AdminDeviceRevoke {
                device: target_device,
            },
        ),
        (
            "role grant",
            Request::AdminRole {
                user: user("target"),
                role: Role::Admin,
                grant: true,
            },
        ),
        (
            "audit list",
            Request::AdminAuditList {
                after_seq: 0,
                limit: 10,
            },
        ),
        (
            "mail set",
            Request::AdminMailSet(redoubt_proto::MailServerSettings {
                imap: redoubt_proto::HostPort::parse("127.0.0.1:143").unwrap(),
                smtp: redoubt_proto::HostPort::parse("127.0.0.1:587").unwrap(),
                security: redoubt_proto::MailSecurity::None,
                master_user: "master".into(),
                master_password: "secret".into(),
                domain: "corp.test".into(),
            }),
        ),
        (
            "mail map",
            Request::AdminMailMap {
                user: user("target"),
                address: "target@corp.test".into(),
            },
        ),
        ("mail show", Request::AdminMailShow),
        ("cluster list", Request::AdminClusterList),
        ("stats", Request::AdminStats),
        (
            "directory set",
            Request::AdminDirectorySet(support::directory_settings()),
        ),
        (
            "directory sync",
            Request::AdminDirectorySync {
                dry_run: true,
                force: false,
                adopt: false,
            },
        ),
        ("directory show", Request::AdminDirectoryShow),
        (
            "scim token create",
            Request::AdminScimTokenCreate { name: "idp".into() },
        ),
        ("scim token list", Request::AdminScimTokenList),
        ("scim set", Request::AdminScimSet { email_codes: false }),
        (
            "dav set",
            Request::AdminDavSet(redoubt_proto::DavServerSettings {
                url: "http://127.0.0.1:5232/".into(),
                user: "service".into(),
                password: "secret".into(),
            }),
        ),
    ];
    let allowed = |role: &str, what: &str| match role {
        "helen" => matches!(
            what,
            "user add"
                | "device add"
                | "user list"
                | "device list"
                | "device lock"
                | "device unlock"
                | "device wipe"
                | "stats"
        ),
        "audrey" => what == "audit list",
        _ => false,
    };

    // Last-seen times are written in the background each second: written now, so that a
    // snapshot shows only what requests changed.
    async fn snapshot(admin: &mut Session, server: &TestServer) -> String {
        server.handle.flush_pending().await.unwrap();
        let users = admin.admin_user_list().await.unwrap();
        let devices = admin.admin_device_list(None).await.unwrap();
        let groups = admin.request(Request::AdminGroupList).await.unwrap();
        let policy = admin
            .request(Request::AdminPolicyShow { user: None })
            .await
            .unwrap();
        format!("{users:?}{devices:?}{groups:?}{policy:?}")
    }

    let mut refusals = 0;
    for (name, session) in &mut sessions {
        for (what, request) in &requests {
            let before = snapshot(&mut admin, &server).await;
            let result = session.request(request.clone()).await;
            if allowed(name, what) {
                if let Err(error) = &result {
                    assert_ne!(error.code(), Some(ErrorCode::Forbidden), "{name} {what}: {error}");
                }
            } else {
                let error = result.expect_err(&format!("{name} must not {what}"));
                assert_eq!(code_of(&error), ErrorCode::Forbidden, "{name} {what}: {error}");
                assert_eq!(
                    snapshot(&mut admin, &server).await,
                    before,
                    "{name} {what} changed something"
                );
                refusals += 1;
            }
        }
    }
    assert!(refusals >= 30, "{refusals}");
    // The admin may do everything.
    for (what, request) in requests {
        let result = admin.request(request).await;
        if let Err(error) = result {
            assert_ne!(error.code(), Some(ErrorCode::Forbidden), "admin {what}: {error}");
        }
    }
}

#[tokio::test]
async fn audit_log_verifies_and_names_the_entry_altered_in_the_database() {
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    add_user(&mut admin, "alice").await;
    call(
        &mut admin,
        Request::AdminGroupCreate {
            group: group("finance"),
        },
    )
    .await
    .unwrap();
    call(
        &mut admin,
        Request::AdminRole {
            user: user("alice"),
            role: Role::Auditor,
            grant: true,
        },
    )
    .await
    .unwrap();
    set_policy(
        &mut admin,
        PolicyScope::Default,
        PolicySettings {
            passcode_min_length: Some(8),
            ..Default::default()
        },
    )
    .await;
    let org_key = ed25519_dalek::VerifyingKey::from_bytes(&server.org_public_key).unwrap();
    let org_id = admin.info().org_id;

    let (entries, checkpoints) = audit_log(&mut admin).await;
    let actions: Vec<_> = entries.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "user.add",
        "device.enroll",
        "group.create",
        "role.grant",
        "policy.set",
    ] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    let verified = verify_audit_log(&entries, &checkpoints, &org_key, &org_id).unwrap();
    assert_eq!(verified.signed_through, entries.len() as u64);

    // Someone with the database file changes entry 3: the append-only trigger must go
    // first, and then verification names the entry.
    let db = server.data().join("redoubt.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let refused = sqlx::query("UPDATE audit_log SET details = 'nothing happened' WHERE seq = 3")
        .execute(&pool)
        .await;
    assert!(refused.is_err(), "the trigger refuses updates");
    sqlx::query("DROP TRIGGER audit_log_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET details = 'nothing happened' WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (entries, checkpoints) = audit_log(&mut admin).await;
    let broken = verify_audit_log(&entries, &checkpoints, &org_key, &org_id).unwrap_err();
    assert_eq!(broken.seq, 3, "{broken}");
}

#[tokio::test]
async fn retention_deletes_expired_messages_on_the_device_and_attachments_follow_policy() {
    let server = TestServer::start().await;
    // Everything below happens "three days ago" by the server's clock, until it catches up.
    server.clock.advance(-3 * 86_400);
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let alice_code = add_user(&mut admin, "alice").await;
    let bob_code = add_user(&mut admin, "bob").await;
    let alice = enroll(profiles.path(), "alice-phone", &alice_code).await;
    let bob = enroll(profiles.path(), "bob-phone", &bob_code).await;
    let mut alice_messenger = Messenger::open(&alice).await.unwrap();
    let mut bob = Messenger::open(&bob).await.unwrap();
    bob.send_text("alice", "old news").await.unwrap();
    alice_messenger.sync().await.unwrap();
    let conversation = alice_messenger.conversation("bob").unwrap().unwrap();
    assert_eq!(alice_messenger.messages(&conversation).unwrap().len(), 1);
    drop(alice_messenger);

    server.clock.advance(3 * 86_400);
    set_policy(
        &mut admin,
        PolicyScope::Default,
        PolicySettings {
            message_retention_days: Some(1),
            attachments_allowed: Some(false),
            ..Default::default()
        },
    )
    .await;
    let mut alice_messenger = Messenger::open(&alice).await.unwrap();
    bob.send_text("alice", "fresh").await.unwrap();
    alice_messenger.sync().await.unwrap();
    let texts: Vec<_> = alice_messenger
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts,
        vec!["fresh".to_owned()],
        "the three-day-old message is gone"
    );

    // Attachments are refused by the device and, for a client that ignores the policy,
    // by the server.
    let file = profiles.path().join("report.pdf");
    std::fs::write(&file, b"numbers").unwrap();
    let error = bob.send_file("alice", &file, |_, _| {}).await.unwrap_err();
    assert!(matches!(error, ClientError::Attachment(_)), "{error}");
    let error = bob
        .session()
        .request(Request::BlobUploadStart {
            group_id: conversation.group_id,
            bytes_total: 100,
            chunk_count: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&error), ErrorCode::PolicyViolation);
}
