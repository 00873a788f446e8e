//! Moving a single server into PostgreSQL: [`PgStore::import_sqlite`] copies its SQLite
//! database and its complete blobs into an empty PostgreSQL database, in one transaction.
//!
//! Every table by name, parents first, rows as they are: the audit log keeps its numbers
//! and hashes (its chain and the signed checkpoints stay valid), groups their sequence
//! numbers and states, devices their certificates. Counters and identity sequences carry
//! on after the highest number SQLite ever gave. Left out: incomplete blobs (an upload
//! that never finished), the node's heartbeat and leases (a cluster starts afresh).

use std::collections::BTreeMap;
use std::path::Path;

use futures_util::TryStreamExt;
use redoubt_proto::{BLOB_CHUNK_BYTES, BlobId};
use redoubt_store::{Result, StoreError};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, PgConnection, Postgres, Row, SqliteConnection};

use crate::{PgStore, backend_error, from_db};

/// The SQLite schema this import knows (`crates/store-sqlite/migrations`): every table of
/// it is copied. A database of another version is refused.
const SQLITE_SCHEMA_VERSION: i64 = 12;
/// Rows sent to PostgreSQL in one statement at most...
const ROWS_PER_STATEMENT_MAX: usize = 1_000;
/// ... and bytes (blob chunks, messages, group states), roughly.
const BYTES_PER_STATEMENT_MAX: usize = 8 * 1024 * 1024;

/// What [`PgStore::import_sqlite`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows copied, per table.
    pub rows: BTreeMap<String, u64>,
    /// Complete blobs whose bytes were copied into the database.
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// How a column is read from SQLite and sent to PostgreSQL (always nullable).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    /// An INTEGER 0 or 1 in SQLite.
    Bool,
    Text,
    Bytes,
}

/// One table: the same columns read from SQLite and written to PostgreSQL, whose
/// statement takes one array per column.
struct Table {
    name: &'static str,
    kinds: &'static [Kind],
    select: &'static str,
    insert: &'static str,
}

use Kind::{Bool, Bytes, Int, Text};

