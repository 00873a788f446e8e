//! Moving a single-box organisation (the SQLite store) into PostgreSQL: every table copied
//! row by row in one PostgreSQL transaction (all or nothing), parents before children, the
//! audit log's rows as they are (so its hash chain and signed checkpoints stay valid), and
//! each complete blob's bytes as chunks. Refused unless the PostgreSQL database is empty.
//!
//! The copy follows the two schemas by name: every SQLite table must exist in PostgreSQL
//! with every one of its columns. Values are converted by PostgreSQL's column type
//! (SQLite keeps booleans as integers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redoubt_proto::{BLOB_CHUNK_BYTES, BlobId};
use redoubt_store::{Result, StoreError};
use sqlx::{AssertSqlSafe, Row};

use crate::PgStore;

/// What was copied: rows per table, and blob bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: BTreeMap<String, u64>,
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// Tables that are not the organisation's data.
const SKIPPED: &[&str] = &["schema_migrations", "cluster_nodes", "leases"];

/// SQLite's counters table (the last certificate serial): a sequence in PostgreSQL.
const COUNTERS: &str = "counters";

fn fail(doing: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{doing}: {error}"))
}

/// An identifier from our own schema, checked before it goes into SQL text.
fn identifier(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(StoreError::Corrupt(format!(
            "unexpected table or column name {name:?}"
        )))
    }
}

#[derive(Debug)]
struct PgColumn {
    data_type: String,
    identity: bool,
}

