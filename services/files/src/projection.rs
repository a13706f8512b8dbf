//! What the files service reads, derived from its log: the node rows, the children of each
//! directory and their counts, the references index, the changes feed, and each instance's
//! usage. The commit path ([`crate::FilesService::commit`]) writes them with its events; the
//! [`FilesProjection`] replays the log into them.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use cocon_events::{EventLog, Projection, ProjectionError};
use cocon_proto::events::v1::Envelope;
use cocon_proto::events::v1::envelope::Payload;
use cocon_storage::{Batch, Store};

use crate::node::Node;
use crate::service::parse;
use crate::tables::*;

/// The files projection, replayed: the log is read in (instance, sequence) order and only each
/// node's last state counts, so it is kept in memory and written at the end.
pub struct FilesProjection {
    log: EventLog,
    /// (sequence, state, deletion revision) of each node's last change, per (instance, node).
    last: HashMap<(String, String), (u64, Bytes, String)>,
    quotas: HashMap<String, u64>,
    /// Each instance's last avatar (`None`: removed).
    avatars: HashMap<String, Option<crate::avatar::AvatarRow>>,
}

impl FilesProjection {
    pub(crate) fn new(log: EventLog) -> FilesProjection {
        FilesProjection {
            log,
            last: HashMap::new(),
            quotas: HashMap::new(),
            avatars: HashMap::new(),
        }
    }
}

#[async_trait]
impl Projection for FilesProjection {
    fn name(&self) -> &'static str {
        "files"
    }

    fn log(&self) -> &EventLog {
        &self.log
    }

    fn tables(&self) -> &'static [&'static str] {
        &PROJECTIONS
    }

    async fn apply(&mut self, _store: &dyn Store, event: Envelope) -> Result<(), ProjectionError> {
        match event.payload {
            Some(Payload::FileChanged(change)) => {
                self.last.insert(
                    (event.instance, change.id),
                    (event.seq, change.file, change.deleted_rev),
                );
            }
            Some(Payload::DiskQuotaSet(quota)) => {
                self.quotas.insert(event.instance, quota.bytes);
            }
            Some(Payload::AvatarChanged(avatar)) => {
                self.avatars
                    .insert(event.instance, crate::avatar::AvatarRow::from_event(&avatar));
            }
            _ => {}
        }
        Ok(())
    }

    async fn finish(&mut self, store: &dyn Store) -> Result<(), ProjectionError> {
        let mut counts: HashMap<(String, String), u64> = HashMap::new();
        let mut usage: HashMap<String, UsageDelta> = HashMap::new();
        for (instance, quota) in self.quotas.drain() {
            usage.entry(instance).or_default().quota = Some(quota);
        }
        let mut batch = Batch::new();
        for (instance, avatar) in self.avatars.drain() {
            match avatar {
                Some(row) => AVATARS.put(&mut batch, &instance, "", &row),
                None => AVATARS.delete(&mut batch, &instance, ""),
            }
        }
        for ((instance, id), (seq, file, deleted_rev)) in self.last.drain() {
            let node: Option<Node> = if file.is_empty() { None } else { Some(parse(&file)?) };
            feed_row(&mut batch, &instance, seq, &id, node.as_ref(), &deleted_rev);
            let Some(node) = node else {
                continue;
            };
            if !node.dir_id.is_empty() {
                *counts.entry((instance.clone(), node.dir_id.clone())).or_default() += 1;
            }
            usage.entry(instance.clone()).or_default().add(None, Some(&node));
            let mut ignored = HashMap::new();
            project(&mut batch, &instance, None, Some(&node), &mut ignored);
            if batch.len() >= 1000 {
                store.apply(std::mem::take(&mut batch)).await?;
            }
        }
        for ((instance, dir_id), count) in counts {
            COUNTS.put(&mut batch, &instance, &dir_id, &count);
        }
        for (instance, delta) in usage {
            delta.write(&mut batch, &instance, &Usage::default());
        }
        store.apply(batch).await?;
        Ok(())
    }
}

