//! The files service: its state, the write path (events and their projection in one atomic
//! batch, one writer per instance stripe), and the reads of the tree.

use std::collections::HashSet;
use std::sync::{Arc, Mutex as SyncMutex};

use cocon_common::ticket::MeshKey;
use cocon_events::{EventBus, EventLog, Stripes};
use cocon_storage::{Batch, BlobStore, ScanRange, Store};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::commit::{Change, Entry};
use crate::drive::Drive;
use crate::error::{FilesError, Result};
use crate::node::{DIRECTORY, Node, ROOT_ID, TRASH_ID, TRASH_NAME, new_rev};
use crate::projection::FilesProjection;
use crate::tables::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where file contents go: `local` (a directory on this machine; one files process) or
    /// `s3` (a bucket of any S3-compatible server; as many files processes as needed).
    pub blobs: String,
    /// The `local` backend's directory; `<data_dir>/blobs` when empty.
    pub blobs_dir: Option<std::path::PathBuf>,
    /// The `local` backend writes contents past the page cache (Linux `O_DIRECT`, where the
    /// filesystem allows it): less CPU per upload, and large uploads do not evict the cache.
    pub blobs_direct_io: bool,
    /// The `s3` backend's server, bucket and credentials.
    pub s3: cocon_storage::S3Config,
    /// Children per page of a directory listing when the client does not say.
    pub default_page: u32,
    /// Earlier contents kept per file (0: none); the oldest goes first.
    pub max_versions: usize,
    /// An overwrite keeps the content it replaces only if that content is at least this old
    /// (seconds): a file saved every few seconds does not fill its versions with near copies.
    pub min_version_delay_secs: u64,
    /// A resumable upload nothing was sent to for this long (seconds) is removed, with what it
    /// received.
    pub upload_expiry_secs: u64,
    /// How long a secret download or archive link works (seconds).
    pub link_ttl_secs: u64,
    /// Longest a `_changes?feed=longpoll` request waits, in milliseconds.
    pub max_longpoll_ms: u64,
    /// How often the blob store is swept for blobs nothing references (seconds; 0: never).
    pub orphan_sweep_secs: u64,
    /// A blob younger than this (seconds) is never swept: it may be on its way to a commit.
    pub orphan_grace_secs: u64,
    /// Long polls one instance may hold at once (more get 503 with `Retry-After`).
    pub max_longpolls_per_instance: usize,
    /// Long polls this process holds at once, all instances together.
    pub max_longpolls: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            blobs: "local".into(),
            blobs_dir: None,
            blobs_direct_io: true,
            s3: cocon_storage::S3Config::default(),
            default_page: 30,
            max_versions: 20,
            min_version_delay_secs: 900,
            upload_expiry_secs: 24 * 3600,
            link_ttl_secs: 3600,
            max_longpoll_ms: 60_000,
            orphan_sweep_secs: 6 * 3600,
            orphan_grace_secs: 6 * 3600,
            max_longpolls_per_instance: 100,
            max_longpolls: 10_000,
        }
    }
}

pub struct Deps {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub bus: Arc<dyn EventBus>,
    /// Checks the instance ticket of every call (signed by the auth service).
    pub mesh_key: MeshKey,
    /// This replica's outbox partition when replicas share the store (its replica id);
    /// `None` when it is alone on it.
    pub partition: Option<String>,
}

#[derive(Clone)]
pub struct FilesService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub bus: Arc<dyn EventBus>,
    pub log: EventLog,
    pub mesh_key: MeshKey,
    stripes: Stripes,
    /// Instances whose root and trash exist.
    rooted: SyncMutex<HashSet<String>>,
    /// The long polls of `_changes`, woken by the commits of their instance.
    pub waiters: Arc<cocon_common::waiters::Waiters>,
    /// The MD5 state of resumable uploads in progress.
    pub running: crate::resumable::Running,
    /// This replica's shards, when replicas share the store and own instances shard by
    /// shard: a change is committed only while its instance's shard is held.
    pub fence: std::sync::OnceLock<cocon_mesh::Shards>,
    /// The clients of the mesh, to hand work to the replica holding an instance.
    pub clients: std::sync::OnceLock<cocon_mesh::Clients>,
    /// The background tasks (trash emptying) running here, by id.
    pub tasks: SyncMutex<HashSet<String>>,
}

