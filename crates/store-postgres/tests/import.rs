#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! A single server's SQLite database (and its blob files) moved into PostgreSQL: every
//! record reads the same through the `Store` trait afterwards, and numbering carries on.

mod support;

use std::path::Path;

use redoubt_proto::{
    ActivationCodeId, AuditEntry, BLOB_CHUNK_BYTES, BlobId, CommandKind, DeviceId, GroupId, GroupName, OrgId,
    PolicyScope, PolicySettings, Role, UserName,
};
use redoubt_store::{
    ActivationCodeRecord, BlobRecord, Change, Claim, CommandRecord, DeviceRecord, DirectoryGroupRecord,
    GroupHead, GroupRecord, GroupTransition, HistoryRecord, InboxRecord, KtEpochRecord, KtNode, KtSet,
    KtValue, LogRecord, Membership, NewLogEntry, OrgRecord, Store, StoreError, TransferGroupRecord,
    UserRecord,
};
use redoubt_store_postgres::PgStore;
use redoubt_store_sqlite::SqliteStore;
use support::{audit, code, dev, device, fresh_store, group_id, user};

/// The complete blob.
fn blob_id() -> BlobId {
    BlobId::from([5; 16])
}

fn entry(client: u8, message: &[u8]) -> NewLogEntry<'_> {
    NewLogEntry {
        group: group_id(1),
        sender: dev(1),
        client_message_id: [client; 16],
        message,
        created_at_unix_s: 1_300,
    }
}

fn group(id: u8) -> GroupRecord {
    GroupRecord {
        id: group_id(id),
        epoch: 0,
        state: vec![id; 40],
        state_seq: 0,
        last_seq: 0,
        created_at_unix_s: 1_200,
    }
}

