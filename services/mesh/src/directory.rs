//! The replicas' directory, in a NATS KV bucket (`cocon_replicas`, as many copies as the
//! streams): every process that serves a gRPC API writes a card under `<service>.<replica>`
//! (its endpoint, whether it drains, when it wrote it, signed with the mesh key) and writes it
//! again every heartbeat; every process watches the bucket and keeps, per service, the replicas
//! whose cards keep coming ([`Route`]). No list of addresses is written by hand: a replica
//! that starts is called within a heartbeat, one that drains is passed over at once, one that
//! dies is passed over at its first refused connection and forgotten when its heartbeats stop.
//!
//! A service that keeps state (auth, documents, files, jobs, sharing) also holds
//! `lease.<service>`: one replica at a time serves it, until instances are leased one by one.
//! The lease's revision is its fencing token: it is renewed only at the revision this replica
//! last wrote, so a replica that lost it (it was taken while this one looked dead) learns so
//! at its next heartbeat and stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use cocon_common::ticket::MeshKey;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::shard_map::ShardMap;
use crate::shards::Shards;
use crate::{MeshError, Route, ServiceKind, remote};

pub const BUCKET: &str = "cocon_replicas";

/// How often cards are written, and how long after its last one a replica is forgotten.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DirectoryConfig {
    pub heartbeat_ms: u64,
    pub ttl_ms: u64,
    /// After announcing that it drains, how long a replica keeps taking calls before it stops
    /// accepting them: long enough for every caller to have read its card.
    pub drain_notice_ms: u64,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            heartbeat_ms: 1_000,
            // Past a NATS leader election (4-6 s), so that one does not free leases.
            ttl_ms: 10_000,
            drain_notice_ms: 1_000,
        }
    }
}

impl DirectoryConfig {
    fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(50))
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.max(self.heartbeat_ms * 2))
    }

    pub fn drain_notice(&self) -> Duration {
        Duration::from_millis(self.drain_notice_ms)
    }
}

/// What a replica writes about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Card {
    /// The replica that wrote it (a lease names its holder this way).
    #[serde(default)]
    replica: String,
    endpoint: String,
    #[serde(default)]
    draining: bool,
    at_ms: i64,
    mac: String,
}

impl Card {
    fn signed(key: &MeshKey, replica: &str, name: &str, endpoint: &str, draining: bool) -> Card {
        let at_ms = cocon_common::time::now_us() / 1000;
        let at = at_ms.to_string();
        Card {
            replica: replica.to_string(),
            endpoint: endpoint.to_string(),
            draining,
            at_ms,
            mac: key.derive("replica-card", &[name, replica, endpoint, state(draining), &at]),
        }
    }

    /// Whether the mesh key signed it, for this key of the bucket (a card copied under
    /// another service's key is refused).
    fn check(&self, key: &MeshKey, name: &str) -> bool {
        let at = self.at_ms.to_string();
        key.check_derived(
            "replica-card",
            &[name, &self.replica, &self.endpoint, state(self.draining), &at],
            &self.mac,
        )
    }

    fn age(&self) -> Duration {
        Duration::from_millis((cocon_common::time::now_us() / 1000).saturating_sub(self.at_ms).max(0) as u64)
    }
}

/// Opens a KV bucket, made first if need be with `copies` copies, on disk (a lease outlives a
/// restart of the NATS server). Its stream is made as NATS's KV makes it, without the account
/// query that `create_key_value` sends first (NATS 2.9 answers it in a shape the client
/// rejects).
pub(crate) async fn open_bucket(
    client: async_nats::Client,
    bucket: &str,
    description: &str,
    copies: usize,
    max_age: Option<Duration>,
) -> Result<kv::Store, MeshError> {
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_string()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: max_age.unwrap_or_default(),
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: copies.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| MeshError::Directory(format!("cannot make the NATS KV bucket {bucket}: {e}")))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| MeshError::Directory(format!("cannot open the NATS KV bucket {bucket}: {e}")))
}

/// The bucket's key of `kind`'s lease.
fn lease_key(kind: ServiceKind) -> String {
    format!("lease.{}", kind.as_str())
}

