#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step must fail loudly
//! Storage faults: when the store cannot write (a full disk, injected here by wrapping the
//! real SQLite store; a read-only data folder, for real), requests fail with a clear code,
//! nothing acknowledged is lost, and service resumes when the fault clears.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redoubt_client::{ClientError, Messenger, Session};
use redoubt_proto::*;
use redoubt_server::{OpenOptions, Server, ServerError};
use redoubt_store::*;
use support::raw::{messengers_with_admin, user};
use support::{TestServer, admin_session};

/// The switch tests flip, and the writes it refused (by method name).
#[derive(Default)]
struct Faults {
    disk_full: AtomicBool,
    refused: Mutex<Vec<&'static str>>,
}

impl Faults {
    fn set(&self, on: bool) {
        self.disk_full.store(on, Ordering::SeqCst);
    }

    fn refused(&self) -> Vec<&'static str> {
        self.refused.lock().unwrap().clone()
    }
}

/// The real store, with every write refused as a full disk would while the switch is on.
/// Reads always go through.
struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    fn write(&self, method: &'static str) -> Result<()> {
        if self.faults.disk_full.load(Ordering::SeqCst) {
            self.faults.refused.lock().unwrap().push(method);
            return Err(StoreError::Backend("injected fault: disk full".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn org(&self) -> Result<Option<OrgRecord>> {
        self.inner.org().await
    }
    async fn init_org(&self, org: &OrgRecord) -> Result<()> {
        self.write("init_org")?;
        self.inner.init_org(org).await
    }
    async fn create_user(&self, user: &UserRecord, code: &ActivationCodeRecord) -> Result<()> {
        self.write("create_user")?;
        self.inner.create_user(user, code).await
    }
    async fn user(&self, name: &UserName) -> Result<Option<UserRecord>> {
        self.inner.user(name).await
    }
    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.inner.list_users().await
    }
    async fn create_activation_code(&self, code: &ActivationCodeRecord) -> Result<()> {
        self.write("create_activation_code")?;
        self.inner.create_activation_code(code).await
    }
    async fn activation_code(&self, id: &ActivationCodeId) -> Result<Option<ActivationCodeRecord>> {
        self.inner.activation_code(id).await
    }
    async fn record_failed_activation(
        &self,
        id: &ActivationCodeId,
        attempts_max: u32,
        audit: &AuditEvent,
    ) -> Result<ActivationCodeRecord> {
        self.write("record_failed_activation")?;
        self.inner.record_failed_activation(id, attempts_max, audit).await
    }
    async fn redeem_activation_code(
        &self,
        id: &ActivationCodeId,
        now_unix_s: i64,
        device: &DeviceRecord,
        audit: &AuditEvent,
    ) -> Result<(), RedeemError> {
        self.write("redeem_activation_code")?;
        self.inner
            .redeem_activation_code(id, now_unix_s, device, audit)
            .await
    }
    async fn next_certificate_serial(&self) -> Result<u64> {
        self.write("next_certificate_serial")?;
        self.inner.next_certificate_serial().await
    }
    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>> {
        self.inner.device(id).await
    }
    async fn list_devices(&self, user: Option<&UserName>) -> Result<Vec<DeviceRecord>> {
        self.inner.list_devices(user).await
    }
    async fn record_last_seen(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        self.write("record_last_seen")?;
        self.inner.record_last_seen(seen).await
    }
    async fn publish_key_packages(
        &self,
        device: &DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        pool_max: u32,
    ) -> Result<u32> {
        self.write("publish_key_packages")?;
        self.inner
            .publish_key_packages(device, one_time, last_resort, pool_max)
            .await
    }
    async fn claim_key_packages(
        &self,
        users: &[UserName],
        except: &[DeviceId],
    ) -> Result<Vec<ClaimedPackage>> {
        self.write("claim_key_packages")?;
        self.inner.claim_key_packages(users, except).await
    }
    async fn create_group(&self, group: &GroupRecord, creator: &DeviceId) -> Result<()> {
        self.write("create_group")?;
        self.inner.create_group(group, creator).await
    }
    async fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>> {
        self.inner.group(id).await
    }
    async fn group_head(&self, id: &GroupId) -> Result<Option<GroupHead>> {
        self.inner.group_head(id).await
    }
    async fn membership(&self, group: &GroupId, device: &DeviceId) -> Result<Option<Membership>> {
        self.inner.membership(group, device).await
    }
    async fn append(
        &self,
        entry: &NewLogEntry<'_>,
        transition: Option<&GroupTransition>,
    ) -> Result<Appended, AppendError> {
        self.write("append")?;
        self.inner.append(entry, transition).await
    }
    async fn find_submission(
        &self,
        group: &GroupId,
        sender: &DeviceId,
        client_message_id: &[u8; 16],
    ) -> Result<Option<u64>> {
        self.inner.find_submission(group, sender, client_message_id).await
    }
    async fn log_entries(&self, group: &GroupId, after_seq: u64, limit: u32) -> Result<Vec<LogRecord>> {
        self.inner.log_entries(group, after_seq, limit).await
    }
    async fn handshakes_after(&self, group: &GroupId, after_seq: u64) -> Result<Vec<LogRecord>> {
        self.inner.handshakes_after(group, after_seq).await
    }
    async fn device_groups(&self, device: &DeviceId) -> Result<Vec<(GroupId, GroupHead, Membership)>> {
        self.inner.device_groups(device).await
    }
    async fn group_members(&self, group: &GroupId) -> Result<Vec<DeviceId>> {
        self.inner.group_members(group).await
    }
    async fn inbox(&self, device: &DeviceId) -> Result<Vec<InboxRecord>> {
        self.inner.inbox(device).await
    }
    async fn inbox_ack(&self, device: &DeviceId, ids: &[u64]) -> Result<()> {
        self.write("inbox_ack")?;
        self.inner.inbox_ack(device, ids).await
    }
    async fn ack(&self, group: &GroupId, device: &DeviceId, seq: u64) -> Result<()> {
        self.write("ack")?;
        self.inner.ack(group, device, seq).await
    }
    async fn prune_logs(&self, older_than_unix_s: i64) -> Result<u64> {
        self.write("prune_logs")?;
        self.inner.prune_logs(older_than_unix_s).await
    }
    async fn create_blob(&self, blob: &BlobRecord) -> Result<()> {
        self.write("create_blob")?;
        self.inner.create_blob(blob).await
    }
    async fn blob(&self, id: &BlobId) -> Result<Option<BlobRecord>> {
        self.inner.blob(id).await
    }
    async fn complete_blob(&self, id: &BlobId) -> Result<()> {
        self.write("complete_blob")?;
        self.inner.complete_blob(id).await
    }
    async fn delete_blob(&self, id: &BlobId) -> Result<()> {
        self.write("delete_blob")?;
        self.inner.delete_blob(id).await
    }
    async fn put_blob_chunk(&self, id: &BlobId, index: u32, data: &[u8]) -> Result<()> {
        self.write("put_blob_chunk")?;
        self.inner.put_blob_chunk(id, index, data).await
    }
    async fn blob_chunk(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>> {
        self.inner.blob_chunk(id, index).await
    }
    async fn incomplete_blobs(&self) -> Result<Vec<BlobId>> {
        self.inner.incomplete_blobs().await
    }
    async fn group_blobs(&self, group: &GroupId) -> Result<Vec<BlobId>> {
        self.inner.group_blobs(group).await
    }
    async fn attachment_bytes_since(&self, uploader: &DeviceId, since_unix_s: i64) -> Result<u64> {
        self.inner.attachment_bytes_since(uploader, since_unix_s).await
    }
    async fn history_records(&self, user: Option<&UserName>) -> Result<Vec<HistoryRecord>> {
        self.inner.history_records(user).await
    }
    async fn begin_history(
        &self,
        transfer: &TransferGroupRecord,
        claim: Option<Claim>,
    ) -> std::result::Result<Option<GroupId>, BeginError> {
        self.write("begin_history")?;
        self.inner.begin_history(transfer, claim).await
    }
    async fn history_sent(
        &self,
        target: &DeviceId,
        source: &DeviceId,
        messages: u32,
        at_unix_s: i64,
    ) -> Result<()> {
        self.write("history_sent")?;
        self.inner.history_sent(target, source, messages, at_unix_s).await
    }
    async fn transfer_group(&self, group: &GroupId) -> Result<Option<TransferGroupRecord>> {
        self.inner.transfer_group(group).await
    }
    async fn history_received(&self, group: &GroupId, target: &DeviceId, at_unix_s: i64) -> Result<()> {
        self.write("history_received")?;
        self.inner.history_received(group, target, at_unix_s).await
    }
    async fn apply(&self, changes: &[Change], audit: &[AuditEvent]) -> Result<Applied> {
        self.write("apply")?;
        self.inner.apply(changes, audit).await
    }
    async fn policy_version(&self) -> Result<u64> {
        self.inner.policy_version().await
    }
    async fn policies(&self) -> Result<Vec<(PolicyScope, PolicySettings)>> {
        self.inner.policies().await
    }
    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.inner.settings(prefix).await
    }
    async fn directory_groups(&self) -> Result<Vec<DirectoryGroupRecord>> {
        self.inner.directory_groups().await
    }
    async fn user_groups(&self, user: &UserName) -> Result<Vec<GroupName>> {
        self.inner.user_groups(user).await
    }
    async fn acknowledge_policy(&self, device: &DeviceId, version: u64) -> Result<()> {
        self.write("acknowledge_policy")?;
        self.inner.acknowledge_policy(device, version).await
    }
    async fn commands(&self, device: Option<&DeviceId>, pending_only: bool) -> Result<Vec<CommandRecord>> {
        self.inner.commands(device, pending_only).await
    }
    async fn audit_entries(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.inner.audit_entries(after_seq, limit).await
    }
    async fn audit_head(&self) -> Result<(u64, [u8; 32])> {
        self.inner.audit_head().await
    }
    async fn add_audit_checkpoint(&self, seq: u64, document: &[u8]) -> Result<()> {
        self.write("add_audit_checkpoint")?;
        self.inner.add_audit_checkpoint(seq, document).await
    }
    async fn audit_checkpoints(&self, after_seq: u64, through_seq: u64) -> Result<Vec<Vec<u8>>> {
        self.inner.audit_checkpoints(after_seq, through_seq).await
    }
    async fn node_heartbeat(&self, node: &NodeRecord) -> Result<()> {
        // Bookkeeping, like last-seen times: a full disk must not stop the node.
        self.inner.node_heartbeat(node).await
    }
    async fn nodes(&self, forget_before_unix_s: i64) -> Result<Vec<NodeRecord>> {
        self.inner.nodes(forget_before_unix_s).await
    }
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        self.write("acquire_lease")?;
        self.inner.acquire_lease(name, holder, now_ms, ttl_ms).await
    }
    async fn lease_is_current(&self, name: &str, token: u64) -> Result<bool> {
        self.inner.lease_is_current(name, token).await
    }
    async fn kt_write(
        &self,
        nodes: &[redoubt_store::KtNode],
        values: &[redoubt_store::KtValue],
    ) -> Result<()> {
        self.inner.kt_write(nodes, values).await
    }
    async fn kt_nodes(&self, keys: &[Vec<u8>]) -> Result<Vec<redoubt_store::KtNode>> {
        self.inner.kt_nodes(keys).await
    }
    async fn kt_values(&self, labels: &[Vec<u8>]) -> Result<Vec<redoubt_store::KtValue>> {
        self.inner.kt_values(labels).await
    }
    async fn kt_put_sets(&self, sets: &[redoubt_store::KtSet]) -> Result<()> {
        self.inner.kt_put_sets(sets).await
    }
    async fn kt_drop_sets_after(&self, epoch: u64) -> Result<()> {
        self.inner.kt_drop_sets_after(epoch).await
    }
    async fn kt_sets(&self, user: &UserName) -> Result<Vec<redoubt_store::KtSet>> {
        self.inner.kt_sets(user).await
    }
    async fn kt_latest_sets(&self) -> Result<Vec<redoubt_store::KtSet>> {
        self.inner.kt_latest_sets().await
    }
    async fn kt_finish_epoch(&self, epoch: &KtEpochRecord, done: &[UserName]) -> Result<()> {
        self.inner.kt_finish_epoch(epoch, done).await
    }
    async fn kt_heads(&self, after: u64, limit: u32) -> Result<Vec<KtEpochRecord>> {
        self.inner.kt_heads(after, limit).await
    }
    async fn kt_head(&self, epoch: u64) -> Result<Option<Vec<u8>>> {
        self.inner.kt_head(epoch).await
    }
    async fn kt_latest_head(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.inner.kt_latest_head().await
    }
    async fn kt_mark_changed(&self, users: &[UserName]) -> Result<()> {
        self.inner.kt_mark_changed(users).await
    }
    async fn kt_changed(&self, limit: u32) -> Result<Vec<UserName>> {
        self.inner.kt_changed(limit).await
    }
    async fn kt_unmark(&self, users: &[UserName]) -> Result<()> {
        self.inner.kt_unmark(users).await
    }
    async fn kt_put_auditor_signature(
        &self,
        auditor_key: &[u8; 32],
        epoch: u64,
        document: &[u8],
    ) -> Result<()> {
        self.inner
            .kt_put_auditor_signature(auditor_key, epoch, document)
            .await
    }
    async fn kt_auditor_signatures(&self) -> Result<Vec<Vec<u8>>> {
        self.inner.kt_auditor_signatures().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// A server whose store fails every write while `faults` says the disk is full.
async fn faulty_server() -> (TestServer, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let switch = faults.clone();
    let server = TestServer::start_with_store_wrapper(Arc::new(move |inner| {
        Arc::new(FaultyStore {
            inner,
            faults: switch.clone(),
        }) as Arc<dyn Store>
    }))
    .await;
    (server, faults)
}

fn texts(messenger: &Messenger, conversation: &str) -> Vec<(u64, String)> {
    let conversation = messenger
        .conversation(conversation)
        .unwrap()
        .expect("conversation exists");
    messenger
        .messages(&conversation)
        .unwrap()
        .into_iter()
        .map(|m| (m.seq, m.text))
        .collect()
}

fn assert_storage_unavailable(error: &ClientError, what: &str) {
    assert_eq!(
        error.code(),
        Some(ErrorCode::StorageUnavailable),
        "{what}: {error}"
    );
    assert!(
        error.is_transient(),
        "{what}: clients retry storage_unavailable later"
    );
    // The device is told what happened, not how the server's storage is built.
    let message = error.to_string();
    assert!(message.contains("retry later"), "{what}: {message}");
    assert!(
        !message.contains("injected"),
        "{what}: storage details leaked: {message}"
    );
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_loses_nothing_acknowledged_and_service_resumes() {
    let (server, faults) = faulty_server().await;
    let profiles = tempfile::tempdir().unwrap();
    let (mut admin, mut d) = messengers_with_admin(&server, profiles.path(), &["alice", "bob"]).await;
    let ops = d[0]
        .create_conversation("ops", &[user("bob")], false)
        .await
        .unwrap();
    d[1].sync().await.unwrap();
    d[0].send_text("ops", "one").await.unwrap();
    d[1].sync().await.unwrap();
    d[1].send_text("ops", "two").await.unwrap();
    d[0].sync().await.unwrap();
    // Acknowledged by the server, not yet read by Bob when the disk fills.
    let (_, three) = d[0].send_text("ops", "three").await.unwrap();
    d[0].sync().await.unwrap();

    faults.set(true);
    // Sending needs a write: refused with a clear, retryable code.
    let error = d[0].send_text("ops", "during the fault").await.unwrap_err();
    assert_storage_unavailable(&error, "send");
    assert!(
        faults.refused().contains(&"append"),
        "the refusal came from the log append: {:?}",
        faults.refused()
    );
    // An attachment is refused too, and leaves no file behind.
    let file = profiles.path().join("report.bin");
    std::fs::write(&file, vec![7u8; 40_000]).unwrap();
    let error = d[0].send_file("ops", &file, |_, _| {}).await.unwrap_err();
    assert_storage_unavailable(&error, "attachment");
    let blobs = server.data().join("blobs");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        0,
        "no unrecorded upload file is left behind"
    );
    // Admin changes are refused whole.
    let error = admin.admin_user_add(user("carol"), None).await.unwrap_err();
    assert_storage_unavailable(&error, "admin change");
    // A new session is served: authenticating writes nothing (the device's last-seen time
    // waits in memory for the next coalesced write).
    let laptop = redoubt_client::Profile::load(&profiles.path().join("admin-laptop"), None).unwrap();
    Session::open(&laptop)
        .await
        .expect("authenticating during the fault");
    // Reads are still served: the log holds everything acknowledged, and nothing more.
    let fetch = Request::GroupFetch {
        group_id: ops.group_id,
        after_seq: 0,
        limit: 100,
    };
    let Response::GroupEntries { last_seq, .. } = d[0].session().connection().call(fetch).await.unwrap()
    else {
        panic!("expected entries")
    };
    assert_eq!(last_seq, three, "nothing was appended during the fault");
    // Bob reads the waiting message; his delivery receipt (a write) is refused.
    let error = d[1].sync().await.unwrap_err();
    assert_storage_unavailable(&error, "sync");

    let refused = faults.refused();
    eprintln!("writes refused during the fault: {} ({refused:?})", refused.len());
    faults.set(false);

    // The same devices carry on, on the same connections.
    d[0].send_text("ops", "after").await.unwrap();
    d[1].sync().await.unwrap();
    d[1].send_text("ops", "reply after").await.unwrap();
    d[0].sync().await.unwrap();
    let expected = ["one", "two", "three", "after", "reply after"];
    for (i, m) in d.iter().enumerate() {
        let got = texts(m, "ops");
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "device {i}: once each, in order: {seqs:?}"
        );
        let got: Vec<String> = got.into_iter().map(|g| g.1).collect();
        assert_eq!(got, expected, "device {i}");
    }
    // An attachment and an admin change go through again.
    d[0].send_file("ops", &file, |_, _| {}).await.unwrap();
    admin.admin_user_add(user("carol"), None).await.unwrap();
    drop(d);
    admin.close().await;

    // Everything acknowledged survives a restart, and the database is sound.
    let (dir, _) = server.stop().await;
    let store = redoubt_store_sqlite::SqliteStore::open(&dir.path().join("redoubt.db"))
        .await
        .unwrap();
    store.integrity_check().await.unwrap();
    let entries = store.log_entries(&ops.group_id, 0, 100).await.unwrap();
    assert!(
        entries.iter().any(|e| e.seq == three),
        "the message acknowledged before the fault is stored"
    );
    store.close().await;
}

/// Whether this process can write into a folder it made read-only (root can).
fn read_only_is_enforced(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o500)).unwrap();
    let enforced = std::fs::write(probe.join("file"), b"x").is_err();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::remove_dir_all(&probe).unwrap();
    enforced
}

