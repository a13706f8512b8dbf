use cocon_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Denied(String),
    /// The sharing was accepted already, or is in a state that refuses this.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooMany(String),
    /// The other host failed or refused (cozy's 502 `ErrRequestFailed`).
    #[error("{0}")]
    Peer(String),
    /// The other host answered this status (a 401 makes the caller refresh its token).
    #[error("the other Cozy answered {0}: {1}")]
    PeerStatus(u16, String),
    /// The other host refused to refresh our token: it deleted our client, so it ended the
    /// sharing (its notice may have been lost while this host was down).
    #[error("the other Cozy ended the sharing: {0}")]
    RevokedByPeer(String),
    #[error("the instance ticket expired")]
    Expired,
    #[error("storage: {0}")]
    Storage(#[from] cocon_storage::StorageError),
    #[error("events: {0}")]
    Events(#[from] cocon_events::BusError),
    #[error("stored sharing unreadable: {0}")]
    Corrupt(String),
    /// Another service answered an error: passed on with its code.
    #[error("{0}")]
    Upstream(String, ErrorCode),
}

pub type Result<T, E = SharingError> = std::result::Result<T, E>;

impl ServiceError for SharingError {
    fn error_code(&self) -> ErrorCode {
        match self {
            SharingError::BadRequest(_) => ErrorCode::BadRequest,
            SharingError::NotFound(_) => ErrorCode::NotFound,
            SharingError::Denied(_) => ErrorCode::Forbidden,
            SharingError::Expired => ErrorCode::Unauthenticated,
            SharingError::Conflict(_) => ErrorCode::Conflict,
            SharingError::TooMany(_) => ErrorCode::TooManyRequests,
            SharingError::Peer(_) | SharingError::PeerStatus(..) | SharingError::RevokedByPeer(_) => {
                ErrorCode::BadGateway
            }
            SharingError::Storage(e) => e.error_code(),
            SharingError::Events(_) | SharingError::Corrupt(_) => ErrorCode::Internal,
            SharingError::Upstream(_, code) => *code,
        }
    }
}

impl From<tonic::Status> for SharingError {
    fn from(status: tonic::Status) -> SharingError {
        let (code, _, message) = cocon_common::error::from_status(&status);
        SharingError::Upstream(message, code)
    }
}

impl From<SharingError> for tonic::Status {
    fn from(err: SharingError) -> tonic::Status {
        cocon_common::error::to_status(&err)
    }
}
