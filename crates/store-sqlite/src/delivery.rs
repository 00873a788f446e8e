//! The delivery service's tables: key packages, groups, logs, membership, inboxes.

use redoubt_proto::{BlobId, DeviceId, GroupId, UserName};
use redoubt_store::{
    BlobRecord, ClaimedPackage, GroupHead, GroupRecord, InboxRecord, LogRecord, Membership, Result,
    StoreError,
};

use crate::reader::{column, column_fixed};
use crate::{SqliteStore, backend_error, corrupt, fixed, get, insert_error};

fn seq_from_db(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt("sequence number"))
}

fn seq_to_db(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| StoreError::Backend("sequence number exceeds i64".into()))
}

fn group_from_row(row: &rusqlite::Row<'_>) -> Result<GroupRecord> {
    Ok(GroupRecord {
        id: GroupId::from(column_fixed::<32>(row, "id")?),
        epoch: seq_from_db(column(row, "epoch")?)?,
        state: column(row, "state")?,
        state_seq: seq_from_db(column(row, "state_seq")?)?,
        last_seq: seq_from_db(column(row, "last_seq")?)?,
        created_at_unix_s: column(row, "created_at")?,
    })
}

fn log_from_row(row: &rusqlite::Row<'_>) -> Result<LogRecord> {
    Ok(LogRecord {
        seq: seq_from_db(column(row, "seq")?)?,
        sender: DeviceId::from(column_fixed::<16>(row, "sender")?),
        message: column(row, "message")?,
        created_at_unix_s: column(row, "created_at")?,
    })
}

fn head_from_row(row: &rusqlite::Row<'_>) -> Result<GroupHead> {
    Ok(GroupHead {
        epoch: seq_from_db(column(row, "epoch")?)?,
        last_seq: seq_from_db(column(row, "last_seq")?)?,
    })
}

fn membership_from_row(row: &rusqlite::Row<'_>) -> Result<Membership> {
    let removed: Option<i64> = column(row, "removed_seq")?;
    Ok(Membership {
        joined_seq: seq_from_db(column(row, "joined_seq")?)?,
        removed_seq: removed.map(seq_from_db).transpose()?,
    })
}