#[tokio::test]
async fn a_read_only_data_folder_fails_at_start_with_a_clear_error_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    let profiles = tempfile::tempdir().unwrap();
    let mut admin = admin_session(&server, profiles.path()).await;
    admin.admin_user_add(user("dora"), None).await.unwrap();
    admin.close().await;
    let (dir, port) = server.stop().await;
    let scratch = tempfile::tempdir().unwrap();
    if !read_only_is_enforced(scratch.path()) {
        eprintln!(
            "SKIPPED: this process writes into read-only folders (running as root?), \
             so a read-only data folder cannot be made with chmod"
        );
        return;
    }

    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("redoubt.db"))
        .collect();
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).unwrap();

    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let result = Server::open(dir.path(), listen, &OpenOptions::default()).await;
    let after: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let modes: Vec<u32> = files.iter().map(|f| mode(f)).collect();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let error = result.expect_err("a server on a read-only database must not start");
    eprintln!("read-only data folder: {error}");
    assert!(
        matches!(error, ServerError::Store(_) | ServerError::Io(_)),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("redoubt.db") || error.to_string().contains("storage"),
        "the operator is told what failed: {error}"
    );
    assert!(before == after, "nothing in the database files changed");
    assert!(
        modes.iter().all(|m| *m == 0o400),
        "permissions left alone: {modes:?}"
    );

    // Writable again, the same folder serves as before.
    let server = TestServer::start_in(dir, port).await;
    let mut admin =
        Session::open(&redoubt_client::Profile::load(&profiles.path().join("admin-laptop"), None).unwrap())
            .await
            .unwrap();
    let users: Vec<_> = admin
        .admin_user_list()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.user)
        .collect();
    assert_eq!(users, vec![user("admin"), user("dora")]);
    server.stop().await;
}