/// Parents first. Tables with an identity column insert its values as they are
/// (OVERRIDING SYSTEM VALUE); their sequences are moved on afterwards.
const TABLES: &[Table] = &[
    Table {
        name: "org",
        kinds: &[Bool, Bytes, Int],
        select: "SELECT singleton, org_id, created_at FROM org",
        insert: "INSERT INTO org (singleton, org_id, created_at)
                 SELECT * FROM unnest($1::boolean[], $2::bytea[], $3::bigint[])",
    },
    Table {
        name: "users",
        kinds: &[Text, Text, Int, Int],
        select: "SELECT name, display_name, created_at, disabled_at FROM users",
        insert: "INSERT INTO users (name, display_name, created_at, disabled_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])",
    },
    Table {
        name: "user_roles",
        kinds: &[Text, Text],
        select: "SELECT user_name, role FROM user_roles",
        insert: "INSERT INTO user_roles (user_name, role) SELECT * FROM unnest($1::text[], $2::text[])",
    },
    Table {
        name: "devices",
        kinds: &[
            Bytes, Text, Text, Bytes, Bytes, Int, Int, Int, Int, Int, Int, Int, Bytes,
        ],
        select: "SELECT id, user_name, name, public_key, certificate, certificate_serial,
                        certificate_not_after, created_at, last_seen_at, revoked_at, approved_at,
                        policy_version_acked, approval
                 FROM devices",
        insert: "INSERT INTO devices (id, user_name, name, public_key, certificate, certificate_serial,
                                      certificate_not_after, created_at, last_seen_at, revoked_at,
                                      approved_at, policy_version_acked, approval)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bytea[], $5::bytea[],
                                      $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                                      $10::bigint[], $11::bigint[], $12::bigint[], $13::bytea[])",
    },
    Table {
        name: "activation_codes",
        kinds: &[Bytes, Text, Bytes, Int, Int, Int, Text, Bytes],
        select: "SELECT id, user_name, secret_hash, created_at, expires_at, failed_attempts, state, device_id
                 FROM activation_codes",
        insert: "INSERT INTO activation_codes (id, user_name, secret_hash, created_at, expires_at,
                                               failed_attempts, state, device_id)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::bytea[], $4::bigint[], $5::bigint[],
                                      $6::bigint[], $7::text[], $8::bytea[])",
    },
    Table {
        name: "key_packages",
        kinds: &[Int, Bytes, Bytes, Bool],
        select: "SELECT id, device_id, key_package, last_resort FROM key_packages",
        insert: "INSERT INTO key_packages (id, device_id, key_package, last_resort) OVERRIDING SYSTEM VALUE
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::boolean[])",
    },
    Table {
        name: "groups",
        kinds: &[Bytes, Int, Bytes, Int, Int, Int],
        select: "SELECT id, epoch, state, state_seq, last_seq, created_at FROM groups",
        insert: "INSERT INTO groups (id, epoch, state, state_seq, last_seq, created_at)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bigint[],
                                      $6::bigint[])",
    },
    Table {
        name: "group_members",
        kinds: &[Bytes, Bytes, Int, Int, Int],
        select: "SELECT group_id, device_id, joined_seq, removed_seq, acked_seq FROM group_members",
        insert: "INSERT INTO group_members (group_id, device_id, joined_seq, removed_seq, acked_seq)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[])",
    },
    Table {
        name: "group_log",
        kinds: &[Bytes, Int, Bytes, Bytes, Bytes, Int, Bool],
        select: "SELECT group_id, seq, sender, client_message_id, message, created_at, handshake
                 FROM group_log",
        insert: "INSERT INTO group_log (group_id, seq, sender, client_message_id, message, created_at,
                                        handshake)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[],
                                      $6::bigint[], $7::boolean[])",
    },
    Table {
        name: "inbox",
        kinds: &[Int, Bytes, Bytes, Bytes, Int],
        select: "SELECT id, device_id, group_id, welcome, joined_seq FROM inbox",
        insert: "INSERT INTO inbox (id, device_id, group_id, welcome, joined_seq) OVERRIDING SYSTEM VALUE
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bigint[])",
    },
    Table {
        name: "blobs",
        kinds: &[Bytes, Bytes, Bytes, Int, Int, Bool, Int],
        select: "SELECT id, group_id, uploader, bytes_total, chunk_count, complete, created_at
                 FROM blobs WHERE complete = 1",
        insert: "INSERT INTO blobs (id, group_id, uploader, bytes_total, chunk_count, complete, created_at)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[], $5::bigint[],
                                      $6::boolean[], $7::bigint[])",
    },
    Table {
        name: "directory_groups",
        kinds: &[Text, Int],
        select: "SELECT name, created_at FROM directory_groups",
        insert: "INSERT INTO directory_groups (name, created_at) SELECT * FROM unnest($1::text[], $2::bigint[])",
    },
    Table {
        name: "directory_group_members",
        kinds: &[Text, Text],
        select: "SELECT group_name, user_name FROM directory_group_members",
        insert: "INSERT INTO directory_group_members (group_name, user_name)
                 SELECT * FROM unnest($1::text[], $2::text[])",
    },
    Table {
        name: "policies",
        kinds: &[Text, Text, Bytes, Int],
        select: "SELECT scope_kind, scope_name, settings, updated_at FROM policies",
        insert: "INSERT INTO policies (scope_kind, scope_name, settings, updated_at)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[])",
    },
    Table {
        name: "device_commands",
        kinds: &[Int, Bytes, Text, Text, Int, Int],
        select: "SELECT id, device_id, kind, issued_by, issued_at, acked_at FROM device_commands",
        insert: "INSERT INTO device_commands (id, device_id, kind, issued_by, issued_at, acked_at)
                 OVERRIDING SYSTEM VALUE
                 SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::bigint[],
                                      $6::bigint[])",
    },
    Table {
        name: "audit_log",
        kinds: &[Int, Int, Text, Bytes, Text, Text, Text, Bytes, Bytes],
        select: "SELECT seq, at, actor_user, actor_device, action, subject, details, prev_hash, hash
                 FROM audit_log",
        insert: "INSERT INTO audit_log (seq, at, actor_user, actor_device, action, subject, details,
                                        prev_hash, hash)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], $5::text[],
                                      $6::text[], $7::text[], $8::bytea[], $9::bytea[])",
    },
    Table {
        name: "audit_checkpoints",
        kinds: &[Int, Bytes],
        select: "SELECT seq, document FROM audit_checkpoints",
        insert: "INSERT INTO audit_checkpoints (seq, document) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
    },
    Table {
        name: "settings",
        kinds: &[Text, Bytes],
        select: "SELECT key, value FROM settings",
        insert: "INSERT INTO settings (key, value) SELECT * FROM unnest($1::text[], $2::bytea[])",
    },
    Table {
        name: "history_transfers",
        kinds: &[Bytes, Text, Text, Bytes, Bytes, Int, Int, Int, Int],
        select: "SELECT device_id, user_name, state, source_device, group_id, claimed_at, sent_at,
                        received_at, messages
                 FROM history_transfers",
        insert: "INSERT INTO history_transfers (device_id, user_name, state, source_device, group_id,
                                                claimed_at, sent_at, received_at, messages)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::bytea[], $5::bytea[],
                                      $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])",
    },
    Table {
        name: "transfer_groups",
        kinds: &[Bytes, Bytes, Bytes, Int],
        select: "SELECT group_id, target_device, source_device, created_at FROM transfer_groups",
        insert: "INSERT INTO transfer_groups (group_id, target_device, source_device, created_at)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bigint[])",
    },
    // The key directory whole: devices and auditors hold the heads already published, and
    // the tree and values must go on from them.
    Table {
        name: "kt_nodes",
        kinds: &[Bytes, Bytes],
        select: "SELECT key, record FROM kt_nodes",
        insert: "INSERT INTO kt_nodes (key, record) SELECT * FROM unnest($1::bytea[], $2::bytea[])",
    },
    Table {
        name: "kt_values",
        kinds: &[Bytes, Int, Int, Bytes],
        select: "SELECT label, epoch, version, record FROM kt_values",
        insert: "INSERT INTO kt_values (label, epoch, version, record)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[])",
    },
    Table {
        name: "kt_sets",
        kinds: &[Text, Int, Bytes],
        select: "SELECT user_name, epoch, device_set FROM kt_sets",
        insert: "INSERT INTO kt_sets (user_name, epoch, device_set)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])",
    },
    Table {
        name: "kt_heads",
        kinds: &[Int, Bytes, Bytes],
        select: "SELECT epoch, head, proof FROM kt_heads",
        insert: "INSERT INTO kt_heads (epoch, head, proof) SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])",
    },
    Table {
        name: "kt_changed",
        kinds: &[Text],
        select: "SELECT user_name FROM kt_changed",
        insert: "INSERT INTO kt_changed (user_name) SELECT * FROM unnest($1::text[])",
    },
    Table {
        name: "kt_auditors",
        kinds: &[Bytes, Int, Bytes],
        select: "SELECT auditor_key, epoch, document FROM kt_auditors",
        insert: "INSERT INTO kt_auditors (auditor_key, epoch, document)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[])",
    },
];

