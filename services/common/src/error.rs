//! The closed set of error codes every service error maps to, and how each crosses gRPC and HTTP.

use std::fmt;

/// Metadata key carrying the exact [`ErrorCode`] over gRPC, where several codes share a `tonic::Code`.
pub const ERROR_CODE_METADATA: &str = "cocon-error-code";
/// Metadata key carrying the CouchDB-style error name (`conflict`, `not_found`, `no_usable_index`…).
pub const ERROR_NAME_METADATA: &str = "cocon-error-name";
/// Metadata key carrying, in seconds, when a refused call may be tried again (`Retry-After`).
pub const RETRY_AFTER_METADATA: &str = "cocon-retry-after";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PreconditionFailed,
    PayloadTooLarge,
    RangeNotSatisfiable,
    TooManyRequests,
    Unavailable,
    /// The disk is (nearly) full: writes wait until space returns.
    InsufficientStorage,
    /// Another host (a sharing's peer) failed or refused: cozy-stack's 502.
    BadGateway,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PreconditionFailed => "precondition_failed",
            ErrorCode::PayloadTooLarge => "too_large",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::Internal => "internal_server_error",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ALL.iter().copied().find(|code| code.as_str() == s)
    }

    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ErrorCode::BadRequest => S::BAD_REQUEST,
            ErrorCode::Unauthenticated => S::UNAUTHORIZED,
            ErrorCode::Forbidden => S::FORBIDDEN,
            ErrorCode::NotFound => S::NOT_FOUND,
            ErrorCode::MethodNotAllowed => S::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => S::CONFLICT,
            ErrorCode::PreconditionFailed => S::PRECONDITION_FAILED,
            ErrorCode::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorCode::RangeNotSatisfiable => S::RANGE_NOT_SATISFIABLE,
            ErrorCode::TooManyRequests => S::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => S::SERVICE_UNAVAILABLE,
            ErrorCode::InsufficientStorage => S::INSUFFICIENT_STORAGE,
            ErrorCode::BadGateway => S::BAD_GATEWAY,
            ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            ErrorCode::BadRequest => C::InvalidArgument,
            ErrorCode::Unauthenticated => C::Unauthenticated,
            ErrorCode::Forbidden => C::PermissionDenied,
            ErrorCode::NotFound => C::NotFound,
            ErrorCode::MethodNotAllowed => C::Unimplemented,
            ErrorCode::Conflict => C::Aborted,
            ErrorCode::PreconditionFailed => C::FailedPrecondition,
            ErrorCode::PayloadTooLarge => C::OutOfRange,
            ErrorCode::RangeNotSatisfiable => C::OutOfRange,
            ErrorCode::TooManyRequests => C::ResourceExhausted,
            ErrorCode::Unavailable => C::Unavailable,
            ErrorCode::InsufficientStorage => C::ResourceExhausted,
            // Not this mesh's own failure: no client retries it as a transient one.
            ErrorCode::BadGateway => C::Unknown,
            ErrorCode::Internal => C::Internal,
        }
    }

    /// Best effort for a status that did not come from a Cocon service (no metadata).
    pub fn from_grpc_code(code: tonic::Code) -> ErrorCode {
        use tonic::Code as C;
        match code {
            C::InvalidArgument => ErrorCode::BadRequest,
            C::Unauthenticated => ErrorCode::Unauthenticated,
            C::PermissionDenied => ErrorCode::Forbidden,
            C::NotFound => ErrorCode::NotFound,
            C::Unimplemented => ErrorCode::MethodNotAllowed,
            C::Aborted | C::AlreadyExists => ErrorCode::Conflict,
            C::FailedPrecondition => ErrorCode::PreconditionFailed,
            C::OutOfRange => ErrorCode::PayloadTooLarge,
            C::ResourceExhausted => ErrorCode::TooManyRequests,
            C::Unavailable | C::DeadlineExceeded | C::Cancelled => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

const ALL: [ErrorCode; 14] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthenticated,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::MethodNotAllowed,
    ErrorCode::Conflict,
    ErrorCode::PreconditionFailed,
    ErrorCode::PayloadTooLarge,
    ErrorCode::RangeNotSatisfiable,
    ErrorCode::TooManyRequests,
    ErrorCode::Unavailable,
    ErrorCode::InsufficientStorage,
    ErrorCode::BadGateway,
    ErrorCode::Internal,
];

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by each crate's error enum, so the edges can classify it.
pub trait ServiceError: std::error::Error {
    fn error_code(&self) -> ErrorCode;

    /// The CouchDB-style error name shown to clients; defaults to the code's name.
    fn error_name(&self) -> &str {
        self.error_code().as_str()
    }

    /// When the call may be tried again, in seconds, for refusals that pass (a cap, a full disk).
    fn retry_after(&self) -> Option<u64> {
        None
    }

    /// The message shown to clients. Internal errors are masked: their detail goes to the logs only.
    fn public_message(&self) -> String {
        match self.error_code() {
            ErrorCode::Internal => "internal error, see the server logs".to_string(),
            _ => self.to_string(),
        }
    }
}

/// Turns a service error into a gRPC status that keeps the exact code and name.
pub fn to_status<E: ServiceError>(err: &E) -> tonic::Status {
    let code = err.error_code();
    if code == ErrorCode::Internal {
        tracing::error!(error = %err, "internal error");
    }
    let mut status = tonic::Status::new(code.grpc_code(), err.public_message());
    let md = status.metadata_mut();
    if let Ok(v) = code.as_str().parse() {
        md.insert(ERROR_CODE_METADATA, v);
    }
    if let Ok(v) = err.error_name().parse() {
        md.insert(ERROR_NAME_METADATA, v);
    }
    if let Some(secs) = err.retry_after() {
        md.insert(RETRY_AFTER_METADATA, secs.into());
    }
    status
}

/// The `Retry-After` a status carries ([`ServiceError::retry_after`]).
pub fn retry_after_of(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads back what [`to_status`] put in a status: the code, the error name and the message.
pub fn from_status(status: &tonic::Status) -> (ErrorCode, String, String) {
    let md = status.metadata();
    let code = md
        .get(ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::parse)
        .unwrap_or_else(|| ErrorCode::from_grpc_code(status.code()));
    let name = md
        .get(ERROR_NAME_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| code.as_str().to_string());
    (code, name, status.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("document update conflict")]
    struct Conflict;
    impl ServiceError for Conflict {
        fn error_code(&self) -> ErrorCode {
            ErrorCode::Conflict
        }
    }

    #[test]
    fn test_status_round_trip_keeps_code_and_name() {
        let status = to_status(&Conflict);
        assert_eq!(status.code(), tonic::Code::Aborted);
        let (code, name, message) = from_status(&status);
        assert_eq!(code, ErrorCode::Conflict);
        assert_eq!(name, "conflict");
        assert_eq!(message, "document update conflict");
        assert_eq!(code.http_status(), http::StatusCode::CONFLICT);
    }

    #[test]
    fn test_every_code_parses_back() {
        for code in ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }
}
