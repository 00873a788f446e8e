#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Authorisation, table-driven: every request type is tried from every context that must
//! not be served — no session, another user's device, a revoked device, a device outside
//! the group, a user without the admin role — and each attempt is refused with the
//! expected code and changes nothing in the database (every table is compared).

mod support;

use std::collections::BTreeMap;

use redoubt_client::{Connection, Messenger, Session};
use redoubt_proto::*;
use support::{TestServer, admin_session, enroll};

fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

/// Every row of every table, as text, so any change shows.
async fn database(server: &TestServer) -> BTreeMap<String, Vec<String>> {
    let path = server.data().join("redoubt.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut dump = BTreeMap::new();
    // The node's heartbeat rewrites its row every few seconds, whatever the requests do.
    for table in tables.into_iter().filter(|t| t != "cluster_nodes") {
        let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}')"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        let row = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {row} FROM \"{table}\" ORDER BY 1"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        dump.insert(table, rows);
    }
    pool.close().await;
    dump
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    NoSession,
    OtherUsersDevice,
    RevokedDevice,
    NonMember,
    NonAdmin,
}

/// The contexts in which `request` must be refused, with the code expected.
fn refusals(request: &Request) -> Vec<(Context, ErrorCode)> {
    use Context::*;
    let mut out = Vec::new();
    if !request.allowed_unauthenticated() {
        out.push((NoSession, ErrorCode::Unauthenticated));
        // A revoked device cannot authenticate, so it is never served.
        out.push((RevokedDevice, ErrorCode::Unauthenticated));
    }
    match request {
        Request::AdminUserAdd { .. }
        | Request::AdminDeviceAdd { .. }
        | Request::AdminUserList
        | Request::AdminDeviceList { .. }
        | Request::AdminPolicySet { .. }
        | Request::AdminPolicyShow { .. }
        | Request::AdminGroupCreate { .. }
        | Request::AdminGroupMember { .. }
        | Request::AdminGroupList
        | Request::AdminUserImport { .. }
        | Request::AdminDeviceCommand { .. }
        | Request::AdminDeviceRevoke { .. }
        | Request::AdminRole { .. }
        | Request::AdminAuditList { .. }
        | Request::AdminMailSet(_)
        | Request::AdminMailMap { .. }
        | Request::AdminMailShow
        | Request::AdminDavSet(_)
        | Request::AdminClusterList
        | Request::AdminDirectorySet(_)
        | Request::AdminDirectorySync { .. }
        | Request::AdminDirectoryShow
        | Request::AdminScimTokenCreate { .. }
        | Request::AdminScimTokenList
        | Request::AdminScimTokenRevoke { .. }
        | Request::AdminScimSet { .. }
        | Request::AdminStats => out.push((NonAdmin, ErrorCode::Forbidden)),
        Request::GroupSubmit(_)
        | Request::GroupFetch { .. }
        | Request::BlobUploadStart { .. }
        | Request::BlobFetch { .. }
        | Request::GroupAck { .. }
        | Request::HistoryBegin { .. } => out.push((NonMember, ErrorCode::NotAMember)),
        Request::DeviceApprove { .. } => out.push((OtherUsersDevice, ErrorCode::Forbidden)),
        Request::CommandAck { .. } => out.push((OtherUsersDevice, ErrorCode::NotFound)),
        Request::KeyPackagesPublish { .. } => out.push((OtherUsersDevice, ErrorCode::InvalidMlsMessage)),
        Request::BlobUploadChunk { .. }
        | Request::BlobUploadFinish { .. }
        | Request::HistorySent { .. }
        | Request::HistoryReceived { .. } => {
            out.push((OtherUsersDevice, ErrorCode::NotFound));
        }
        _ => {}
    }
    out
}