/// Some of everything a server keeps, through the trait.
async fn populate(store: &impl Store, blobs: &Path) {
    store
        .init_org(&OrgRecord {
            org_id: OrgId::from([7; 16]),
            created_at_unix_s: 900,
        })
        .await
        .unwrap();
    let mut alice = user("alice");
    alice.roles = vec![Role::Admin];
    store.create_user(&alice, &code(1, "alice")).await.unwrap();
    store.create_activation_code(&code(2, "alice")).await.unwrap();
    store.create_user(&user("bob"), &code(3, "bob")).await.unwrap();
    store.create_activation_code(&code(4, "bob")).await.unwrap();
    for _ in 0..5 {
        store.next_certificate_serial().await.unwrap();
    }
    for (code, id, name) in [(1u8, 1u8, "alice"), (2, 2, "alice"), (3, 3, "bob")] {
        store
            .redeem_activation_code(
                &ActivationCodeId::from([code; 8]),
                1_100,
                &device(id, name, u64::from(id)),
                &audit("redeem"),
            )
            .await
            .unwrap();
    }
    store
        .record_failed_activation(&ActivationCodeId::from([4; 8]), 5, &audit("wrong secret"))
        .await
        .unwrap();
    store
        .record_last_seen(&[(dev(1), 5_000), (dev(3), 5_100)])
        .await
        .unwrap();
    store
        .publish_key_packages(&dev(3), &[vec![3, 1], vec![3, 2], vec![3, 3]], Some(&[3, 9]), 10)
        .await
        .unwrap();
    store
        .claim_key_packages(&[UserName::parse("bob").unwrap()], &[])
        .await
        .unwrap();

    store.create_group(&group(1), &dev(1)).await.unwrap();
    store.create_group(&group(2), &dev(1)).await.unwrap();
    store.append(&entry(1, b"hello"), None).await.unwrap();
    let add = GroupTransition {
        expected_epoch: 0,
        epoch: 1,
        state: Some(vec![1; 50]),
        added: vec![dev(2), dev(3)],
        removed: vec![],
        welcome: Some(vec![9; 30]),
    };
    store.append(&entry(2, b"add"), Some(&add)).await.unwrap();
    let keep_state = GroupTransition {
        expected_epoch: 1,
        epoch: 2,
        state: None,
        added: vec![],
        removed: vec![dev(3)],
        welcome: None,
    };
    store
        .append(&entry(3, b"remove"), Some(&keep_state))
        .await
        .unwrap();
    store.append(&entry(4, b"after"), None).await.unwrap();
    store.ack(&group_id(1), &dev(1), 3).await.unwrap();
    // Bob's Welcome is acknowledged (deleted): its inbox id must not be given again.
    let bobs = store.inbox(&dev(3)).await.unwrap();
    store.inbox_ack(&dev(3), &[bobs[0].id]).await.unwrap();

    // A complete blob of two and a half chunks, in a file as the server keeps it, and an
    // upload that never finished.
    let bytes: Vec<u8> = (0..BLOB_CHUNK_BYTES * 5 / 2).map(|i| (i % 251) as u8).collect();
    let blob = BlobRecord {
        id: blob_id(),
        group: group_id(1),
        uploader: dev(1),
        bytes_total: bytes.len() as u64,
        chunk_count: 3,
        complete: true,
        created_at_unix_s: 1_400,
    };
    store.create_blob(&blob).await.unwrap();
    std::fs::write(blobs.join(blob_id().to_string()), &bytes).unwrap();
    let unfinished = BlobRecord {
        id: BlobId::from([6; 16]),
        complete: false,
        ..blob
    };
    store.create_blob(&unfinished).await.unwrap();

    let strict = PolicySettings {
        passcode_required: Some(true),
        ..Default::default()
    };
    let applied = store
        .apply(
            &[
                Change::CreateGroup {
                    group: GroupName::parse("finance").unwrap(),
                    at_unix_s: 1_500,
                },
                Change::SetGroupMember {
                    group: GroupName::parse("finance").unwrap(),
                    user: UserName::parse("alice").unwrap(),
                    member: true,
                },
                Change::SetPolicy {
                    scope: PolicyScope::Default,
                    settings: strict,
                    at_unix_s: 1_500,
                },
                Change::BumpPolicyVersion,
                Change::BumpPolicyVersion,
                Change::IssueCommand {
                    device: dev(2),
                    kind: CommandKind::Lock,
                    issued_by: UserName::parse("alice").unwrap(),
                    at_unix_s: 1_500,
                },
                Change::SetSetting {
                    key: "mail/server".into(),
                    value: Some(b"imap.corp.test".to_vec()),
                },
            ],
            &[audit("changes"), audit("more changes")],
        )
        .await
        .unwrap();
    store
        .apply(
            &[Change::AcknowledgeCommand {
                device: dev(2),
                command_id: applied.command_ids[0],
                at_unix_s: 1_600,
            }],
            &[audit("acknowledged")],
        )
        .await
        .unwrap();
    store.acknowledge_policy(&dev(2), 2).await.unwrap();
    store.add_audit_checkpoint(3, b"signed checkpoint").await.unwrap();

    let transfer = TransferGroupRecord {
        group: group_id(2),
        target: dev(2),
        source: dev(1),
        created_at_unix_s: 1_700,
    };
    let claim = Claim {
        at_unix_s: 1_700,
        lapsed_before_unix_s: 1_400,
    };
    store.begin_history(&transfer, Some(claim)).await.unwrap();
    store.history_sent(&dev(2), &dev(1), 12, 1_710).await.unwrap();

    // The key directory: a tree, alice's values and sets over two epochs, bob changed
    // since, an auditor's countersignature.
    let alice = UserName::parse("alice").unwrap();
    let nodes: Vec<KtNode> = kt_keys()
        .iter()
        .map(|key| KtNode {
            key: key.clone(),
            record: [key.as_slice(), b" record"].concat(),
        })
        .collect();
    let values: Vec<KtValue> = (1..=2)
        .map(|epoch| KtValue {
            label: b"alice".to_vec(),
            epoch,
            version: epoch,
            record: vec![epoch as u8; 60],
        })
        .collect();
    store.kt_write(&nodes, &values).await.unwrap();
    for epoch in 1..=2u64 {
        let certificates = (1..=epoch).map(|n| vec![n as u8; 100]).collect();
        store
            .kt_put_sets(&[KtSet {
                user: alice.clone(),
                epoch,
                certificates,
                approvals: vec![vec![epoch as u8; 64]],
            }])
            .await
            .unwrap();
        store
            .kt_finish_epoch(
                &KtEpochRecord {
                    epoch,
                    head: format!("head {epoch}").into_bytes(),
                    proof: format!("proof {epoch}").into_bytes(),
                },
                std::slice::from_ref(&alice),
            )
            .await
            .unwrap();
    }
    store
        .kt_mark_changed(&[UserName::parse("bob").unwrap()])
        .await
        .unwrap();
    store
        .kt_put_auditor_signature(&[3; 32], 2, b"countersigned 2")
        .await
        .unwrap();
}

/// The key directory's tree keys `populate` writes.
fn kt_keys() -> Vec<Vec<u8>> {
    (0..40u8).map(|i| vec![i, i.wrapping_mul(7)]).collect()
}

/// A group as read back: its record, log, handshakes and current members.
type GroupView = (Option<GroupRecord>, Vec<LogRecord>, Vec<LogRecord>, Vec<DeviceId>);

/// A device as read back: its membership of group 1, its groups and its inbox.
type DeviceView = (
    Option<Membership>,
    Vec<(GroupId, GroupHead, Membership)>,
    Vec<InboxRecord>,
);

