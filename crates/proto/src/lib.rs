//! Redoubt's wire schema.
//!
//! Everything a device and a server say to each other is defined here: the frame codec,
//! the typed requests and responses, the error codes, the activation code a user types or
//! scans, and the device certificate the organisation's root key signs. The crate does no
//! I/O and knows nothing of tokio, so it can be fuzzed and reused by any transport.
//!
//! `docs/protocol.md` at the repository root describes the same schema byte by byte, for
//! clients written in other languages.

mod activation;
mod auth;
mod bytes;
mod certificate;
mod directory;
mod error;
mod frame;
mod ids;
mod kt;
mod mail;
mod management;
mod messages;
mod policy;
mod signed;

pub use activation::{ActivationCode, ActivationCodeError, ActivationSecret, ServerAddress};
pub use auth::{TLS_EXPORTER_BYTES, TLS_EXPORTER_LABEL, enroll_transcript, session_transcript};
pub use bytes::{Bytes, constant_time_eq};
pub use certificate::{CertificateBody, CertificateError, DeviceCertificate, VerifiedCertificate};
pub use directory::{
    DIRECTORY_CA_BYTES_MAX, DIRECTORY_DISABLE_MAX_PERCENT, DIRECTORY_INTERVAL_S_MAX,
    DIRECTORY_INTERVAL_S_MIN, DIRECTORY_TEXT_BYTES_MAX, DirectoryPreset, DirectorySettings,
    DirectorySettingsView, DirectoryStatus, DisabledRule, PlannedDisable, PlannedMembership, PlannedUpdate,
    PlannedUser, SCIM_TOKEN_NAME_BYTES_MAX, ScimTokenCreated, ScimTokenInfo, SkippedEntry, SyncPlan,
    SyncReport, SyncStatus, check_scim_token_name, directory_url_host,
};
pub use error::{ErrorBody, ErrorCode};
pub use frame::{
    ClientFrame, DecodeError, FRAME_BYTES_MIN, PROTOCOL_VERSION, ServerFrame, decode_client_frame,
    decode_server_frame, encode_client_frame, encode_server_frame,
};
pub use ids::{
    ActivationCodeId, BlobId, DeviceId, DeviceName, DisplayName, GroupId, GroupName, IdError, OrgId, Role,
    UserName,
};
pub use kt::{
    AuditorKeys, AuditorStatement, DeviceApproval, EpochHead, KT_AUDIT_BYTES_MAX, KT_AUDIT_EPOCHS_MAX,
    KT_AUDITOR_KEYS_MAX, KtAuditEpoch, KtHead, KtHistoryAnswer, KtKeysBody, KtVersion, KtWitness,
    certificate_hash, device_set_commitment, safety_number, user_label,
};
pub use mail::{
    DavServerSettings, HostPort, MailSecurity, MailServerSettings, MailSettingsView, MailStatus,
    MailUserView, check_address, is_loopback_host,
};
pub use management::{
    AUDIT_GENESIS, AuditBreak, AuditEntry, AuditVerified, CheckpointBody, CommandBody, CommandKind,
    verify_audit_log,
};
pub use messages::{
    AuthenticateRequest, ClaimedKeyPackage, ClusterNode, CommandSummary, DeviceSummary, DirectoryGroup,
    EffectivePolicy, EnrollRequest, Enrolled, Event, GroupEntry, GroupSubmit, GroupSummary,
    HISTORY_CLAIM_LEASE_S, Hello, HistoryState, HistoryStatus, ImportedUser, InboxItem, IssuedActivationCode,
    MailCredential, NodeState, PolicyReport, Request, Response, ServerStats, SessionInfo, UserDevice,
    UserSummary,
};
pub use policy::{Policy, PolicyBody, PolicyScope, PolicySettings, PolicySource, SettingOrigin};
pub use signed::{SIGNED_DOCUMENT_BYTES_MAX, Signable, Signed, SignedError};

/// Ciphertext bytes in every chunk of a blob but the last: 32 KiB of plaintext plus the
/// 16-byte AEAD tag, so a chunk request fits within [`FRAME_BYTES_MIN`].
pub const BLOB_CHUNK_BYTES: usize = 32 * 1024 + 16;

/// Size of an Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Size of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Size of the server's per-connection authentication challenge.
pub const CHALLENGE_BYTES: usize = 32;

/// An Ed25519 public key on the wire.
pub type PublicKeyBytes = Bytes<PUBLIC_KEY_BYTES>;
/// An Ed25519 signature on the wire.
pub type SignatureBytes = Bytes<SIGNATURE_BYTES>;
/// SHA-256 of a DER certificate, as carried in activation codes.
pub type CertificatePin = Bytes<32>;
