//! The storage interface of the Redoubt server.
//!
//! The server talks to its database only through [`Store`]. Every backend (SQLite now,
//! PostgreSQL later) implements the same trait and must pass the same conformance suite
//! (`conformance` feature), so behaviour does not depend on the backend chosen. Only
//! store crates contain SQL.
//!
//! Operations that must not be half-done (creating a user together with their first
//! activation code, redeeming a code together with creating the device) are single trait
//! methods, so each backend makes them one transaction.

#[cfg(feature = "conformance")]
pub mod conformance;

mod cluster;
mod delivery;
mod history;
mod kt;
mod management;
mod observe;

pub use cluster::{BUS_MESSAGE_BYTES_MAX, Bus, BusEvent, Lease, NodeRecord};
pub use delivery::{
    AppendError, Appended, BlobRecord, ClaimedPackage, GroupHead, GroupRecord, GroupTransition, InboxRecord,
    LogRecord, Membership, NewLogEntry,
};
pub use history::{BeginError, Claim, HistoryRecord, TransferGroupRecord};
pub use kt::{KtEpochRecord, KtNode, KtSet, KtValue};
pub use management::{Applied, AuditEvent, Change, CommandRecord, DirectoryGroupRecord};
pub use observe::{ObserverSlot, StoreObserver};
use redoubt_proto::{
    ActivationCodeId, AuditEntry, BlobId, DeviceId, DeviceName, DisplayName, GroupId, GroupName, OrgId,
    PolicyScope, PolicySettings, PublicKeyBytes, Role, UserName,
};

/// Storage failures, grouped by cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A row with this key exists already (user name, device id, public key, serial).
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// A row the operation refers to does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database holds data this code cannot read (newer schema, corrupt row).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The user is disabled: no activation code may be issued for them.
    #[error("{0} is disabled")]
    Disabled(&'static str),
    /// A per-device limit would be exceeded.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The backend failed (I/O, locks, connection).
    #[error("storage backend failed: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The organisation's identity, written once at initialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub org_id: OrgId,
    pub created_at_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: UserName,
    pub display_name: Option<DisplayName>,
    /// Sorted, without duplicates.
    pub roles: Vec<Role>,
    pub created_at_unix_s: i64,
    /// Set while the user is disabled (by the directory or SCIM): no activation code may be
    /// issued or redeemed for them.
    pub disabled_at_unix_s: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub user: UserName,
    pub name: DeviceName,
    pub public_key: PublicKeyBytes,
    /// The certificate as issued (`DeviceCertificate` bytes).
    pub certificate: Vec<u8>,
    pub certificate_serial: u64,
    pub certificate_not_after_unix_s: i64,
    pub created_at_unix_s: i64,
    pub last_seen_at_unix_s: Option<i64>,
    pub revoked_at_unix_s: Option<i64>,
    /// `None` while a new device waits for approval by another device of its user.
    pub approved_at_unix_s: Option<i64>,
    /// The last policy version the device acknowledged.
    pub policy_version_acked: u64,
    /// The approving device's signed approval (`Signed<DeviceApproval>`), once approved by
    /// one; `None` for devices that needed no approval.
    pub approval: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationCodeState {
    /// May still be redeemed (if not expired).
    Active,
    /// Redeemed by a device.
    Used,
    /// Too many wrong secrets.
    Voided,
}

/// An activation code as the server keeps it: the SHA-256 of the secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationCodeRecord {
    pub id: ActivationCodeId,
    pub user: UserName,
    pub secret_hash: [u8; 32],
    pub created_at_unix_s: i64,
    pub expires_at_unix_s: i64,
    pub failed_attempts: u32,
    pub state: ActivationCodeState,
    /// The device that redeemed it, once used.
    pub device_id: Option<DeviceId>,
}

