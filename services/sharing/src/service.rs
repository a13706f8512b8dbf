//! The sharing service's state, and reading and writing sharings under the instance's stripe.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cocon_common::ticket::MeshKey;
use cocon_events::{EventBus, EventLog, Stripes};
use cocon_mesh::Clients;
use cocon_proto::sharing::v1 as pb;
use cocon_storage::{ScanRange, Store};
use serde::Deserialize;
use tokio::sync::MutexGuard;

use crate::doc::Sharing;
use crate::error::{Result, SharingError};
use crate::peer::Peers;
use crate::store::{self, EVENTS, OUTBOX, SHARINGS, SharingProjection};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How long a call to another host may take, in seconds.
    pub peer_timeout_secs: u64,
    /// Most sharing requests an instance keeps waiting for an answer: `PUT /sharings/:id` takes
    /// no token, so this bounds what a stranger can make a Cozy store.
    pub max_pending_requests: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            peer_timeout_secs: 30,
            max_pending_requests: 200,
        }
    }
}

pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Checks the instance tickets, signs the events and seals the credentials.
    pub mesh_key: MeshKey,
}

#[derive(Clone)]
pub struct SharingService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub log: EventLog,
    pub mesh_key: MeshKey,
    pub peers: Peers,
    pub clients: OnceLock<Clients>,
    stripes: Stripes,
    /// The replication senders and their states (`replicate.rs`).
    pub senders: crate::replicate::Senders,
    /// Files' metadata waiting for their content (`files.rs`).
    pub uploads: crate::files::Uploads,
    /// The initial syncs of shared folders (`initial.rs`).
    pub initial: crate::initial::InitialSyncs,
    /// The instances whose groups are being brought up to date (`groups.rs`).
    pub regroups: crate::groups::Regroups,
    /// The process's shutdown, for the senders started after the start.
    pub shutdown: OnceLock<cocon_common::Shutdown>,
}

impl SharingService {
    pub async fn build(config: Config, deps: Deps) -> Result<SharingService> {
        let log = EventLog::open(deps.store.clone(), EVENTS, OUTBOX).await?;
        let peers = Peers::new(Duration::from_secs(config.peer_timeout_secs.max(1)));
        Ok(SharingService {
            inner: Arc::new(Inner {
                config,
                store: deps.store,
                bus: deps.bus,
                log,
                mesh_key: deps.mesh_key,
                peers,
                clients: OnceLock::new(),
                stripes: Stripes::default(),
                senders: Default::default(),
                uploads: Default::default(),
                initial: Default::default(),
                regroups: Default::default(),
                shutdown: OnceLock::new(),
            }),
        })
    }

    /// The projection, to rebuild from the log.
    pub async fn projection(store: Arc<dyn Store>) -> Result<SharingProjection> {
        Ok(SharingProjection::new(EventLog::open(store, EVENTS, OUTBOX).await?))
    }

    pub(crate) fn clients(&self) -> Result<&Clients> {
        self.inner.clients.get().ok_or_else(|| {
            SharingError::Upstream(
                "the sharing service is starting".into(),
                cocon_common::ErrorCode::Unavailable,
            )
        })
    }

    /// The instance's writer lock: a change reads and writes under it.
    pub(crate) async fn lock(&self, instance: &str) -> MutexGuard<'_, ()> {
        self.inner.stripes.of(instance).lock().await
    }

    /// The instance of a call, with its ticket checked when the route has a token.
    pub(crate) fn instance(&self, instance: Option<pb::Instance>, needs_ticket: bool) -> Result<pb::Instance> {
        let instance = instance.ok_or_else(|| SharingError::BadRequest("missing instance".into()))?;
        if instance.id.is_empty() || instance.domain.is_empty() {
            return Err(SharingError::BadRequest("missing instance".into()));
        }
        if needs_ticket {
            self.inner
                .mesh_key
                .verify(&instance.id, &instance.ticket, cocon_common::time::now_secs())
                .map_err(|e| match e {
                    cocon_common::ticket::TicketError::Expired => SharingError::Expired,
                    other => SharingError::Denied(other.to_string()),
                })?;
        }
        Ok(instance)
    }

    pub(crate) async fn load(&self, instance: &str, id: &str) -> Result<Option<Sharing>> {
        match SHARINGS.get(self.inner.store.as_ref(), instance, id).await? {
            Some(json) => Ok(Some(store::open(&self.inner.mesh_key, instance, &json)?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn must_load(&self, instance: &str, id: &str) -> Result<Sharing> {
        self.load(instance, id)
            .await?
            .ok_or_else(|| SharingError::NotFound(format!("no sharing {id:?} here")))
    }

    /// Every sharing of the instance.
    pub(crate) async fn all(&self, instance: &str) -> Result<Vec<Sharing>> {
        let rows = SHARINGS
            .scan(self.inner.store.as_ref(), instance, ScanRange::all())
            .await?;
        rows.into_iter()
            .map(|(_, json)| store::open(&self.inner.mesh_key, instance, &json))
            .collect()
    }

    /// Every sharing of the instance, its credentials left sealed (for what is shown, and the
    /// guards the gateway asks for on writes: no need to open every sharing's secrets).
    pub(crate) async fn all_shown(&self, instance: &str) -> Result<Vec<Sharing>> {
        let rows = SHARINGS
            .scan(self.inner.store.as_ref(), instance, ScanRange::all())
            .await?;
        rows.into_iter().map(|(_, json)| store::open_shown(&json)).collect()
    }

    /// A sharing, its credentials left sealed.
    pub(crate) async fn must_load_shown(&self, instance: &str, id: &str) -> Result<Sharing> {
        match SHARINGS.get(self.inner.store.as_ref(), instance, id).await? {
            Some(json) => store::open_shown(&json),
            None => Err(SharingError::NotFound(format!("no sharing {id:?} here"))),
        }
    }

    /// Writes sharings (the caller holds the stripe).
    pub(crate) async fn save(&self, instance: &str, changes: &[(&Sharing, &'static str)]) -> Result<()> {
        store::commit(
            &self.inner.log,
            self.inner.store.clone(),
            &self.inner.mesh_key,
            instance,
            changes,
        )
        .await
    }
}
