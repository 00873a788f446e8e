//! Records of the delivery service: groups' public state, their ordered logs, membership,
//! key package pools and Welcome inboxes. The server stores MLS messages as opaque bytes;
//! application messages are ciphertext it cannot read.

use redoubt_proto::{BlobId, DeviceId, GroupId, UserName};

use crate::StoreError;

/// A group as the delivery service tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub id: GroupId,
    pub epoch: u64,
    /// The group's public state (an mls-rs external snapshot): no secrets. It is as of
    /// log entry `state_seq`; the handshakes after it ([`crate::Store::handshakes_after`])
    /// bring it to `epoch`.
    pub state: Vec<u8>,
    /// The log entry the stored state is as of; 0 for the group's creation.
    pub state_seq: u64,
    /// Sequence number of the last log entry; 0 for none.
    pub last_seq: u64,
    pub created_at_unix_s: i64,
}

/// A group's epoch and last sequence number, without its (possibly multi-MB) state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHead {
    pub epoch: u64,
    /// Sequence number of the last log entry; 0 for none.
    pub last_seq: u64,
}

/// Which entries of a group's log a device may read: those after `joined_seq`, up to and
/// including `removed_seq` (the commit that removed it), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub joined_seq: u64,
    pub removed_seq: Option<u64>,
}

impl Membership {
    /// Whether the entry with this sequence number is readable.
    pub fn may_read(&self, seq: u64) -> bool {
        seq > self.joined_seq && self.removed_seq.is_none_or(|removed| seq <= removed)
    }

    pub fn is_current(&self) -> bool {
        self.removed_seq.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct NewLogEntry<'a> {
    pub group: GroupId,
    pub sender: DeviceId,
    pub client_message_id: [u8; 16],
    pub message: &'a [u8],
    pub created_at_unix_s: i64,
}

/// A handshake's effect on the group, applied with its log entry (which is then one of the
/// group's handshakes).
#[derive(Debug, Clone)]
pub struct GroupTransition {
    pub expected_epoch: u64,
    pub epoch: u64,
    /// The group's public state after this entry, or `None` to keep the stored state:
    /// this entry is then replayed over it when the state is next loaded.
    pub state: Option<Vec<u8>>,
    pub added: Vec<DeviceId>,
    pub removed: Vec<DeviceId>,
    /// Delivered to every added device's inbox.
    pub welcome: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// The same `(sender, client_message_id)` was appended before; nothing changed.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("group not found")]
    UnknownGroup,
    #[error("commit is for epoch {expected}, the group is at epoch {current}")]
    EpochConflict { expected: u64, current: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub seq: u64,
    pub sender: DeviceId,
    pub message: Vec<u8>,
    pub created_at_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRecord {
    pub id: u64,
    pub group: GroupId,
    pub welcome: Vec<u8>,
    pub joined_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedPackage {
    pub user: UserName,
    pub device: DeviceId,
    pub key_package: Vec<u8>,
}

/// An encrypted attachment's blob: opaque bytes stored by the server for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub id: BlobId,
    pub group: GroupId,
    pub uploader: DeviceId,
    pub bytes_total: u64,
    pub chunk_count: u32,
    /// All chunks arrived; only complete blobs may be fetched.
    pub complete: bool,
    pub created_at_unix_s: i64,
}