impl FilesService {
    pub async fn build(config: Config, deps: Deps) -> Result<FilesService> {
        let log = match &deps.partition {
            Some(partition) => EventLog::open_shared(deps.store.clone(), EVENTS, OUTBOX, partition).await?,
            None => EventLog::open(deps.store.clone(), EVENTS, OUTBOX).await?,
        };
        let waiters =
            cocon_common::waiters::Waiters::new("files", config.max_longpolls_per_instance, config.max_longpolls);
        Ok(FilesService {
            inner: Arc::new(Inner {
                config,
                store: deps.store,
                blobs: deps.blobs,
                bus: deps.bus,
                log,
                mesh_key: deps.mesh_key,
                stripes: Stripes::default(),
                rooted: SyncMutex::default(),
                waiters,
                running: Default::default(),
                fence: std::sync::OnceLock::new(),
                clients: std::sync::OnceLock::new(),
                tasks: SyncMutex::default(),
            }),
        })
    }

    /// Makes this replica own instances shard by shard beside others on a shared store:
    /// changes commit only on shards it holds, and its sweeps and tasks touch only those;
    /// before it takes shards it forgets what it cached (another replica wrote them since);
    /// when it lets one go, long polls end so that their clients ask the new holder. Set
    /// once, before any shard is taken.
    pub fn own_shards(&self, shards: &cocon_mesh::Shards) {
        let taking = self.inner.clone();
        let released = self.inner.clone();
        shards.on_change(
            move || {
                taking.log.forget_all();
                taking.rooted.lock().expect("rooted poisoned").clear();
                taking.running.clear();
            },
            move || released.waiters.end_all(),
        );
        let _ = self.inner.fence.set(shards.clone());
    }

    /// Whether this replica writes `instance`'s files now: always, unless replicas own
    /// shards and this one does not hold the instance's.
    pub(crate) fn writes(&self, instance: &str) -> bool {
        self.inner.fence.get().is_none_or(|shards| shards.holds(instance))
    }

    /// For work this replica starts on its own (sweeps, tasks, consumers): holds `instance`'s
    /// shard until dropped, so that it is not handed over in the middle; `Err` when another
    /// replica holds it. `None` when replicas do not own shards.
    pub(crate) fn hold(&self, instance: &str) -> Result<Option<cocon_mesh::Hold>> {
        match self.inner.fence.get() {
            None => Ok(None),
            Some(shards) => shards.hold(instance).map(Some).map_err(|_| FilesError::Moved),
        }
    }

    /// Whether a change of `instance` begun here may commit (see `Shards::may_commit`).
    pub(crate) fn may_commit(&self, instance: &str) -> bool {
        self.inner.fence.get().is_none_or(|shards| shards.may_commit(instance))
    }

    /// Erases every file, blob and event of an instance. Idempotent.
    pub async fn purge_instance(&self, instance: &str) -> Result<()> {
        let _writer = self.stripe(instance).lock().await;
        let store = &self.inner.store;
        for node in NODES.rows(store.as_ref(), instance).await? {
            for blob in node.blobs() {
                self.inner.blobs.delete(&blob).await?;
            }
        }
        let uploads = UPLOADS.scan_results(store.as_ref(), instance, ScanRange::all()).await?;
        for (_, upload) in uploads {
            // An upload that does not read is skipped: the partition goes all the same.
            let Ok(upload) = upload else {
                continue;
            };
            if upload.file_id.is_none() {
                for chunk in upload.chunks {
                    self.inner.blobs.delete(&chunk.blob).await?;
                }
            }
        }
        self.purge_thumbnails(instance).await?;
        if let Some(avatar) = AVATARS.get(store.as_ref(), instance, "").await? {
            self.inner.blobs.delete(&avatar.blob).await?;
        }
        let mut batch = Batch::new();
        AVATARS.delete_partition(&mut batch, instance);
        NODES.delete_partition(&mut batch, instance);
        CHILDREN.delete_partition(&mut batch, instance);
        COUNTS.delete_partition(&mut batch, instance);
        USAGE.delete_partition(&mut batch, instance);
        CHANGES.delete_partition(&mut batch, instance);
        CHANGE_OF.delete_partition(&mut batch, instance);
        REFERENCED.delete_partition(&mut batch, instance);
        UPLOADS.delete_partition(&mut batch, instance);
        TASKS.delete_partition(&mut batch, instance);
        LINKS.delete_partition(&mut batch, instance);
        THUMBNAILS.delete_partition(&mut batch, instance);
        self.inner.log.delete_instance(&mut batch, instance);
        store.apply(batch).await?;
        self.inner.log.forget(instance);
        self.inner.rooted.lock().expect("rooted poisoned").remove(instance);
        Ok(())
    }