/// Everything the trait reads back (blob bytes are compared apart).
#[derive(Debug, PartialEq)]
struct Snapshot {
    org: Option<OrgRecord>,
    users: Vec<UserRecord>,
    codes: Vec<Option<ActivationCodeRecord>>,
    devices: Vec<DeviceRecord>,
    groups: Vec<GroupView>,
    memberships: Vec<DeviceView>,
    blob: Option<BlobRecord>,
    history: Vec<HistoryRecord>,
    transfer: Option<TransferGroupRecord>,
    policy_version: u64,
    policies: Vec<(PolicyScope, PolicySettings)>,
    directory: Vec<DirectoryGroupRecord>,
    commands: Vec<CommandRecord>,
    audit: Vec<AuditEntry>,
    audit_head: (u64, [u8; 32]),
    checkpoints: Vec<Vec<u8>>,
    settings: Vec<(String, Vec<u8>)>,
    kt: KtView,
}

/// The key directory as read back: tree records, alice's values and sets, every user's
/// newest set, heads, changed users and countersignatures.
type KtView = (
    Vec<KtNode>,
    Vec<KtValue>,
    Vec<KtSet>,
    Vec<KtSet>,
    Vec<KtEpochRecord>,
    Vec<UserName>,
    Vec<Vec<u8>>,
);

async fn snapshot(store: &impl Store) -> Snapshot {
    let mut groups = Vec::new();
    for id in [1, 2] {
        let id = group_id(id);
        groups.push((
            store.group(&id).await.unwrap(),
            store.log_entries(&id, 0, 100).await.unwrap(),
            store.handshakes_after(&id, 0).await.unwrap(),
            store.group_members(&id).await.unwrap(),
        ));
    }
    let mut memberships = Vec::new();
    for device in [dev(1), dev(2), dev(3)] {
        memberships.push((
            store.membership(&group_id(1), &device).await.unwrap(),
            store.device_groups(&device).await.unwrap(),
            store.inbox(&device).await.unwrap(),
        ));
    }
    let mut codes = Vec::new();
    for id in 1..=4 {
        codes.push(
            store
                .activation_code(&ActivationCodeId::from([id; 8]))
                .await
                .unwrap(),
        );
    }
    Snapshot {
        org: store.org().await.unwrap(),
        users: store.list_users().await.unwrap(),
        codes,
        devices: store.list_devices(None).await.unwrap(),
        groups,
        memberships,
        blob: store.blob(&blob_id()).await.unwrap(),
        history: store.history_records(None).await.unwrap(),
        transfer: store.transfer_group(&group_id(2)).await.unwrap(),
        policy_version: store.policy_version().await.unwrap(),
        policies: store.policies().await.unwrap(),
        directory: store.directory_groups().await.unwrap(),
        commands: store.commands(None, false).await.unwrap(),
        audit: store.audit_entries(0, 1_000).await.unwrap(),
        audit_head: store.audit_head().await.unwrap(),
        checkpoints: store.audit_checkpoints(0, 1_000).await.unwrap(),
        settings: store.settings("").await.unwrap(),
        kt: kt_view(store).await,
    }
}

async fn kt_view(store: &impl Store) -> KtView {
    let mut nodes = store.kt_nodes(&kt_keys()).await.unwrap();
    nodes.sort_by(|a, b| a.key.cmp(&b.key));
    let alice = UserName::parse("alice").unwrap();
    (
        nodes,
        store.kt_values(&[b"alice".to_vec()]).await.unwrap(),
        store.kt_sets(&alice).await.unwrap(),
        store.kt_latest_sets().await.unwrap(),
        store.kt_heads(0, 100).await.unwrap(),
        store.kt_changed(100).await.unwrap(),
        store.kt_auditor_signatures().await.unwrap(),
    )
}

/// Reads complete blobs as the server keeps them: files named by their ids.
fn blob_files(folder: &Path) -> impl FnMut(&BlobId) -> std::io::Result<Vec<u8>> + Send + use<> {
    let folder = folder.to_owned();
    move |id| std::fs::read(folder.join(id.to_string()))
}

/// A single server's data folder: its database, and blob files.
async fn single_server() -> tempfile::TempDir {
    let folder = tempfile::tempdir().unwrap();
    std::fs::create_dir(folder.path().join("blobs")).unwrap();
    let store = SqliteStore::open(&folder.path().join("redoubt.db"))
        .await
        .unwrap();
    populate(&store, &folder.path().join("blobs")).await;
    store.close().await;
    folder
}

