//! The clustered store: PostgreSQL through sqlx, correct with several server nodes on one
//! database.
//!
//! No correctness rests on anything held in one process: every check-then-act sequence
//! runs in one transaction, under row locks PostgreSQL holds until it commits (READ
//! COMMITTED, the default). Log appends go through a group-commit task (`appender`) as in
//! SQLite, each append under its group row's lock, so sequence numbers are dense and
//! assigned in commit order whichever node appends.
//!
//! [`PgStore::bus`] gives the cluster's wake-ups between nodes ([`PgBus`], on `LISTEN` and
//! `NOTIFY`); the `testing` feature, a throwaway PostgreSQL for tests (`testing`).
//!
//! Lock order, so that transactions of different nodes do not wait for each other in a
//! circle: activation code → user → device(s), in id order → group(s), in id order →
//! history record → counter → audit head, always last (a transaction holding it waits for
//! nothing). Where the order cannot hold (an administrative batch changes rows in the order
//! given), PostgreSQL detects the deadlock, aborts one transaction, and it is run again
//! (a few times, `TRANSACTION_ATTEMPTS_MAX`).

/// Runs `$body` in a transaction of `$store`'s pool and commits it. When PostgreSQL aborted
/// it for a conflict with a concurrent transaction (a deadlock, a serialization failure), it
/// runs again from the start, up to [`TRANSACTION_ATTEMPTS_MAX`] times in all. `$body` may
/// use `?` and `return` with errors of type `$error`; it reaches the database only through
/// `$tx`, so a failed attempt leaves nothing behind.
macro_rules! transaction {
    ($store:expr, $error:ty, |$tx:ident| $body:block) => {{
        let mut attempt = 1;
        loop {
            let outcome: ::std::result::Result<_, $error> = async {
                let mut $tx = $store.pool.begin().await.map_err($crate::backend_error)?;
                let value = $body;
                $tx.commit().await.map_err($crate::backend_error)?;
                Ok(value)
            }
            .await;
            match outcome {
                Err(error)
                    if attempt < $crate::TRANSACTION_ATTEMPTS_MAX
                        && $crate::Conflict::is_conflict(&error) =>
                {
                    $crate::backoff(attempt).await;
                    attempt += 1;
                }
                outcome => break outcome,
            }
        }
    }};
}

mod appender;
mod bus;
mod cluster;
mod connect;
mod delivery;
mod directory;
mod history;
mod import;
mod kt;
mod management;
mod migrate;
#[cfg(feature = "testing")]
pub mod testing;

pub use bus::PgBus;
pub use import::ImportReport;

use std::time::Duration;

use redoubt_proto::{
    ActivationCodeId, AuditEntry, BlobId, DeviceId, GroupId, GroupName, PolicyScope, PolicySettings, UserName,
};
use redoubt_store::{
    ActivationCodeRecord, AppendError, Appended, Applied, AuditEvent, BeginError, BlobRecord, Change, Claim,
    ClaimedPackage, CommandRecord, DeviceRecord, DirectoryGroupRecord, GroupHead, GroupRecord,
    GroupTransition, HistoryRecord, InboxRecord, KtEpochRecord, KtNode, KtSet, KtValue, Lease, LogRecord,
    Membership, NewLogEntry, NodeRecord, OrgRecord, RedeemError, Result, Store, StoreError,
    TransferGroupRecord, UserRecord,
};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row};

/// Connections in each node's pool. The database's `max_connections` must allow this many
/// per node, plus one for its bus ([`PgBus`]) and one while it starts (migrations).
const POOL_CONNECTIONS_MAX: u32 = 16;
/// How long an operation waits for a free connection (or a new one) before failing.
const POOL_ACQUIRE_TIMEOUT_MS: u64 = 10_000;
/// Appends waiting for the group-commit task; callers wait beyond this (backpressure).
const APPEND_QUEUE_MAX: usize = 1024;
/// Runs of a transaction PostgreSQL aborts for conflicts with concurrent ones, in all.
pub(crate) const TRANSACTION_ATTEMPTS_MAX: u32 = 5;

/// The message of a transaction PostgreSQL aborted for a conflict with a concurrent one
/// (SQLSTATE 40001, 40P01). It starts the error's text, which is how [`Conflict`] knows,
/// through the trait's error types, that running the transaction again may succeed.
const CONFLICT: &str = "transaction aborted for a conflict with a concurrent one";

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// Feeds the group-commit task.
    appends: tokio::sync::mpsc::Sender<appender::Job>,
    /// The server's metrics, shared with the group-commit task. Reads are not timed here:
    /// they go through sqlx everywhere.
    observer: redoubt_store::ObserverSlot,
}

