//! The bus of split mode: NATS JetStream. Streams are file-backed with retention limits;
//! consumers are durable pull consumers with explicit acks.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;

use crate::bus::Acker;
use crate::{BusError, ConsumerSpec, Delivery, EventBus, Message, StreamSpec, Subscription};

#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
}

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl NatsBus {
    /// Connects (retrying in the background if the server is down) and creates or updates the
    /// streams, so their limits follow the configuration.
    pub async fn connect(url: &str, streams: &[StreamSpec]) -> Result<NatsBus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("cocon")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(unavailable)?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_secs(5));
        let bus = NatsBus { client, js };
        bus.ensure_streams(streams).await?;
        Ok(bus)
    }

    pub async fn ensure_streams(&self, streams: &[StreamSpec]) -> Result<(), BusError> {
        for spec in streams {
            self.js
                .create_or_update_stream(stream::Config {
                    name: spec.name.clone(),
                    subjects: spec.subjects.clone(),
                    max_age: spec.max_age,
                    max_bytes: spec.max_bytes,
                    max_messages: spec.max_messages,
                    duplicate_window: spec.duplicate_window,
                    storage: stream::StorageType::File,
                    discard: stream::DiscardPolicy::Old,
                    ..Default::default()
                })
                .await
                .map_err(|e| BusError::Unavailable(format!("cannot create stream {}: {e}", spec.name)))?;
        }
        Ok(())
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Publishes awaiting their acks at once, in [`EventBus::publish_all`]: one round trip per
/// message would cap the relay at the server's round-trip rate.
const MAX_IN_FLIGHT: usize = 256;

impl NatsBus {
    async fn send(&self, message: Message) -> Result<jetstream::context::PublishAckFuture, BusError> {
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(message.payload)
            .message_id(&message.id);
        for (k, v) in &message.headers {
            publish = publish.header(k.as_ref(), v.as_str());
        }
        self.js
            .send_publish(message.subject, publish)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, message: Message) -> Result<(), BusError> {
        self.send(message).await?.await.map_err(unavailable)?;
        Ok(())
    }

    async fn publish_all(&self, messages: Vec<Message>) -> (usize, Option<BusError>) {
        let mut sent = 0;
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let mut acks = Vec::with_capacity(MAX_IN_FLIGHT);
            let mut failed = None;
            for message in messages.by_ref().take(MAX_IN_FLIGHT) {
                match self.send(message).await {
                    Ok(ack) => acks.push(ack),
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            // Acks come back in order of sending; count up to the first failure.
            for ack in acks {
                if let Err(err) = ack.await {
                    return (sent, Some(unavailable(err)));
                }
                sent += 1;
            }
            if failed.is_some() {
                return (sent, failed);
            }
        }
        (sent, None)
    }

    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        let stream = self.js.get_stream(&spec.stream).await.map_err(unavailable)?;
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &spec.durable,
                pull::Config {
                    durable_name: Some(spec.durable.clone()),
                    filter_subject: spec.filter.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: spec.ack_wait,
                    // Our runner dead-letters at max_deliver; the server must not give up first.
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        Ok(Box::new(NatsSubscription { messages }))
    }
}

struct NatsSubscription {
    messages: pull::Stream,
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        let msg = match self.messages.next().await? {
            Ok(msg) => msg,
            Err(e) => return Some(Err(unavailable(e))),
        };
        let attempt = msg.info().map(|i| i.delivered.max(1) as u32).unwrap_or(1);
        let headers = msg
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string().into(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let message = Message {
            subject: msg.subject.to_string(),
            id,
            headers,
            payload: msg.payload.clone(),
        };
        Some(Ok(Delivery {
            message,
            attempt,
            acker: Box::new(NatsAcker { msg }),
        }))
    }
}

struct NatsAcker {
    msg: jetstream::Message,
}

#[async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        // Double ack: returns once the server recorded it, so a handled event is not redelivered.
        self.msg.double_ack().await.map_err(unavailable)
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.msg.ack_with(AckKind::Nak(Some(delay))).await.map_err(unavailable)
    }
}
