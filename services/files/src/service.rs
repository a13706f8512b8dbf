//! The files service: its state, the write path (events and their projection in one atomic
//! batch, one writer per instance stripe), and the reads of the tree.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex as SyncMutex};

use bytes::Bytes;
use cocon_common::ticket::MeshKey;
use cocon_events::{Appended, EventBus, EventLog, Stamp, Stripes, Topic, envelope};
use cocon_proto::events::v1::{DiskQuotaSet, FileChanged, QuotaExceeded, envelope::Payload};
use cocon_storage::{Batch, BlobStore, ScanRange, Store};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::error::{FilesError, Result};
use crate::node::{DIRECTORY, Node, ROOT_ID, TRASH_ID, TRASH_NAME, new_rev};
use crate::projection::{FilesProjection, Usage, UsageDelta, feed_row, project};
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
}

/// One change of the tree: what a node was and what it becomes (`None`: absent).
pub(crate) struct Change {
    pub verb: &'static str,
    pub old: Option<Node>,
    pub new: Option<Node>,
    /// Blobs to remove once the change is committed.
    pub released: Vec<String>,
}

impl FilesService {
    pub async fn build(config: Config, deps: Deps) -> Result<FilesService> {
        let log = EventLog::open(deps.store.clone(), EVENTS, OUTBOX).await?;
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
            }),
        })
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
        let mut batch = Batch::new();
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

    /// The instance's writer lock ([`Stripes`]).
    pub(crate) fn stripe(&self, instance: &str) -> &Mutex<()> {
        self.inner.stripes.of(instance)
    }

    pub(crate) async fn node(&self, instance: &str, id: &str) -> Result<Option<Node>> {
        Ok(NODES.get(self.inner.store.as_ref(), instance, id).await?)
    }

    pub(crate) async fn must_node(&self, instance: &str, id: &str) -> Result<Node> {
        self.node(instance, id)
            .await?
            .ok_or_else(|| FilesError::NotFound(format!("no file or directory with id {id}")))
    }

    /// The id of the child named `name` of a directory.
    pub(crate) async fn child(&self, instance: &str, dir_id: &str, name: &str) -> Result<Option<String>> {
        Ok(CHILDREN
            .get(self.inner.store.as_ref(), instance, (dir_id, name))
            .await?)
    }

    pub(crate) async fn children_count(&self, instance: &str, dir_id: &str) -> Result<u64> {
        Ok(COUNTS
            .get(self.inner.store.as_ref(), instance, dir_id)
            .await?
            .unwrap_or(0))
    }

    /// A page of a directory's children in name order, after the child named `after`.
    pub(crate) async fn children(&self, instance: &str, dir_id: &str, after: &str, limit: usize) -> Result<Vec<Node>> {
        let rows = CHILDREN
            .scan(
                self.inner.store.as_ref(),
                instance,
                children_of(dir_id, after).limit(limit),
            )
            .await?;
        let mut nodes = Vec::with_capacity(rows.len());
        for (_, id) in rows {
            match self.node(instance, &id).await? {
                Some(node) => nodes.push(node),
                None => return Err(FilesError::Corrupt(format!("child {id} has no node"))),
            }
        }
        Ok(nodes)
    }

    /// The node's path from the root, and whether it is in the trash. Paths are computed by
    /// walking up, not stored, so moving a directory is one change whatever its size.
    pub(crate) async fn path_of(&self, instance: &str, node: &Node) -> Result<(String, bool)> {
        if node.id == ROOT_ID {
            return Ok(("/".into(), false));
        }
        let mut names = vec![node.name.clone()];
        let mut trashed = node.id == TRASH_ID;
        let mut dir_id = node.dir_id.clone();
        let mut hops = 0;
        while dir_id != ROOT_ID {
            if dir_id == TRASH_ID {
                trashed = true;
            }
            let dir = self.must_node(instance, &dir_id).await?;
            names.push(dir.name.clone());
            dir_id = dir.dir_id;
            hops += 1;
            if hops > 4096 || dir_id.is_empty() {
                return Err(FilesError::Corrupt(format!(
                    "the parents of {} do not reach the root",
                    node.id
                )));
            }
        }
        names.reverse();
        Ok((format!("/{}", names.join("/")), trashed))
    }

    /// The node at a path (`/Photos/2024/a.jpg`).
    pub(crate) async fn resolve(&self, instance: &str, path: &str) -> Result<Node> {
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| FilesError::BadRequest(format!("a path starts with /: {path:?}")))?;
        let mut node = self.must_node(instance, ROOT_ID).await?;
        for name in rest.split('/').filter(|s| !s.is_empty()) {
            if name == "." || name == ".." {
                return Err(FilesError::BadRequest(format!("a path cannot hold . or ..: {path:?}")));
            }
            let Some(id) = self.child(instance, &node.id, name).await? else {
                return Err(FilesError::NotFound(format!("nothing at {path}")));
            };
            node = self.must_node(instance, &id).await?;
        }
        Ok(node)
    }

    /// Makes the root and the trash of an instance, the first time it is used.
    pub(crate) async fn ensure_roots(&self, instance: &str) -> Result<()> {
        if self.inner.rooted.lock().expect("rooted poisoned").contains(instance) {
            return Ok(());
        }
        let _writer = self.stripe(instance).lock().await;
        if self.node(instance, ROOT_ID).await?.is_none() {
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

    /// Appends the changes' events and their projection in one atomic batch, durably; then
    /// removes the blobs they released. The caller holds the instance's stripe.
    pub(crate) async fn commit(&self, instance: &str, changes: Vec<Change>) -> Result<()> {
        self.commit_entries(
            instance,
            changes.into_iter().map(|c| Entry::Node(Box::new(c))).collect(),
        )
        .await
    }

    /// [`FilesService::commit`] for any entry of the log.
    pub(crate) async fn commit_entries(&self, instance: &str, entries: Vec<Entry>) -> Result<()> {
        let log = &self.inner.log;
        let first = log.next_seq(instance).await?;
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        let mut counts: HashMap<String, i64> = HashMap::new();
        let mut usage = UsageDelta::default();
        let mut dropped_dirs = Vec::new();
        let stamp = Stamp::now();
        let mut released = Vec::new();
        // Each node's row in the changes feed moves to its latest change.
        let mut feed_of: HashMap<String, Option<u64>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let seq = first + i as u64;
            let (kind, payload) = match entry {
                Entry::Node(change) => {
                    let id = change
                        .new
                        .as_ref()
                        .or(change.old.as_ref())
                        .map(|n| n.id.clone())
                        .unwrap_or_default();
                    let file = match &change.new {
                        Some(node) => {
                            Bytes::from(serde_json::to_vec(node).map_err(|e| FilesError::Corrupt(e.to_string()))?)
                        }
                        None => Bytes::new(),
                    };
                    project(
                        &mut batch,
                        instance,
                        change.old.as_ref(),
                        change.new.as_ref(),
                        &mut counts,
                    );
                    let previous = match feed_of.get(&id) {
                        Some(seq) => *seq,
                        None => self.change_of(instance, &id).await?,
                    };
                    if let Some(previous) = previous {
                        CHANGES.delete(&mut batch, instance, previous);
                    }
                    let deleted_rev = match (&change.new, &change.old) {
                        (None, Some(old)) => old.next_rev(),
                        _ => String::new(),
                    };
                    feed_row(&mut batch, instance, seq, &id, change.new.as_ref(), &deleted_rev);
                    feed_of.insert(id.clone(), Some(seq));
                    usage.add(change.old.as_ref(), change.new.as_ref());
                    if let (Some(old), None) = (&change.old, &change.new)
                        && old.is_dir()
                    {
                        dropped_dirs.push(old.id.clone());
                    }
                    released.extend(change.released.iter().cloned());
                    let payload = Payload::FileChanged(FileChanged {
                        id,
                        file,
                        released_blobs: change.released.clone(),
                        deleted_rev,
                    });
                    (change.verb.to_string(), payload)
                }
                Entry::QuotaSet(bytes) => {
                    usage.quota = Some(*bytes);
                    (
                        "quota.set".to_string(),
                        Payload::DiskQuotaSet(DiskQuotaSet { bytes: *bytes }),
                    )
                }
                Entry::QuotaExceeded(exceeded) => ("quota.exceeded".to_string(), Payload::QuotaExceeded(*exceeded)),
            };
            let event = envelope(instance, seq, Topic::File { kind: &kind }, payload, &stamp);
            log.append(&mut batch, &mut appended, &event);
        }
        for (dir_id, delta) in counts {
            if delta == 0 || dropped_dirs.contains(&dir_id) {
                continue;
            }
            let count = self.children_count(instance, &dir_id).await? as i64 + delta;
            COUNTS.put(&mut batch, instance, &dir_id, &(count.max(0) as u64));
        }
        for dir_id in dropped_dirs {
            COUNTS.delete(&mut batch, instance, &dir_id);
        }
        if !usage.is_empty() {
            let current = self.usage(instance).await?;
            usage.write(&mut batch, instance, &current);
        }
        let sealed = log.seal(&mut batch, appended);
        let last = first + entries.len() as u64 - 1;
        // A commit that starts runs to its end, its caller gone or not (EventLog::commit), and so
        // does what follows it: long polls wake, and the blobs it released are removed.
        let service = self.clone();
        let instance = instance.to_string();
        tokio::spawn(async move {
            let inner = &service.inner;
            inner
                .log
                .commit(inner.store.clone(), &instance, last, batch, sealed)
                .await?;
            inner.waiters.wake(&instance, crate::node::DOCTYPE);
            for key in released {
                if let Err(err) = inner.blobs.delete(&key).await {
                    tracing::warn!(error = %err, blob = %key, "cannot remove a released blob; it is left behind");
                }
            }
            Ok::<(), FilesError>(())
        })
        .await
        .map_err(|e| FilesError::Corrupt(format!("the commit task failed: {e}")))?
    }

    /// The sequence of a node's row in the changes feed.
    async fn change_of(&self, instance: &str, id: &str) -> Result<Option<u64>> {
        Ok(CHANGE_OF.get(self.inner.store.as_ref(), instance, id).await?)
    }

    /// What the instance's files take, and its quota.
    pub(crate) async fn usage(&self, instance: &str) -> Result<Usage> {
        let rows = USAGE
            .scan(self.inner.store.as_ref(), instance, ScanRange::all())
            .await?;
        let mut usage = Usage::default();
        for (sort, value) in rows {
            match UsageKey::from_sort(&sort) {
                Some(UsageKey::Files) => usage.files = value,
                Some(UsageKey::Versions) => usage.versions = value,
                Some(UsageKey::Quota) => usage.quota = value,
                None => {}
            }
        }
        Ok(usage)
    }

    /// The projection, to rebuild from the log with [`cocon_events::rebuild`] (service stopped).
    pub async fn projection(store: Arc<dyn Store>) -> Result<FilesProjection> {
        Ok(FilesProjection::new(EventLog::open(store, EVENTS, OUTBOX).await?))
    }

    /// Records the quota the auth service set for an instance, if it changed.
    pub async fn set_quota(&self, instance: &str, bytes: u64) -> Result<()> {
        let _writer = self.stripe(instance).lock().await;
        if self.usage(instance).await?.quota != bytes {
            self.commit_entries(instance, vec![Entry::QuotaSet(bytes)]).await?;
            tracing::info!(instance, bytes, "disk quota recorded");
        }
        Ok(())
    }
}

