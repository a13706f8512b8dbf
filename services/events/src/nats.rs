//! The bus of split mode: NATS JetStream. Streams are file-backed with retention limits;
//! consumers are durable pull consumers with explicit acks.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;

use crate::bus::Acker;
use crate::live::{Listener, Live};
use crate::{BusError, ConsumerSpec, Delivery, EventBus, Message, StreamSpec, Subscription};

/// How Cocon proves itself to the NATS server (its `authorization` or `accounts`), and whether
/// the connection is TLS. Any of them may be combined as the server asks.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct NatsAuth {
    pub user: String,
    /// With `user`; better given as COCON_NATS__PASSWORD. Never logged.
    pub password: String,
    pub token: String,
    /// A `.creds` file (a user JWT and its NKey seed), for servers with accounts.
    pub creds_file: std::path::PathBuf,
    /// A file holding an NKey seed (`SU…`).
    pub nkey_seed_file: std::path::PathBuf,
    /// The CA of the server's certificate: the connection is then TLS.
    pub tls_ca_file: std::path::PathBuf,
    /// Refuse a connection that is not TLS.
    pub tls_required: bool,
}

/// Never prints the secrets.
impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &(!self.password.is_empty()).then_some("<redacted>"))
            .field("token", &(!self.token.is_empty()).then_some("<redacted>"))
            .field("creds_file", &self.creds_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

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
        NatsBus::connect_with(url, &NatsAuth::default(), streams).await
    }

    /// As [`NatsBus::connect`], with credentials and TLS.
    pub async fn connect_with(url: &str, auth: &NatsAuth, streams: &[StreamSpec]) -> Result<NatsBus, BusError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("cocon")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5));
        if !auth.creds_file.as_os_str().is_empty() {
            options = options.credentials_file(&auth.creds_file).await.map_err(|e| {
                BusError::Unavailable(format!(
                    "cannot read the NATS credentials {}: {e}",
                    auth.creds_file.display()
                ))
            })?;
        }
        if !auth.nkey_seed_file.as_os_str().is_empty() {
            let seed = std::fs::read_to_string(&auth.nkey_seed_file).map_err(|e| {
                BusError::Unavailable(format!(
                    "cannot read the NATS NKey seed {}: {e}",
                    auth.nkey_seed_file.display()
                ))
            })?;
            options = options.nkey(seed.trim().to_string());
        }
        if !auth.user.is_empty() {
            options = options.user_and_password(auth.user.clone(), auth.password.clone());
        }
        if !auth.token.is_empty() {
            options = options.token(auth.token.clone());
        }
        if !auth.tls_ca_file.as_os_str().is_empty() {
            options = options
                .add_root_certificates(auth.tls_ca_file.clone())
                .require_tls(true);
        }
        if auth.tls_required {
            options = options.require_tls(true);
        }
        // A cluster is given as its servers' URLs, comma-separated: the client picks one and
        // moves to another when it fails.
        let servers = url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError::Unavailable(format!("invalid NATS URL {url:?}: {e}")))?;
        let client = options.connect(servers).await.map_err(unavailable)?;
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
                    num_replicas: spec.replicas.max(1),
                    discard: stream::DiscardPolicy::Old,
                    retention: if spec.work_queue {
                        stream::RetentionPolicy::WorkQueue
                    } else {
                        stream::RetentionPolicy::Limits
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    // JetStream reserves each stream's `max_bytes` up front against its
                    // `max_file_store`, which defaults to 75 % of the disk free at its start.
                    let hint = if e.to_string().contains("10047") {
                        format!(
                            "; the streams reserve {} bytes each: lower [events] max_bytes or raise the \
                             NATS server's jetstream max_file_store",
                            spec.max_bytes
                        )
                    } else {
                        String::new()
                    };
                    BusError::Unavailable(format!("cannot create stream {}: {e}{hint}", spec.name))
                })?;
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

    /// Plain NATS subscriptions: JetStream's publishes reach them too, and the server sends
    /// this process only the subjects it listens to.
    async fn listen(&self, filters: Vec<String>) -> Result<Box<dyn Listener>, BusError> {
        let mut subscribers = Vec::with_capacity(filters.len());
        for filter in filters {
            subscribers.push(self.client.subscribe(filter).await.map_err(unavailable)?);
        }
        Ok(Box::new(NatsListener {
            messages: futures::stream::select_all(subscribers),
        }))
    }

    async fn publish_live(&self, message: Message) -> Result<(), BusError> {
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in &message.headers {
            headers.insert(k.as_ref(), v.as_str());
        }
        headers.insert("Nats-Msg-Id", message.id.as_str());
        self.client
            .publish_with_headers(message.subject, headers, message.payload)
            .await
            .map_err(unavailable)
    }
}

struct NatsListener {
    messages: futures::stream::SelectAll<async_nats::Subscriber>,
}

#[async_trait]
impl Listener for NatsListener {
    async fn next(&mut self) -> Option<Live> {
        let msg = self.messages.next().await?;
        Some(Live::Event(message_of(&msg.subject, msg.headers.as_ref(), msg.payload)))
    }
}

/// Our message from what NATS delivered: its id travels as `Nats-Msg-Id`.
fn message_of(subject: &str, headers: Option<&async_nats::HeaderMap>, payload: bytes::Bytes) -> Message {
    let id = headers
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.to_string())
        .unwrap_or_default();
    let headers = headers
        .map(|h| {
            h.iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string().into(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Message {
        subject: subject.to_string(),
        id,
        headers,
        payload,
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
        let message = message_of(&msg.subject, msg.headers.as_ref(), msg.payload.clone());
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