/// One column's values of the rows waiting to be sent.
enum Column {
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    fn new(kind: Kind) -> Self {
        match kind {
            Int => Column::Int(Vec::new()),
            Bool => Column::Bool(Vec::new()),
            Text => Column::Text(Vec::new()),
            Bytes => Column::Bytes(Vec::new()),
        }
    }

    /// Adds row `row`'s value at `index`; returns its size in bytes.
    fn push(&mut self, row: &SqliteRow, index: usize) -> std::result::Result<usize, sqlx::Error> {
        Ok(match self {
            Column::Int(values) => {
                values.push(row.try_get(index)?);
                8
            }
            Column::Bool(values) => {
                let value: Option<i64> = row.try_get(index)?;
                values.push(value.map(|v| v != 0));
                1
            }
            Column::Text(values) => {
                let value: Option<String> = row.try_get(index)?;
                let size = value.as_ref().map_or(0, String::len);
                values.push(value);
                size
            }
            Column::Bytes(values) => {
                let value: Option<Vec<u8>> = row.try_get(index)?;
                let size = value.as_ref().map_or(0, Vec::len);
                values.push(value);
                size
            }
        })
    }

    fn bind<'q>(self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        match self {
            Column::Int(values) => query.bind(values),
            Column::Bool(values) => query.bind(values),
            Column::Text(values) => query.bind(values),
            Column::Bytes(values) => query.bind(values),
        }
    }
}

fn sqlite_error(path: &Path) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |error| {
        StoreError::Backend(format!(
            "cannot read the SQLite database {}: {error}",
            path.display()
        ))
    }
}

