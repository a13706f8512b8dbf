use cocon_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum DocumentsError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "invalid doctype {0:?}: use lowercase letters, digits, dots, dashes and underscores, starting with a letter"
    )]
    InvalidDoctype(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("Document update conflict.")]
    Conflict,
    #[error("document too large: {size} bytes, the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("no_index: {0}")]
    NoIndex(String),
    #[error("{0}")]
    NoUsableIndex(String),
    #[error("unsupported operator {0}")]
    UnknownOperator(String),
    #[error("{0} documents cannot be written through /data")]
    ReadOnlyDoctype(String),
    #[error(transparent)]
    Storage(#[from] cocon_storage::StorageError),
    #[error(transparent)]
    Events(#[from] cocon_events::BusError),
    #[error("corrupt stored record: {0}")]
    Corrupt(String),
    #[error("the documents service is shutting down")]
    ShuttingDown,
    /// Too many long polls wait already (on the instance, or in the process).
    #[error("{0}")]
    Busy(String),
    /// The call's instance ticket does not hold (see `cocon_common::ticket`).
    #[error("{0}")]
    Denied(String),
    /// The caller's credential ran out while its call was on the way (its instance ticket
    /// expires with it): as expired as the token itself.
    #[error("the token has expired: get a new one")]
    Expired,
    /// The instance's shard went to another replica while the write waited: nothing was
    /// written, the caller sends it again to the new holder.
    #[error("this instance is being handed to another replica of the documents service: try again")]
    Moved,
}

impl ServiceError for DocumentsError {
    fn error_code(&self) -> ErrorCode {
        use DocumentsError::*;
        match self {
            BadRequest(_) | InvalidDoctype(_) | NoIndex(_) | NoUsableIndex(_) | UnknownOperator(_) => {
                ErrorCode::BadRequest
            }
            NotFound(_) => ErrorCode::NotFound,
            Conflict => ErrorCode::Conflict,
            TooLarge { .. } => ErrorCode::PayloadTooLarge,
            ReadOnlyDoctype(_) | Denied(_) => ErrorCode::Forbidden,
            Expired => ErrorCode::Unauthenticated,
            ShuttingDown | Busy(_) | Moved => ErrorCode::Unavailable,
            Storage(e) => e.error_code(),
            Events(e) => e.error_code(),
            Corrupt(_) => ErrorCode::Internal,
        }
    }

    fn error_name(&self) -> &str {
        match self {
            DocumentsError::NoIndex(_) => "no_index",
            DocumentsError::NoUsableIndex(_) => "no_usable_index",
            DocumentsError::TooLarge { .. } => "document_too_large",
            DocumentsError::UnknownOperator(_) => "invalid_operator",
            DocumentsError::Busy(_) => "too_many_long_polls",
            other => other.error_code().as_str(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        matches!(self, DocumentsError::Busy(_)).then_some(5)
    }
}

impl From<DocumentsError> for tonic::Status {
    fn from(err: DocumentsError) -> tonic::Status {
        let status = cocon_common::error::to_status(&err);
        match err {
            // As the shard guard says it: nothing ran, the client sends the call again.
            DocumentsError::Moved => cocon_mesh::handed_over(status),
            _ => status,
        }
    }
}

pub type Result<T, E = DocumentsError> = std::result::Result<T, E>;

impl From<cocon_common::mango::MangoError> for DocumentsError {
    fn from(err: cocon_common::mango::MangoError) -> DocumentsError {
        use cocon_common::mango::MangoError;
        match err {
            MangoError::Invalid(why) => DocumentsError::BadRequest(why),
            MangoError::UnknownOperator(op) => DocumentsError::UnknownOperator(op),
        }
    }
}
