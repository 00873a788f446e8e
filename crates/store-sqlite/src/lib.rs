//! The embedded default store: one SQLite file in WAL mode. Writes go through sqlx, log
//! appends through their own thread (`appender`), the hot reads on the calling thread
//! (`reader`).
//!
//! Writes that read before they write run in `BEGIN IMMEDIATE` transactions, so SQLite's
//! single writer lock serialises them and check-then-act sequences (redeeming a code) are
//! atomic. `synchronous = FULL`: a write acknowledged is on disk.

mod appender;
mod cluster;
mod delivery;
mod history;
mod kt;
mod management;
mod migrate;
mod reader;
pub mod snapshot;

use std::path::Path;
use std::time::Duration;

use reader::{Readers, column, column_fixed, column_user};
use redoubt_proto::{ActivationCodeId, Bytes, DeviceId, DeviceName, DisplayName, OrgId, Role, UserName};
use redoubt_proto::{AuditEntry, GroupName, PolicyScope, PolicySettings};
use redoubt_proto::{BlobId, GroupId};
use redoubt_store::{
    ActivationCodeRecord, ActivationCodeState, AppendError, Appended, Applied, AuditEvent, BeginError,
    BlobRecord, Change, Claim, ClaimedPackage, CommandRecord, DeviceRecord, DirectoryGroupRecord, GroupHead,
    GroupRecord, GroupTransition, HistoryRecord, InboxRecord, KtEpochRecord, KtNode, KtSet, KtValue, Lease,
    LogRecord, Membership, NewLogEntry, NodeRecord, ObserverSlot, OrgRecord, RedeemError, Result, Store,
    StoreError, TransferGroupRecord, UserRecord,
};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

/// Connections in the pool. SQLite has one writer; readers proceed in parallel under WAL.
const POOL_CONNECTIONS_MAX: u32 = 4;
/// Each pool connection's page cache: 32 MiB (negative: KiB, in SQLite's terms).
const POOL_PAGE_CACHE: &str = "-32768";
/// Appends waiting for the group-commit task; callers wait beyond this (backpressure).
const APPEND_QUEUE_MAX: usize = 1024;
/// How long a writer waits for the lock before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// Feeds the group-commit appender thread.
    appends: tokio::sync::mpsc::Sender<appender::Job>,
    /// Reads on the calling thread (`reader`).
    pub(crate) readers: std::sync::Arc<Readers>,
    /// The server's metrics, shared with the appender thread and the readers.
    observer: ObserverSlot,
}

pub(crate) fn backend_error(error: sqlx::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// The same for the rusqlite connections (`appender`, `reader`).
pub(crate) fn rusqlite_error(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
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

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// Counts, sequence numbers and epochs are `u64` in Rust and `INTEGER` (signed) in SQL.
pub(crate) fn to_db(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::Limit(format!("{what} out of range")))
}

pub(crate) fn from_db(value: i64, what: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what))
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            // SQLite's default page cache (2 MiB) holds too little of the key directory's
            // tree: an epoch's writes went to the OS for every page they touched. Grown
            // only as pages are read.
            .pragma("cache_size", POOL_PAGE_CACHE);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .connect_with(options)
            .await
            .map_err(backend_error)?;
        restrict_permissions(path)?;
        migrate::run(&pool, unix_now()).await?;
        let (appends, jobs) = tokio::sync::mpsc::channel(APPEND_QUEUE_MAX);
        let observer = ObserverSlot::default();
        appender::start(
            path,
            Duration::from_millis(BUSY_TIMEOUT_MS),
            jobs,
            observer.clone(),
        )?;
        let readers = std::sync::Arc::new(Readers::open(
            path,
            Duration::from_millis(BUSY_TIMEOUT_MS),
            observer.clone(),
        )?);
        Ok(Self {
            pool,
            appends,
            readers,
            observer,
        })
    }

    /// Runs SQLite's own consistency check; `Ok(())` when it reports "ok".
    pub async fn integrity_check(&self) -> Result<()> {
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        if rows == ["ok"] {
            Ok(())
        } else {
            Err(StoreError::Corrupt(rows.join("; ")))
        }
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::Backend(format!("cannot restrict {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn state_text(state: ActivationCodeState) -> &'static str {
    match state {
        ActivationCodeState::Active => "active",
        ActivationCodeState::Used => "used",
        ActivationCodeState::Voided => "voided",
    }
}

fn parse_state(text: &str) -> Result<ActivationCodeState> {
    match text {
        "active" => Ok(ActivationCodeState::Active),
        "used" => Ok(ActivationCodeState::Used),
        "voided" => Ok(ActivationCodeState::Voided),
        _ => Err(corrupt("activation code state")),
    }
}

pub(crate) fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r SqliteRow,
    column: &str,
) -> Result<T> {
    row.try_get(column).map_err(backend_error)
}

pub(crate) fn fixed<const N: usize>(row: &SqliteRow, column: &str) -> Result<[u8; N]> {
    let bytes: Vec<u8> = get(row, column)?;
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{column} has the wrong length")))
}

pub(crate) fn user_name(row: &SqliteRow, column: &str) -> Result<UserName> {
    UserName::parse(&get::<String>(row, column)?).map_err(|_| corrupt("user name"))
}

fn serial_from_db(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt("certificate serial"))
}

