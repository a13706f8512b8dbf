//! Events, and the kit every service writes them with: the bus trait with its two
//! implementations (in-process and NATS JetStream), envelopes and subjects, the per-instance
//! event log and writer lock, the transactional outbox and its relay, durable consumers, and
//! projections with their rebuild from the log.
//!
//! The write path never waits for the bus: a service commits its events to its log, and outbox
//! pointers to them, in the same atomic batch, and the relay publishes from the outbox in the background,
//! retrying while the bus is down. Publishing carries the event id as `Nats-Msg-Id`, so a
//! re-publish after a crash is dropped by JetStream's duplicate window.

mod bus;
mod change;
mod consumer;
mod envelope;
mod error;
pub mod live;
mod log;
mod memory;
mod nats;
mod outbox;
mod projection;
mod signed;
mod stripes;
pub mod subject;

pub use bus::{ConsumerSpec, Delivery, EventBus, Message, StreamSpec, Subscription};
pub use change::Change;
pub use consumer::{HandlerError, on_instance_destroyed, run_consumer, spawn_consumers};
pub use envelope::{SCHEMA_VERSION, Stamp, Topic, envelope};
pub use error::BusError;
pub use live::{Listener, Live};
pub use log::{EventLog, decode_envelope};
pub use memory::{MemoryBus, MemoryCaps};
pub use nats::{NatsAuth, NatsBus};
pub use outbox::{Appended, Outbox, Relay, RelayConfig, SOLE_PARTITION, Sealed, adopt_orphans};
pub use projection::{Projection, ProjectionError, rebuild};
pub use signed::{EventKeys, SIGNATURE_HEADER, SignedBus};
pub use stripes::Stripes;

/// The streams of the deployment, one per publishing service, plus the dead letters.
pub mod streams {
    use std::time::Duration;

    use crate::StreamSpec;

    pub const AUTH: &str = "COCON_AUTH";
    pub const DOCUMENTS: &str = "COCON_DOCUMENTS";
    pub const FILES: &str = "COCON_FILES";
    pub const JOBS: &str = "COCON_JOBS";
    pub const SHARING: &str = "COCON_SHARING";
    pub const DEAD_LETTERS: &str = "COCON_DLQ";
    /// The jobs waiting for their workers (split mode): a work queue, one subject per worker.
    pub const JOB_QUEUE: &str = "COCON_JOBQ";

    /// Retention limits, from the configuration.
    #[derive(Debug, Clone, serde::Deserialize)]
    #[serde(default)]
    pub struct Limits {
        pub max_age_secs: u64,
        pub max_bytes: i64,
        pub max_messages: i64,
        pub duplicate_window_secs: u64,
        /// Copies of each stream (and of the replicas' directory) in a JetStream cluster: 1 on
        /// one NATS server, 3 on a cluster of three or more (`COCON_STREAMS__REPLICAS=3`).
        pub replicas: usize,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits {
                max_age_secs: 7 * 24 * 3600,
                max_bytes: 1 << 30,
                max_messages: 10_000_000,
                duplicate_window_secs: 120,
                replicas: 1,
            }
        }
    }

    pub fn all(limits: &Limits) -> Vec<StreamSpec> {
        [
            (AUTH, "cocon.auth.>"),
            (DOCUMENTS, "cocon.documents.>"),
            (FILES, "cocon.files.>"),
            (JOBS, "cocon.jobs.>"),
            (SHARING, "cocon.sharing.>"),
            (DEAD_LETTERS, "cocon.dlq.>"),
            (JOB_QUEUE, "cocon.jobq.>"),
        ]
        .into_iter()
        .map(|(name, subject)| StreamSpec {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            max_age: Duration::from_secs(limits.max_age_secs),
            max_bytes: limits.max_bytes,
            max_messages: limits.max_messages,
            duplicate_window: Duration::from_secs(limits.duplicate_window_secs),
            work_queue: name == JOB_QUEUE,
            replicas: limits.replicas.max(1),
        })
        .collect()
    }
}
