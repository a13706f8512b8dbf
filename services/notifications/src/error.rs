use cocon_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum NotificationsError {
    #[error("{0}")]
    BadRequest(String),
    /// The sender may not send this category (none declared, or not this one).
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unavailable(String),
    /// Another service answered an error: passed on with its code.
    #[error("{0}")]
    Upstream(String, ErrorCode),
}

pub type Result<T, E = NotificationsError> = std::result::Result<T, E>;

impl ServiceError for NotificationsError {
    fn error_code(&self) -> ErrorCode {
        match self {
            NotificationsError::BadRequest(_) => ErrorCode::BadRequest,
            NotificationsError::Denied(_) => ErrorCode::Forbidden,
            NotificationsError::Unavailable(_) => ErrorCode::Unavailable,
            NotificationsError::Upstream(_, code) => *code,
        }
    }
}

impl From<tonic::Status> for NotificationsError {
    fn from(status: tonic::Status) -> NotificationsError {
        let (code, _, message) = cocon_common::error::from_status(&status);
        NotificationsError::Upstream(message, code)
    }
}

impl From<NotificationsError> for tonic::Status {
    fn from(err: NotificationsError) -> tonic::Status {
        cocon_common::error::to_status(&err)
    }
}