fn state(draining: bool) -> &'static str {
    if draining { "draining" } else { "serving" }
}

/// What a renewal refused for its revision finds.
enum Reclaim {
    /// The lease is still this replica's, at this revision.
    Ours(u64),
    /// Another replica holds it.
    Lost,
    /// It could not be read: tried again at the next heartbeat.
    Unknown,
}

/// The directory this process reads and writes. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    /// Start the watch again (NATS came back: the watch's consumer may be gone with it).
    rewatch: Notify,
    kv: kv::Store,
    key: MeshKey,
    config: DirectoryConfig,
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// This process's replica id.
    id: String,
    /// How many copies NATS keeps of the buckets.
    copies: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    routes: HashMap<&'static str, Route>,
    /// The shards' leases of the sharded services, watched once per process.
    maps: HashMap<&'static str, ShardMap>,
    /// The cards read, by key, and when each was last heard of.
    cards: HashMap<String, (Card, Instant)>,
    /// Since when the watch has been up without a break; cards are forgotten for silence only
    /// once it has been up a whole `ttl` (a break of NATS is not every replica's death).
    watching_since: Option<Instant>,
    /// When the last card arrived: silence is death only while others are heard (during a
    /// leader election of the bucket no card arrives, and no replica died of it).
    last_heard: Option<Instant>,
}

