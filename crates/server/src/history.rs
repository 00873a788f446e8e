//! History transfers: a device sends another device conversation history, end to end
//! encrypted, through a group made for that transfer alone. The server sees only that a
//! transfer happens (who to whom, when, how many messages): the history travels as blobs
//! of ciphertext in that group, their keys in an MLS message only the two devices read.
//!
//! A user's new device waits for history from the moment it enrols (when the user had
//! other devices). Any of the user's devices that is not waiting itself may claim the job;
//! one claim holds at a time ([`HISTORY_CLAIM_LEASE_S`]), and the new device's confirmation
//! deletes the transfer's blobs. A conversation that shares its history with new members
//! uses the same transfers, without a claim.

use redoubt_proto::{DeviceId, ErrorCode, GroupId, HISTORY_CLAIM_LEASE_S, HistoryState};
use redoubt_store::{BeginError, Claim, TransferGroupRecord};

use crate::State;
use crate::api::Authenticated;
use crate::delivery::require_member;
use crate::error::ApiError;

pub(crate) async fn begin(
    state: &State,
    who: &Authenticated,
    target: DeviceId,
    group: GroupId,
    own: bool,
) -> Result<(), ApiError> {
    if target == who.device_id {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "a device sends history to another device",
        ));
    }
    let device = state
        .store
        .device(&target)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such device"))?;
    if device.revoked_at_unix_s.is_some() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "that device is revoked: it gets no history",
        ));
    }
    if device.approved_at_unix_s.is_none() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "that device is not approved yet: it gets no history until it is",
        ));
    }
    // The transfer's group holds the sender and, once added, the target: nobody else can
    // ever fetch its blobs.
    require_member(state, &group, who).await?;
    let members = state.store.group_members(&group).await?;
    if members.iter().any(|m| *m != who.device_id && *m != target) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            "a transfer group holds only the sending and the receiving device",
        ));
    }
    let now = state.now();
    let claim = if own {
        if device.user != who.user {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "a user's history goes only to that user's own devices",
            ));
        }
        let waiting_itself = state
            .store
            .history_records(Some(&who.user))
            .await?
            .iter()
            .any(|r| r.device == who.device_id && r.state != HistoryState::Received);
        if waiting_itself {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this device has not received the history itself yet",
            ));
        }
        Some(Claim {
            at_unix_s: now,
            lapsed_before_unix_s: now - HISTORY_CLAIM_LEASE_S,
        })
    } else {
        None
    };
    let transfer = TransferGroupRecord {
        group,
        target,
        source: who.device_id,
        created_at_unix_s: now,
    };
    match state.store.begin_history(&transfer, claim).await {
        Ok(replaced) => {
            if let Some(replaced) = replaced {
                crate::blobs::delete_group_blobs(state, &replaced).await?;
            }
            tracing::info!(target_device = %target, source_device = %who.device_id, own, "history transfer begun");
            Ok(())
        }
        Err(BeginError::NotWaiting) => Err(ApiError::new(
            ErrorCode::NotFound,
            "that device is not waiting for history",
        )),
        Err(BeginError::Busy) => Err(ApiError::new(
            ErrorCode::AlreadyExists,
            "another device of this user is sending that history",
        )),
        Err(BeginError::Store(error)) => Err(error.into()),
        Err(error) => Err(ApiError::new(ErrorCode::Internal, error.to_string())),
    }
}

pub(crate) async fn sent(
    state: &State,
    who: &Authenticated,
    target: DeviceId,
    messages: u32,
) -> Result<(), ApiError> {
    state
        .store
        .history_sent(&target, &who.device_id, messages, state.now())
        .await
        .map_err(|error| match error {
            redoubt_store::StoreError::NotFound(_) => ApiError::new(
                ErrorCode::NotFound,
                "this device holds no claim on that device's history",
            ),
            other => other.into(),
        })
}

/// The target stored what it was sent: the transfer's blobs are deleted.
pub(crate) async fn received(state: &State, who: &Authenticated, group: GroupId) -> Result<(), ApiError> {
    state
        .store
        .history_received(&group, &who.device_id, state.now())
        .await
        .map_err(|error| match error {
            redoubt_store::StoreError::NotFound(_) => ApiError::new(
                ErrorCode::NotFound,
                "no history was sent to this device through that group",
            ),
            other => other.into(),
        })?;
    crate::blobs::delete_group_blobs(state, &group).await?;
    tracing::info!(device_id = %who.device_id, "history received; its blobs deleted");
    Ok(())
}