impl ActivationCodeRecord {
    /// A fresh, unused code.
    pub fn new(
        id: ActivationCodeId,
        user: UserName,
        secret_hash: [u8; 32],
        created_at_unix_s: i64,
        expires_at_unix_s: i64,
    ) -> Self {
        Self {
            id,
            user,
            secret_hash,
            created_at_unix_s,
            expires_at_unix_s,
            failed_attempts: 0,
            state: ActivationCodeState::Active,
            device_id: None,
        }
    }
}

/// Why a redemption did not happen. The code is unchanged in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedeemError {
    #[error("activation code not found")]
    Unknown,
    #[error("activation code already used")]
    Used,
    #[error("activation code voided")]
    Voided,
    #[error("activation code expired")]
    Expired,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reports the backend's read and group-commit timings to `observer` from now on (the
    /// server's metrics). Backends without such timings ignore it.
    fn observe(&self, observer: std::sync::Arc<dyn StoreObserver>) {
        let _ = observer;
    }

    /// The organisation, or `None` before initialisation.
    async fn org(&self) -> Result<Option<OrgRecord>>;

    /// Records the organisation. Fails with `AlreadyExists` if one is recorded.
    async fn init_org(&self, org: &OrgRecord) -> Result<()>;

    /// Creates a user together with the activation code for their first device, atomically.
    async fn create_user(&self, user: &UserRecord, code: &ActivationCodeRecord) -> Result<()>;

    async fn user(&self, name: &UserName) -> Result<Option<UserRecord>>;

    /// All users, ordered by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;

    /// Adds an activation code for an existing user (`NotFound` otherwise; `Disabled` for a
    /// disabled user).
    async fn create_activation_code(&self, code: &ActivationCodeRecord) -> Result<()>;

    async fn activation_code(&self, id: &ActivationCodeId) -> Result<Option<ActivationCodeRecord>>;

    /// Counts one wrong secret against an active code and voids it when the count reaches
    /// `attempts_max`. Returns the code as it is afterwards; `NotFound` if it does not exist.
    /// A code that is not active is returned unchanged.
    /// `audit` is written in the same transaction.
    async fn record_failed_activation(
        &self,
        id: &ActivationCodeId,
        attempts_max: u32,
        audit: &AuditEvent,
    ) -> Result<ActivationCodeRecord>;

    /// Marks the code used and creates the device, atomically, if and only if the code is
    /// active and `now_unix_s` is before its expiry. Concurrent redemptions of one code:
    /// exactly one succeeds. `audit` is written in the same transaction. When the user has
    /// another active device, the new one is recorded as waiting for history
    /// ([`HistoryRecord`], state `Waiting`) in the same transaction.
    async fn redeem_activation_code(
        &self,
        id: &ActivationCodeId,
        now_unix_s: i64,
        device: &DeviceRecord,
        audit: &AuditEvent,
    ) -> Result<(), RedeemError>;

    /// A fresh certificate serial, never returned before by this store.
    async fn next_certificate_serial(&self) -> Result<u64>;

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>>;

    /// All devices, or one user's, ordered by user then creation time.
    async fn list_devices(&self, user: Option<&UserName>) -> Result<Vec<DeviceRecord>>;

    /// Records when devices last authenticated, all in one write (the server coalesces
    /// them). A device that no longer exists is skipped; a time never moves backwards.
    async fn record_last_seen(&self, seen: &[(DeviceId, i64)]) -> Result<()>;

    /// Adds one-time key packages to a device's pool and optionally replaces its last-resort
    /// package. Fails with [`StoreError::Limit`], adding nothing, when the pool would exceed
    /// `pool_max`. Returns the pool size (one-time packages).
    async fn publish_key_packages(
        &self,
        device: &DeviceId,
        one_time: &[Vec<u8>],
        last_resort: Option<&[u8]>,
        pool_max: u32,
    ) -> Result<u32>;

    /// For every active device of each user but those in `except`, takes one one-time key
    /// package (deleting it), or else the device's last-resort package (kept). Devices with
    /// neither are skipped.
    async fn claim_key_packages(
        &self,
        users: &[UserName],
        except: &[DeviceId],
    ) -> Result<Vec<ClaimedPackage>>;

    /// Registers a new group with `creator` as its only member, joined at sequence 0.
    async fn create_group(&self, group: &GroupRecord, creator: &DeviceId) -> Result<()>;

    async fn group(&self, id: &GroupId) -> Result<Option<GroupRecord>>;

    /// The group's epoch and last sequence number, without reading its state.
    async fn group_head(&self, id: &GroupId) -> Result<Option<GroupHead>>;

    /// The device's membership of a group: which entries it may read.
    async fn membership(&self, group: &GroupId, device: &DeviceId) -> Result<Option<Membership>>;

    /// Appends to a group's log, atomically with the group's new public state when the
    /// entry is a commit. A repeated `(sender, client_message_id)` returns the first
    /// append's sequence number and changes nothing. A transition whose `expected_epoch` is
    /// not the group's epoch fails with [`AppendError::EpochConflict`].
    async fn append(
        &self,
        entry: &NewLogEntry<'_>,
        transition: Option<&GroupTransition>,
    ) -> Result<Appended, AppendError>;

    /// The sequence number of an earlier append by `sender` with this client message id.
    async fn find_submission(
        &self,
        group: &GroupId,
        sender: &DeviceId,
        client_message_id: &[u8; 16],
    ) -> Result<Option<u64>>;

    /// Entries with `seq > after_seq`, in order, at most `limit`.
    async fn log_entries(&self, group: &GroupId, after_seq: u64, limit: u32) -> Result<Vec<LogRecord>>;

    /// The group's handshakes (entries appended with a transition) after `after_seq`, in
    /// order. Pruning keeps those after the stored state's `state_seq`.
    async fn handshakes_after(&self, group: &GroupId, after_seq: u64) -> Result<Vec<LogRecord>>;

    /// Groups the device is a current member of (their heads, not their states), with its
    /// membership.
    async fn device_groups(&self, device: &DeviceId) -> Result<Vec<(GroupId, GroupHead, Membership)>>;

    /// Devices that are current members of the group.
    async fn group_members(&self, group: &GroupId) -> Result<Vec<DeviceId>>;

    /// Welcome messages waiting for the device, oldest first.
    async fn inbox(&self, device: &DeviceId) -> Result<Vec<InboxRecord>>;

    /// Deletes the named inbox items of the device (others' items are untouched).
    async fn inbox_ack(&self, device: &DeviceId, ids: &[u64]) -> Result<()>;

    /// Records that `device` processed the group's log up to `seq` (never moves back).
    async fn ack(&self, group: &GroupId, device: &DeviceId, seq: u64) -> Result<()>;

    /// Deletes log entries that every device still due to read them has acknowledged, and
    /// entries created before `older_than_unix_s` (the retention limit). Returns how many.
    async fn prune_logs(&self, older_than_unix_s: i64) -> Result<u64>;

    /// Records a new, incomplete blob.
    async fn create_blob(&self, blob: &BlobRecord) -> Result<()>;

    async fn blob(&self, id: &BlobId) -> Result<Option<BlobRecord>>;

    /// Marks a blob complete (fetchable).
    async fn complete_blob(&self, id: &BlobId) -> Result<()>;

    /// Deletes the blob's record and its chunks.
    async fn delete_blob(&self, id: &BlobId) -> Result<()>;

    /// Stores chunk `index` of a blob's bytes, replacing one stored before under that index
    /// (`NotFound("blob")` if there is no such blob). Used where the blobs live in the
    /// database, so that every node of a cluster serves them.
    async fn put_blob_chunk(&self, id: &BlobId, index: u32, data: &[u8]) -> Result<()>;

    async fn blob_chunk(&self, id: &BlobId, index: u32) -> Result<Option<Vec<u8>>>;

    /// Blobs whose upload never finished (an interrupted upload, a crash).
    async fn incomplete_blobs(&self) -> Result<Vec<BlobId>>;

    /// The blobs of a group (complete or not).
    async fn group_blobs(&self, group: &GroupId) -> Result<Vec<BlobId>>;

    /// Bytes of the attachments `uploader` started uploading at or after `since_unix_s`
    /// and that are still held (complete or not); blobs of history transfers are not
    /// attachments and are left out.
    async fn attachment_bytes_since(&self, uploader: &DeviceId, since_unix_s: i64) -> Result<u64>;

    /// The history transfers of every device, or of one user's, ordered by device creation.
    async fn history_records(&self, user: Option<&UserName>) -> Result<Vec<HistoryRecord>>;

    /// Registers `transfer`'s group, atomically with, when `claim` is given, `transfer.source`
    /// taking on the job of sending the user's history to `transfer.target`: allowed when
    /// the target waits (state `Waiting`, or `Sending` by the same source, or by another
    /// whose claim lapsed). Returns the group of the claim it replaced, if any, so its blobs
    /// can be deleted.
    async fn begin_history(
        &self,
        transfer: &TransferGroupRecord,
        claim: Option<Claim>,
    ) -> Result<Option<GroupId>, BeginError>;

    /// Records that `source`, holding the claim, sent `target` its history (`NotFound` if
    /// `source` holds no claim on it).
    async fn history_sent(
        &self,
        target: &DeviceId,
        source: &DeviceId,
        messages: u32,
        at_unix_s: i64,
    ) -> Result<()>;

    async fn transfer_group(&self, group: &GroupId) -> Result<Option<TransferGroupRecord>>;

    /// Records that `target` stored the history of the transfer group `group`; when that is
    /// its user's history, its record becomes `Received`. `NotFound` unless `group` is a
    /// transfer group to `target`.
    async fn history_received(&self, group: &GroupId, target: &DeviceId, at_unix_s: i64) -> Result<()>;

    /// Makes `changes` and appends `audit` to the audit log in one transaction: all or
    /// nothing. The first change that fails names its cause.
    async fn apply(&self, changes: &[Change], audit: &[AuditEvent]) -> Result<Applied>;

    /// The organisation's policy version: 0 until the first policy change.
    async fn policy_version(&self) -> Result<u64>;

    /// Every policy document, by scope.
    async fn policies(&self) -> Result<Vec<(PolicyScope, PolicySettings)>>;

    /// Directory groups with their members, ordered by name.
    async fn directory_groups(&self) -> Result<Vec<DirectoryGroupRecord>>;

    /// The directory groups `user` belongs to, ordered by name.
    async fn user_groups(&self, user: &UserName) -> Result<Vec<GroupName>>;

    /// Records that the device applied policy `version` (never moves back).
    async fn acknowledge_policy(&self, device: &DeviceId, version: u64) -> Result<()>;

    /// Commands of one device, or of every device, oldest first; only unacknowledged ones
    /// with `pending_only`.
    async fn commands(&self, device: Option<&DeviceId>, pending_only: bool) -> Result<Vec<CommandRecord>>;

    /// Audit entries with `seq > after_seq`, in order, at most `limit`.
    async fn audit_entries(&self, after_seq: u64, limit: u32) -> Result<Vec<AuditEntry>>;

    /// The newest audit entry's sequence number and hash (0 and zeros when empty).
    async fn audit_head(&self) -> Result<(u64, [u8; 32])>;

    /// Stores a signed checkpoint over the entry `seq` (a no-op if one exists).
    async fn add_audit_checkpoint(&self, seq: u64, document: &[u8]) -> Result<()>;

    /// Signed checkpoints over entries in `after_seq < seq <= through_seq`, in order.
    async fn audit_checkpoints(&self, after_seq: u64, through_seq: u64) -> Result<Vec<Vec<u8>>>;

    /// Every organisation setting whose key starts with `prefix`, ordered by key.
    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;

    /// Records a node's heartbeat, inserting or replacing its row.
    async fn node_heartbeat(&self, node: &NodeRecord) -> Result<()>;

    /// Every node recorded, ordered by id. Nodes whose last heartbeat is older than
    /// `forget_before_unix_s` are deleted first.
    async fn nodes(&self, forget_before_unix_s: i64) -> Result<Vec<NodeRecord>>;

    /// Takes lease `name` for `holder` until `now_ms + ttl_ms` if it is free, lapsed
    /// (`expires_at_ms <= now_ms`) or held by `holder` already (a renewal keeps the token).
    /// `None` while another holder's lease runs. Atomic: of two nodes asking at once, one
    /// gets it.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>>;

    /// Whether `token` is still the current token of lease `name` (a holder that was
    /// paused past its expiry and replaced finds out here before writing).
    async fn lease_is_current(&self, name: &str, token: u64) -> Result<bool>;

    /// Writes key-directory tree records and value states (replacing any with the same key:
    /// nodes by `key`, values by `(label, epoch)`), all in one transaction.
    async fn kt_write(&self, nodes: &[KtNode], values: &[KtValue]) -> Result<()>;

    /// The tree records with these keys that exist (any order).
    async fn kt_nodes(&self, keys: &[Vec<u8>]) -> Result<Vec<KtNode>>;

    /// Every value state of these labels, ordered by label then epoch.
    async fn kt_values(&self, labels: &[Vec<u8>]) -> Result<Vec<KtValue>>;

    /// Records the device sets of the next epoch (replacing rows with the same user and
    /// epoch: an epoch whose publication crashed is published again with what is current).
    /// Written before the tree moves to that epoch.
    async fn kt_put_sets(&self, sets: &[KtSet]) -> Result<()>;

    /// Deletes the device sets of epochs after `epoch` (written for an epoch whose
    /// publication failed before the tree moved).
    async fn kt_drop_sets_after(&self, epoch: u64) -> Result<()>;

    /// Every logged device set of `user`, oldest first.
    async fn kt_sets(&self, user: &UserName) -> Result<Vec<KtSet>>;

    /// The newest logged device set of every user, ordered by user.
    async fn kt_latest_sets(&self) -> Result<Vec<KtSet>>;

    /// Records epoch `epoch`'s signed head and append-only proof and takes `done` off the
    /// changed users, in one transaction. `AlreadyExists("epoch")` if the epoch has a head
    /// (a head is never replaced).
    async fn kt_finish_epoch(&self, epoch: &KtEpochRecord, done: &[UserName]) -> Result<()>;

    /// Epochs in `after < epoch`, in order, at most `limit`, with their heads and proofs.
    async fn kt_heads(&self, after: u64, limit: u32) -> Result<Vec<KtEpochRecord>>;

    /// The signed head of `epoch`, if it has one.
    async fn kt_head(&self, epoch: u64) -> Result<Option<Vec<u8>>>;

    /// The newest epoch's number and signed head, if any.
    async fn kt_latest_head(&self) -> Result<Option<(u64, Vec<u8>)>>;

    /// Marks users whose device set changed (idempotent).
    async fn kt_mark_changed(&self, users: &[UserName]) -> Result<()>;

    /// Users marked changed, ordered by name, at most `limit`.
    async fn kt_changed(&self, limit: u32) -> Result<Vec<UserName>>;

    /// Takes marks off users whose logged set turned out unchanged (no epoch needed).
    async fn kt_unmark(&self, users: &[UserName]) -> Result<()>;

    /// Stores an auditor's newest countersignature, replacing its earlier one unless
    /// `epoch` is lower (the same epoch countersigned again is fresher).
    async fn kt_put_auditor_signature(
        &self,
        auditor_key: &[u8; 32],
        epoch: u64,
        document: &[u8],
    ) -> Result<()>;

    /// Every auditor's newest countersignature, ordered by key.
    async fn kt_auditor_signatures(&self) -> Result<Vec<Vec<u8>>>;

    /// Flushes and closes the store; later calls fail.
    async fn close(&self);
}
