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
    /// For a moment only (the store reopens): the same call passes again shortly.
    #[error("{0}")]
    Unavailable(String),
    /// The disk is below its free-space watermark (or full): nothing was written.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A stored row that does not decode: damaged, or written by a newer Cocon.
    #[error("unreadable row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    pub fn backend(err: impl std::fmt::Display) -> StorageError {
        StorageError::Backend(err.to_string())
    }

    /// The error's code at the edges: a full disk is 507 (nothing was written, and writes pass
    /// again once space returns), a closing store 503; anything else is the server's fault.
    pub fn error_code(&self) -> cocon_common::ErrorCode {
        use cocon_common::ErrorCode;
        match self {
            StorageError::InsufficientStorage(_) => ErrorCode::InsufficientStorage,
            StorageError::Io(e) if crate::space::is_full(e) => ErrorCode::InsufficientStorage,
            StorageError::Closed | StorageError::Unavailable(_) => ErrorCode::Unavailable,
            StorageError::Mismatch(_) => ErrorCode::PreconditionFailed,
            _ => ErrorCode::Internal,
        }
    }
}