impl PgStore {
    /// Copies the organisation in the SQLite database at `sqlite` into this (empty)
    /// database; `blob` reads a complete blob's bytes (from the old data folder).
    pub async fn import_sqlite(
        &self,
        sqlite: &Path,
        blob: &mut (dyn FnMut(&BlobId) -> std::io::Result<Vec<u8>> + Send),
    ) -> Result<ImportReport> {
        if !self.is_empty().await? {
            return Err(StoreError::AlreadyExists(
                "an organisation in that PostgreSQL database (migrate only into an empty one)",
            ));
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(sqlite)
            .read_only(true);
        let source = sqlx::SqlitePool::connect_with(options)
            .await
            .map_err(|e| fail("cannot open the SQLite database", e))?;
        // One read transaction: a consistent snapshot, even of a file a server still writes.
        let mut snapshot = source
            .begin()
            .await
            .map_err(|e| fail("cannot read the SQLite database", e))?;
        let result = self.copy_from(&mut snapshot, blob).await;
        drop(snapshot);
        source.close().await;
        result
    }

    async fn copy_from(
        &self,
        source: &mut sqlx::SqliteConnection,
        blob: &mut (dyn FnMut(&BlobId) -> std::io::Result<Vec<u8>> + Send),
    ) -> Result<ImportReport> {
        let read = |e| fail("reading the SQLite database", e);
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(&mut *source)
        .await
        .map_err(read)?;
        let tables: Vec<String> = tables
            .into_iter()
            .filter(|t| !SKIPPED.contains(&t.as_str()))
            .collect();
        // Parents first.
        let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for table in &tables {
            let referenced: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT \"table\" FROM pragma_foreign_key_list('{}')",
                identifier(table)?
            )))
            .fetch_all(&mut *source)
            .await
            .map_err(read)?;
            parents.insert(
                table.clone(),
                referenced.into_iter().filter(|p| p != table).collect(),
            );
        }
        let mut order: Vec<String> = Vec::new();
        while order.len() < tables.len() {
            let ready: Vec<String> = tables
                .iter()
                .filter(|t| !order.contains(t))
                .filter(|t| {
                    parents[*t]
                        .iter()
                        .all(|p| order.contains(p) || !tables.contains(p))
                })
                .cloned()
                .collect();
            if ready.is_empty() {
                return Err(StoreError::Corrupt(
                    "the SQLite tables refer to each other in a cycle".into(),
                ));
            }
            order.extend(ready);
        }

        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| fail("cannot write to PostgreSQL", e))?;
        let write = |e: sqlx::Error| fail("writing to PostgreSQL", e);
        let mut report = ImportReport::default();
        for table in &order {
            let table = identifier(table)?;
            if table == COUNTERS {
                let serial: Option<i64> =
                    sqlx::query_scalar("SELECT value FROM counters WHERE name = 'certificate_serial'")
                        .fetch_optional(&mut *source)
                        .await
                        .map_err(read)?;
                // The next serial follows every one handed out (is_called = true).
                if let Some(serial) = serial.filter(|s| *s > 0) {
                    sqlx::query("SELECT setval('certificate_serials', $1, true)")
                        .bind(serial)
                        .execute(&mut *tx)
                        .await
                        .map_err(write)?;
                }
                report.rows.insert(table.to_owned(), 1);
                continue;
            }
            let target: BTreeMap<String, PgColumn> = sqlx::query(
                "SELECT column_name::TEXT AS name, data_type::TEXT AS data_type, is_identity::TEXT AS identity
                 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_all(&mut *tx)
            .await
            .map_err(write)?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("name").map_err(write)?,
                    PgColumn {
                        data_type: row.try_get("data_type").map_err(write)?,
                        identity: row.try_get::<String, _>("identity").map_err(write)? == "YES",
                    },
                ))
            })
            .collect::<Result<_>>()?;
            if target.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "PostgreSQL has no table {table}: its schema is older than the SQLite one"
                )));
            }
            let columns: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
            )))
            .fetch_all(&mut *source)
            .await
            .map_err(read)?;
            let mut kinds = Vec::with_capacity(columns.len());
            for column in &columns {
                identifier(column)?;
                let Some(kind) = target.get(column) else {
                    return Err(StoreError::Corrupt(format!(
                        "PostgreSQL's {table} has no column {column}"
                    )));
                };
                kinds.push(kind);
            }
            let list = columns.join(", ");
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
            let overriding = if kinds.iter().any(|k| k.identity) {
                " OVERRIDING SYSTEM VALUE"
            } else {
                ""
            };
            let insert = format!(
                "INSERT INTO {table} ({list}){overriding} VALUES ({})",
                placeholders.join(", ")
            );
            let rows = sqlx::query(AssertSqlSafe(format!("SELECT {list} FROM {table}")))
                .fetch_all(&mut *source)
                .await
                .map_err(read)?;
            for row in &rows {
                let mut query = sqlx::query(AssertSqlSafe(insert.clone()));
                for (i, kind) in kinds.iter().enumerate() {
                    query = match kind.data_type.as_str() {
                        "bigint" | "integer" | "smallint" => {
                            query.bind(row.try_get::<Option<i64>, _>(i).map_err(read)?)
                        }
                        "boolean" => {
                            query.bind(row.try_get::<Option<i64>, _>(i).map_err(read)?.map(|v| v != 0))
                        }
                        "bytea" => query.bind(row.try_get::<Option<Vec<u8>>, _>(i).map_err(read)?),
                        "text" | "character varying" => {
                            query.bind(row.try_get::<Option<String>, _>(i).map_err(read)?)
                        }
                        other => {
                            return Err(StoreError::Corrupt(format!(
                                "cannot copy {table}.{} into a column of type {other}",
                                columns[i]
                            )));
                        }
                    };
                }
                query.execute(&mut *tx).await.map_err(write)?;
            }
            for (column, kind) in columns.iter().zip(&kinds) {
                if kind.identity {
                    sqlx::query(AssertSqlSafe(format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                       COALESCE((SELECT max({column}) FROM {table}), 0) + 1, false)"
                    )))
                    .execute(&mut *tx)
                    .await
                    .map_err(write)?;
                }
            }
            report.rows.insert(table.to_owned(), rows.len() as u64);
        }

        // The blobs' bytes: chunk by chunk, as a cluster serves them. An upload a crash left
        // unfinished is not moved.
        sqlx::query("DELETE FROM blobs WHERE NOT complete")
            .execute(&mut *tx)
            .await
            .map_err(write)?;
        let blobs: Vec<(Vec<u8>, i64)> = sqlx::query_as("SELECT id, bytes_total FROM blobs ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(write)?;
        for (id, bytes_total) in blobs {
            let id = <[u8; 16]>::try_from(id.as_slice())
                .map(BlobId::from)
                .map_err(|_| StoreError::Corrupt("blob id".into()))?;
            let bytes = blob(&id).map_err(|e| fail(&format!("cannot read blob {id}"), e))?;
            if i64::try_from(bytes.len()).ok() != Some(bytes_total) {
                return Err(StoreError::Corrupt(format!(
                    "blob {id} holds {} bytes, its record says {bytes_total}",
                    bytes.len()
                )));
            }
            for (index, chunk) in bytes.chunks(BLOB_CHUNK_BYTES).enumerate() {
                sqlx::query("INSERT INTO blob_chunks (blob_id, idx, data) VALUES ($1, $2, $3)")
                    .bind(id.as_bytes().as_slice())
                    .bind(index as i64)
                    .bind(chunk)
                    .execute(&mut *tx)
                    .await
                    .map_err(write)?;
            }
            report.blobs += 1;
            report.blob_bytes += bytes.len() as u64;
        }
        tx.commit().await.map_err(write)?;
        Ok(report)
    }
}
