use axum::response::{IntoResponse, Response};
use cocon_common::ErrorCode;
use serde_json::json;

/// An error answer: status, CouchDB-style error name, and a reason that says what to do.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub name: String,
    pub reason: String,
    /// For 429, 503 and 507: when to try again, in seconds (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, name: &str, reason: impl Into<String>) -> ApiError {
        ApiError {
            code,
            name: name.to_string(),
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, "bad_request", reason)
    }

    pub fn status(&self) -> http::StatusCode {
        self.code.http_status()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        let (code, name, reason) = cocon_common::error::from_status(&status);
        let retry_after = cocon_common::error::retry_after_of(&status);
        if code == ErrorCode::Internal || (code == ErrorCode::Unavailable && name == "unavailable") {
            tracing::warn!(grpc_code = ?status.code(), message = %status.message(), "service call failed");
        }
        let reason = match (code, reason.is_empty()) {
            (ErrorCode::Unavailable, _) => "a service is unavailable, try again shortly".to_string(),
            (_, true) => code.as_str().to_string(),
            _ => reason,
        };
        ApiError {
            code,
            name,
            reason,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        let body = json!({"status": status.as_u16(), "error": self.name, "reason": self.reason});
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
