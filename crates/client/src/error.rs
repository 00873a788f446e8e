use redoubt_proto::{CertificateError, ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error; nothing was changed.
    #[error("server refused: {0}")]
    Server(ErrorBody),
    /// The server's certificate does not match the pin from the activation code. The
    /// connection was abandoned before anything was sent.
    #[error(
        "the server at {server} presented a certificate that does not match the pinned one; refusing to talk to it"
    )]
    PinMismatch { server: String },
    /// The server could not be reached, or the connection broke.
    #[error("connection to {server} failed: {reason}")]
    Connect { server: String, reason: String },
    /// The server sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server issued a certificate that does not check.
    #[error("certificate from server refused: {0}")]
    Certificate(#[from] CertificateError),
    /// An attachment could not be encrypted, fetched or verified.
    #[error("attachment: {0}")]
    Attachment(String),

    /// The mail connector refused or failed a mail command, or there is no mailbox yet.
    #[error("mail: {0}")]
    Mail(String),
    /// MLS processing failed on this device.
    #[error("MLS: {0}")]
    Mls(String),
    /// The local profile is missing, unreadable or already exists.
    #[error("profile: {0}")]
    Profile(String),
    /// The profile is protected by a passcode and none was given.
    #[error("this device is protected by a passcode; set REDOUBT_PASSCODE or enter it when asked")]
    PasscodeRequired,
    /// The passcode was wrong. The attempt was recorded; `attempts_left` more wrong ones
    /// wipe the profile (`None`: no wipe limit is set).
    #[error(
        "wrong passcode{}",
        .attempts_left.map_or_else(String::new, |n| format!(
            " ({n} more wrong {} will wipe this device's data)",
            if n == 1 { "attempt" } else { "attempts" }
        ))
    )]
    PasscodeWrong { attempts_left: Option<u32> },
    /// Too many wrong passcodes: the profile folder was wiped, as its settings asked.
    #[error(
        "too many wrong passcodes: this device's profile was wiped (keys, conversations and messages are gone); enrol the device again"
    )]
    ProfileWiped,
    /// The organisation wiped this device by remote command: its profile is gone.
    #[error(
        "this device was wiped by the organisation (remote wipe): its keys, conversations and messages are gone"
    )]
    RemotelyWiped,
    /// A policy or remote command from the server does not verify with the organisation
    /// key, or is not for this device. Nothing was applied.
    #[error("refused a document from the server: {0}")]
    PolicyInvalid(String),
    /// The organisation's policy requires a passcode on this device and it has none.
    #[error(
        "the organisation's policy requires a passcode of at least {min_length} characters on this device; \
         set one (REDOUBT_PASSCODE, or enter it when asked)"
    )]
    PasscodeSetupRequired { min_length: u32 },
    /// An admin locked this device; without a passcode only an admin can unlock it.
    #[error("this device was locked by the organisation; ask your admin to unlock it")]
    DeviceLocked,
}

impl ClientError {
    /// Whether trying again later may succeed: the connection failed, or the server was
    /// busy, limiting the rate, unable to store or failed internally.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Server(body) => {
                matches!(
                    body.code,
                    ErrorCode::ServerBusy
                        | ErrorCode::RateLimited
                        | ErrorCode::StorageUnavailable
                        | ErrorCode::Internal
                )
            }
            _ => false,
        }
    }

    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(body) => Some(body.code),
            _ => None,
        }
    }
}
