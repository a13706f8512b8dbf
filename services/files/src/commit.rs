//! The write path: a commit appends its events to the files log and writes their projection in
//! one atomic batch, durably, under the instance's stripe; what follows it (long polls woken,
//! released blobs removed) runs to its end even when its caller is gone.

use std::collections::HashMap;

use bytes::Bytes;
use cocon_events::{Appended, Stamp, Topic, envelope};
use cocon_proto::events::v1::{DiskQuotaSet, FileChanged, QuotaExceeded, envelope::Payload};
use cocon_storage::Batch;

use crate::error::{FilesError, Result};
use crate::node::Node;
use crate::projection::{UsageDelta, feed_row, project};
use crate::service::FilesService;
use crate::tables::{AVATARS, CHANGES, COUNTS};

/// One change of the tree: what a node was and what it becomes (`None`: absent).
pub(crate) struct Change {
    pub verb: &'static str,
    pub old: Option<Node>,
    pub new: Option<Node>,
    /// Blobs to remove once the change is committed.
    pub released: Vec<String>,
}

/// An entry of the files log.
pub(crate) enum Entry {
    Node(Box<Change>),
    /// The instance's quota, as the auth service set it.
    QuotaSet(u64),
    /// An upload refused for the quota (no state changes; notifications tell the person).
    QuotaExceeded(QuotaExceeded),
    /// The person's avatar set (or removed: `None`), and the blobs it releases.
    Avatar {
        row: Option<crate::avatar::AvatarRow>,
        released: Vec<String>,
    },
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

impl FilesService {
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
        if !self.may_commit(instance) {
            // Handed over (or this replica may no longer write) since the call began.
            return Err(FilesError::Moved);
        }
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
                        None => self.drive(instance).change_of(&id).await?,
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
                    let old_dir_id = match (&change.old, &change.new) {
                        (Some(old), Some(new)) if old.dir_id != new.dir_id => old.dir_id.clone(),
                        _ => String::new(),
                    };
                    let payload = Payload::FileChanged(FileChanged {
                        id,
                        file,
                        released_blobs: change.released.clone(),
                        deleted_rev,
                        old_dir_id,
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
                Entry::Avatar { row, released: gone } => {
                    match row {
                        Some(row) => AVATARS.put(&mut batch, instance, "", row),
                        None => AVATARS.delete(&mut batch, instance, ""),
                    }
                    released.extend(gone.iter().cloned());
                    let verb = if row.is_some() { "avatar.set" } else { "avatar.removed" };
                    (
                        verb.to_string(),
                        Payload::AvatarChanged(crate::avatar::AvatarRow::event(row.as_ref())),
                    )
                }
            };
            let event = envelope(instance, seq, Topic::File { kind: &kind }, payload, &stamp);
            log.append(&mut batch, &mut appended, &event);
        }
        for (dir_id, delta) in counts {
            if delta == 0 || dropped_dirs.contains(&dir_id) {
                continue;
            }
            let count = self.drive(instance).children_count(&dir_id).await? as i64 + delta;
            COUNTS.put(&mut batch, instance, &dir_id, &(count.max(0) as u64));
        }
        for dir_id in dropped_dirs {
            COUNTS.delete(&mut batch, instance, &dir_id);
        }
        if !usage.is_empty() {
            let current = self.drive(instance).usage().await?;
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Config, Deps};
    use cocon_common::ticket::MeshKey;
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
            partition: None,
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
        assert!(service.drive("i").node("f1").await.unwrap().is_some());

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
        assert_eq!(service.drive("i").node("f1").await.unwrap(), None, "the commit landed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while service.inner.blobs.size(&blob).await.unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "the released blob is removed");
            tokio::task::yield_now().await;
        }
    }
}