impl Directory {
    /// Opens (or makes) the bucket, with `replicas` copies, and starts watching it. `id` names
    /// this replica: kept in its data directory, so that a replica restarted after a crash is
    /// known as the same one and takes its lease back at once ([`Directory::new_id`] makes one).
    pub async fn open(
        client: async_nats::Client,
        key: MeshKey,
        tls: Option<tonic::transport::ClientTlsConfig>,
        config: DirectoryConfig,
        replicas: usize,
        id: String,
    ) -> Result<Directory, MeshError> {
        let kv = open_bucket(
            client.clone(),
            BUCKET,
            "Cocon's replicas: their endpoints and leases",
            replicas,
            Some(Duration::from_secs(3600)),
        )
        .await?;
        let directory = Directory {
            inner: Arc::new(Inner {
                client,
                rewatch: Notify::new(),
                kv,
                key,
                config,
                tls,
                id,
                copies: replicas.max(1),
                state: Mutex::new(State::default()),
            }),
        };
        let watcher = directory.clone();
        tokio::spawn(async move { watcher.watch().await });
        let sweeper = Arc::downgrade(&directory.inner);
        let every = directory.inner.config.heartbeat();
        tokio::spawn(async move {
            let mut was_connected = true;
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = sweeper.upgrade() else {
                    return;
                };
                let directory = Directory { inner };
                let connected = directory.inner.client.connection_state() == async_nats::connection::State::Connected;
                if !connected {
                    // Silence is not death while the directory cannot be read.
                    directory.lock().watching_since = None;
                } else if !was_connected {
                    directory.inner.rewatch.notify_one();
                } else {
                    directory.forget_silent();
                }
                was_connected = connected;
            }
        });
        Ok(directory)
    }

    /// A new replica id: 16 hex digits.
    pub fn new_id() -> String {
        let bytes: [u8; 8] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// This process's replica id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The route to `kind`'s replicas, kept current from now on.
    pub fn route(&self, kind: ServiceKind) -> Route {
        let name = kind.as_str();
        let mut state = self.lock();
        if let Some(route) = state.routes.get(name) {
            return route.clone();
        }
        let route = Route::discovered(name);
        let prefix = format!("{name}.");
        for (key, (card, _)) in &state.cards {
            if let Some(id) = key.strip_prefix(&prefix) {
                self.apply(&route, id, card);
            }
        }
        state.routes.insert(name, route.clone());
        route
    }

    /// Who holds each shard of `kind`'s instances, kept current from now on.
    pub async fn shard_map(&self, kind: ServiceKind) -> Result<ShardMap, MeshError> {
        if let Some(map) = self.lock().maps.get(kind.as_str()) {
            return Ok(map.clone());
        }
        let map = ShardMap::open(
            self.inner.client.clone(),
            self.inner.key.clone(),
            self.inner.copies,
            kind.as_str(),
        )
        .await?;
        // Two callers at once may both open one: the first kept is everyone's.
        Ok(self.lock().maps.entry(kind.as_str()).or_insert(map).clone())
    }

    /// The route to `kind`'s replicas, sending each instance's calls to the replica holding its
    /// shard (for a service whose replicas own shards of instances).
    pub async fn sharded_route(&self, kind: ServiceKind) -> Result<Route, MeshError> {
        let route = self.route(kind);
        route.follow_shards(self.shard_map(kind).await?);
        Ok(route)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, route: &Route, id: &str, card: &Card) {
        let tls = self.inner.tls.as_ref();
        route.upsert(id, &card.endpoint, card.draining, || match remote(&card.endpoint, tls) {
            Ok(channel) => Some(channel),
            Err(e) => {
                tracing::warn!(endpoint = %card.endpoint, error = %e, "a replica's card names an unusable endpoint");
                None
            }
        });
    }

    async fn watch(self) {
        loop {
            match self.inner.kv.watch_with_history(">").await {
                Ok(mut entries) => {
                    self.lock().watching_since = Some(Instant::now());
                    loop {
                        tokio::select! {
                            entry = entries.next() => match entry {
                                Some(Ok(entry)) => self.read(entry),
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "the replicas' directory watch broke");
                                    break;
                                }
                                None => break,
                            },
                            _ = self.inner.rewatch.notified() => {
                                tracing::info!("NATS is back: watching the replicas' directory again");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the replicas' directory"),
            }
            self.lock().watching_since = None;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn read(&self, entry: kv::Entry) {
        let Some((service, id)) = entry.key.split_once('.') else {
            return;
        };
        if service == "lease" {
            return;
        }
        let mut state = self.lock();
        let route = state.routes.get(service).cloned();
        match entry.operation {
            kv::Operation::Put => {
                let card: Card = match serde_json::from_slice(&entry.value) {
                    Ok(card) => card,
                    Err(_) => {
                        tracing::warn!(key = %entry.key, "an unreadable card in the replicas' directory: ignored");
                        return;
                    }
                };
                if !card.check(&self.inner.key, &entry.key) {
                    tracing::warn!(key = %entry.key, "a card not signed with the mesh key in the replicas' directory: ignored");
                    return;
                }
                // A card read when the watch starts may be an old one of a dead replica.
                if card.age() > self.inner.config.ttl() {
                    return;
                }
                if let Some(route) = &route {
                    self.apply(route, id, &card);
                }
                let now = Instant::now();
                state.last_heard = Some(now);
                state.cards.insert(entry.key, (card, now));
            }
            kv::Operation::Delete | kv::Operation::Purge => {
                if let Some(route) = &route {
                    route.remove(id);
                }
                state.cards.remove(&entry.key);
            }
        }
    }

    /// Forgets the replicas not heard of for a `ttl` while the watch was up.
    fn forget_silent(&self) {
        let ttl = self.inner.config.ttl();
        let mut state = self.lock();
        let Some(since) = state.watching_since else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(since) < ttl {
            return;
        }
        let live = state
            .last_heard
            .is_some_and(|t| now.duration_since(t) < self.inner.config.heartbeat() * 2);
        if !live {
            return;
        }
        let silent: Vec<String> = state
            .cards
            .iter()
            .filter(|(_, (_, heard))| now.duration_since(*heard) > ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for key in silent {
            state.cards.remove(&key);
            if let Some((service, id)) = key.split_once('.')
                && let Some(route) = state.routes.get(service)
            {
                tracing::info!(service, replica = id, "a replica stopped its heartbeats: forgotten");
                route.remove(id);
            }
        }
    }

    /// Writes this replica's card for `kind` at `endpoint`, then again every heartbeat; for a
    /// service that keeps state, takes its lease first (refused while another live replica
    /// holds it).
    pub async fn announce(&self, kind: ServiceKind, endpoint: &str) -> Result<Announcement, MeshError> {
        self.announce_as(kind, endpoint, false).await
    }

    /// [`Directory::announce`] for a replica that owns shards of instances
    /// ([`crate::shards`]) instead of the whole service: it takes no service lease, and
    /// takes, releases and gives up shards as replicas come and go
    /// ([`Announcement::shards`]).
    pub async fn announce_sharded(&self, kind: ServiceKind, endpoint: &str) -> Result<Announcement, MeshError> {
        self.announce_as(kind, endpoint, true).await
    }

    async fn announce_as(&self, kind: ServiceKind, endpoint: &str, sharded: bool) -> Result<Announcement, MeshError> {
        let name = format!("{}.{}", kind.as_str(), self.inner.id);
        let lease = if kind.keeps_state() && !sharded {
            let revision = self.take_lease(kind, endpoint).await?;
            metrics::gauge!("cocon_mesh_lease_held", "service" => kind.as_str()).set(1.0);
            Some(revision)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            draining: AtomicBool::new(false),
            shards: Mutex::new(None),
            lease: Mutex::new(lease),
            lost: Notify::new(),
            lost_flag: AtomicBool::new(false),
        });
        let shards = if sharded {
            let shards = Shards::new(self.shard_map(kind).await?, &self.inner.id, endpoint);
            *shared.shards.lock().unwrap_or_else(|e| e.into_inner()) = Some(shards.clone());
            Some(shards)
        } else {
            None
        };
        let at = Instant::now();
        self.write_card(&name, endpoint, false).await?;
        shared.card_written(at, self.inner.config.ttl());
        let directory = self.clone();
        let task_shared = shared.clone();
        let (task_name, task_endpoint) = (name.clone(), endpoint.to_string());
        let task = tokio::spawn(async move {
            directory.heartbeats(kind, task_name, task_endpoint, task_shared).await;
        });
        let balancer = shards.clone().map(|shards| {
            let route = self.route(kind);
            let tick = self.inner.config.heartbeat();
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    shards.balance(&route, shared.draining.load(Ordering::SeqCst)).await;
                    shards.woken(tick).await;
                }
            })
        });
        Ok(Announcement {
            kind,
            directory: self.clone(),
            name,
            endpoint: endpoint.to_string(),
            shared,
            task: Some(task),
            balancer,
            shards,
        })
    }

    /// [`Directory::announce`], waiting as a standby while another live replica holds the
    /// lease: for a store the replicas share (ScyllaDB), where the standby takes over as soon
    /// as the holder stops or dies. Never resolves while the holder lives.
    pub async fn announce_standby(&self, kind: ServiceKind, endpoint: &str) -> Result<Announcement, MeshError> {
        let mut said = None::<Instant>;
        loop {
            match self.announce(kind, endpoint).await {
                Err(MeshError::LeaseHeld { endpoint: holder, .. }) => {
                    if said.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        tracing::info!(service = kind.as_str(), holder = %holder, "a standby: another replica holds the lease; this one takes over when it stops");
                        said = Some(Instant::now());
                    }
                    tokio::time::sleep(self.inner.config.heartbeat()).await;
                }
                other => return other,
            }
        }
    }

    /// This replica's card for the bucket's key `name`, signed, as stored.
    fn card(&self, name: &str, endpoint: &str, draining: bool) -> bytes::Bytes {
        let card = Card::signed(&self.inner.key, &self.inner.id, name, endpoint, draining);
        serde_json::to_vec(&card).expect("a card serializes").into()
    }

    async fn write_card(&self, name: &str, endpoint: &str, draining: bool) -> Result<u64, MeshError> {
        self.inner
            .kv
            .put(name, self.card(name, endpoint, draining))
            .await
            .map_err(|e| MeshError::Directory(format!("cannot write {name} in the replicas' directory: {e}")))
    }

    async fn take_lease(&self, kind: ServiceKind, endpoint: &str) -> Result<u64, MeshError> {
        let key = lease_key(kind);
        let bytes = self.card(&key, endpoint, false);
        match self.inner.kv.create(&key, bytes.clone()).await {
            Ok(revision) => return Ok(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(MeshError::Directory(format!("cannot take {key}: {e}"))),
        }
        let entry = self
            .inner
            .kv
            .entry(&key)
            .await
            .map_err(|e| MeshError::Directory(format!("cannot read {key}: {e}")))?;
        if let Some(entry) = &entry
            && entry.operation == kv::Operation::Put
            && let Ok(held) = serde_json::from_slice::<Card>(&entry.value)
            && held.check(&self.inner.key, &key)
            && held.age() < self.inner.config.ttl()
            // This replica's own lease, from before a restart (the same data directory, so
            // the process that held it is gone): taken back at once.
            && held.replica != self.inner.id
        {
            let wait = self.inner.config.ttl().saturating_sub(held.age());
            return Err(MeshError::LeaseHeld {
                service: kind.as_str(),
                endpoint: held.endpoint,
                secs: wait.as_secs() + 1,
            });
        }
        let revision = entry.map(|e| e.revision).unwrap_or(0);
        self.inner
            .kv
            .update(&key, bytes, revision)
            .await
            .map_err(|e| MeshError::Directory(format!("cannot take {key} (another replica took it first?): {e}")))
    }

    async fn heartbeats(&self, kind: ServiceKind, name: String, endpoint: String, shared: Arc<Shared>) {
        let mut tick = tokio::time::interval(self.inner.config.heartbeat());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let draining = shared.draining.load(Ordering::SeqCst);
            let at = Instant::now();
            match self.write_card(&name, &endpoint, draining).await {
                Ok(_) => shared.card_written(at, self.inner.config.ttl()),
                Err(e) => tracing::warn!(error = %e, "cannot renew this replica's card"),
            }
            if let Some(revision) = shared.lease() {
                self.renew_lease(kind, revision, &endpoint, draining, &shared).await;
            }
        }
    }

    /// Renews the lease at `revision`, the one this replica last wrote.
    async fn renew_lease(&self, kind: ServiceKind, revision: u64, endpoint: &str, draining: bool, shared: &Shared) {
        let key = lease_key(kind);
        let bytes = self.card(&key, endpoint, draining);
        let refused = match self.inner.kv.update(&key, bytes.clone(), revision).await {
            Ok(next) => return shared.set_lease(Some(next)),
            Err(e) => e,
        };
        if refused.kind() != kv::UpdateErrorKind::WrongLastRevision {
            // NATS unreachable: the lease stays ours until it is renewed or taken.
            tracing::warn!(error = %refused, service = kind.as_str(), "cannot renew this replica's lease");
            return;
        }
        match self.reclaim(&key, bytes).await {
            Reclaim::Ours(next) => shared.set_lease(Some(next)),
            Reclaim::Unknown => {}
            Reclaim::Lost => {
                tracing::error!(
                    service = kind.as_str(),
                    "this replica lost its lease to another: it stops"
                );
                shared.set_lease(None);
                metrics::gauge!("cocon_mesh_lease_held", "service" => kind.as_str()).set(0.0);
                shared.lost_flag.store(true, Ordering::SeqCst);
                shared.lost.notify_waiters();
            }
        }
    }

    /// After a renewal refused for its revision: the lease may still be this replica's (an
    /// earlier renewal was applied but its answer lost, as when NATS fails over), or gone (the
    /// bucket lost with a NATS server's disk: written again unless another replica did first),
    /// or another's.
    async fn reclaim(&self, key: &str, bytes: bytes::Bytes) -> Reclaim {
        let entry = match self.inner.kv.entry(key).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this replica's lease");
                return Reclaim::Unknown;
            }
        };
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                match serde_json::from_slice::<Card>(&entry.value) {
                    Ok(card) if card.replica == self.inner.id && card.check(&self.inner.key, key) => {
                        Reclaim::Ours(entry.revision)
                    }
                    _ => Reclaim::Lost,
                }
            }
            _ => match self.inner.kv.create(key, bytes).await {
                Ok(revision) => {
                    tracing::warn!("this replica's lease had vanished from NATS: written again");
                    Reclaim::Ours(revision)
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Reclaim::Lost,
                Err(_) => Reclaim::Unknown,
            },
        }
    }

    /// Deletes the card, then releases the lease, so that no caller is left with nowhere to
    /// go while a successor can already take over.
    async fn withdraw(&self, kind: ServiceKind, name: &str, lease: Option<u64>) {
        if let Err(e) = self.inner.kv.delete(name).await {
            tracing::warn!(error = %e, "cannot withdraw this replica's card");
        }
        if let Some(revision) = lease {
            metrics::gauge!("cocon_mesh_lease_held", "service" => kind.as_str()).set(0.0);
            if let Err(e) = self
                .inner
                .kv
                .delete_expect_revision(lease_key(kind), Some(revision))
                .await
            {
                tracing::warn!(error = %e, "cannot release this replica's lease");
            }
        }
    }
}