impl PgStore {
    /// Copies a single server's SQLite database at `database` (its schema at this build's
    /// version, as the server leaves it after opening it) into this database, which must
    /// be empty ([`PgStore::is_empty`]); `blob` reads a complete blob's bytes (from the old
    /// data folder). One transaction: everything is copied, or nothing. The server must not
    /// run meanwhile.
    pub async fn import_sqlite(
        &self,
        database: &Path,
        blob: &mut (dyn FnMut(&BlobId) -> std::io::Result<Vec<u8>> + Send),
    ) -> Result<ImportReport> {
        let read_error = sqlite_error(database);
        let options = SqliteConnectOptions::new()
            .filename(database)
            .read_only(true)
            .create_if_missing(false);
        let mut sqlite = SqliteConnection::connect_with(&options)
            .await
            .map_err(&read_error)?;
        // One read transaction: every table as of one moment.
        let mut source = sqlite.begin().await.map_err(&read_error)?;
        let version: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
            .fetch_one(&mut *source)
            .await
            .map_err(&read_error)?;
        if version != Some(SQLITE_SCHEMA_VERSION) {
            return Err(StoreError::Corrupt(format!(
                "the SQLite database is at schema version {}, the import copies version \
                 {SQLITE_SCHEMA_VERSION}: open it with this build of redoubt first",
                version.unwrap_or(0)
            )));
        }

        let mut target = self.pool.begin().await.map_err(backend_error)?;
        let empty: bool =
            sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM org) AND NOT EXISTS (SELECT 1 FROM users)")
                .fetch_one(&mut *target)
                .await
                .map_err(backend_error)?;
        if !empty {
            return Err(StoreError::AlreadyExists(
                "an organisation in that PostgreSQL database (migrate only into an empty one)",
            ));
        }
        let mut imported = ImportReport::default();
        for table in TABLES {
            let rows = copy_table(&mut source, &mut target, table)
                .await
                .map_err(|e| match e {
                    CopyFailed::Read(e) => read_error(e),
                    CopyFailed::Write(e) => {
                        StoreError::Backend(format!("cannot copy table {}: {e}", table.name))
                    }
                })?;
            imported.rows.insert(table.name.to_owned(), rows);
        }
        carry_counters_on(&mut source, &mut target)
            .await
            .map_err(|e| match e {
                CopyFailed::Read(e) => read_error(e),
                CopyFailed::Write(e) => backend_error(e),
            })?;
        let complete: Vec<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT id, bytes_total FROM blobs WHERE complete = 1 ORDER BY id")
                .fetch_all(&mut *source)
                .await
                .map_err(&read_error)?;
        for (id, bytes_total) in complete {
            let id =
                BlobId::from(<[u8; 16]>::try_from(id).map_err(|_| StoreError::Corrupt("blob id".into()))?);
            imported.blob_bytes +=
                copy_blob(&mut target, blob, &id, from_db(bytes_total, "blob size")?).await?;
            imported.blobs += 1;
        }
        target.commit().await.map_err(backend_error)?;
        tracing::info!(blobs = imported.blobs, "imported the SQLite database");
        Ok(imported)
    }
}

/// A failed copy: reading SQLite or writing PostgreSQL.
enum CopyFailed {
    Read(sqlx::Error),
    Write(sqlx::Error),
}

/// Copies one table, some rows at a time; returns how many.
async fn copy_table(
    source: &mut SqliteConnection,
    target: &mut PgConnection,
    table: &Table,
) -> std::result::Result<u64, CopyFailed> {
    let mut copied: u64 = 0;
    let mut columns: Vec<Column> = table.kinds.iter().map(|kind| Column::new(*kind)).collect();
    let mut rows: usize = 0;
    let mut bytes = 0;
    let mut reading = sqlx::query(table.select).fetch(&mut *source);
    while let Some(row) = reading.try_next().await.map_err(CopyFailed::Read)? {
        for (index, column) in columns.iter_mut().enumerate() {
            bytes += column.push(&row, index).map_err(CopyFailed::Read)?;
        }
        rows += 1;
        if rows >= ROWS_PER_STATEMENT_MAX || bytes >= BYTES_PER_STATEMENT_MAX {
            let full = std::mem::replace(
                &mut columns,
                table.kinds.iter().map(|kind| Column::new(*kind)).collect(),
            );
            insert(target, table, full).await.map_err(CopyFailed::Write)?;
            copied += rows as u64;
            (rows, bytes) = (0, 0);
        }
    }
    if rows > 0 {
        insert(target, table, columns).await.map_err(CopyFailed::Write)?;
        copied += rows as u64;
    }
    Ok(copied)
}

