//! The delivery service's tables: key packages, groups, logs, membership, inboxes, blobs.
//! Appends are the group-commit task's (`appender`).

use redoubt_proto::{BlobId, DeviceId, GroupId, UserName};
use redoubt_store::{
    BlobRecord, ClaimedPackage, GroupHead, GroupRecord, InboxRecord, LogRecord, Membership, Result,
    StoreError,
};
use sqlx::postgres::PgRow;

use crate::{PgStore, backend_error, corrupt, fixed, get, insert_error, to_db, unsigned};

fn group_from_row(row: &PgRow) -> Result<GroupRecord> {
    Ok(GroupRecord {
        id: GroupId::from(fixed::<32>(row, "id")?),
        epoch: unsigned(row, "epoch")?,
        state: get(row, "state")?,
        state_seq: unsigned(row, "state_seq")?,
        last_seq: unsigned(row, "last_seq")?,
        created_at_unix_s: get(row, "created_at")?,
    })
}

fn log_from_row(row: &PgRow) -> Result<LogRecord> {
    Ok(LogRecord {
        seq: unsigned(row, "seq")?,
        sender: DeviceId::from(fixed::<16>(row, "sender")?),
        message: get(row, "message")?,
        created_at_unix_s: get(row, "created_at")?,
    })
}

fn head_from_row(row: &PgRow) -> Result<GroupHead> {
    Ok(GroupHead {
        epoch: unsigned(row, "epoch")?,
        last_seq: unsigned(row, "last_seq")?,
    })
}

fn membership_from_row(row: &PgRow) -> Result<Membership> {
    let removed: Option<i64> = get(row, "removed_seq")?;
    Ok(Membership {
        joined_seq: unsigned(row, "joined_seq")?,
        removed_seq: removed
            .map(|seq| crate::from_db(seq, "removed_seq"))
            .transpose()?,
    })
}

fn blob_from_row(row: &PgRow) -> Result<BlobRecord> {
    Ok(BlobRecord {
        id: BlobId::from(fixed::<16>(row, "id")?),
        group: GroupId::from(fixed::<32>(row, "group_id")?),
        uploader: DeviceId::from(fixed::<16>(row, "uploader")?),
        bytes_total: unsigned(row, "bytes_total")?,
        chunk_count: u32::try_from(get::<i64>(row, "chunk_count")?).map_err(|_| corrupt("chunk count"))?,
        complete: get(row, "complete")?,
        created_at_unix_s: get(row, "created_at")?,
    })
}