/// Whether PostgreSQL aborted the transaction for a conflict with a concurrent one, so
/// that running it again may succeed. I/O errors are not: a commit whose answer was lost
/// may have happened.
pub(crate) fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

pub(crate) fn backend_error(error: sqlx::Error) -> StoreError {
    StoreError::Backend(backend_message(&error))
}

/// What [`backend_error`] says.
pub(crate) fn backend_message(error: &sqlx::Error) -> String {
    if is_conflict(error) {
        format!("{CONFLICT}: {error}")
    } else {
        error.to_string()
    }
}

/// Maps a failed insert: unique violations become `AlreadyExists(what)`, foreign-key
/// violations `NotFound(parent)`.
pub(crate) fn insert_error(error: sqlx::Error, what: &'static str, parent: &'static str) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            return StoreError::AlreadyExists(what);
        }
        if db.is_foreign_key_violation() {
            return StoreError::NotFound(parent);
        }
    }
    backend_error(error)
}

/// Errors that may say "run the transaction again" ([`CONFLICT`]).
pub(crate) trait Conflict {
    fn is_conflict(&self) -> bool;
}

impl Conflict for StoreError {
    fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Backend(message) if message.starts_with(CONFLICT))
    }
}

impl Conflict for RedeemError {
    fn is_conflict(&self) -> bool {
        matches!(self, RedeemError::Store(error) if error.is_conflict())
    }
}

impl Conflict for BeginError {
    fn is_conflict(&self) -> bool {
        matches!(self, BeginError::Store(error) if error.is_conflict())
    }
}

/// A short, jittered wait before running a conflicting transaction again, so that the
/// transactions that collided do not collide again in step.
pub(crate) async fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    // A fresh `RandomState` is seeded differently each time: jitter without a rand crate.
    let jitter_us = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 5_000;
    tokio::time::sleep(Duration::from_micros(u64::from(attempt) * 2_000 + jitter_us)).await;
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// Counts, sequence numbers and serials are `u64` in Rust and `BIGINT` (signed) in SQL.
pub(crate) fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::Backend(format!("{what} exceeds i64")))
}

pub(crate) fn from_db(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what))
}

pub(crate) fn get<'r, T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T> {
    row.try_get(column).map_err(backend_error)
}

/// A column holding exactly `N` bytes.
pub(crate) fn fixed<const N: usize>(row: &PgRow, column: &str) -> Result<[u8; N]> {
    let bytes: Vec<u8> = get(row, column)?;
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{column} has the wrong length")))
}

/// A nullable column holding exactly `N` bytes.
pub(crate) fn optional_fixed<const N: usize>(row: &PgRow, column: &str) -> Result<Option<[u8; N]>> {
    get::<Option<Vec<u8>>>(row, column)?
        .map(|bytes| {
            bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("{column} has the wrong length")))
        })
        .transpose()
}

/// A `BIGINT` column holding a `u64`.
pub(crate) fn unsigned(row: &PgRow, column: &str) -> Result<u64> {
    from_db(get(row, column)?, column)
}