#[tokio::test]
async fn a_single_server_moves_into_postgresql_whole() {
    let folder = single_server().await;
    let (database, blobs) = (folder.path().join("redoubt.db"), folder.path().join("blobs"));
    let target = fresh_store().await;
    let imported = target
        .import_sqlite(&database, &mut blob_files(&blobs))
        .await
        .unwrap();
    assert_eq!(
        (imported.blobs, imported.blob_bytes),
        (1, (BLOB_CHUNK_BYTES * 5 / 2) as u64)
    );
    let rows = |table: &str| imported.rows[table];
    assert_eq!((rows("group_log"), rows("audit_log"), rows("blobs")), (4, 7, 1));
    assert_eq!(
        (rows("kt_nodes"), rows("kt_heads"), rows("kt_changed")),
        (40, 2, 1)
    );

    let source = SqliteStore::open(&database).await.unwrap();
    let (before, after) = (snapshot(&source).await, snapshot(&target).await);
    assert_eq!(before.kt.0.len(), 40, "the key directory was populated");
    assert_eq!(before, after);
    // The blob's bytes are in the database now, chunk by chunk.
    let file = std::fs::read(blobs.join(blob_id().to_string())).unwrap();
    let mut chunks = Vec::new();
    for index in 0..3 {
        chunks.extend(target.blob_chunk(&blob_id(), index).await.unwrap().unwrap());
    }
    assert_eq!(chunks, file);
    // The unfinished upload stayed behind.
    assert_eq!(source.group_blobs(&group_id(1)).await.unwrap().len(), 2);
    assert_eq!(target.group_blobs(&group_id(1)).await.unwrap(), vec![blob_id()]);
    assert!(target.incomplete_blobs().await.unwrap().is_empty());
    // Both hand out the same key packages.
    let bob = [UserName::parse("bob").unwrap()];
    assert_eq!(
        source.claim_key_packages(&bob, &[]).await.unwrap(),
        target.claim_key_packages(&bob, &[]).await.unwrap()
    );

    // Numbering carries on where the single server left it: serials, sequence numbers,
    // the audit chain, and ids SQLite gave even to rows since deleted.
    let last_serial = source.next_certificate_serial().await.unwrap();
    assert!(target.next_certificate_serial().await.unwrap() >= last_serial);
    assert_eq!(target.append(&entry(5, b"next"), None).await.unwrap().seq, 5);
    let readd = GroupTransition {
        expected_epoch: 2,
        epoch: 3,
        state: Some(vec![3]),
        added: vec![dev(3)],
        removed: vec![],
        welcome: Some(vec![8]),
    };
    target.append(&entry(6, b"re-add"), Some(&readd)).await.unwrap();
    let new_welcome = target.inbox(&dev(3)).await.unwrap()[0].id;
    // Welcomes 1 (Alice's second device, kept) and 2 (Bob's, acknowledged and deleted)
    // were given by SQLite.
    assert_eq!(new_welcome, 3, "inbox ids are never given twice");
    let applied = target.apply(&[], &[audit("on postgres")]).await.unwrap();
    let chain = target.audit_entries(0, 1_000).await.unwrap();
    assert_eq!(applied.audit_seq, 8);
    assert_eq!(chain[7].prev_hash, chain[6].hash, "the chain goes on");
    source.close().await;
}

#[tokio::test]
async fn an_import_is_all_or_nothing_and_only_into_an_empty_database() {
    let folder = single_server().await;
    let (database, blobs) = (folder.path().join("redoubt.db"), folder.path().join("blobs"));
    // A blob file gone: nothing is imported.
    std::fs::rename(blobs.join(blob_id().to_string()), folder.path().join("elsewhere")).unwrap();
    let target = fresh_store().await;
    let missing = target
        .import_sqlite(&database, &mut blob_files(&blobs))
        .await
        .unwrap_err();
    assert!(missing.to_string().contains(&blob_id().to_string()), "{missing}");
    assert!(target.is_empty().await.unwrap());
    assert_eq!(target.audit_head().await.unwrap().0, 0);

    std::fs::rename(folder.path().join("elsewhere"), blobs.join(blob_id().to_string())).unwrap();
    target
        .import_sqlite(&database, &mut blob_files(&blobs))
        .await
        .unwrap();
    let again = target.import_sqlite(&database, &mut blob_files(&blobs)).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists(_))), "{again:?}");

    // Not a database of this build's schema.
    let other = tempfile::tempdir().unwrap();
    let empty = other.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let refused = fresh_store()
        .await
        .import_sqlite(&empty, &mut blob_files(&blobs))
        .await;
    assert!(refused.is_err());
    // A store that is in use is not a target either: PgStore's own data counts.
    let used: PgStore = fresh_store().await;
    used.create_user(&user("carol"), &code(9, "carol")).await.unwrap();
    assert!(matches!(
        used.import_sqlite(&database, &mut blob_files(&blobs)).await,
        Err(StoreError::AlreadyExists(_))
    ));
}
