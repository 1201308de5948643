//! `ApiError`: every failure of the HTTP layer becomes a status and
//! `{"error": {"code", "message", "request_id"}}` in one place. Codes are
//! stable; clients branch on them. A 5xx body says only "internal error" and
//! the request id; the detail goes to the operator log under the same id.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use modelvault_storage::StorageError;
use serde_json::json;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human message (replaced by a generic one on 5xx).
    pub message: String,
    /// Extra fields of the error object (the deciding plugin of a policy
    /// deny and its reason code).
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The detail of a 5xx, picked up by the request-id middleware and logged.
#[derive(Debug, Clone)]
pub struct InternalDetail {
    /// The error code.
    pub code: &'static str,
    /// What went wrong, for the operator.
    pub detail: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 `internal` with a detail for the log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::InvalidInput(m) => Self::bad_request(m),
            StorageError::NotFound(m) => Self::not_found(format!("{m} not found")),
            StorageError::AlreadyExists(m) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("{m} already exists"),
            ),
            StorageError::VersionCommitted(v) => Self::new(
                StatusCode::CONFLICT,
                "version_committed",
                format!("version {v} is committed and immutable"),
            ),
            StorageError::Gone(v) => {
                Self::new(StatusCode::GONE, "gone", format!("version {v} was deleted"))
            }
            StorageError::CommitMismatch(m) => {
                Self::new(StatusCode::CONFLICT, "commit_mismatch", m)
            }
            StorageError::Body(m) => Self::bad_request(format!("request body: {m}")),
            StorageError::Integrity(m) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "integrity_error", m)
            }
            StorageError::InsufficientStorage(m) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", m)
            }
            other => Self::internal(other.to_string()),
        }
    }
}

/// What a 5xx body says: the detail stays in the operator log, but a full
/// store is said as such, so the client knows what to ask the operator.
pub fn public_message(code: &str) -> &'static str {
    match code {
        "insufficient_storage" => "the server's store is out of space; nothing was stored",
        _ => "internal error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let mut resp = (
                self.status,
                Json(json!({"error": {"code": self.code, "message": public_message(self.code)}})),
            )
                .into_response();
            resp.extensions_mut().insert(InternalDetail {
                code: self.code,
                detail: self.message,
            });
            return resp;
        }
        let mut error = serde_json::Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        if let Some(extra) = self.extra {
            error.extend(extra);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}
