use cocon_common::{ErrorCode, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no instance for domain {0}")]
    UnknownDomain(String),
    #[error("instance {0} already exists")]
    DomainTaken(String),
    #[error("invalid domain {0:?}: use lowercase letters, digits, dots and dashes, optionally followed by :port")]
    InvalidDomain(String),
    #[error("invalid scope: {0}")]
    InvalidScope(String),
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("the token has expired, get a new one")]
    ExpiredToken,
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("wrong or already used code: type the current code of your authenticator app, or a recovery code")]
    WrongSecondFactor,
    #[error("no passphrase has been chosen yet: open the onboarding link the administrator gave you")]
    NotOnboarded,
    #[error("{0}")]
    BadProof(String),
    /// The caller is authenticated but may not do this (a rule it lacks, another's link).
    #[error("{0}")]
    Denied(String),
    #[error("no permission set {0}")]
    NoSuchPermission(String),
    /// Too many guesses: wait `retry_after` seconds.
    #[error("{why}: try again in {retry_after} s")]
    TooMany { why: String, retry_after: u64 },
    #[error("no CLI token {0} (it may have expired): list them with `cocon instances tokens DOMAIN`")]
    NoSuchToken(String),
    #[error("{0}")]
    InvalidRequest(String),
    /// A write based on a state that changed since (a stale revision).
    #[error("{0}")]
    Conflict(String),
    #[error("invalid passphrase: {0}")]
    InvalidPassphrase(String),
    /// An OAuth error with its RFC 6749/7591 name (`invalid_grant`, `invalid_client`, …).
    #[error("{description}")]
    OAuth { error: &'static str, description: String },
    #[error("cannot read or create the master key {path}: {source}")]
    MasterKey { path: String, source: std::io::Error },
    #[error(transparent)]
    Storage(#[from] cocon_storage::StorageError),
    #[error(transparent)]
    Events(#[from] cocon_events::BusError),
    /// Something the service depends on outside the mesh (an identity provider) is down.
    #[error("{0}")]
    Unavailable(String),
    #[error("corrupt auth record: {0}")]
    Corrupt(String),
}

impl AuthError {
    pub fn oauth(error: &'static str, description: impl Into<String>) -> AuthError {
        AuthError::OAuth {
            error,
            description: description.into(),
        }
    }
}

impl ServiceError for AuthError {
    fn error_name(&self) -> &str {
        match self {
            AuthError::OAuth { error, .. } => error,
            other => other.error_code().as_str(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            AuthError::TooMany { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    fn error_code(&self) -> ErrorCode {
        match self {
            AuthError::UnknownDomain(_) => ErrorCode::NotFound,
            AuthError::DomainTaken(_) | AuthError::Conflict(_) => ErrorCode::Conflict,
            AuthError::InvalidDomain(_)
            | AuthError::InvalidScope(_)
            | AuthError::InvalidPassphrase(_)
            | AuthError::InvalidRequest(_) => ErrorCode::BadRequest,
            AuthError::NoSuchPermission(_) | AuthError::NoSuchToken(_) => ErrorCode::NotFound,
            AuthError::InvalidToken(_)
            | AuthError::ExpiredToken
            | AuthError::WrongPassphrase
            | AuthError::WrongSecondFactor
            | AuthError::NotOnboarded => ErrorCode::Unauthenticated,
            AuthError::BadProof(_) | AuthError::Denied(_) => ErrorCode::Forbidden,
            AuthError::TooMany { .. } => ErrorCode::TooManyRequests,
            AuthError::OAuth { error, .. } if matches!(*error, "invalid_client" | "invalid_token") => {
                ErrorCode::Unauthenticated
            }
            AuthError::OAuth { .. } => ErrorCode::BadRequest,
            AuthError::Storage(e) => e.error_code(),
            AuthError::Events(e) => e.error_code(),
            AuthError::Unavailable(_) => ErrorCode::Unavailable,
            AuthError::MasterKey { .. } | AuthError::Corrupt(_) => ErrorCode::Internal,
        }
    }
}

impl From<cocon_common::scope::ScopeError> for AuthError {
    fn from(err: cocon_common::scope::ScopeError) -> AuthError {
        AuthError::InvalidScope(err.0)
    }
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> tonic::Status {
        cocon_common::error::to_status(&err)
    }
}
