//! The key directory's records (key transparency, `redoubt_server::kt`).
//!
//! akd keeps its tree as opaque records; the server encodes them and the store keeps them
//! by key, so any backend that passes the conformance suite can hold the directory. Beside
//! the tree: each epoch's signed head, the device certificates each logged value commits
//! to, the users whose device set changed since the last epoch, and auditors'
//! countersignatures.

use redoubt_proto::UserName;

/// One tree record (akd's aZKS or a tree node), by its binary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtNode {
    pub key: Vec<u8>,
    pub record: Vec<u8>,
}

/// One logged state of a label: akd's value state, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtValue {
    pub label: Vec<u8>,
    pub epoch: u64,
    pub version: u64,
    pub record: Vec<u8>,
}

/// One published epoch: its signed head, and the append-only proof from the epoch before
/// to it, made when it was published (empty for epoch 0). A proof made later from the
/// tree as it then is grows with every change since, so an auditor catching up would be
/// sent a quadratic amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtEpochRecord {
    pub epoch: u64,
    pub head: Vec<u8>,
    pub proof: Vec<u8>,
}

/// The device certificates a user's value at `epoch` commits to, and the signed approvals
/// of the approved devices among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KtSet {
    pub user: UserName,
    pub epoch: u64,
    pub certificates: Vec<Vec<u8>>,
    pub approvals: Vec<Vec<u8>>,
}