impl SqliteStore {
    pub(crate) async fn publish_key_packages_impl(
        &self,
        device: &DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        pool_max: u32,
    ) -> Result<u32> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM key_packages WHERE device_id = ? AND last_resort = 0")
                .bind(device.as_bytes().as_slice())
                .fetch_one(&mut *tx)
                .await
                .map_err(backend_error)?;
        let total = u64::try_from(count).unwrap_or(0) + one_time.len() as u64;
        if total > u64::from(pool_max) {
            return Err(StoreError::Limit(format!(
                "a device may hold at most {pool_max} key packages; it has {count}"
            )));
        }
        for package in one_time {
            sqlx::query("INSERT INTO key_packages (device_id, key_package, last_resort) VALUES (?, ?, 0)")
                .bind(device.as_bytes().as_slice())
                .bind(package.as_slice())
                .execute(&mut *tx)
                .await
                .map_err(|e| insert_error(e, "key package", "device"))?;
        }
        if let Some(package) = last_resort {
            sqlx::query("DELETE FROM key_packages WHERE device_id = ? AND last_resort = 1")
                .bind(device.as_bytes().as_slice())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            sqlx::query("INSERT INTO key_packages (device_id, key_package, last_resort) VALUES (?, ?, 1)")
                .bind(device.as_bytes().as_slice())
                .bind(package)
                .execute(&mut *tx)
                .await
                .map_err(|e| insert_error(e, "key package", "device"))?;
        }
        tx.commit().await.map_err(backend_error)?;
        u32::try_from(total).map_err(|_| corrupt("key package count"))
    }

    pub(crate) async fn claim_key_packages_impl(
        &self,
        users: &[UserName],
        except: &[DeviceId],
    ) -> Result<Vec<ClaimedPackage>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        let mut claimed = Vec::new();
        for user in users {
            let devices: Vec<Vec<u8>> = sqlx::query_scalar(
                "SELECT id FROM devices WHERE user_name = ? AND revoked_at IS NULL ORDER BY created_at, id",
            )
            .bind(user.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(backend_error)?;
            for device in devices {
                if except
                    .iter()
                    .any(|e| e.as_bytes().as_slice() == device.as_slice())
                {
                    continue;
                }
                let row = sqlx::query(
                    "SELECT id, key_package, last_resort FROM key_packages WHERE device_id = ?
                     ORDER BY last_resort, id LIMIT 1",
                )
                .bind(device.as_slice())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend_error)?;
                let Some(row) = row else { continue };
                let last_resort: i64 = get(&row, "last_resort")?;
                if last_resort == 0 {
                    sqlx::query("DELETE FROM key_packages WHERE id = ?")
                        .bind(get::<i64>(&row, "id")?)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend_error)?;
                }
                let device: [u8; 16] = device.try_into().map_err(|_| corrupt("device id"))?;
                claimed.push(ClaimedPackage {
                    user: user.clone(),
                    device: DeviceId::from(device),
                    key_package: get(&row, "key_package")?,
                });
            }
        }
        tx.commit().await.map_err(backend_error)?;
        Ok(claimed)
    }

    pub(crate) async fn create_group_impl(&self, group: &GroupRecord, creator: &DeviceId) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        sqlx::query(
            "INSERT INTO groups (id, epoch, state, state_seq, last_seq, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(group.id.as_bytes().as_slice())
        .bind(seq_to_db(group.epoch)?)
        .bind(group.state.as_slice())
        .bind(seq_to_db(group.state_seq)?)
        .bind(seq_to_db(group.last_seq)?)
        .bind(group.created_at_unix_s)
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, "group", "group"))?;
        sqlx::query("INSERT INTO group_members (group_id, device_id, joined_seq) VALUES (?, ?, ?)")
            .bind(group.id.as_bytes().as_slice())
            .bind(creator.as_bytes().as_slice())
            .bind(seq_to_db(group.last_seq)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "group member", "device"))?;
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn group_impl(&self, id: &GroupId) -> Result<Option<GroupRecord>> {
        self.readers.first(
            "SELECT id, epoch, state, state_seq, last_seq, created_at FROM groups WHERE id = ?1",
            [id.as_bytes().as_slice()],
            group_from_row,
        )
    }

    pub(crate) async fn handshakes_after_impl(
        &self,
        group: &GroupId,
        after_seq: u64,
    ) -> Result<Vec<LogRecord>> {
        self.readers.all(
            "SELECT seq, sender, message, created_at FROM group_log
             WHERE group_id = ?1 AND seq > ?2 AND handshake = 1 ORDER BY seq",
            rusqlite::params![group.as_bytes().as_slice(), seq_to_db(after_seq)?],
            log_from_row,
        )
    }

    pub(crate) async fn group_head_impl(&self, id: &GroupId) -> Result<Option<GroupHead>> {
        self.readers.first(
            "SELECT epoch, last_seq FROM groups WHERE id = ?1",
            [id.as_bytes().as_slice()],
            head_from_row,
        )
    }

    pub(crate) async fn membership_impl(
        &self,
        group: &GroupId,
        device: &DeviceId,
    ) -> Result<Option<Membership>> {
        self.readers.first(
            "SELECT joined_seq, removed_seq FROM group_members WHERE group_id = ?1 AND device_id = ?2",
            [group.as_bytes().as_slice(), device.as_bytes().as_slice()],
            membership_from_row,
        )
    }

    pub(crate) async fn find_submission_impl(
        &self,
        group: &GroupId,
        sender: &DeviceId,
        client_message_id: &[u8; 16],
    ) -> Result<Option<u64>> {
        let mut conn = self.pool.acquire().await.map_err(backend_error)?;
        submission_seq(&mut conn, group, sender, client_message_id).await
    }

    pub(crate) async fn log_entries_impl(
        &self,
        group: &GroupId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<LogRecord>> {
        self.readers.all(
            "SELECT seq, sender, message, created_at FROM group_log
             WHERE group_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            rusqlite::params![group.as_bytes().as_slice(), seq_to_db(after_seq)?, limit],
            log_from_row,
        )
    }

    pub(crate) async fn device_groups_impl(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<(GroupId, GroupHead, Membership)>> {
        self.readers.all(
            "SELECT g.id, g.epoch, g.last_seq, m.joined_seq, m.removed_seq
             FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE m.device_id = ?1 AND m.removed_seq IS NULL ORDER BY g.created_at, g.id",
            [device.as_bytes().as_slice()],
            |row| {
                Ok((
                    GroupId::from(column_fixed::<32>(row, "id")?),
                    head_from_row(row)?,
                    membership_from_row(row)?,
                ))
            },
        )
    }

    pub(crate) async fn group_members_impl(&self, group: &GroupId) -> Result<Vec<DeviceId>> {
        self.readers.all(
            "SELECT device_id FROM group_members WHERE group_id = ?1 AND removed_seq IS NULL ORDER BY device_id",
            [group.as_bytes().as_slice()],
            |row| Ok(DeviceId::from(column_fixed::<16>(row, "device_id")?)),
        )
    }

    pub(crate) async fn inbox_impl(&self, device: &DeviceId) -> Result<Vec<InboxRecord>> {
        self.readers.all(
            "SELECT id, group_id, welcome, joined_seq FROM inbox WHERE device_id = ?1 ORDER BY id",
            [device.as_bytes().as_slice()],
            |row| {
                Ok(InboxRecord {
                    id: seq_from_db(column(row, "id")?)?,
                    group: GroupId::from(column_fixed::<32>(row, "group_id")?),
                    welcome: column(row, "welcome")?,
                    joined_seq: seq_from_db(column(row, "joined_seq")?)?,
                })
            },
        )
    }

    pub(crate) async fn inbox_ack_impl(&self, device: &DeviceId, ids: &[u64]) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        for id in ids {
            sqlx::query("DELETE FROM inbox WHERE id = ? AND device_id = ?")
                .bind(seq_to_db(*id)?)
                .bind(device.as_bytes().as_slice())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
        }
        tx.commit().await.map_err(backend_error)
    }

    pub(crate) async fn ack_impl(&self, group: &GroupId, device: &DeviceId, seq: u64) -> Result<()> {
        sqlx::query(
            "UPDATE group_members SET acked_seq = max(acked_seq, ?) WHERE group_id = ? AND device_id = ?",
        )
        .bind(seq_to_db(seq)?)
        .bind(group.as_bytes().as_slice())
        .bind(device.as_bytes().as_slice())
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(())
    }

    pub(crate) async fn prune_logs_impl(&self, older_than_unix_s: i64) -> Result<u64> {
        // An entry may go once every device that must still read it has acknowledged it:
        // current members, and removed members that have not yet read their removal.
        // A member's progress counts from the commit that added it. A handshake after the
        // group's stored state stays whatever its age: loading the state replays it.
        let deleted = sqlx::query(
            "DELETE FROM group_log WHERE (created_at < ?1 OR seq <= (
                SELECT coalesce(min(max(m.acked_seq, m.joined_seq)), 0) FROM group_members m
                WHERE m.group_id = group_log.group_id
                  AND (m.removed_seq IS NULL OR m.acked_seq < m.removed_seq)
            )) AND NOT (handshake = 1 AND seq > (SELECT state_seq FROM groups g WHERE g.id = group_log.group_id))",
        )
        .bind(older_than_unix_s)
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(deleted.rows_affected())
    }

    pub(crate) async fn create_blob_impl(&self, blob: &BlobRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO blobs (id, group_id, uploader, bytes_total, chunk_count, complete, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(blob.id.as_bytes().as_slice())
        .bind(blob.group.as_bytes().as_slice())
        .bind(blob.uploader.as_bytes().as_slice())
        .bind(seq_to_db(blob.bytes_total)?)
        .bind(i64::from(blob.chunk_count))
        .bind(i64::from(blob.complete))
        .bind(blob.created_at_unix_s)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "blob", "group or device"))?;
        Ok(())
    }

    pub(crate) async fn blob_impl(&self, id: &BlobId) -> Result<Option<BlobRecord>> {
        let row = sqlx::query(
            "SELECT id, group_id, uploader, bytes_total, chunk_count, complete, created_at FROM blobs WHERE id = ?",
        )
        .bind(id.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?;
        row.map(|row| {
            let chunk_count: i64 = get(&row, "chunk_count")?;
            Ok(BlobRecord {
                id: BlobId::from(fixed::<16>(&row, "id")?),
                group: GroupId::from(fixed::<32>(&row, "group_id")?),
                uploader: DeviceId::from(fixed::<16>(&row, "uploader")?),
                bytes_total: seq_from_db(get(&row, "bytes_total")?)?,
                chunk_count: u32::try_from(chunk_count).map_err(|_| corrupt("chunk count"))?,
                complete: get::<i64>(&row, "complete")? == 1,
                created_at_unix_s: get(&row, "created_at")?,
            })
        })
        .transpose()
    }

    pub(crate) async fn complete_blob_impl(&self, id: &BlobId) -> Result<()> {
        let done = sqlx::query("UPDATE blobs SET complete = 1 WHERE id = ?")
            .bind(id.as_bytes().as_slice())
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("blob"));
        }
        Ok(())
    }

    pub(crate) async fn delete_blob_impl(&self, id: &BlobId) -> Result<()> {
        sqlx::query("DELETE FROM blobs WHERE id = ?")
            .bind(id.as_bytes().as_slice())
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    pub(crate) async fn incomplete_blobs_impl(&self) -> Result<Vec<BlobId>> {
        let ids: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id FROM blobs WHERE complete = 0")
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        ids.into_iter()
            .map(|id| {
                <[u8; 16]>::try_from(id)
                    .map(BlobId::from)
                    .map_err(|_| corrupt("blob id"))
            })
            .collect()
    }
}

/// The sequence number an earlier append by `sender` with this client message id got.
async fn submission_seq(
    conn: &mut sqlx::SqliteConnection,
    group: &GroupId,
    sender: &DeviceId,
    client_message_id: &[u8; 16],
) -> Result<Option<u64>> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM group_log WHERE group_id = ? AND sender = ? AND client_message_id = ?",
    )
    .bind(group.as_bytes().as_slice())
    .bind(sender.as_bytes().as_slice())
    .bind(client_message_id.as_slice())
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend_error)?;
    seq.map(seq_from_db).transpose()
}
