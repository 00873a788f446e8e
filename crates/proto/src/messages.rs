//! Requests a device sends and the responses the server returns.
//!
//! Enum variants are encoded by their position, so variants are only ever appended, never
//! reordered or removed, within one protocol version.

use serde::{Deserialize, Serialize};

use crate::{
    ActivationCodeId, ActivationSecret, CHALLENGE_BYTES, DeviceId, DeviceName, DisplayName, OrgId,
    PublicKeyBytes, Role, SignatureBytes, UserName, bytes::Bytes,
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
pub enum Response {
    Enrolled(Enrolled),
    Authenticated(SessionInfo),
    WhoAmI(SessionInfo),
    ActivationCodeIssued(IssuedActivationCode),
    Users(Vec<UserSummary>),
    Devices(Vec<DeviceSummary>),
}
