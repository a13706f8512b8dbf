use cocon_common::ticket::MeshKey;
use std::sync::Arc;

use cocon_common::waiters::Waiters;
use cocon_events::{EventBus, EventLog};
use cocon_storage::{Batch, ScanRange, Store};
use serde::Deserialize;

use crate::committer::{Committer, Shared};
use crate::error::Result;
use crate::projection::{CountCache, IndexCache, load_indexes};
use crate::rebuild::DocumentsProjection;
use crate::tables::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Largest document accepted, in bytes (413 above).
    pub max_doc_bytes: usize,
    /// Longest a `feed=longpoll` request waits, in milliseconds.
    pub max_longpoll_ms: u64,
    /// Long polls one instance may hold at once (more get 503 with `Retry-After`).
    pub max_longpolls_per_instance: usize,
    /// Long polls this process holds at once, all instances together.
    pub max_longpolls: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_doc_bytes: 8 * 1024 * 1024,
            max_longpoll_ms: 60_000,
            max_longpolls_per_instance: 100,
            max_longpolls: 10_000,
        }
    }
}

pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Checks the instance ticket of every call (signed by the auth service).
    pub mesh_key: MeshKey,
    /// This replica's outbox partition when replicas share the store (its replica id);
    /// `None` when it is alone on it.
    pub partition: Option<String>,
}

#[derive(Clone)]
pub struct DocumentsService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) committer: Committer,
    pub(crate) config: Config,
    pub(crate) mesh_key: MeshKey,
    pub(crate) bus: Arc<dyn EventBus>,
}

impl DocumentsService {
    pub async fn build(config: Config, deps: Deps) -> Result<DocumentsService> {
        let log = match &deps.partition {
            Some(partition) => EventLog::open_shared(deps.store.clone(), EVENTS, OUTBOX, partition).await?,
            None => EventLog::open(deps.store.clone(), EVENTS, OUTBOX).await?,
        };
        let shared = Arc::new(Shared {
            store: deps.store,
            log,
            indexes: IndexCache::default(),
            counts: CountCache::default(),
            waiters: Waiters::new("documents", config.max_longpolls_per_instance, config.max_longpolls),
            fence: std::sync::OnceLock::new(),
        });
        let committer = Committer::spawn(shared.clone()).map_err(cocon_storage::StorageError::from)?;
        Ok(DocumentsService {
            shared,
            committer,
            config,
            mesh_key: deps.mesh_key,
            bus: deps.bus,
        })
    }

    /// Makes this replica own instances shard by shard beside others on a shared store:
    /// writes commit only on shards it holds; before it takes shards it forgets what it cached
    /// (another replica wrote them since); when it lets one go, long polls end so that their
    /// clients ask the new holder. Set once, before any shard is taken.
    pub fn own_shards(&self, shards: &cocon_mesh::Shards) {
        let taking = self.shared.clone();
        let released = self.shared.clone();
        shards.on_change(
            move || {
                taking.log.forget_all();
                taking.indexes.clear();
                taking.counts.clear();
            },
            move || released.waiters.end_all(),
        );
        let _ = self.shared.fence.set(shards.clone());
    }

    /// Erases every document, index, change and event of an instance. Idempotent.
    pub async fn purge_instance(&self, instance: &str) -> Result<()> {
        let store = self.shared.store.as_ref();
        let doctypes = DOCTYPES.scan(store, instance, ScanRange::all()).await?;
        let mut batch = Batch::new();
        for (sort, ()) in &doctypes {
            let doctype = String::from_utf8_lossy(sort).into_owned();
            for def in load_indexes(store, instance, &doctype).await? {
                INDEXES.delete_partition(&mut batch, def.name_in(instance, &doctype));
            }
            let p = (instance, doctype.as_str());
            DOCS.delete_partition(&mut batch, p);
            CHANGES.delete_partition(&mut batch, p);
            COUNTS.delete_partition(&mut batch, p);
            self.shared.indexes.invalidate(instance, &doctype);
        }
        DOCTYPES.delete_partition(&mut batch, instance);
        self.shared.log.delete_instance(&mut batch, instance);
        store.apply(batch).await?;
        self.shared.log.forget(instance);
        tracing::info!(instance, doctypes = doctypes.len(), "instance documents erased");
        Ok(())
    }

    /// The projection, to rebuild from the log with [`cocon_events::rebuild`] (service stopped).
    pub async fn projection(store: Arc<dyn Store>) -> Result<DocumentsProjection> {
        Ok(DocumentsProjection::new(EventLog::open(store, EVENTS, OUTBOX).await?))
    }
}
