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
    #[error(
        "this replica of {service} does not own shard {shard} of the instances: {}",
        match owner {
            Some(e) => format!("its owner answers at {e}; send the call there"),
            None => "it is being handed over; try again in a moment".to_string(),
        }
    )]
    NotOwner {
        service: &'static str,
        shard: usize,
        owner: Option<String>,
    },
}
