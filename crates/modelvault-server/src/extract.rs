//! Extractors whose rejections are [`ApiError`]s, so even a malformed
//! request gets the JSON error body.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::ApiError;
use crate::conn::BodyStalled;

/// `axum::Json` with JSON errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A JSON body that may be left out: no body (or only whitespace, or JSON
/// `null`) is `T::default()`; anything else must be the JSON of `T` (400
/// otherwise).
pub struct ApiOptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiOptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| match r.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body too large",
                ),
                _ => stalled(&r).unwrap_or_else(|| ApiError::bad_request(r.body_text())),
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(|v| Self(v.unwrap_or_default()))
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// 408 `request_timeout` when the rejection came from a body that stopped
/// arriving ([`BodyStalled`]).
fn stalled(r: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    BodyStalled::find(r).map(ApiError::from)
}

fn json_rejection(r: JsonRejection) -> ApiError {
    if let Some(e) = stalled(&r) {
        return e;
    }
    let status = r.status();
    let text = r.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(status, "payload_too_large", "request body too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        _ => ApiError::bad_request(text),
    }
}

/// `axum::extract::Query` with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(r) => Err(ApiError::bad_request(r.body_text())),
        }
    }
}

/// `axum::extract::Path` with JSON errors.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(r) => Err(path_rejection(r)),
        }
    }
}

fn path_rejection(r: PathRejection) -> ApiError {
    ApiError::bad_request(r.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Opts {
        #[serde(default)]
        flag: bool,
    }

    async fn parse(body: &'static str) -> Result<Opts, ApiError> {
        let req = Request::new(axum::body::Body::from(body));
        ApiOptionalJson::<Opts>::from_request(req, &())
            .await
            .map(|j| j.0)
    }

    /// No body, whitespace and `null` are the defaults (the OpenAPI
    /// document calls such a body optional and nullable); other JSON must
    /// be the type.
    #[tokio::test]
    async fn optional_json_bodies() {
        for empty in ["", "  \n", "null", " null "] {
            assert_eq!(parse(empty).await.unwrap(), Opts::default(), "{empty:?}");
        }
        assert_eq!(
            parse(r#"{"flag": true}"#).await.unwrap(),
            Opts { flag: true }
        );
        for bad in ["1", "\"x\"", r#"{"other": 1}"#, "{"] {
            assert_eq!(
                parse(bad).await.unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
