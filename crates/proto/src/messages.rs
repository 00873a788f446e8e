//! Requests a device sends and the responses the server returns.
//!
//! Enum variants are encoded by their position, so variants are only ever appended, never
//! reordered or removed, within one protocol version.

use serde::{Deserialize, Serialize};

use crate::{
    ActivationCodeId, ActivationSecret, BlobId, CHALLENGE_BYTES, DeviceId, DeviceName, DisplayName, GroupId,
    OrgId, PublicKeyBytes, Role, SignatureBytes, UserName, bytes::Bytes,
};

/// The first frame on every connection, sent by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u8,
    /// Fresh random bytes; the device signs them (with the TLS exporter) to authenticate.
    pub challenge: Bytes<CHALLENGE_BYTES>,
    pub server_time_unix_s: i64,
    /// Largest frame the server accepts, in bytes.
    pub frame_bytes_max: u32,
}

/// Activate a new device with a one-time activation code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub code_id: ActivationCodeId,
    pub secret: ActivationSecret,
    /// The key the device made for itself; its private half never leaves the device.
    pub device_public_key: PublicKeyBytes,
    pub device_name: DeviceName,
    /// The device key's signature over [`crate::enroll_transcript`], proving possession.
    pub signature: SignatureBytes,
}

/// Prove possession of an enrolled device's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    /// The device certificate, as returned by enrolment ([`crate::DeviceCertificate`] bytes).
    pub certificate: Vec<u8>,
    /// The device key's signature over [`crate::session_transcript`].
    pub signature: SignatureBytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Unauthenticated sessions only.
    Enroll(EnrollRequest),
    /// Unauthenticated sessions only.
    Authenticate(AuthenticateRequest),
    /// Who this session is.
    WhoAmI,
    /// Admin: create a user and an activation code for their first device.
    AdminUserAdd {
        user: UserName,
        display_name: Option<DisplayName>,
    },
    /// Admin: an activation code for one more device of an existing user.
    AdminDeviceAdd { user: UserName },
    /// Admin: all users.
    AdminUserList,
    /// Admin: all devices, or one user's.
    AdminDeviceList { user: Option<UserName> },
    /// Add one-time MLS key packages to this device's pool, and optionally replace its
    /// last-resort package (used when the pool is empty, never consumed).
    KeyPackagesPublish {
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    },
    /// Claim one key package for every active device of each user, atomically per device,
    /// skipping `except_devices` (those already in the group).
    KeyPackagesClaim {
        users: Vec<UserName>,
        except_devices: Vec<DeviceId>,
    },
    /// Register a new group from its GroupInfo; the caller's device must be its only member.
    GroupCreate { group_info: Vec<u8> },
    /// Append an MLS message to a group's ordered log.
    GroupSubmit(GroupSubmit),
    /// Read a group's log after `after_seq`, at most `limit` entries.
    GroupFetch {
        group_id: GroupId,
        after_seq: u64,
        limit: u32,
    },
    /// The groups this device belongs to.
    GroupList,
    /// Welcome messages waiting for this device.
    InboxFetch,
    /// Drop handled Welcome messages from this device's inbox.
    InboxAck { ids: Vec<u64> },
    /// The active (enrolled, not revoked) devices of each user.
    UserDevices { users: Vec<UserName> },
    /// Begin uploading an encrypted attachment for a group: `bytes_total` of ciphertext in
    /// `chunk_count` chunks of [`crate::BLOB_CHUNK_BYTES`] (the last may be shorter).
    BlobUploadStart {
        group_id: GroupId,
        bytes_total: u64,
        chunk_count: u32,
    },
    /// The next chunk of an upload, in order from 0.
    BlobUploadChunk {
        blob_id: BlobId,
        index: u32,
        bytes: Vec<u8>,
    },
    /// Complete an upload once every chunk is sent; the blob becomes fetchable.
    BlobUploadFinish { blob_id: BlobId },
    /// One chunk of a stored blob; only the group's member devices may fetch.
    BlobFetch { blob_id: BlobId, index: u32 },
    /// This device has processed the group's log up to `seq`; entries every member has
    /// acknowledged may be deleted.
    GroupAck { group_id: GroupId, seq: u64 },
}