fn serial_to_db(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::Backend("certificate serial exceeds i64".into()))
}

fn code_from_row(row: &SqliteRow) -> Result<ActivationCodeRecord> {
    let device_id: Option<Vec<u8>> = get(row, "device_id")?;
    let device_id = device_id
        .map(|bytes| <[u8; 16]>::try_from(bytes).map(DeviceId::from))
        .transpose()
        .map_err(|_| corrupt("device id"))?;
    let failed: i64 = get(row, "failed_attempts")?;
    Ok(ActivationCodeRecord {
        id: ActivationCodeId::from(fixed::<8>(row, "id")?),
        user: user_name(row, "user_name")?,
        secret_hash: fixed::<32>(row, "secret_hash")?,
        created_at_unix_s: get(row, "created_at")?,
        expires_at_unix_s: get(row, "expires_at")?,
        failed_attempts: u32::try_from(failed).map_err(|_| corrupt("failed attempts"))?,
        state: parse_state(&get::<String>(row, "state")?)?,
        device_id,
    })
}

fn device_from_row(row: &rusqlite::Row<'_>) -> Result<DeviceRecord> {
    Ok(DeviceRecord {
        id: DeviceId::from(column_fixed::<16>(row, "id")?),
        user: column_user(row, "user_name")?,
        name: DeviceName::parse(&column::<String>(row, "name")?).map_err(|_| corrupt("device name"))?,
        public_key: Bytes(column_fixed::<32>(row, "public_key")?),
        certificate: column(row, "certificate")?,
        certificate_serial: serial_from_db(column(row, "certificate_serial")?)?,
        certificate_not_after_unix_s: column(row, "certificate_not_after")?,
        created_at_unix_s: column(row, "created_at")?,
        last_seen_at_unix_s: column(row, "last_seen_at")?,
        revoked_at_unix_s: column(row, "revoked_at")?,
        approved_at_unix_s: column(row, "approved_at")?,
        policy_version_acked: u64::try_from(column::<i64>(row, "policy_version_acked")?)
            .map_err(|_| corrupt("policy version"))?,
        approval: column(row, "approval")?,
    })
}

const CODE_COLUMNS: &str =
    "id, user_name, secret_hash, created_at, expires_at, failed_attempts, state, device_id";
/// A device row's columns, as a literal: the statements that name them are built with
/// `concat!` (authentication reads a device per session; no string built per read).
macro_rules! device_columns {
    () => {
        "id, user_name, name, public_key, certificate, certificate_serial, certificate_not_after, \
         created_at, last_seen_at, revoked_at, approved_at, policy_version_acked, approval"
    };
}

pub(crate) async fn insert_user(conn: &mut sqlx::SqliteConnection, user: &UserRecord) -> Result<()> {
    sqlx::query("INSERT INTO users (name, display_name, created_at, disabled_at) VALUES (?, ?, ?, ?)")
        .bind(user.name.as_str())
        .bind(user.display_name.as_ref().map(DisplayName::as_str))
        .bind(user.created_at_unix_s)
        .bind(user.disabled_at_unix_s)
        .execute(&mut *conn)
        .await
        .map_err(|e| insert_error(e, "user", "user"))?;
    for role in &user.roles {
        sqlx::query("INSERT OR IGNORE INTO user_roles (user_name, role) VALUES (?, ?)")
            .bind(user.name.as_str())
            .bind(role.as_str())
            .execute(&mut *conn)
            .await
            .map_err(backend_error)?;
    }
    Ok(())
}

