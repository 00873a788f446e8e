//! Numbered schema migrations, applied in order at connect, each in its own transaction.
//!
//! Several server nodes may start together on one database: each takes a session-level
//! advisory lock before reading what is applied, so one applies the pending migrations and
//! the others, once they get the lock, find nothing left to do.
//!
//! The schema is SQLite's (`crates/store-sqlite/migrations`) in PostgreSQL's types, folded
//! into one file per idea: this backend never had a database of the older shapes.

use redoubt_store::{Result, StoreError};
use sqlx::{Connection, PgConnection};

use crate::backend_error;

/// Every migration, in order. Append only: an applied migration is never edited.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "directory", include_str!("../migrations/0001_directory.sql")),
    (2, "delivery", include_str!("../migrations/0002_delivery.sql")),
    (3, "blobs", include_str!("../migrations/0003_blobs.sql")),
    (4, "management", include_str!("../migrations/0004_management.sql")),
    (5, "settings", include_str!("../migrations/0005_settings.sql")),
    (6, "history", include_str!("../migrations/0006_history.sql")),
    (7, "cluster", include_str!("../migrations/0007_cluster.sql")),
    (
        8,
        "user_disabled",
        include_str!("../migrations/0008_user_disabled.sql"),
    ),
    (
        9,
        "key_transparency",
        include_str!("../migrations/0009_key_transparency.sql"),
    ),
    (
        10,
        "blobs_by_uploader",
        include_str!("../migrations/0010_blobs_by_uploader.sql"),
    ),
];

/// The advisory lock that serialises migrations ("redoubt" in ASCII). Advisory locks are
/// per database, so stores of different databases on one server do not wait for each other.
const MIGRATION_LOCK_KEY: i64 = 0x0072_6564_6f75_6274;

/// Applies pending migrations over `conn`, a connection of its own: should this fail
/// half-way, closing it releases the lock.
pub(crate) async fn run(conn: &mut PgConnection, now_unix_s: i64) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(backend_error)?;
    let applied = apply_pending(conn, now_unix_s).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut *conn)
        .await
        .map_err(backend_error);
    applied?;
    unlocked?;
    Ok(())
}

async fn apply_pending(conn: &mut PgConnection, now_unix_s: i64) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *conn)
    .await
    .map_err(backend_error)?;

    let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(backend_error)?;
    let applied = applied.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > known {
        return Err(StoreError::Corrupt(format!(
            "database schema version {applied} is newer than this build understands ({known}); \
             run a newer redoubt"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let mut tx = conn.begin().await.map_err(backend_error)?;
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Backend(format!("migration {version} ({name}) failed: {e}")))?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(name)
            .bind(now_unix_s)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        tx.commit().await.map_err(backend_error)?;
        tracing::info!(version, name, "applied schema migration");
    }
    Ok(())
}
