use cocon_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("{0}")]
    QuotaExceeded(String),
    /// An append's data does not match the checksum sent with it.
    #[error("{0}")]
    ChecksumMismatch(String),
    #[error("{0}")]
    TooMany(String),
    /// Too many long polls wait already (on the instance, or in the process).
    #[error("{0}")]
    Busy(String),
    /// The client's stream broke off.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Storage(#[from] cocon_storage::StorageError),
    #[error(transparent)]
    Events(#[from] cocon_events::BusError),
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    /// The call's instance ticket does not hold (see `cocon_common::ticket`).
    #[error("{0}")]
    Denied(String),
    /// The caller's credential ran out while its call was on the way (its instance ticket
    /// expires with it): as expired as the token itself.
    #[error("the token has expired: get a new one")]
    Expired,
    /// The instance's shard went to another replica while the call ran: nothing was
    /// committed, the caller sends it again to the new holder.
    #[error("this instance is being handed to another replica of the files service: try again")]
    Moved,
}

impl ServiceError for FilesError {
    fn error_code(&self) -> ErrorCode {
        use FilesError::*;
        match self {
            BadRequest(_) | InvalidName(_) | Interrupted(_) => ErrorCode::BadRequest,
            NotFound(_) => ErrorCode::NotFound,
            Conflict(_) => ErrorCode::Conflict,
            PreconditionFailed(_) | ChecksumMismatch(_) => ErrorCode::PreconditionFailed,
            TooMany(_) => ErrorCode::TooManyRequests,
            RangeNotSatisfiable(_) => ErrorCode::RangeNotSatisfiable,
            QuotaExceeded(_) => ErrorCode::PayloadTooLarge,
            Denied(_) => ErrorCode::Forbidden,
            Expired => ErrorCode::Unauthenticated,
            Busy(_) | Moved => ErrorCode::Unavailable,
            Storage(e) => e.error_code(),
            Events(e) => e.error_code(),
            Corrupt(_) => ErrorCode::Internal,
        }
    }

    fn error_name(&self) -> &str {
        match self {
            FilesError::QuotaExceeded(_) => "quota_exceeded",
            FilesError::ChecksumMismatch(_) => "checksum_mismatch",
            FilesError::TooMany(_) => "too_many_uploads",
            FilesError::Busy(_) => "too_many_long_polls",
            other => other.error_code().as_str(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        matches!(self, FilesError::Busy(_)).then_some(5)
    }
}

impl From<FilesError> for tonic::Status {
    fn from(err: FilesError) -> tonic::Status {
        let status = cocon_common::error::to_status(&err);
        match err {
            // As the shard guard says it: nothing ran, the client sends the call again.
            FilesError::Moved => cocon_mesh::handed_over(status),
            _ => status,
        }
    }
}

pub type Result<T, E = FilesError> = std::result::Result<T, E>;