#[tokio::test]
async fn an_upload_whose_completion_is_refused_is_never_served_and_leaves_no_file() {
    let (server, faults) = faulty_server().await;
    let profiles = tempfile::tempdir().unwrap();
    let (_admin, mut d) = messengers_with_admin(&server, profiles.path(), &["erin"]).await;
    let group = d[0]
        .create_conversation("files", &[], false)
        .await
        .unwrap()
        .group_id;
    let connection = d[0].session().connection();
    let start = Request::BlobUploadStart {
        group_id: group,
        bytes_total: BLOB_CHUNK_BYTES as u64,
        chunk_count: 1,
    };
    let Response::BlobUploadStarted { blob_id } = connection.call(start).await.unwrap() else {
        panic!("expected an upload")
    };
    let chunk = Request::BlobUploadChunk {
        blob_id,
        index: 0,
        bytes: vec![9; BLOB_CHUNK_BYTES],
    };
    connection.call(chunk).await.unwrap();

    // The disk fills between the last chunk and the finish.
    faults.set(true);
    let error = connection
        .call(Request::BlobUploadFinish { blob_id })
        .await
        .unwrap_err();
    assert_storage_unavailable(&error, "finish");
    let blobs = server.data().join("blobs");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0, "no file is left");
    faults.set(false);
    eprintln!("writes refused: {:?}", faults.refused());

    // Never served, and its record is gone after the next start.
    let fetch = Request::BlobFetch { blob_id, index: 0 };
    let error = connection.call(fetch).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NotFound), "{error}");
    drop(d);
    let (dir, port) = server.stop().await;
    let server = TestServer::start_in(dir, port).await;
    let (dir, _) = server.stop().await;
    let store = redoubt_store_sqlite::SqliteStore::open(&dir.path().join("redoubt.db"))
        .await
        .unwrap();
    assert_eq!(store.blob(&blob_id).await.unwrap(), None);
    assert!(store.incomplete_blobs().await.unwrap().is_empty());
    store.close().await;
}
