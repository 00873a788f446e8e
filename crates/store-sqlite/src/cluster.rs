//! Cluster nodes, leases and blob chunks (see `redoubt_store::NodeRecord`, `Lease`).

use redoubt_proto::BlobId;
use redoubt_store::{Lease, NodeRecord, Result};

use crate::{SqliteStore, backend_error, corrupt, get, insert_error, to_db};

impl SqliteStore {
    pub(crate) async fn put_blob_chunk_impl(&self, id: &BlobId, index: u32, data: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO blob_chunks (blob_id, idx, data) VALUES (?, ?, ?)
             ON CONFLICT (blob_id, idx) DO UPDATE SET data = excluded.data",
        )
        .bind(id.as_bytes().as_slice())
        .bind(i64::from(index))
        .bind(data)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "blob chunk", "blob"))?;
        Ok(())
    }

    pub(crate) async fn blob_chunk_impl(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT data FROM blob_chunks WHERE blob_id = ? AND idx = ?")
            .bind(id.as_bytes().as_slice())
            .bind(i64::from(index))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)
    }

    pub(crate) async fn node_heartbeat_impl(&self, node: &NodeRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO cluster_nodes (id, public_address, sessions, started_at, heartbeat_at, stopped)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET public_address = excluded.public_address,
                 sessions = excluded.sessions, started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at, stopped = excluded.stopped",
        )
        .bind(&node.id)
        .bind(&node.public_address)
        .bind(to_db(node.sessions, "session count")?)
        .bind(node.started_at_unix_s)
        .bind(node.heartbeat_at_unix_s)
        .bind(node.stopped)
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(())
    }

    pub(crate) async fn nodes_impl(&self, forget_before_unix_s: i64) -> Result<Vec<NodeRecord>> {
        sqlx::query("DELETE FROM cluster_nodes WHERE heartbeat_at < ?")
            .bind(forget_before_unix_s)
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        sqlx::query(
            "SELECT id, public_address, sessions, started_at, heartbeat_at, stopped
             FROM cluster_nodes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|row| {
            Ok(NodeRecord {
                id: get(row, "id")?,
                public_address: get(row, "public_address")?,
                sessions: u64::try_from(get::<i64>(row, "sessions")?)
                    .map_err(|_| corrupt("session count"))?,
                started_at_unix_s: get(row, "started_at")?,
                heartbeat_at_unix_s: get(row, "heartbeat_at")?,
                stopped: get(row, "stopped")?,
            })
        })
        .collect()
    }

    pub(crate) async fn acquire_lease_impl(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        // One statement: SQLite runs it atomically, and every SET expression sees the row
        // as it was, so the token grows exactly when the holder changes.
        let row: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO leases (name, holder, token, expires_at_ms) VALUES (?1, ?2, 1, ?3 + ?4)
             ON CONFLICT (name) DO UPDATE SET
                 token = CASE WHEN leases.holder = excluded.holder THEN leases.token ELSE leases.token + 1 END,
                 holder = excluded.holder,
                 expires_at_ms = excluded.expires_at_ms
             WHERE leases.holder = excluded.holder OR leases.expires_at_ms <= ?3
             RETURNING token, expires_at_ms",
        )
        .bind(name)
        .bind(holder)
        .bind(now_ms)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?;
        row.map(|(token, expires_at_ms)| {
            Ok(Lease {
                token: u64::try_from(token).map_err(|_| corrupt("lease token"))?,
                expires_at_ms,
            })
        })
        .transpose()
    }

    pub(crate) async fn lease_is_current_impl(&self, name: &str, token: u64) -> Result<bool> {
        let current: Option<i64> = sqlx::query_scalar("SELECT token FROM leases WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(current.is_some_and(|current| i64::try_from(token).is_ok_and(|token| token == current)))
    }
}