/// An MLS message for a group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSubmit {
    pub group_id: GroupId,
    /// Chosen by the device; a retry with the same id returns the first result.
    pub client_message_id: Bytes<16>,
    /// An MLS message: a PublicMessage commit or proposal, or a PrivateMessage application message.
    pub message: Vec<u8>,
    /// For a commit that adds members: the Welcome, delivered to the added devices.
    pub welcome: Option<Vec<u8>>,
}

impl Request {
    /// Whether this request is allowed before the session has authenticated.
    pub fn allowed_unauthenticated(&self) -> bool {
        matches!(self, Request::Enroll(_) | Request::Authenticate(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The new device certificate ([`crate::DeviceCertificate`] bytes).
    pub certificate: Vec<u8>,
    /// The organisation's root public key, which signed `certificate`.
    pub org_public_key: PublicKeyBytes,
    pub org_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub org_id: OrgId,
    pub org_name: String,
    pub user: UserName,
    pub display_name: Option<DisplayName>,
    pub device_id: DeviceId,
    pub device_name: DeviceName,
    /// Current roles, read from the server's directory for this session.
    pub roles: Vec<Role>,
    pub server_time_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedActivationCode {
    pub user: UserName,
    /// The text form of the [`crate::ActivationCode`], to hand to the user.
    pub code: String,
    pub expires_at_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    pub user: UserName,
    pub display_name: Option<DisplayName>,
    pub roles: Vec<Role>,
    pub created_at_unix_s: i64,
    /// Devices that are enrolled and not revoked.
    pub devices_active: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub device_id: DeviceId,
    pub user: UserName,
    pub name: DeviceName,
    pub public_key: PublicKeyBytes,
    pub certificate_serial: u64,
    pub certificate_not_after_unix_s: i64,
    pub created_at_unix_s: i64,
    pub last_seen_at_unix_s: Option<i64>,
    pub revoked_at_unix_s: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    pub user: UserName,
    pub device_id: DeviceId,
    pub key_package: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub seq: u64,
    pub sender: DeviceId,
    pub message: Vec<u8>,
    pub server_time_unix_s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group_id: GroupId,
    pub epoch: u64,
    pub last_seq: u64,
    /// The entry at which this device joined: it can read entries after this one.
    pub joined_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    pub id: u64,
    pub group_id: GroupId,
    pub welcome: Vec<u8>,
    /// The sequence number of the commit that added this device; read the log after it.
    pub joined_seq: u64,
}

/// Something the server tells an authenticated device without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A group this device belongs to has entries up to `seq`.
    GroupAppended { group_id: GroupId, seq: u64 },
    /// The device's inbox has a new Welcome.
    InboxChanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Enrolled(Enrolled),
    Authenticated(SessionInfo),
    WhoAmI(SessionInfo),
    ActivationCodeIssued(IssuedActivationCode),
    Users(Vec<UserSummary>),
    Devices(Vec<DeviceSummary>),
    KeyPackagesPublished {
        available: u32,
    },
    KeyPackages(Vec<ClaimedKeyPackage>),
    GroupCreated {
        group_id: GroupId,
    },
    Submitted {
        seq: u64,
        duplicate: bool,
    },
    GroupEntries {
        entries: Vec<GroupEntry>,
        last_seq: u64,
    },
    Groups(Vec<GroupSummary>),
    Inbox(Vec<InboxItem>),
    Done,
    UserDevices(Vec<UserDevice>),
    BlobUploadStarted {
        blob_id: BlobId,
    },
    BlobChunk {
        bytes: Vec<u8>,
        chunk_count: u32,
        bytes_total: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDevice {
    pub user: UserName,
    pub device_id: DeviceId,
}