pub(crate) fn user_name(row: &PgRow, column: &str) -> Result<UserName> {
    UserName::parse(&get::<String>(row, column)?).map_err(|_| corrupt("user name"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`,
    /// with `sslmode`, `sslrootcert` and the other libpq parameters sqlx knows) and applies
    /// pending migrations. Errors name the server and database, never the password.
    pub async fn connect(url: &str) -> Result<Self> {
        let target = connect::Target::parse(url)?;
        // One connection first, made once: an unreachable server fails now with its own
        // message, where the pool would retry until its timeout and say only that.
        let mut conn = target.connect().await?;
        migrate::run(&mut conn, unix_now()).await?;
        conn.close()
            .await
            .map_err(|e| target.error("cannot close the migration connection to", &e))?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_millis(POOL_ACQUIRE_TIMEOUT_MS))
            .connect_lazy_with(target.options.clone());
        let (appends, jobs) = tokio::sync::mpsc::channel(APPEND_QUEUE_MAX);
        let observer = redoubt_store::ObserverSlot::default();
        appender::start(pool.clone(), jobs, observer.clone());
        Ok(Self {
            pool,
            appends,
            observer,
        })
    }

    /// Whether the database holds nothing yet: no organisation and no user.
    pub async fn is_empty(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM org) AND NOT EXISTS (SELECT 1 FROM users)")
            .fetch_one(&self.pool)
            .await
            .map_err(backend_error)
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn observe(&self, observer: std::sync::Arc<dyn redoubt_store::StoreObserver>) {
        self.observer.set(observer);
    }

    async fn org(&self) -> Result<Option<OrgRecord>> {
        self.org_impl().await
    }

    async fn init_org(&self, org: &OrgRecord) -> Result<()> {
        self.init_org_impl(org).await
    }

    async fn create_user(&self, user: &UserRecord, code: &ActivationCodeRecord) -> Result<()> {
        self.create_user_impl(user, code).await
    }

    async fn user(&self, name: &UserName) -> Result<Option<UserRecord>> {
        self.user_impl(name).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.list_users_impl().await
    }

    async fn create_activation_code(&self, code: &ActivationCodeRecord) -> Result<()> {
        self.create_activation_code_impl(code).await
    }

    async fn activation_code(&self, id: &ActivationCodeId) -> Result<Option<ActivationCodeRecord>> {
        self.activation_code_impl(id).await
    }

    async fn record_failed_activation(
        &self,
        id: &ActivationCodeId,
        attempts_max: u32,
        audit: &AuditEvent,
    ) -> Result<ActivationCodeRecord> {
        self.record_failed_activation_impl(id, attempts_max, audit).await
    }

    async fn redeem_activation_code(
        &self,
        id: &ActivationCodeId,
        now_unix_s: i64,
        device: &DeviceRecord,
        audit: &AuditEvent,
    ) -> Result<(), RedeemError> {
        self.redeem_activation_code_impl(id, now_unix_s, device, audit)
            .await
    }

    async fn next_certificate_serial(&self) -> Result<u64> {
        self.next_certificate_serial_impl().await
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>> {
        self.device_impl(id).await
    }

    async fn list_devices(&self, user: Option<&UserName>) -> Result<Vec<DeviceRecord>> {
        self.list_devices_impl(user).await
    }

    async fn record_last_seen(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        self.record_last_seen_impl(seen).await
    }

    async fn publish_key_packages(
        &self,
        device: &DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        pool_max: u32,
    ) -> Result<u32> {
        self.publish_key_packages_impl(device, one_time, last_resort, pool_max)
            .await
    }

    async fn claim_key_packages(
        &self,
        users: &[UserName],
        except: &[DeviceId],
    ) -> Result<Vec<ClaimedPackage>> {
        self.claim_key_packages_impl(users, except).await
    }

    async fn create_group(&self, group: &GroupRecord, creator: &DeviceId) -> Result<()> {
        self.create_group_impl(group, creator).await
    }

    async fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>> {
        self.group_impl(id).await
    }

    async fn group_head(&self, id: &GroupId) -> Result<Option<GroupHead>> {
        self.group_head_impl(id).await
    }

    async fn membership(&self, group: &GroupId, device: &DeviceId) -> Result<Option<Membership>> {
        self.membership_impl(group, device).await
    }

    async fn append(
        &self,
        entry: &NewLogEntry<'_>,
        transition: Option<&GroupTransition>,
    ) -> Result<Appended, AppendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = appender::Job::Append(appender::AppendJob {
            entry: appender::OwnedLogEntry {
                group: entry.group,
                sender: entry.sender,
                client_message_id: entry.client_message_id,
                message: entry.message.to_vec(),
                created_at_unix_s: entry.created_at_unix_s,
            },
            transition: transition.cloned(),
            reply,
        });
        let closed = || AppendError::Store(StoreError::Backend("the store is closed".into()));
        self.appends.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn find_submission(
        &self,
        group: &GroupId,
        sender: &DeviceId,
        client_message_id: &[u8; 16],
    ) -> Result<Option<u64>> {
        self.find_submission_impl(group, sender, client_message_id).await
    }

    async fn log_entries(&self, group: &GroupId, after_seq: u64, limit: u32) -> Result<Vec<LogRecord>> {
        self.log_entries_impl(group, after_seq, limit).await
    }

    async fn handshakes_after(&self, group: &GroupId, after_seq: u64) -> Result<Vec<LogRecord>> {
        self.handshakes_after_impl(group, after_seq).await
    }

    async fn device_groups(&self, device: &DeviceId) -> Result<Vec<(GroupId, GroupHead, Membership)>> {
        self.device_groups_impl(device).await
    }

    async fn group_members(&self, group: &GroupId) -> Result<Vec<DeviceId>> {
        self.group_members_impl(group).await
    }

    async fn inbox(&self, device: &DeviceId) -> Result<Vec<InboxRecord>> {
        self.inbox_impl(device).await
    }

    async fn inbox_ack(&self, device: &DeviceId, ids: &[u64]) -> Result<()> {
        self.inbox_ack_impl(device, ids).await
    }

    async fn ack(&self, group: &GroupId, device: &DeviceId, seq: u64) -> Result<()> {
        self.ack_impl(group, device, seq).await
    }

    async fn prune_logs(&self, older_than_unix_s: i64) -> Result<u64> {
        self.prune_logs_impl(older_than_unix_s).await
    }

    async fn create_blob(&self, blob: &BlobRecord) -> Result<()> {
        self.create_blob_impl(blob).await
    }

    async fn blob(&self, id: &BlobId) -> Result<Option<BlobRecord>> {
        self.blob_impl(id).await
    }

    async fn complete_blob(&self, id: &BlobId) -> Result<()> {
        self.complete_blob_impl(id).await
    }

    async fn delete_blob(&self, id: &BlobId) -> Result<()> {
        self.delete_blob_impl(id).await
    }

    async fn put_blob_chunk(&self, id: &BlobId, index: u32, data: &[u8]) -> Result<()> {
        self.put_blob_chunk_impl(id, index, data).await
    }

    async fn blob_chunk(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>> {
        self.blob_chunk_impl(id, index).await
    }

    async fn incomplete_blobs(&self) -> Result<Vec<BlobId>> {
        self.incomplete_blobs_impl().await
    }

    async fn group_blobs(&self, group: &GroupId) -> Result<Vec<BlobId>> {
        self.group_blobs_impl(group).await
    }

    async fn attachment_bytes_since(&self, uploader: &DeviceId, since_unix_s: i64) -> Result<u64> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(bytes_total), 0)::BIGINT FROM blobs
             WHERE uploader = $1 AND created_at >= $2
               AND group_id NOT IN (SELECT group_id FROM transfer_groups)",
        )
        .bind(uploader.as_bytes())
        .bind(since_unix_s)
        .fetch_one(&self.pool)
        .await
        .map_err(backend_error)?;
        u64::try_from(bytes).map_err(|_| StoreError::Corrupt("attachment bytes".into()))
    }

    async fn history_records(&self, user: Option<&UserName>) -> Result<Vec<HistoryRecord>> {
        self.history_records_impl(user).await
    }

    async fn begin_history(
        &self,
        transfer: &TransferGroupRecord,
        claim: Option<Claim>,
    ) -> Result<Option<GroupId>, BeginError> {
        self.begin_history_impl(transfer, claim).await
    }

    async fn history_sent(
        &self,
        target: &DeviceId,
        source: &DeviceId,
        messages: u32,
        at_unix_s: i64,
    ) -> Result<()> {
        self.history_sent_impl(target, source, messages, at_unix_s).await
    }

    async fn transfer_group(&self, group: &GroupId) -> Result<Option<TransferGroupRecord>> {
        self.transfer_group_impl(group).await
    }

    async fn history_received(&self, group: &GroupId, target: &DeviceId, at_unix_s: i64) -> Result<()> {
        self.history_received_impl(group, target, at_unix_s).await
    }

    async fn apply(&self, changes: &[Change], audit: &[AuditEvent]) -> Result<Applied> {
        self.apply_impl(changes, audit).await
    }

    async fn policy_version(&self) -> Result<u64> {
        self.policy_version_impl().await
    }

    async fn policies(&self) -> Result<Vec<(PolicyScope, PolicySettings)>> {
        self.policies_impl().await
    }

    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.settings_impl(prefix).await
    }

    async fn directory_groups(&self) -> Result<Vec<DirectoryGroupRecord>> {
        self.directory_groups_impl().await
    }

    async fn user_groups(&self, user: &UserName) -> Result<Vec<GroupName>> {
        self.user_groups_impl(user).await
    }

    async fn acknowledge_policy(&self, device: &DeviceId, version: u64) -> Result<()> {
        self.acknowledge_policy_impl(device, version).await
    }

    async fn commands(&self, device: Option<&DeviceId>, pending_only: bool) -> Result<Vec<CommandRecord>> {
        self.commands_impl(device, pending_only).await
    }

    async fn audit_entries(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.audit_entries_impl(after_seq, limit).await
    }

    async fn audit_head(&self) -> Result<(u64, [u8; 32])> {
        self.audit_head_impl().await
    }

    async fn add_audit_checkpoint(&self, seq: u64, document: &[u8]) -> Result<()> {
        self.add_audit_checkpoint_impl(seq, document).await
    }

    async fn audit_checkpoints(&self, after_seq: u64, through_seq: u64) -> Result<Vec<Vec<u8>>> {
        self.audit_checkpoints_impl(after_seq, through_seq).await
    }

    async fn node_heartbeat(&self, node: &NodeRecord) -> Result<()> {
        self.node_heartbeat_impl(node).await
    }

    async fn nodes(&self, forget_before_unix_s: i64) -> Result<Vec<NodeRecord>> {
        self.nodes_impl(forget_before_unix_s).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        self.acquire_lease_impl(name, holder, now_ms, ttl_ms).await
    }

    async fn lease_is_current(&self, name: &str, token: u64) -> Result<bool> {
        self.lease_is_current_impl(name, token).await
    }

    async fn kt_write(&self, nodes: &[KtNode], values: &[KtValue]) -> Result<()> {
        self.kt_write_impl(nodes, values).await
    }

    async fn kt_nodes(&self, keys: &[Vec<u8>]) -> Result<Vec<KtNode>> {
        self.kt_nodes_impl(keys).await
    }

    async fn kt_values(&self, labels: &[Vec<u8>]) -> Result<Vec<KtValue>> {
        self.kt_values_impl(labels).await
    }

    async fn kt_put_sets(&self, sets: &[KtSet]) -> Result<()> {
        self.kt_put_sets_impl(sets).await
    }

    async fn kt_sets(&self, user: &UserName) -> Result<Vec<KtSet>> {
        self.kt_sets_impl(user).await
    }

    async fn kt_latest_sets(&self) -> Result<Vec<KtSet>> {
        self.kt_latest_sets_impl().await
    }

    async fn kt_finish_epoch(&self, epoch: &KtEpochRecord, done: &[UserName]) -> Result<()> {
        self.kt_finish_epoch_impl(epoch, done).await
    }

    async fn kt_heads(&self, after: u64, limit: u32) -> Result<Vec<KtEpochRecord>> {
        self.kt_heads_impl(after, limit).await
    }

    async fn kt_latest_head(&self) -> Result<Option<(u64, Vec<u8>)>> {
        self.kt_latest_head_impl().await
    }

    async fn kt_mark_changed(&self, users: &[UserName]) -> Result<()> {
        self.kt_mark_changed_impl(users).await
    }

    async fn kt_changed(&self, limit: u32) -> Result<Vec<UserName>> {
        self.kt_changed_impl(limit).await
    }

    async fn kt_drop_sets_after(&self, epoch: u64) -> Result<()> {
        let Ok(epoch) = i64::try_from(epoch) else {
            return Ok(());
        };
        sqlx::query("DELETE FROM kt_sets WHERE epoch > $1")
            .bind(epoch)
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn kt_head(&self, epoch: u64) -> Result<Option<Vec<u8>>> {
        let Ok(epoch) = i64::try_from(epoch) else {
            return Ok(None);
        };
        sqlx::query_scalar("SELECT head FROM kt_heads WHERE epoch = $1")
            .bind(epoch)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)
    }

    async fn kt_unmark(&self, users: &[UserName]) -> Result<()> {
        self.kt_unmark_impl(users).await
    }

    async fn kt_put_auditor_signature(
        &self,
        auditor_key: &[u8; 32],
        epoch: u64,
        document: &[u8],
    ) -> Result<()> {
        self.kt_put_auditor_signature_impl(auditor_key, epoch, document)
            .await
    }

    async fn kt_auditor_signatures(&self) -> Result<Vec<Vec<u8>>> {
        self.kt_auditor_signatures_impl().await
    }

    async fn close(&self) {
        let (reply, closed) = tokio::sync::oneshot::channel();
        if self.appends.send(appender::Job::Close(reply)).await.is_ok() {
            let _ = closed.await;
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_conflicts_are_run_again() {
        let conflict = StoreError::Backend(format!("{CONFLICT}: deadlock detected"));
        assert!(conflict.is_conflict());
        assert!(RedeemError::Store(conflict).is_conflict());
        assert!(!StoreError::Backend("connection reset".into()).is_conflict());
        assert!(!StoreError::AlreadyExists("user").is_conflict());
        assert!(!RedeemError::Used.is_conflict());
    }
}