pub(crate) async fn insert_code(
    conn: &mut sqlx::SqliteConnection,
    code: &ActivationCodeRecord,
) -> Result<()> {
    let disabled: Option<Option<i64>> = sqlx::query_scalar("SELECT disabled_at FROM users WHERE name = ?")
        .bind(code.user.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend_error)?;
    if disabled.flatten().is_some() {
        return Err(StoreError::Disabled("user"));
    }
    sqlx::query(
        "INSERT INTO activation_codes
            (id, user_name, secret_hash, created_at, expires_at, failed_attempts, state, device_id)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(code.id.as_bytes().as_slice())
    .bind(code.user.as_str())
    .bind(code.secret_hash.as_slice())
    .bind(code.created_at_unix_s)
    .bind(code.expires_at_unix_s)
    .bind(i64::from(code.failed_attempts))
    .bind(state_text(code.state))
    .bind(code.device_id.as_ref().map(|id| id.as_bytes().to_vec()))
    .execute(conn)
    .await
    .map_err(|e| insert_error(e, "activation code", "user"))?;
    Ok(())
}

/// Users with their roles (space-separated in `roles`, NULL for none), as a literal for
/// `concat!`.
macro_rules! select_users {
    () => {
        "SELECT u.name, u.display_name, u.created_at, u.disabled_at, group_concat(r.role, ' ') AS roles
         FROM users u LEFT JOIN user_roles r ON r.user_name = u.name"
    };
}

fn user_from_row(row: &rusqlite::Row<'_>) -> Result<UserRecord> {
    let display_name: Option<String> = column(row, "display_name")?;
    let roles: Option<String> = column(row, "roles")?;
    let mut roles = roles
        .iter()
        .flat_map(|r| r.split(' '))
        .map(|name| Role::parse(name).ok_or_else(|| corrupt("role")))
        .collect::<Result<Vec<_>>>()?;
    roles.sort();
    Ok(UserRecord {
        name: column_user(row, "name")?,
        display_name: display_name
            .map(|d| DisplayName::parse(&d))
            .transpose()
            .map_err(|_| corrupt("display name"))?,
        roles,
        created_at_unix_s: column(row, "created_at")?,
        disabled_at_unix_s: column(row, "disabled_at")?,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn observe(&self, observer: std::sync::Arc<dyn redoubt_store::StoreObserver>) {
        self.observer.set(observer);
    }

    async fn org(&self) -> Result<Option<OrgRecord>> {
        let row = sqlx::query("SELECT org_id, created_at FROM org WHERE singleton = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        row.map(|row| {
            Ok(OrgRecord {
                org_id: OrgId::from(fixed::<16>(&row, "org_id")?),
                created_at_unix_s: get(&row, "created_at")?,
            })
        })
        .transpose()
    }

    async fn init_org(&self, org: &OrgRecord) -> Result<()> {
        sqlx::query("INSERT INTO org (singleton, org_id, created_at) VALUES (1, ?, ?)")
            .bind(org.org_id.as_bytes().as_slice())
            .bind(org.created_at_unix_s)
            .execute(&self.pool)
            .await
            .map_err(|e| insert_error(e, "organisation", "organisation"))?;
        Ok(())
    }

    async fn create_user(&self, user: &UserRecord, code: &ActivationCodeRecord) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        insert_user(&mut tx, user).await?;
        insert_code(&mut tx, code).await?;
        tx.commit().await.map_err(backend_error)
    }

    async fn user(&self, name: &UserName) -> Result<Option<UserRecord>> {
        self.readers.first(
            concat!(select_users!(), " WHERE u.name = ?1 GROUP BY u.name"),
            [name.as_str()],
            user_from_row,
        )
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        self.readers.all(
            concat!(select_users!(), " GROUP BY u.name ORDER BY u.name"),
            [],
            user_from_row,
        )
    }

    async fn create_activation_code(&self, code: &ActivationCodeRecord) -> Result<()> {
        // The disabled check and the insert in one transaction.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        insert_code(&mut tx, code).await?;
        tx.commit().await.map_err(backend_error)
    }

    async fn activation_code(&self, id: &ActivationCodeId) -> Result<Option<ActivationCodeRecord>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CODE_COLUMNS} FROM activation_codes WHERE id = ?"
        )))
        .bind(id.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?;
        row.as_ref().map(code_from_row).transpose()
    }

    async fn record_failed_activation(
        &self,
        id: &ActivationCodeId,
        attempts_max: u32,
        audit: &AuditEvent,
    ) -> Result<ActivationCodeRecord> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        sqlx::query(
            "UPDATE activation_codes
             SET failed_attempts = failed_attempts + 1,
                 state = CASE WHEN failed_attempts + 1 >= ? THEN 'voided' ELSE state END
             WHERE id = ? AND state = 'active'",
        )
        .bind(i64::from(attempts_max))
        .bind(id.as_bytes().as_slice())
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CODE_COLUMNS} FROM activation_codes WHERE id = ?"
        )))
        .bind(id.as_bytes().as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend_error)?
        .ok_or(StoreError::NotFound("activation code"))?;
        let record = code_from_row(&row)?;
        management::append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend_error)?;
        Ok(record)
    }

    async fn redeem_activation_code(
        &self,
        id: &ActivationCodeId,
        now_unix_s: i64,
        device: &DeviceRecord,
        audit: &AuditEvent,
    ) -> Result<(), RedeemError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        let row = sqlx::query("SELECT state, expires_at FROM activation_codes WHERE id = ?")
            .bind(id.as_bytes().as_slice())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or(RedeemError::Unknown)?;
        match parse_state(&get::<String>(&row, "state")?)? {
            ActivationCodeState::Used => return Err(RedeemError::Used),
            ActivationCodeState::Voided => return Err(RedeemError::Voided),
            ActivationCodeState::Active => {}
        }
        if now_unix_s >= get::<i64>(&row, "expires_at")? {
            return Err(RedeemError::Expired);
        }
        sqlx::query(concat!(
            "INSERT INTO devices (",
            device_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(device.id.as_bytes().as_slice())
        .bind(device.user.as_str())
        .bind(device.name.as_str())
        .bind(device.public_key.as_slice())
        .bind(device.certificate.as_slice())
        .bind(serial_to_db(device.certificate_serial)?)
        .bind(device.certificate_not_after_unix_s)
        .bind(device.created_at_unix_s)
        .bind(device.last_seen_at_unix_s)
        .bind(device.revoked_at_unix_s)
        .bind(device.approved_at_unix_s)
        .bind(i64::try_from(device.policy_version_acked).map_err(|_| corrupt("policy version"))?)
        .bind(device.approval.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, "device", "user"))?;
        // A device joining a user who has others waits for their history.
        sqlx::query(
            "INSERT INTO history_transfers (device_id, user_name, state)
             SELECT ?1, ?2, 'waiting' WHERE EXISTS (
                 SELECT 1 FROM devices WHERE user_name = ?2 AND id != ?1 AND revoked_at IS NULL)",
        )
        .bind(device.id.as_bytes().as_slice())
        .bind(device.user.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
        sqlx::query("UPDATE activation_codes SET state = 'used', device_id = ? WHERE id = ?")
            .bind(device.id.as_bytes().as_slice())
            .bind(id.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        management::append_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(backend_error)?;
        Ok(())
    }

    async fn next_certificate_serial(&self) -> Result<u64> {
        let value: i64 = sqlx::query_scalar(
            "UPDATE counters SET value = value + 1 WHERE name = 'certificate_serial' RETURNING value",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend_error)?;
        serial_from_db(value)
    }

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>> {
        self.readers.first(
            concat!("SELECT ", device_columns!(), " FROM devices WHERE id = ?1"),
            [id.as_bytes().as_slice()],
            device_from_row,
        )
    }

    async fn list_devices(&self, user: Option<&UserName>) -> Result<Vec<DeviceRecord>> {
        match user {
            Some(user) => self.readers.all(
                concat!(
                    "SELECT ",
                    device_columns!(),
                    " FROM devices WHERE user_name = ?1 ORDER BY created_at, id"
                ),
                [user.as_str()],
                device_from_row,
            ),
            None => self.readers.all(
                concat!(
                    "SELECT ",
                    device_columns!(),
                    " FROM devices ORDER BY user_name, created_at, id"
                ),
                [],
                device_from_row,
            ),
        }
    }

    async fn record_last_seen(&self, seen: &[(DeviceId, i64)]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(backend_error)?;
        for (id, at) in seen {
            sqlx::query(
                "UPDATE devices SET last_seen_at = ?1 WHERE id = ?2 AND (last_seen_at IS NULL OR last_seen_at < ?1)",
            )
            .bind(at)
            .bind(id.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        }
        tx.commit().await.map_err(backend_error)
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
            "SELECT COALESCE(SUM(bytes_total), 0) FROM blobs
             WHERE uploader = ? AND created_at >= ?
               AND group_id NOT IN (SELECT group_id FROM transfer_groups)",
        )
        .bind(uploader.as_bytes().as_slice())
        .bind(since_unix_s)
        .fetch_one(&self.pool)
        .await
        .map_err(backend_error)?;
        from_db(bytes, "attachment bytes")
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
        sqlx::query("DELETE FROM kt_sets WHERE epoch > ?")
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
        sqlx::query_scalar("SELECT head FROM kt_heads WHERE epoch = ?")
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
        self.readers.close();
        self.pool.close().await;
    }
}