#[tokio::test]
async fn every_request_is_refused_where_it_must_be_and_changes_nothing() {
    // Many requests from few devices: lift the rate limit for this test.
    let server = TestServer::start_with_config(
        "[limits]\ndevice_requests_per_second = 100000\ndevice_request_burst = 100000\n",
    )
    .await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    let mut profile_of = BTreeMap::new();
    for name in ["alice", "bob", "mallory"] {
        let code = admin.admin_user_add(user(name), None).await.unwrap().code;
        profile_of.insert(name, enroll(profiles.path(), name, &code).await);
    }
    let code = admin.admin_device_add(user("mallory")).await.unwrap().code;
    let revoked = enroll(profiles.path(), "mallory-old", &code).await;

    // alice and bob share a conversation with an attachment; mallory is outside it.
    let mut alice = Messenger::open(&profile_of["alice"]).await.unwrap();
    let mut bob = Messenger::open(&profile_of["bob"]).await.unwrap();
    alice.send_text("bob", "private").await.unwrap();
    let file = profiles.path().join("plan.txt");
    std::fs::write(&file, b"the plan").unwrap();
    alice.send_file("bob", &file, |_, _| {}).await.unwrap();
    bob.sync().await.unwrap();
    let conversation = alice.conversation("bob").unwrap().unwrap();
    let group_id = conversation.group_id;
    let attachment = alice
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .find_map(|m| m.attachment)
        .unwrap();
    // A command waiting for alice's device, an upload open on alice's session.
    let Response::CommandIssued { command_id } = admin
        .request(Request::AdminDeviceCommand {
            device: profile_of["alice"].device_id(),
            kind: CommandKind::Unlock,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let Response::BlobUploadStarted { blob_id: open_upload } = alice
        .session()
        .request(Request::BlobUploadStart {
            group_id,
            bytes_total: 100,
            chunk_count: 1,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    // A key package that is alice's, for mallory to try to publish as her own.
    let Response::KeyPackages(claimed) = bob
        .session()
        .request(Request::KeyPackagesClaim {
            users: vec![user("alice")],
            except_devices: vec![],
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    let alices_package = claimed[0].key_package.clone();
    admin
        .request(Request::AdminDeviceRevoke {
            device: revoked.device_id(),
        })
        .await
        .unwrap();
    let entries = match bob
        .session()
        .request(Request::GroupFetch {
            group_id,
            after_seq: 0,
            limit: 10,
        })
        .await
        .unwrap()
    {
        Response::GroupEntries { entries, .. } => entries,
        other => panic!("{other:?}"),
    };

    let requests: Vec<Request> = vec![
        Request::WhoAmI,
        Request::AdminUserAdd {
            user: user("eve"),
            display_name: None,
        },
        Request::AdminDeviceAdd { user: user("alice") },
        Request::AdminUserList,
        Request::AdminDeviceList { user: None },
        Request::KeyPackagesPublish {
            key_packages: vec![alices_package],
            last_resort: None,
        },
        Request::KeyPackagesClaim {
            users: vec![user("alice")],
            except_devices: vec![],
        },
        Request::GroupCreate {
            group_info: vec![1, 2, 3],
        },
        Request::GroupSubmit(GroupSubmit {
            group_id,
            client_message_id: Bytes([9; 16]),
            message: entries.last().unwrap().message.clone(),
            welcome: None,
        }),
        Request::GroupFetch {
            group_id,
            after_seq: 0,
            limit: 10,
        },
        Request::GroupList,
        Request::InboxFetch,
        Request::InboxAck { ids: vec![1, 2, 3] },
        Request::UserDevices {
            users: vec![user("alice")],
        },
        Request::BlobUploadStart {
            group_id,
            bytes_total: 100,
            chunk_count: 1,
        },
        Request::BlobUploadChunk {
            blob_id: open_upload,
            index: 0,
            bytes: vec![0; 100],
        },
        Request::BlobUploadFinish { blob_id: open_upload },
        Request::BlobFetch {
            blob_id: attachment.blob_id,
            index: 0,
        },
        Request::GroupAck { group_id, seq: 1 },
        Request::AdminPolicySet {
            scope: PolicyScope::Default,
            settings: PolicySettings {
                attachments_allowed: Some(false),
                ..Default::default()
            },
        },
        Request::AdminPolicyShow { user: None },
        Request::AdminGroupCreate {
            group: GroupName::parse("finance").unwrap(),
        },
        Request::AdminGroupMember {
            group: GroupName::parse("finance").unwrap(),
            user: user("alice"),
            add: true,
        },
        Request::AdminGroupList,
        Request::AdminUserImport {
            users: vec![ImportedUser {
                user: user("eve"),
                display_name: None,
                groups: vec![],
                roles: vec![],
            }],
        },
        Request::AdminDeviceCommand {
            device: profile_of["alice"].device_id(),
            kind: CommandKind::Wipe,
        },
        Request::AdminDeviceRevoke {
            device: profile_of["alice"].device_id(),
        },
        Request::AdminRole {
            user: user("mallory"),
            role: Role::Admin,
            grant: true,
        },
        Request::AdminAuditList {
            after_seq: 0,
            limit: 10,
        },
        Request::PolicyFetch,
        Request::PolicyAck { version: 0 },
        Request::CommandsFetch,
        Request::CommandAck { command_id },
        Request::DeviceApprove {
            device: profile_of["alice"].device_id(),
            approval: profile_of["alice"]
                .approve(profile_of["alice"].device_id(), profile_of["alice"].certificate())
                .unwrap(),
        },
        Request::OwnDevices,
        Request::AdminMailSet(mail_settings()),
        Request::AdminMailMap {
            user: user("mallory"),
            address: "mallory@corp.test".into(),
        },
        Request::AdminMailShow,
        Request::AdminDavSet(redoubt_proto::DavServerSettings {
            url: "http://127.0.0.1:5232/".into(),
            user: "service".into(),
            password: "secret".into(),
        }),
        Request::MailLink { credential: None },
        Request::HistoryBegin {
            target: profile_of["alice"].device_id(),
            group_id,
            own: true,
        },
        Request::HistorySent {
            target: profile_of["alice"].device_id(),
            messages: 1,
        },
        Request::HistoryReceived { group_id },
        Request::AdminClusterList,
        Request::AdminDirectorySet(support::directory_settings()),
        Request::AdminDirectorySync {
            dry_run: false,
            force: true,
            adopt: false,
        },
        Request::AdminDirectoryShow,
        Request::AdminScimTokenCreate { name: "idp".into() },
        Request::AdminScimTokenList,
        Request::AdminScimTokenRevoke { name: "idp".into() },
        Request::AdminScimSet { email_codes: true },
        Request::AdminStats,
        Request::KtHistory { user: user("alice") },
    ];
    // Every request type is in the table but the two that open a session and the three
    // public reads of the key directory (`KtHead`, `KtAudit`, `KtAuditorSign`, served to
    // anyone: they carry no user names).
    assert_eq!(
        requests.len() + 2 + 3,
        58,
        "a request type is missing from the table"
    );

    // Mallory's sessions: her current device (not revoked, no roles, outside the group).
    let mut mallory = Session::open(&profile_of["mallory"]).await.unwrap();
    let code = ActivationCode::parse(server.admin_code.as_deref().unwrap()).unwrap();
    // Acknowledgements are written in the background: write them now, before comparing.
    server.handle.flush_pending().await.unwrap();
    // So are the set-up's device changes into the key directory: let it publish them (on a
    // loaded machine its epoch can fall between the two snapshots).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !database(&server).await["kt_changed"].is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the key directory never published"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let before = database(&server).await;
    let mut refused = 0;
    for request in &requests {
        for (context, expected) in refusals(request) {
            let result = match context {
                Context::NoSession => {
                    let mut connection = Connection::connect(&code.server, &code.pin.0).await.unwrap();
                    connection.call(request.clone()).await
                }
                Context::RevokedDevice => {
                    let error = Session::open(&revoked).await.unwrap_err();
                    assert_eq!(error.code(), Some(ErrorCode::DeviceRevoked));
                    let mut connection = Connection::connect(&code.server, &code.pin.0).await.unwrap();
                    connection.call(request.clone()).await
                }
                Context::OtherUsersDevice | Context::NonMember | Context::NonAdmin => {
                    mallory.connection().call(request.clone()).await
                }
            };
            let error = result.expect_err(&format!("{context:?} must not be served {request:?}"));
            assert_eq!(error.code(), Some(expected), "{context:?} {request:?}: {error}");
            refused += 1;
        }
    }
    let after = database(&server).await;
    for (table, rows) in &before {
        assert_eq!(rows, &after[table], "table {table} changed by a refused request");
    }
    assert_eq!(before.len(), after.len());
    eprintln!(
        "authorisation: {refused} refusals over {} request types, database unchanged",
        requests.len() + 2
    );
    assert!(refused >= 80, "{refused}");

    // The same requests from the right device are served (sanity check of the table).
    let Response::GroupEntries { entries, .. } = bob
        .session()
        .request(Request::GroupFetch {
            group_id,
            after_seq: 0,
            limit: 10,
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert!(!entries.is_empty());
    alice
        .session()
        .request(Request::CommandAck { command_id })
        .await
        .unwrap();
}

fn mail_settings() -> redoubt_proto::MailServerSettings {
    redoubt_proto::MailServerSettings {
        imap: redoubt_proto::HostPort::parse("127.0.0.1:143").unwrap(),
        smtp: redoubt_proto::HostPort::parse("127.0.0.1:587").unwrap(),
        security: redoubt_proto::MailSecurity::None,
        master_user: "master".into(),
        master_password: "secret".into(),
        domain: "corp.test".into(),
    }
}
