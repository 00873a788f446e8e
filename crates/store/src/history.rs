//! Records of history transfers: which new devices wait for their user's conversation
//! history, which device took the job, and the groups each transfer travels through. The
//! history itself is ciphertext in blobs the server cannot read; these rows say only who
//! sends to whom and when.

use redoubt_proto::{DeviceId, GroupId, HistoryState, UserName};

use crate::StoreError;

/// A new device's history transfer (one per device enrolled while its user had others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub device: DeviceId,
    pub user: UserName,
    pub state: HistoryState,
    /// The device that took the job on.
    pub source: Option<DeviceId>,
    /// The group it travels through.
    pub group: Option<GroupId>,
    pub claimed_at_unix_s: Option<i64>,
    pub sent_at_unix_s: Option<i64>,
    pub received_at_unix_s: Option<i64>,
    pub messages: u32,
}

/// A group made for one history transfer: `source` sends `target` history through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferGroupRecord {
    pub group: GroupId,
    pub target: DeviceId,
    pub source: DeviceId,
    pub created_at_unix_s: i64,
}

/// How a device claims a new device's history job ([`crate::Store::begin_history`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub at_unix_s: i64,
    /// A claim by another device made before this time has lapsed and may be taken over.
    pub lapsed_before_unix_s: i64,
}

/// Why a transfer could not begin. Nothing changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeginError {
    /// The target waits for no history (never did, or it was sent already).
    #[error("that device waits for no history")]
    NotWaiting,
    /// Another device holds a claim that has not lapsed.
    #[error("another device is sending that history")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}