/// An entry of the files log.
pub(crate) enum Entry {
    Node(Box<Change>),
    /// The instance's quota, as the auth service set it.
    QuotaSet(u64),
    /// An upload refused for the quota (no state changes; notifications tell the person).
    QuotaExceeded(QuotaExceeded),
}

impl Change {
    pub fn created(node: Node) -> Change {
        Change {
            verb: "created",
            old: None,
            new: Some(node),
            released: Vec::new(),
        }
    }
}

pub(crate) fn parse(raw: &[u8]) -> Result<Node> {
    serde_json::from_slice(raw).map_err(|e| FilesError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cocon_events::MemoryBus;
    use cocon_storage::{EmbeddedStore, LocalBlobs};
    use futures::FutureExt;

    /// A caller that goes away while its commit is in the store (a client that disconnects):
    /// the commit lands, and so does what follows it, the long polls' wake-up and the removal
    /// of the blobs it released.
    #[tokio::test]
    async fn test_what_follows_a_commit_happens_when_its_caller_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let deps = Deps {
            store: Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap()),
            blobs: Arc::new(LocalBlobs::open(&dir.path().join("blobs")).unwrap()),
            bus: Arc::new(MemoryBus::new(Vec::new())),
            mesh_key: MeshKey::random(),
        };
        let service = FilesService::build(Config::default(), deps).await.unwrap();
        let blob = FilesService::new_blob_key("i");
        let mut writer = service.inner.blobs.create(&blob).await.unwrap();
        writer.write(Bytes::from_static(b"content")).await.unwrap();
        writer.finish().await.unwrap();
        let node = Node {
            id: "f1".into(),
            kind: "file".into(),
            name: "a.txt".into(),
            dir_id: "d1".into(),
            ..Node::default()
        };
        let created = Change {
            verb: "created",
            old: None,
            new: Some(node.clone()),
            released: Vec::new(),
        };
        service
            .commit_entries("i", vec![Entry::Node(Box::new(created))])
            .await
            .unwrap();
        // Reading it makes the store commit what it logged, so the reads that precede the next
        // commit do not wait: one poll takes that commit to the store.
        assert!(service.node("i", "f1").await.unwrap().is_some());

        let wait = service.inner.waiters.register("i", crate::node::DOCTYPE).unwrap();
        let mut woken = Box::pin(wait.notified());
        woken.as_mut().enable();
        let deleted = Change {
            verb: "deleted",
            old: Some(node),
            new: None,
            released: vec![blob.clone()],
        };
        // Polled until the commit is in the store, then dropped.
        let gone = service
            .commit_entries("i", vec![Entry::Node(Box::new(deleted))])
            .now_or_never();
        assert!(gone.is_none(), "the commit was in flight when its caller went away");
        tokio::time::timeout(std::time::Duration::from_secs(10), woken)
            .await
            .expect("long polls are woken");
        assert_eq!(service.node("i", "f1").await.unwrap(), None, "the commit landed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while service.inner.blobs.size(&blob).await.unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "the released blob is removed");
            tokio::task::yield_now().await;
        }
    }
}