impl PgStore {
    pub(crate) async fn publish_key_packages_impl(
        &self,
        device: &DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        pool_max: u32,
    ) -> Result<u32> {
        transaction!(self, StoreError, |tx| {
            // The device's row lock makes its publications take turns, so that two at once
            // cannot both pass the bound.
            sqlx::query("SELECT 1 FROM devices WHERE id = $1 FOR NO KEY UPDATE")
                .bind(device.as_bytes())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM key_packages WHERE device_id = $1 AND NOT last_resort",
            )
            .bind(device.as_bytes())
            .fetch_one(&mut *tx)
            .await
            .map_err(backend_error)?;
            let total = u64::try_from(count).unwrap_or(0) + one_time.len() as u64;
            if total > u64::from(pool_max) {
                return Err(StoreError::Limit(format!(
                    "a device may hold at most {pool_max} key packages; it has {count}"
                )));
            }
            if !one_time.is_empty() {
                // In the order given: claims take the oldest first.
                sqlx::query(
                    "INSERT INTO key_packages (device_id, key_package, last_resort)
                     SELECT $1, p.package, FALSE FROM unnest($2::bytea[]) WITH ORDINALITY AS p (package, n)
                     ORDER BY p.n",
                )
                .bind(device.as_bytes())
                .bind(one_time)
                .execute(&mut *tx)
                .await
                .map_err(|e| insert_error(e, "key package", "device"))?;
            }
            if let Some(package) = last_resort {
                sqlx::query("DELETE FROM key_packages WHERE device_id = $1 AND last_resort")
                    .bind(device.as_bytes())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend_error)?;
                sqlx::query(
                    "INSERT INTO key_packages (device_id, key_package, last_resort) VALUES ($1, $2, TRUE)",
                )
                .bind(device.as_bytes())
                .bind(package)
                .execute(&mut *tx)
                .await
                .map_err(|e| insert_error(e, "key package", "device"))?;
            }
            u32::try_from(total).map_err(|_| corrupt("key package count"))?
        })
    }

    pub(crate) async fn claim_key_packages_impl(
        &self,
        users: &[UserName],
        except: &[DeviceId],
    ) -> Result<Vec<ClaimedPackage>> {
        transaction!(self, StoreError, |tx| {
            let mut claimed = Vec::new();
            for user in users {
                let devices: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT id FROM devices WHERE user_name = $1 AND revoked_at IS NULL ORDER BY created_at, id",
                )
                .bind(user.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(backend_error)?;
                for device in devices {
                    let device: [u8; 16] = device.try_into().map_err(|_| corrupt("device id"))?;
                    if except.iter().any(|e| *e.as_bytes() == device) {
                        continue;
                    }
                    // The oldest one-time package not being taken by someone else (SKIP
                    // LOCKED: concurrent claims never wait for each other, each package
                    // goes to one), else the last-resort package, which stays.
                    let one_time: Option<Vec<u8>> = sqlx::query_scalar(
                        "DELETE FROM key_packages WHERE id = (
                             SELECT id FROM key_packages WHERE device_id = $1 AND NOT last_resort
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                         RETURNING key_package",
                    )
                    .bind(device)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend_error)?;
                    let package = match one_time {
                        Some(package) => Some(package),
                        None => sqlx::query_scalar(
                            "SELECT key_package FROM key_packages WHERE device_id = $1 AND last_resort",
                        )
                        .bind(device)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend_error)?,
                    };
                    if let Some(key_package) = package {
                        claimed.push(ClaimedPackage {
                            user: user.clone(),
                            device: DeviceId::from(device),
                            key_package,
                        });
                    }
                }
            }
            claimed
        })
    }

    pub(crate) async fn create_group_impl(&self, group: &GroupRecord, creator: &DeviceId) -> Result<()> {
        transaction!(self, StoreError, |tx| {
            sqlx::query(
                "INSERT INTO groups (id, epoch, state, state_seq, last_seq, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(group.id.as_bytes())
            .bind(to_db(group.epoch, "epoch")?)
            .bind(group.state.as_slice())
            .bind(to_db(group.state_seq, "sequence number")?)
            .bind(to_db(group.last_seq, "sequence number")?)
            .bind(group.created_at_unix_s)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "group", "group"))?;
            sqlx::query("INSERT INTO group_members (group_id, device_id, joined_seq) VALUES ($1, $2, $3)")
                .bind(group.id.as_bytes())
                .bind(creator.as_bytes())
                .bind(to_db(group.last_seq, "sequence number")?)
                .execute(&mut *tx)
                .await
                .map_err(|e| insert_error(e, "group member", "device"))?;
        })
    }

    pub(crate) async fn group_impl(&self, id: &GroupId) -> Result<Option<GroupRecord>> {
        sqlx::query("SELECT id, epoch, state, state_seq, last_seq, created_at FROM groups WHERE id = $1")
            .bind(id.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?
            .as_ref()
            .map(group_from_row)
            .transpose()
    }

    pub(crate) async fn group_head_impl(&self, id: &GroupId) -> Result<Option<GroupHead>> {
        sqlx::query("SELECT epoch, last_seq FROM groups WHERE id = $1")
            .bind(id.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?
            .as_ref()
            .map(head_from_row)
            .transpose()
    }

    pub(crate) async fn membership_impl(
        &self,
        group: &GroupId,
        device: &DeviceId,
    ) -> Result<Option<Membership>> {
        sqlx::query(
            "SELECT joined_seq, removed_seq FROM group_members WHERE group_id = $1 AND device_id = $2",
        )
        .bind(group.as_bytes())
        .bind(device.as_bytes())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?
        .as_ref()
        .map(membership_from_row)
        .transpose()
    }

    pub(crate) async fn find_submission_impl(
        &self,
        group: &GroupId,
        sender: &DeviceId,
        client_message_id: &[u8; 16],
    ) -> Result<Option<u64>> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM group_log WHERE group_id = $1 AND sender = $2 AND client_message_id = $3",
        )
        .bind(group.as_bytes())
        .bind(sender.as_bytes())
        .bind(client_message_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?;
        seq.map(|seq| crate::from_db(seq, "sequence number")).transpose()
    }

    pub(crate) async fn log_entries_impl(
        &self,
        group: &GroupId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<LogRecord>> {
        // Entries become visible in sequence order: each is numbered under its group's row
        // lock, held until it commits. A reader never sees a gap that fills later.
        sqlx::query(
            "SELECT seq, sender, message, created_at FROM group_log
             WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(group.as_bytes())
        .bind(to_db(after_seq, "sequence number")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(log_from_row)
        .collect()
    }

    pub(crate) async fn handshakes_after_impl(
        &self,
        group: &GroupId,
        after_seq: u64,
    ) -> Result<Vec<LogRecord>> {
        sqlx::query(
            "SELECT seq, sender, message, created_at FROM group_log
             WHERE group_id = $1 AND seq > $2 AND handshake ORDER BY seq",
        )
        .bind(group.as_bytes())
        .bind(to_db(after_seq, "sequence number")?)
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(log_from_row)
        .collect()
    }

    pub(crate) async fn device_groups_impl(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<(GroupId, GroupHead, Membership)>> {
        sqlx::query(
            "SELECT g.id, g.epoch, g.last_seq, m.joined_seq, m.removed_seq
             FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE m.device_id = $1 AND m.removed_seq IS NULL ORDER BY g.created_at, g.id",
        )
        .bind(device.as_bytes())
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(|row| {
            Ok((
                GroupId::from(fixed::<32>(row, "id")?),
                head_from_row(row)?,
                membership_from_row(row)?,
            ))
        })
        .collect()
    }

    pub(crate) async fn group_members_impl(&self, group: &GroupId) -> Result<Vec<DeviceId>> {
        let devices: Vec<[u8; 16]> = sqlx::query_scalar(
            "SELECT device_id FROM group_members WHERE group_id = $1 AND removed_seq IS NULL ORDER BY device_id",
        )
        .bind(group.as_bytes())
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(devices.into_iter().map(DeviceId::from).collect())
    }

    pub(crate) async fn inbox_impl(&self, device: &DeviceId) -> Result<Vec<InboxRecord>> {
        sqlx::query("SELECT id, group_id, welcome, joined_seq FROM inbox WHERE device_id = $1 ORDER BY id")
            .bind(device.as_bytes())
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(|row| {
                Ok(InboxRecord {
                    id: unsigned(row, "id")?,
                    group: GroupId::from(fixed::<32>(row, "group_id")?),
                    welcome: get(row, "welcome")?,
                    joined_seq: unsigned(row, "joined_seq")?,
                })
            })
            .collect()
    }

    pub(crate) async fn inbox_ack_impl(&self, device: &DeviceId, ids: &[u64]) -> Result<()> {
        let ids = ids
            .iter()
            .map(|id| to_db(*id, "inbox id"))
            .collect::<Result<Vec<i64>>>()?;
        sqlx::query("DELETE FROM inbox WHERE device_id = $1 AND id = ANY($2)")
            .bind(device.as_bytes())
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    pub(crate) async fn ack_impl(&self, group: &GroupId, device: &DeviceId, seq: u64) -> Result<()> {
        sqlx::query(
            "UPDATE group_members SET acked_seq = GREATEST(acked_seq, $1) WHERE group_id = $2 AND device_id = $3",
        )
        .bind(to_db(seq, "sequence number")?)
        .bind(group.as_bytes())
        .bind(device.as_bytes())
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
        // Appends running meanwhile are safe: this statement sees the acknowledgements and
        // states of its start, older ones, which only keep more.
        let deleted = sqlx::query(
            "WITH floor AS (
                 SELECT group_id, min(GREATEST(acked_seq, joined_seq)) AS seq FROM group_members
                 WHERE removed_seq IS NULL OR acked_seq < removed_seq
                 GROUP BY group_id)
             DELETE FROM group_log l
             USING groups g LEFT JOIN floor f ON f.group_id = g.id
             WHERE g.id = l.group_id
               AND (l.created_at < $1 OR l.seq <= coalesce(f.seq, 0))
               AND NOT (l.handshake AND l.seq > g.state_seq)",
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(blob.id.as_bytes())
        .bind(blob.group.as_bytes())
        .bind(blob.uploader.as_bytes())
        .bind(to_db(blob.bytes_total, "blob size")?)
        .bind(i64::from(blob.chunk_count))
        .bind(blob.complete)
        .bind(blob.created_at_unix_s)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "blob", "group or device"))?;
        Ok(())
    }

    pub(crate) async fn blob_impl(&self, id: &BlobId) -> Result<Option<BlobRecord>> {
        sqlx::query(
            "SELECT id, group_id, uploader, bytes_total, chunk_count, complete, created_at FROM blobs WHERE id = $1",
        )
        .bind(id.as_bytes())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?
        .as_ref()
        .map(blob_from_row)
        .transpose()
    }

    pub(crate) async fn complete_blob_impl(&self, id: &BlobId) -> Result<()> {
        let done = sqlx::query("UPDATE blobs SET complete = TRUE WHERE id = $1")
            .bind(id.as_bytes())
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("blob"));
        }
        Ok(())
    }

    pub(crate) async fn delete_blob_impl(&self, id: &BlobId) -> Result<()> {
        sqlx::query("DELETE FROM blobs WHERE id = $1")
            .bind(id.as_bytes())
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    pub(crate) async fn incomplete_blobs_impl(&self) -> Result<Vec<BlobId>> {
        let ids: Vec<[u8; 16]> = sqlx::query_scalar("SELECT id FROM blobs WHERE NOT complete ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(ids.into_iter().map(BlobId::from).collect())
    }

    pub(crate) async fn group_blobs_impl(&self, group: &GroupId) -> Result<Vec<BlobId>> {
        let ids: Vec<[u8; 16]> =
            sqlx::query_scalar("SELECT id FROM blobs WHERE group_id = $1 ORDER BY created_at, id")
                .bind(group.as_bytes())
                .fetch_all(&self.pool)
                .await
                .map_err(backend_error)?;
        Ok(ids.into_iter().map(BlobId::from).collect())
    }
}
