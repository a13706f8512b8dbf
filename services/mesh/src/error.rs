use thiserror::Error;

#[derive(Debug, Error)]
pub enum MeshError {
    #[error("invalid endpoints.{service} {endpoint:?}: {source}")]
    InvalidEndpoint {
        service: &'static str,
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("unknown service {0:?}; choose among {list}", list = crate::ServiceKind::names())]
    UnknownService(String),
}
