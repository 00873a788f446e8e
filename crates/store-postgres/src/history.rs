//! History transfers (see `redoubt_store::HistoryRecord`).

use redoubt_proto::{DeviceId, GroupId, HistoryState, UserName};
use redoubt_store::{BeginError, Claim, HistoryRecord, Result, StoreError, TransferGroupRecord};
use sqlx::postgres::PgRow;

use crate::{PgStore, backend_error, corrupt, fixed, get, insert_error, optional_fixed, user_name};

fn parse_state(text: &str) -> Result<HistoryState> {
    match text {
        "waiting" => Ok(HistoryState::Waiting),
        "sending" => Ok(HistoryState::Sending),
        "sent" => Ok(HistoryState::Sent),
        "received" => Ok(HistoryState::Received),
        _ => Err(corrupt("history state")),
    }
}

fn record_from_row(row: &PgRow) -> Result<HistoryRecord> {
    Ok(HistoryRecord {
        device: DeviceId::from(fixed::<16>(row, "device_id")?),
        user: user_name(row, "user_name")?,
        state: parse_state(&get::<String>(row, "state")?)?,
        source: optional_fixed::<16>(row, "source_device")?.map(DeviceId::from),
        group: optional_fixed::<32>(row, "group_id")?.map(GroupId::from),
        claimed_at_unix_s: get(row, "claimed_at")?,
        sent_at_unix_s: get(row, "sent_at")?,
        received_at_unix_s: get(row, "received_at")?,
        messages: u32::try_from(get::<i64>(row, "messages")?)
            .map_err(|_| corrupt("history message count"))?,
    })
}

fn transfer_from_row(row: &PgRow) -> Result<TransferGroupRecord> {
    Ok(TransferGroupRecord {
        group: GroupId::from(fixed::<32>(row, "group_id")?),
        target: DeviceId::from(fixed::<16>(row, "target_device")?),
        source: DeviceId::from(fixed::<16>(row, "source_device")?),
        created_at_unix_s: get(row, "created_at")?,
    })
}

macro_rules! record_columns {
    () => {
        "h.device_id, h.user_name, h.state, h.source_device, h.group_id, h.claimed_at, h.sent_at, \
         h.received_at, h.messages"
    };
}

impl PgStore {
    pub(crate) async fn history_records_impl(&self, user: Option<&UserName>) -> Result<Vec<HistoryRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            record_columns!(),
            " FROM history_transfers h JOIN devices d ON d.id = h.device_id
             WHERE $1::text IS NULL OR h.user_name = $1
             ORDER BY d.created_at, h.device_id"
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
        transaction!(self, BeginError, |tx| {
            let mut replaced = None;
            if let Some(claim) = claim {
                // The record's row lock makes concurrent claims take turns: the second
                // sees the first's claim.
                let row = sqlx::query(concat!(
                    "SELECT ",
                    record_columns!(),
                    " FROM history_transfers h WHERE h.device_id = $1 FOR UPDATE"
                ))
                .bind(transfer.target.as_bytes())
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
                    "UPDATE history_transfers
                     SET state = 'sending', source_device = $1, group_id = $2, claimed_at = $3
                     WHERE device_id = $4",
                )
                .bind(transfer.source.as_bytes())
                .bind(transfer.group.as_bytes())
                .bind(claim.at_unix_s)
                .bind(transfer.target.as_bytes())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
            }
            sqlx::query(
                "INSERT INTO transfer_groups (group_id, target_device, source_device, created_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(transfer.group.as_bytes())
            .bind(transfer.target.as_bytes())
            .bind(transfer.source.as_bytes())
            .bind(transfer.created_at_unix_s)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "transfer group", "group or device"))?;
            replaced
        })
    }

    pub(crate) async fn history_sent_impl(
        &self,
        target: &DeviceId,
        source: &DeviceId,
        messages: u32,
        at_unix_s: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE history_transfers SET state = 'sent', sent_at = $1, messages = $2
             WHERE device_id = $3 AND source_device = $4 AND state IN ('sending', 'sent')",
        )
        .bind(at_unix_s)
        .bind(i64::from(messages))
        .bind(target.as_bytes())
        .bind(source.as_bytes())
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
            "SELECT group_id, target_device, source_device, created_at FROM transfer_groups WHERE group_id = $1",
        )
        .bind(group.as_bytes())
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
        // One statement: PostgreSQL locks the record while it decides.
        // The user's history may arrive through a transfer whose claim was later taken
        // over: whichever the device stored first completes it.
        let row = sqlx::query(
            "WITH transfer AS (
                 SELECT t.source_device, (d.user_name = n.user_name) AS own_history
                 FROM transfer_groups t
                 JOIN devices d ON d.id = t.source_device
                 JOIN devices n ON n.id = t.target_device
                 WHERE t.group_id = $1 AND t.target_device = $2),
             received AS (
                 UPDATE history_transfers h SET state = 'received', received_at = $3,
                     source_device = (SELECT source_device FROM transfer)
                 WHERE h.device_id = $2 AND h.state <> 'received'
                   AND (SELECT own_history FROM transfer))
             SELECT 1 AS known FROM transfer",
        )
        .bind(group.as_bytes())
        .bind(target.as_bytes())
        .bind(at_unix_s)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?;
        if row.is_none() {
            return Err(StoreError::NotFound("transfer group"));
        }
        Ok(())
    }
}