    /// One instance's tree, to read.
    pub(crate) fn drive<'a>(&'a self, instance: &'a str) -> Drive<'a> {
        Drive {
            store: self.inner.store.as_ref(),
            instance,
        }
    }

    /// The instance's writer lock ([`Stripes`]).
    pub(crate) fn stripe(&self, instance: &str) -> &Mutex<()> {
        self.inner.stripes.of(instance)
    }

    /// Makes the root and the trash of an instance, the first time it is used.
    pub(crate) async fn ensure_roots(&self, instance: &str) -> Result<()> {
        if self.inner.rooted.lock().expect("rooted poisoned").contains(instance) {
            return Ok(());
        }
        let _writer = self.stripe(instance).lock().await;
        if self.drive(instance).node(ROOT_ID).await?.is_none() {
            let now = cocon_common::time::rfc3339(cocon_common::time::now_secs());
            let dir = |id: &str, name: &str, dir_id: &str| Node {
                id: id.into(),
                rev: new_rev(1),
                kind: DIRECTORY.into(),
                name: name.into(),
                dir_id: dir_id.into(),
                created_at: now.clone(),
                updated_at: now.clone(),
                ..Node::default()
            };
            let changes = vec![
                Change::created(dir(ROOT_ID, "", "")),
                Change::created(dir(TRASH_ID, TRASH_NAME, ROOT_ID)),
            ];
            self.commit(instance, changes).await?;
        }
        self.inner
            .rooted
            .lock()
            .expect("rooted poisoned")
            .insert(instance.to_string());
        Ok(())
    }

    /// The projection, to rebuild from the log with [`cocon_events::rebuild`] (service stopped).
    pub async fn projection(store: Arc<dyn Store>) -> Result<FilesProjection> {
        Ok(FilesProjection::new(EventLog::open(store, EVENTS, OUTBOX).await?))
    }

    /// The proof that a `SetQuota` call comes from a files replica (the mesh key's).
    pub(crate) fn quota_proof(&self, instance: &str, bytes: u64) -> String {
        self.inner
            .mesh_key
            .derive("files-quota", &[instance, &bytes.to_string()])
    }

    /// Auth set an instance's quota (its event, read by whichever replica): recorded here, or,
    /// when another replica holds the instance, by that one.
    pub(crate) async fn quota_set(&self, instance: &str, bytes: u64) -> Result<()> {
        let Some(clients) = self.inner.clients.get().filter(|_| !self.writes(instance)) else {
            let _hold = self.hold(instance)?;
            return self.set_quota(instance, bytes).await;
        };
        let key = &self.inner.mesh_key;
        let request = cocon_proto::files::v1::SetQuotaRequest {
            scope: Some(cocon_proto::files::v1::Scope {
                instance: instance.to_string(),
                ticket: key.issue(instance, cocon_common::time::now_secs() + 60),
                ..Default::default()
            }),
            bytes,
            proof: self.quota_proof(instance, bytes),
        };
        clients.files.clone().set_quota(request).await.map_err(|status| {
            FilesError::Storage(cocon_storage::StorageError::Backend(status.message().to_string()))
        })?;
        Ok(())
    }

    /// Records the quota the auth service set for an instance, if it changed.
    pub async fn set_quota(&self, instance: &str, bytes: u64) -> Result<()> {
        let _writer = self.stripe(instance).lock().await;
        if self.drive(instance).usage().await?.quota != bytes {
            self.commit_entries(instance, vec![Entry::QuotaSet(bytes)]).await?;
            tracing::info!(instance, bytes, "disk quota recorded");
        }
        Ok(())
    }
}

pub(crate) fn parse(raw: &[u8]) -> Result<Node> {
    serde_json::from_slice(raw).map_err(|e| FilesError::Corrupt(e.to_string()))
}
