//! The one error type of the SCIM layer and its wire form (RFC 7644 §3.12).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The media type of every SCIM response body (RFC 7644 §8.1).
pub(crate) const SCIM_JSON: &str = "application/scim+json";

const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The `scimType` detail codes of RFC 7644 Table 9 that Redoubt sends (not `tooMany`: a
/// list is paged instead; not `invalidVers`, `sensitive`: no such requests are served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScimType {
    InvalidFilter,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
}

impl ScimType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFilter => "invalidFilter",
            Self::Uniqueness => "uniqueness",
            Self::Mutability => "mutability",
            Self::InvalidSyntax => "invalidSyntax",
            Self::InvalidPath => "invalidPath",
            Self::NoTarget => "noTarget",
            Self::InvalidValue => "invalidValue",
        }
    }
}

/// A failed SCIM request, rendered as an `urn:ietf:params:scim:api:messages:2.0:Error`
/// with the same HTTP status. Backends return it too: `detail` reaches the client, so it
/// must name the problem without internal details (no SQL, no paths).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SCIM {status}: {detail}")]
pub(crate) struct ScimError {
    status: u16,
    scim_type: Option<ScimType>,
    detail: String,
    /// Seconds for `Retry-After` on a 429.
    retry_after_s: Option<u64>,
}

impl ScimError {
    /// An error with any status; prefer the named constructors.
    pub(crate) fn new(status: u16, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    /// 400 with a `scimType`.
    pub(crate) fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }

    /// 400 `invalidValue`: a value of the wrong type or outside what the server accepts
    /// (a `userName` that is not a Redoubt user name, a member that does not exist).
    pub(crate) fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidValue, detail)
    }

    /// 404: no such resource or endpoint.
    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }

    /// 409 `uniqueness`: a `userName` (or other unique value) already taken.
    pub(crate) fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some(ScimType::Uniqueness), detail)
    }

    /// 412: an `If-Match` precondition did not hold.
    pub(crate) fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }

    /// 413: a request over a size or count limit.
    pub(crate) fn too_large(detail: impl Into<String>) -> Self {
        Self::new(413, None, detail)
    }

    /// 429 with `Retry-After`.
    pub(crate) fn too_many_requests(retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(429, None, "too many requests")
        }
    }

    /// 500: storage failed. Log the cause where it happened; the client sees `detail`.
    pub(crate) fn internal(detail: impl Into<String>) -> Self {
        Self::new(500, None, detail)
    }

    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    pub(crate) fn scim_type(&self) -> Option<ScimType> {
        self.scim_type
    }

    pub(crate) fn detail(&self) -> &str {
        &self.detail
    }

    /// The wire form (RFC 7644 §3.12: `status` is a string).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(t), Some(map)) = (self.scim_type, body.as_object_mut()) {
            map.insert("scimType".into(), t.as_str().into());
        }
        body
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        // The detail names attributes and ids, never tokens or bodies.
        if self.status() >= 500 {
            tracing::error!(status = self.status, detail = %self.detail, "scim: request failed");
        } else {
            let scim_type = self.scim_type().map(ScimType::as_str);
            tracing::debug!(status = self.status, scim_type, detail = %self.detail, "scim: request refused");
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.to_json().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == 401 {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_has_string_status_and_type() {
        let body = ScimError::uniqueness("userName taken").to_json();
        assert_eq!(body["schemas"][0], ERROR_SCHEMA);
        assert_eq!(body["status"], "409");
        assert_eq!(body["scimType"], "uniqueness");
        assert_eq!(body["detail"], "userName taken");
        assert!(ScimError::not_found("x").to_json().get("scimType").is_none());
    }

    #[test]
    fn too_many_requests_carries_retry_after() {
        let response = ScimError::too_many_requests(3).into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(response.headers()[header::CONTENT_TYPE], SCIM_JSON);
    }
}
