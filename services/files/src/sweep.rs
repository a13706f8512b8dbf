//! Orphaned blobs: contents that no committed node, version, unfinished upload or thumbnail
//! references. They come from a crash between a blob's publication and its commit, a delete
//! that failed, or an upload abandoned between the write of an append and its record. Every
//! `orphan_sweep_secs` a sweep lists the blob store and removes the blobs older than
//! `orphan_grace_secs` that nothing references; the references are read again under the
//! instance's writer lock before anything is removed.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use cocon_storage::{BlobEntry, ScanRange};
use futures::TryStreamExt;

use crate::error::Result;

use crate::service::FilesService;
use crate::tables::{AVATARS, NODES, THUMBNAILS, UPLOADS};

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub listed: u64,
    pub removed: u64,
    pub bytes: u64,
}

/// The blobs an instance's metadata references.
struct Referenced {
    blobs: HashSet<String>,
    /// Files whose thumbnails are recorded (`<instance>/thumbs/<id>/<format>`).
    thumbnails: HashSet<String>,
    thumbs_prefix: String,
}

impl Referenced {
    fn holds(&self, key: &str) -> bool {
        if self.blobs.contains(key) {
            return true;
        }
        key.strip_prefix(&self.thumbs_prefix)
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(id, _)| self.thumbnails.contains(id))
    }
}

impl FilesService {
    /// The blobs `instance` references now. Unfinished uploads are read before the nodes: an
    /// upload that completes in between moves its content from one to the other, and is seen
    /// in at least one of them.
    async fn blobs_referenced(&self, instance: &str) -> Result<Referenced> {
        let store = self.inner.store.as_ref();
        let mut blobs = HashSet::new();
        for (_, upload) in UPLOADS.scan_results(store, instance, ScanRange::all()).await? {
            if let Ok(upload) = upload {
                blobs.extend(upload.chunks.into_iter().map(|c| c.blob));
            }
        }
        for node in NODES.rows(store, instance).await? {
            blobs.extend(node.blobs());
        }
        if let Some(avatar) = AVATARS.get(store, instance, "").await? {
            blobs.insert(avatar.blob);
        }
        // Whatever a row holds, its key names a file with thumbnails.
        let thumbnails = THUMBNAILS
            .scan_results(store, instance, ScanRange::all())
            .await?
            .into_iter()
            .map(|(sort, _)| String::from_utf8_lossy(&sort).into_owned())
            .collect();
        Ok(Referenced {
            blobs,
            thumbnails,
            thumbs_prefix: format!("{instance}/thumbs/"),
        })
    }

    /// Removes the candidates nothing references, checked under the instance's writer lock.
    async fn remove_orphans(&self, instance: &str, candidates: Vec<BlobEntry>, swept: &mut Swept) -> Result<()> {
        let _writer = self.stripe(instance).lock().await;
        let referenced = self.blobs_referenced(instance).await?;
        for blob in candidates {
            if referenced.holds(&blob.key) {
                continue;
            }
            self.inner.blobs.delete(&blob.key).await?;
            tracing::info!(instance, blob = %blob.key, bytes = blob.size, "removed an orphaned blob");
            swept.removed += 1;
            swept.bytes += blob.size;
            metrics::counter!("cocon_files_orphans_removed_total").increment(1);
            metrics::counter!("cocon_files_orphan_bytes_removed_total").increment(blob.size);
        }
        Ok(())
    }

    /// One sweep of the whole blob store.
    pub async fn sweep_orphans(&self) -> Result<Swept> {
        let started = Instant::now();
        let cutoff = SystemTime::now() - Duration::from_secs(self.inner.config.orphan_grace_secs);
        let mut swept = Swept::default();
        let mut listing = self.inner.blobs.list("").await?;
        // Backends list an instance's blobs together; candidates are checked an instance at a
        // time, against the references read once for it.
        let mut current: Option<(String, Referenced, Vec<BlobEntry>)> = None;
        while let Some(blob) = listing.try_next().await? {
            swept.listed += 1;
            if blob.modified > cutoff {
                continue;
            }
            let Some((instance, _)) = blob.key.split_once('/') else {
                continue;
            };
            if !self.writes(instance) {
                // Another replica's: it sweeps its own.
                continue;
            }
            if current.as_ref().is_none_or(|(i, _, _)| i != instance) {
                if let Some((done, _, candidates)) = current.take()
                    && !candidates.is_empty()
                {
                    self.remove_orphans(&done, candidates, &mut swept).await?;
                }
                current = Some((instance.to_string(), self.blobs_referenced(instance).await?, Vec::new()));
            }
            let (_, referenced, candidates) = current.as_mut().expect("set above");
            if !referenced.holds(&blob.key) {
                candidates.push(blob);
            }
        }
        if let Some((done, _, candidates)) = current
            && !candidates.is_empty()
        {
            self.remove_orphans(&done, candidates, &mut swept).await?;
        }
        metrics::histogram!("cocon_files_orphan_sweep_seconds").record(started.elapsed().as_secs_f64());
        if swept.removed > 0 {
            tracing::info!(
                listed = swept.listed,
                removed = swept.removed,
                bytes = swept.bytes,
                "orphaned blobs swept"
            );
        }
        Ok(swept)
    }
}
