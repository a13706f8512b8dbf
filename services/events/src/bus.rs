use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::BusError;
use crate::live::Listener;

/// One event on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    /// Unique id, used for de-duplication (`Nats-Msg-Id`).
    pub id: String,
    /// Names are mostly constants: borrowed, they cost no allocation per event.
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub payload: Bytes,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A stream: the subjects it keeps and its retention limits.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub name: String,
    pub subjects: Vec<String>,
    pub max_age: Duration,
    pub max_bytes: i64,
    pub max_messages: i64,
    /// Re-publishes of the same message id within this window are dropped.
    pub duplicate_window: Duration,
    /// A work queue: a message is kept until one consumer acks it, then removed (the jobs'
    /// queues). Otherwise messages stay until the limits drop them, for every consumer.
    pub work_queue: bool,
    /// Copies JetStream keeps of each message, on as many servers of its cluster (1 on one
    /// server; 3 in production, so one server can die without losing an acknowledged event).
    pub replicas: usize,
}

/// A durable consumer: it survives restarts and resumes where it acked.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: String,
    pub durable: String,
    pub filter: String,
    /// After this many deliveries, the message goes to the dead-letter subject.
    pub max_deliver: u32,
    /// Redelivered if not acked within this time.
    pub ack_wait: Duration,
}

/// A delivered message, to ack once handled or nak to get it again later.
pub struct Delivery {
    pub message: Message,
    /// 1 on first delivery.
    pub attempt: u32,
    pub(crate) acker: Box<dyn Acker>,
}

impl Delivery {
    pub async fn ack(self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        self.acker.nak(delay).await
    }
}

#[async_trait]
pub(crate) trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError>;
}

#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription is closed.
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Resolves once the bus has stored the message (a JetStream publish ack).
    async fn publish(&self, message: Message) -> Result<(), BusError>;

    /// Publishes `messages` in order: (how many the bus stored before the first failure, that
    /// failure). Buses override it to pay their fixed costs once per call.
    async fn publish_all(&self, messages: Vec<Message>) -> (usize, Option<BusError>) {
        let mut sent = 0;
        for message in messages {
            if let Err(err) = self.publish(message).await {
                return (sent, Some(err));
            }
            sent += 1;
        }
        (sent, None)
    }

    /// Creates the durable consumer if needed and starts receiving from it.
    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError>;

    /// Listens to what is published on `filters` from now on, stored or not (`crate::live`).
    async fn listen(&self, filters: Vec<String>) -> Result<Box<dyn Listener>, BusError>;

    /// Hands `message` to the live listeners only: no stream keeps it.
    async fn publish_live(&self, message: Message) -> Result<(), BusError>;
}