async fn insert(
    target: &mut PgConnection,
    table: &Table,
    columns: Vec<Column>,
) -> std::result::Result<(), sqlx::Error> {
    let mut query = sqlx::query(table.insert);
    for column in columns {
        query = column.bind(query);
    }
    query.execute(target).await.map(drop)
}

/// Counters and identity sequences go on after the highest number SQLite gave (which may
/// be higher than any row left: SQLite's AUTOINCREMENT never reuses a number either).
async fn carry_counters_on(
    source: &mut SqliteConnection,
    target: &mut PgConnection,
) -> std::result::Result<(), CopyFailed> {
    let counters: Vec<(String, i64)> = sqlx::query_as("SELECT name, value FROM counters")
        .fetch_all(&mut *source)
        .await
        .map_err(CopyFailed::Read)?;
    for (name, value) in counters {
        match name.as_str() {
            "policy_version" => {
                sqlx::query("UPDATE counters SET value = $1 WHERE name = 'policy_version'")
                    .bind(value)
                    .execute(&mut *target)
                    .await
                    .map_err(CopyFailed::Write)?;
            }
            "certificate_serial" if value > 0 => {
                sqlx::query("SELECT setval('certificate_serials', $1)")
                    .bind(value)
                    .execute(&mut *target)
                    .await
                    .map_err(CopyFailed::Write)?;
            }
            _ => {}
        }
    }
    let given: Vec<(String, i64)> = sqlx::query_as("SELECT name, seq FROM sqlite_sequence")
        .fetch_all(&mut *source)
        .await
        .map_err(CopyFailed::Read)?;
    for (table, given) in given {
        let sql = match table.as_str() {
            "key_packages" => {
                "SELECT setval(pg_get_serial_sequence('key_packages', 'id'), GREATEST($1, max(id)))
                 FROM key_packages HAVING GREATEST($1, max(id)) > 0"
            }
            "inbox" => {
                "SELECT setval(pg_get_serial_sequence('inbox', 'id'), GREATEST($1, max(id)))
                 FROM inbox HAVING GREATEST($1, max(id)) > 0"
            }
            "device_commands" => {
                "SELECT setval(pg_get_serial_sequence('device_commands', 'id'), GREATEST($1, max(id)))
                 FROM device_commands HAVING GREATEST($1, max(id)) > 0"
            }
            _ => continue,
        };
        sqlx::query(sql)
            .bind(given)
            .execute(&mut *target)
            .await
            .map_err(CopyFailed::Write)?;
    }
    // The audit chain goes on from its newest entry.
    sqlx::query(
        "UPDATE audit_head SET seq = newest.seq, hash = newest.hash
         FROM (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS newest
         WHERE audit_head.singleton",
    )
    .execute(&mut *target)
    .await
    .map_err(CopyFailed::Write)?;
    Ok(())
}

/// Copies a complete blob's bytes into chunks, a few per statement; returns its size.
async fn copy_blob(
    target: &mut PgConnection,
    blob: &mut (dyn FnMut(&BlobId) -> std::io::Result<Vec<u8>> + Send),
    id: &BlobId,
    bytes_total: u64,
) -> Result<u64> {
    let bytes = blob(id).map_err(|e| StoreError::Backend(format!("cannot read blob {id}: {e}")))?;
    if bytes.len() as u64 != bytes_total {
        return Err(StoreError::Corrupt(format!(
            "blob {id} is recorded as {bytes_total} bytes but holds {}",
            bytes.len()
        )));
    }
    let chunks_per_statement = (BYTES_PER_STATEMENT_MAX / BLOB_CHUNK_BYTES).max(1);
    let chunks: Vec<&[u8]> = bytes.chunks(BLOB_CHUNK_BYTES).collect();
    for (first, some) in (0_i64..)
        .step_by(chunks_per_statement)
        .zip(chunks.chunks(chunks_per_statement))
    {
        let indexes: Vec<i64> = (first..).take(some.len()).collect();
        sqlx::query(
            "INSERT INTO blob_chunks (blob_id, idx, data)
             SELECT $1, c.idx, c.data FROM unnest($2::bigint[], $3::bytea[]) AS c (idx, data)",
        )
        .bind(id.as_bytes())
        .bind(indexes)
        .bind(some)
        .execute(&mut *target)
        .await
        .map_err(|e| StoreError::Backend(format!("cannot copy blob {id}: {e}")))?;
    }
    Ok(bytes_total)
}
