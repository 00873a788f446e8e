use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $value:literal, $name:literal;)*) => {
        /// Why a request failed. On the wire a `u16`; the table is append-only, and a code
        /// this build does not know decodes as [`ErrorCode::Unknown`] so old clients still
        /// show the server's message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code from a newer server.
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every code this build knows, for documentation and tests.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn to_u16(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $value,)*
                    ErrorCode::Unknown(value) => value,
                }
            }

            pub fn from_u16(value: u16) -> Self {
                match value {
                    $($value => ErrorCode::$variant,)*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// The stable snake_case name scripts match on (`--json` output).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Unknown(_) => "unknown",
                }
            }
        }
    };
}

error_codes! {
    /// The frame could not be decoded. The server closes the connection after answering.
    MalformedFrame = 1, "malformed_frame";
    /// The frame is larger than the peer's `frame_bytes_max`.
    FrameTooLarge = 2, "frame_too_large";
    /// The frame's protocol version is not spoken by this peer.
    UnsupportedVersion = 3, "unsupported_version";
    /// The request needs an authenticated session.
    Unauthenticated = 4, "unauthenticated";
    /// `Authenticate` or `Enroll` on a session that is already authenticated.
    AlreadyAuthenticated = 5, "already_authenticated";
    /// The certificate is not signed by this organisation's key, or the signature over the
    /// challenge does not verify.
    AuthenticationFailed = 6, "authentication_failed";
    /// The device certificate is outside its validity period.
    CertificateExpired = 7, "certificate_expired";
    /// The device has been revoked.
    DeviceRevoked = 8, "device_revoked";
    /// The user's roles do not allow this request.
    Forbidden = 9, "forbidden";
    /// The named user or device does not exist.
    NotFound = 10, "not_found";
    /// The user or device already exists.
    AlreadyExists = 11, "already_exists";
    /// A field's value is not acceptable; the message names it.
    InvalidArgument = 12, "invalid_argument";
    /// No activation code has this identifier.
    ActivationCodeUnknown = 13, "activation_code_unknown";
    /// The activation code has expired.
    ActivationCodeExpired = 14, "activation_code_expired";
    /// The activation code has been used already.
    ActivationCodeUsed = 15, "activation_code_used";
    /// The activation code was voided after too many wrong secrets.
    ActivationCodeVoided = 16, "activation_code_voided";
    /// The secret does not match; the message says how many attempts remain.
    ActivationSecretWrong = 17, "activation_secret_wrong";
    /// The device sent requests faster than its limit; retry later.
    RateLimited = 18, "rate_limited";
    /// The server is at its connection limit or shutting down; retry later.
    ServerBusy = 19, "server_busy";
    /// The server failed; nothing was changed. The server's log has the details.
    Internal = 20, "internal";
    /// Too many requests before authenticating; the connection is closed.
    TooManyUnauthenticatedRequests = 21, "too_many_unauthenticated_requests";
    /// The commit is not for the group's current epoch: fetch the log, process it, retry.
    EpochConflict = 22, "epoch_conflict";
    /// The MLS message is malformed, of the wrong kind, or does not validate.
    InvalidMlsMessage = 23, "invalid_mls_message";
    /// This device is not a member of the group (or was not when the entries were written).
    NotAMember = 24, "not_a_member";
    /// A per-device limit (key packages, inbox) is full.
    LimitReached = 25, "limit_reached";
    /// The organisation's policy changed: fetch it (`PolicyFetch`), apply it and acknowledge
    /// it (`PolicyAck`). Until then only those requests and remote commands are served.
    PolicyRefreshRequired = 26, "policy_refresh_required";
    /// This new device waits for approval from another device of the same user.
    DeviceApprovalRequired = 27, "device_approval_required";
    /// The organisation's policy does not allow this (attachments, number of devices).
    PolicyViolation = 28, "policy_violation";
    /// A remote wipe waits for this device: fetch and acknowledge commands.
    CommandPending = 29, "command_pending";
    /// The server cannot store anything right now (its disk is full or read-only, its
    /// database is locked or failing); nothing was changed. Retry later.
    StorageUnavailable = 30, "storage_unavailable";
    /// A server Redoubt reads from for this request (the organisation's directory) could
    /// not be reached or refused; nothing was changed.
    UpstreamUnavailable = 31, "upstream_unavailable";
    /// The WebSocket stream broke its protocol (a bad opcode, masking or fragment, or bytes
    /// that are not a WebSocket frame); the connection is closed.
    WebsocketProtocolError = 32, "websocket_protocol_error";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(value) => write!(f, "unknown({value})"),
            known => f.write_str(known.as_str()),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.to_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u16::deserialize(deserializer).map(ErrorCode::from_u16)
    }
}

/// A failed request: a machine-readable code and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.to_u16()), "duplicate value for {code}");
            assert_eq!(ErrorCode::from_u16(code.to_u16()), *code);
        }
        assert_eq!(ErrorCode::from_u16(60000), ErrorCode::Unknown(60000));
    }
}
