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

use redoubt_proto::{
    ActivationCodeId, DeviceId, DeviceName, DisplayName, OrgId, PublicKeyBytes, Role, UserName,
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
    /// The organisation, or `None` before initialisation.
    async fn org(&self) -> Result<Option<OrgRecord>>;

    /// Records the organisation. Fails with `AlreadyExists` if one is recorded.
    async fn init_org(&self, org: &OrgRecord) -> Result<()>;

    /// Creates a user together with the activation code for their first device, atomically.
    async fn create_user(&self, user: &UserRecord, code: &ActivationCodeRecord) -> Result<()>;

    async fn user(&self, name: &UserName) -> Result<Option<UserRecord>>;

    /// All users, ordered by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;

    /// Adds an activation code for an existing user (`NotFound` otherwise).
    async fn create_activation_code(&self, code: &ActivationCodeRecord) -> Result<()>;

    async fn activation_code(&self, id: &ActivationCodeId) -> Result<Option<ActivationCodeRecord>>;

    /// Counts one wrong secret against an active code and voids it when the count reaches
    /// `attempts_max`. Returns the code as it is afterwards; `NotFound` if it does not exist.
    /// A code that is not active is returned unchanged.
    async fn record_failed_activation(
        &self,
        id: &ActivationCodeId,
        attempts_max: u32,
    ) -> Result<ActivationCodeRecord>;

    /// Marks the code used and creates the device, atomically, if and only if the code is
    /// active and `now_unix_s` is before its expiry. Concurrent redemptions of one code:
    /// exactly one succeeds.
    async fn redeem_activation_code(
        &self,
        id: &ActivationCodeId,
        now_unix_s: i64,
        device: &DeviceRecord,
    ) -> Result<(), RedeemError>;

    /// A fresh certificate serial, never returned before by this store.
    async fn next_certificate_serial(&self) -> Result<u64>;

    async fn device(&self, id: &DeviceId) -> Result<Option<DeviceRecord>>;

    /// All devices, or one user's, ordered by user then creation time.
    async fn list_devices(&self, user: Option<&UserName>) -> Result<Vec<DeviceRecord>>;

    /// Records that the device authenticated at `now_unix_s`.
    async fn touch_device(&self, id: &DeviceId, now_unix_s: i64) -> Result<()>;

    /// Flushes and closes the store; later calls fail.
    async fn close(&self);
}
