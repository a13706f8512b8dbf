use cocon_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (a reserved worker, another instance's ticket).
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Conflict(String),
    /// Too many calls of a webhook.
    #[error("{0}")]
    TooMany(String),
    #[error(transparent)]
    Storage(#[from] cocon_storage::StorageError),
    #[error(transparent)]
    Events(#[from] cocon_events::BusError),
    /// A process this one needs (the jobs' keeper, for a runner) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// The caller's credential ran out while its call was on the way.
    #[error("the token has expired: get a new one")]
    Expired,
}

pub type Result<T, E = JobsError> = std::result::Result<T, E>;

impl ServiceError for JobsError {
    fn error_code(&self) -> ErrorCode {
        use JobsError::*;
        match self {
            BadRequest(_) => ErrorCode::BadRequest,
            NotFound(_) => ErrorCode::NotFound,
            Denied(_) => ErrorCode::Forbidden,
            Conflict(_) => ErrorCode::Conflict,
            TooMany(_) => ErrorCode::TooManyRequests,
            Expired => ErrorCode::Unauthenticated,
            Storage(e) => e.error_code(),
            Events(e) => e.error_code(),
            Corrupt(_) => ErrorCode::Internal,
            Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<JobsError> for tonic::Status {
    fn from(err: JobsError) -> tonic::Status {
        cocon_common::error::to_status(&err)
    }
}
