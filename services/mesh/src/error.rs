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
    #[error("the replicas' directory on NATS: {0}")]
    Directory(String),
    #[error(
        "another replica of {service} runs, at {endpoint}: {service} keeps state and runs as one replica at a time; stop that one, or start this one again in {secs} s if it is dead"
    )]
    LeaseHeld {
        service: &'static str,
        endpoint: String,
        secs: u64,
    },
}
