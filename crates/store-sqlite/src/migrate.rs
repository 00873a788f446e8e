//! Numbered schema migrations, applied in order at open, each in its own transaction.

use redoubt_store::{Result, StoreError};
use sqlx::SqlitePool;

use crate::backend_error;

/// Every migration, in order. Append only: an applied migration is never edited.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "directory", include_str!("../migrations/0001_directory.sql")),
    (2, "delivery", include_str!("../migrations/0002_delivery.sql")),
    (3, "blobs", include_str!("../migrations/0003_blobs.sql")),
    (4, "log_acks", include_str!("../migrations/0004_log_acks.sql")),
    (5, "management", include_str!("../migrations/0005_management.sql")),
    (6, "settings", include_str!("../migrations/0006_settings.sql")),
    (
        7,
        "group_state_seq",
        include_str!("../migrations/0007_group_state_seq.sql"),
    ),
    (8, "history", include_str!("../migrations/0008_history.sql")),
    (9, "cluster", include_str!("../migrations/0009_cluster.sql")),
    (
        10,
        "user_disabled",
        include_str!("../migrations/0010_user_disabled.sql"),
    ),
    (
        11,
        "key_transparency",
        include_str!("../migrations/0011_key_transparency.sql"),
    ),
    (
        12,
        "blobs_by_uploader",
        include_str!("../migrations/0012_blobs_by_uploader.sql"),
    ),
];

pub(crate) async fn run(pool: &SqlitePool, now_unix_s: i64) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        ) STRICT",
    )
    .execute(pool)
    .await
    .map_err(backend_error)?;

    let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
        .fetch_one(pool)
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
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend_error)?;
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
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
