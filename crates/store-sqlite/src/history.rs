//! History transfers (see `redoubt_store::HistoryRecord`).

use redoubt_proto::{BlobId, DeviceId, GroupId, HistoryState, UserName};
use redoubt_store::{BeginError, Claim, HistoryRecord, Result, StoreError, TransferGroupRecord};
use sqlx::sqlite::SqliteRow;

use crate::{SqliteStore, backend_error, corrupt, fixed, get, insert_error};

fn state_text(state: HistoryState) -> &'static str {
    state.as_str()
}

fn parse_state(text: &str) -> Result<HistoryState> {
    match text {
        "waiting" => Ok(HistoryState::Waiting),
        "sending" => Ok(HistoryState::Sending),
        "sent" => Ok(HistoryState::Sent),
        "received" => Ok(HistoryState::Received),
        _ => Err(corrupt("history state")),
    }
}

fn optional_fixed<const N: usize>(row: &SqliteRow, column: &str) -> Result<Option<[u8; N]>> {
    get::<Option<Vec<u8>>>(row, column)?
        .map(|bytes| {
            bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("{column} has the wrong length")))
        })
        .transpose()
}

fn record_from_row(row: &SqliteRow) -> Result<HistoryRecord> {
    let messages: i64 = get(row, "messages")?;
    Ok(HistoryRecord {
        device: DeviceId::from(fixed::<16>(row, "device_id")?),
        user: UserName::parse(&get::<String>(row, "user_name")?).map_err(|_| corrupt("user name"))?,
        state: parse_state(&get::<String>(row, "state")?)?,
        source: optional_fixed::<16>(row, "source_device")?.map(DeviceId::from),
        group: optional_fixed::<32>(row, "group_id")?.map(GroupId::from),
        claimed_at_unix_s: get(row, "claimed_at")?,
        sent_at_unix_s: get(row, "sent_at")?,
        received_at_unix_s: get(row, "received_at")?,
        messages: u32::try_from(messages).map_err(|_| corrupt("history message count"))?,
    })
}

fn transfer_from_row(row: &SqliteRow) -> Result<TransferGroupRecord> {
    Ok(TransferGroupRecord {
        group: GroupId::from(fixed::<32>(row, "group_id")?),
        target: DeviceId::from(fixed::<16>(row, "target_device")?),
        source: DeviceId::from(fixed::<16>(row, "source_device")?),
        created_at_unix_s: get(row, "created_at")?,
    })
}

macro_rules! record_columns {
    () => {
        "device_id, user_name, state, source_device, group_id, claimed_at, sent_at, received_at, messages"
    };
}

impl SqliteStore {
    pub(crate) async fn group_blobs_impl(&self, group: &GroupId) -> Result<Vec<BlobId>> {
        sqlx::query("SELECT id FROM blobs WHERE group_id = ? ORDER BY created_at, id")
            .bind(group.as_bytes().as_slice())
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?
            .iter()
            .map(|row| Ok(BlobId::from(fixed::<16>(row, "id")?)))
            .collect()
    }

    pub(crate) async fn history_records_impl(&self, user: Option<&UserName>) -> Result<Vec<HistoryRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM history_transfers h WHERE ?1 IS NULL OR user_name = ?1
             ORDER BY (SELECT created_at FROM devices d WHERE d.id = h.device_id), device_id"
        ))
        .bind(user.map(UserName::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?
        .iter()
        .map(record_from_row)
        .collect()
    }

    pub(crate) async fn begin_history_impl(
        &self,
        transfer: &TransferGroupRecord,
        claim: Option<Claim>,
    ) -> Result<Option<GroupId>, BeginError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        let mut replaced = None;
        if let Some(claim) = claim {
            let row = sqlx::query(concat!(
                "SELECT ",
                record_columns!(),
                " FROM history_transfers WHERE device_id = ?"
            ))
            .bind(transfer.target.as_bytes().as_slice())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?
            .ok_or(BeginError::NotWaiting)?;
            let record = record_from_row(&row)?;
            match record.state {
                HistoryState::Waiting => {}
                HistoryState::Sending => {
                    let lapsed = record
                        .claimed_at_unix_s
                        .is_none_or(|at| at < claim.lapsed_before_unix_s);
                    if record.source != Some(transfer.source) && !lapsed {
                        return Err(BeginError::Busy);
                    }
                    replaced = record.group.filter(|group| *group != transfer.group);
                }
                HistoryState::Sent | HistoryState::Received => return Err(BeginError::NotWaiting),
            }
            sqlx::query(
                "UPDATE history_transfers SET state = ?, source_device = ?, group_id = ?, claimed_at = ?
                 WHERE device_id = ?",
            )
            .bind(state_text(HistoryState::Sending))
            .bind(transfer.source.as_bytes().as_slice())
            .bind(transfer.group.as_bytes().as_slice())
            .bind(claim.at_unix_s)
            .bind(transfer.target.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        }
        sqlx::query(
            "INSERT INTO transfer_groups (group_id, target_device, source_device, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(transfer.group.as_bytes().as_slice())
        .bind(transfer.target.as_bytes().as_slice())
        .bind(transfer.source.as_bytes().as_slice())
        .bind(transfer.created_at_unix_s)
        .execute(&mut *tx)
        .await
        .map_err(|e| insert_error(e, "transfer group", "group or device"))?;
        tx.commit().await.map_err(backend_error)?;
        Ok(replaced)
    }

    pub(crate) async fn history_sent_impl(
        &self,
        target: &DeviceId,
        source: &DeviceId,
        messages: u32,
        at_unix_s: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE history_transfers SET state = 'sent', sent_at = ?, messages = ?
             WHERE device_id = ? AND source_device = ? AND state IN ('sending', 'sent')",
        )
        .bind(at_unix_s)
        .bind(i64::from(messages))
        .bind(target.as_bytes().as_slice())
        .bind(source.as_bytes().as_slice())
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound("history claim"));
        }
        Ok(())
    }

    pub(crate) async fn transfer_group_impl(&self, group: &GroupId) -> Result<Option<TransferGroupRecord>> {
        sqlx::query(
            "SELECT group_id, target_device, source_device, created_at FROM transfer_groups WHERE group_id = ?",
        )
        .bind(group.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?
        .as_ref()
        .map(transfer_from_row)
        .transpose()
    }

    pub(crate) async fn history_received_impl(
        &self,
        group: &GroupId,
        target: &DeviceId,
        at_unix_s: i64,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend_error)?;
        let known = sqlx::query("SELECT 1 FROM transfer_groups WHERE group_id = ? AND target_device = ?")
            .bind(group.as_bytes().as_slice())
            .bind(target.as_bytes().as_slice())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend_error)?;
        if known.is_none() {
            return Err(StoreError::NotFound("transfer group"));
        }
        // The user's history may arrive through a transfer whose claim was later taken
        // over: whichever the device stored first completes it.
        sqlx::query(
            "UPDATE history_transfers SET state = 'received', received_at = ?,
                 source_device = (SELECT source_device FROM transfer_groups WHERE group_id = ?)
             WHERE device_id = ? AND state != 'received'
               AND EXISTS (SELECT 1 FROM transfer_groups t
                           JOIN devices d ON d.id = t.source_device
                           JOIN devices n ON n.id = t.target_device
                           WHERE t.group_id = ? AND d.user_name = n.user_name)",
        )
        .bind(at_unix_s)
        .bind(group.as_bytes().as_slice())
        .bind(target.as_bytes().as_slice())
        .bind(group.as_bytes().as_slice())
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
        tx.commit().await.map_err(backend_error)?;
        Ok(())
    }
}