/// Bytes taken by an instance's files, and its quota (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    pub files: u64,
    pub versions: u64,
    pub quota: u64,
}

impl Usage {
    pub fn used(&self) -> u64 {
        self.files + self.versions
    }
}

/// How a commit changes an instance's usage.
#[derive(Default)]
pub(crate) struct UsageDelta {
    files: i64,
    versions: i64,
    pub quota: Option<u64>,
}

impl UsageDelta {
    pub fn add(&mut self, old: Option<&Node>, new: Option<&Node>) {
        let bytes = |n: Option<&Node>| {
            n.map_or((0, 0), |n| {
                (
                    n.size.unwrap_or(0) as i64,
                    n.versions.iter().map(|v| v.size as i64).sum::<i64>(),
                )
            })
        };
        let (old_files, old_versions) = bytes(old);
        let (new_files, new_versions) = bytes(new);
        self.files += new_files - old_files;
        self.versions += new_versions - old_versions;
    }

    pub fn is_empty(&self) -> bool {
        self.files == 0 && self.versions == 0 && self.quota.is_none()
    }

    pub fn write(&self, batch: &mut Batch, instance: &str, current: &Usage) {
        if self.files != 0 {
            let files = (current.files as i64 + self.files).max(0) as u64;
            USAGE.put(batch, instance, UsageKey::Files, &files);
        }
        if self.versions != 0 {
            let versions = (current.versions as i64 + self.versions).max(0) as u64;
            USAGE.put(batch, instance, UsageKey::Versions, &versions);
        }
        if let Some(quota) = self.quota {
            USAGE.put(batch, instance, UsageKey::Quota, &quota);
        }
    }
}

/// A node's row in the changes feed, and the pointer to it. A node gone for good keeps a row
/// (`deleted`), so sync clients learn of it.
pub(crate) fn feed_row(batch: &mut Batch, instance: &str, seq: u64, id: &str, new: Option<&Node>, deleted_rev: &str) {
    let row = FeedRow {
        id: id.to_string(),
        rev: new.map_or_else(|| deleted_rev.to_string(), |node| node.rev.clone()),
        deleted: new.is_none(),
    };
    CHANGES.put(batch, instance, seq, &row);
    CHANGE_OF.put(batch, instance, id, &seq);
}

/// The projection of one change: the node row and its entry among its parent's children.
/// Child counts are accumulated in `counts` and written once per commit.
pub(crate) fn project(
    batch: &mut Batch,
    instance: &str,
    old: Option<&Node>,
    new: Option<&Node>,
    counts: &mut HashMap<String, i64>,
) {
    // The reference index: rows for what the node no longer references go, new ones come.
    let refs = |n: Option<&Node>| n.map(|n| n.referenced_by.clone()).unwrap_or_default();
    let (before, after) = (refs(old), refs(new));
    let id = new.or(old).map(|n| n.id.as_str()).unwrap_or_default();
    for r in before.iter().filter(|r| !after.contains(r)) {
        REFERENCED.delete(batch, instance, (&r.doctype, &r.id, id));
    }
    for r in after.iter().filter(|r| !before.contains(r)) {
        REFERENCED.put(batch, instance, (&r.doctype, &r.id, id), &());
    }
    if let Some(old) = old
        && !old.dir_id.is_empty()
    {
        CHILDREN.delete(batch, instance, (&old.dir_id, &old.name));
        *counts.entry(old.dir_id.clone()).or_default() -= 1;
    }
    match new {
        Some(node) => {
            NODES.put(batch, instance, &node.id, node);
            if !node.dir_id.is_empty() {
                CHILDREN.put(batch, instance, (&node.dir_id, &node.name), &node.id);
                *counts.entry(node.dir_id.clone()).or_default() += 1;
            }
        }
        None => {
            if let Some(old) = old {
                NODES.delete(batch, instance, &old.id);
            }
        }
    }
}
