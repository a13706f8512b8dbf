#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event bus error: {0}")]
    Other(String),
    /// The in-process bus holds as much as it may keep in memory and a consumer still needs
    /// the oldest of it: the publisher keeps the events (in its outbox) and retries.
    #[error("stream {0} is full of events a consumer has not handled yet; publishing again once it catches up")]
    Backlogged(String),
    #[error("no stream holds subject {0}")]
    NoStream(String),
    #[error(transparent)]
    Storage(#[from] cocon_storage::StorageError),
}

impl cocon_common::ServiceError for BusError {
    fn error_code(&self) -> cocon_common::ErrorCode {
        match self {
            BusError::Unavailable(_) | BusError::Backlogged(_) => cocon_common::ErrorCode::Unavailable,
            BusError::Storage(e) => e.error_code(),
            _ => cocon_common::ErrorCode::Internal,
        }
    }
}
