#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The server refused a content whose MD5 differs from the one announced.
    #[error("{0}")]
    Mismatch(String),
    #[error("no such blob: {0}")]
    NotFound(String),
    #[error("storage is shutting down")]
    Closed,
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    pub fn backend(err: impl std::fmt::Display) -> StorageError {
        StorageError::Backend(err.to_string())
    }
}
