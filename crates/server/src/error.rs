//! Errors. [`ServerError`] is for the operator (start-up, I/O); [`ApiError`] is what a
//! device is told. The `From` impls here are the one place server failures become wire
//! error codes: storage failures are logged in full and reported as `storage_unavailable`
//! (the backend failed: disk full, read-only, locked — a device may retry later) or
//! `internal` (anything else), so no detail of the server's internals reaches a device.

use redoubt_proto::{ErrorBody, ErrorCode};
use redoubt_store::{RedeemError, StoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("data folder: {0}")]
    DataDir(String),
    /// An operation on the running server was refused.
    #[error("{0}")]
    Refused(redoubt_proto::ErrorBody),
}

/// A request failed; nothing was changed.
#[derive(Debug)]
pub(crate) struct ApiError(pub ErrorBody);

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::AlreadyExists(what) => {
                ApiError::new(ErrorCode::AlreadyExists, format!("{what} already exists"))
            }
            StoreError::NotFound(what) => ApiError::new(ErrorCode::NotFound, format!("{what} not found")),
            StoreError::Disabled(what) => ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "the {what} is disabled (by the directory or an admin); no activation code can be issued"
                ),
            ),
            StoreError::Backend(detail) => {
                tracing::error!(error = %detail, "storage backend failed");
                ApiError::new(
                    ErrorCode::StorageUnavailable,
                    "the server cannot store anything right now; nothing was changed; retry later",
                )
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
            }
        }
    }
}

impl From<RedeemError> for ApiError {
    fn from(error: RedeemError) -> Self {
        match error {
            RedeemError::Unknown => {
                ApiError::new(ErrorCode::ActivationCodeUnknown, "unknown activation code")
            }
            RedeemError::Used => ApiError::new(
                ErrorCode::ActivationCodeUsed,
                "this activation code has been used already; ask your administrator for a new one",
            ),
            RedeemError::Voided => ApiError::new(
                ErrorCode::ActivationCodeVoided,
                "this activation code was voided (too many wrong attempts, or its user was disabled); ask your administrator for a new one",
            ),
            RedeemError::Expired => ApiError::new(
                ErrorCode::ActivationCodeExpired,
                "this activation code has expired; ask your administrator for a new one",
            ),
            RedeemError::Store(store) => store.into(),
            other => {
                tracing::error!(error = %other, "unexpected redemption failure");
                ApiError::new(ErrorCode::Internal, "internal server error; nothing was changed")
            }
        }
    }
}