struct Shared {
    draining: AtomicBool,
    /// The shards this replica owns, for a sharded service.
    shards: Mutex<Option<Shards>>,
    /// The lease's revision this replica last wrote (its fencing token), if it holds one.
    lease: Mutex<Option<u64>>,
    lost: Notify,
    lost_flag: AtomicBool,
}

/// A replica's card kept in the directory until [`Announcement::withdraw`].
pub struct Announcement {
    kind: ServiceKind,
    directory: Directory,
    name: String,
    endpoint: String,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// For a sharded service: the task that takes and releases shards.
    balancer: Option<tokio::task::JoinHandle<()>>,
    shards: Option<Shards>,
}

impl Announcement {
    /// Says that this replica drains: callers pass it over from their next call.
    pub async fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let said = self.directory.write_card(&self.name, &self.endpoint, true);
        match tokio::time::timeout(WITHDRAW_WITHIN, said).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot say that this replica drains"),
            Err(_) => {
                tracing::warn!("NATS did not answer: callers learn that this replica drains when it refuses them")
            }
        }
    }

    /// The service announced.
    pub fn kind(&self) -> ServiceKind {
        self.kind
    }

    /// The shards this replica owns, when announced with [`Directory::announce_sharded`].
    pub fn shards(&self) -> Option<&Shards> {
        self.shards.as_ref()
    }

    /// Resolves when this replica's lease was taken by another.
    pub async fn lost(&self) {
        let notified = self.shared.lost.notified();
        if self.shared.lost_flag.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// Removes the card and releases the lease, giving NATS [`WITHDRAW_WITHIN`] at most: a
    /// replica whose NATS is gone stops all the same (its card is forgotten, its lease freed,
    /// when their time runs out).
    pub async fn withdraw(mut self) {
        if let Some(balancer) = self.balancer.take() {
            balancer.abort();
            let _ = balancer.await;
        }
        // The shards first, while the card still says this replica lives: a successor takes
        // each as soon as it is freed.
        if let Some(shards) = &self.shards
            && tokio::time::timeout(WITHDRAW_WITHIN, shards.release_all())
                .await
                .is_err()
        {
            tracing::warn!("NATS did not answer: this replica's shards are left for its card to expire");
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let lease = self.shared.lease();
        let withdrawn = self.directory.withdraw(self.kind, &self.name, lease);
        if tokio::time::timeout(WITHDRAW_WITHIN, withdrawn).await.is_err() {
            tracing::warn!("NATS did not answer: this replica's card and lease are left to expire");
        }
    }
}

impl Shared {
    fn lease(&self) -> Option<u64> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_lease(&self, lease: Option<u64>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    /// A card written at `at` was taken: a sharded replica may write its shards for three
    /// quarters of the TTL from then (others think it dead only after the whole TTL).
    fn card_written(&self, at: Instant, ttl: Duration) {
        if let Some(shards) = &*self.shards.lock().unwrap_or_else(|e| e.into_inner()) {
            shards.card_written(at, ttl * 3 / 4);
        }
    }
}

/// How long a stopping replica waits for NATS to take its last words (draining, withdrawn).
const WITHDRAW_WITHIN: Duration = Duration::from_secs(2);

impl Drop for Announcement {
    /// Dropped without [`Announcement::withdraw`]: the heartbeats stop and the card stays
    /// until callers forget it, as when the process dies.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(balancer) = self.balancer.take() {
            balancer.abort();
        }
    }
}
