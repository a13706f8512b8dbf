//! The write path. One task takes write commands from every caller, checks revisions, assigns
//! per-instance sequences, appends events and their projections to one batch, and commits it
//! with one fsync (group commit). Being the only writer, it sees every earlier write, so
//! revision checks and sequences need no locks.

use std::sync::Arc;

use bytes::Bytes;
use cocon_events::{Appended, EventLog, Stamp, Topic, envelope};
use cocon_proto::events::v1::{self as pb_events, DocumentChanged, envelope::Payload};
use cocon_storage::{Batch, Store};
use md5::{Digest, Md5};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::body::Fields;
use crate::projection::{CountCache, IndexCache, LOCAL_PREFIX, Overlay, Projection};
use crate::record::generation;
use crate::revtree::{REVS_LIMIT, RevTree, parse_rev};
use crate::{DocumentsError, body, error::Result, validate};

/// At most this many commands share one commit.
const MAX_COMMANDS_PER_COMMIT: usize = 4096;

pub enum WriteKind {
    /// Create or update `id` (a new one when `None`; `fields.id` is not read): `fields.rev` is the
    /// revision the caller updates.
    Put {
        id: Option<String>,
        fields: Fields,
    },
    Delete {
        id: String,
        rev: String,
    },
    /// Replication (`new_edits: false`): merge the revision given (with its `_revisions`) into
    /// the document's tree; the winner is the document.
    Replicate {
        body: Map<String, Value>,
    },
    /// Write (`Some`) or delete (`None`) a `_local/` document.
    Local {
        id: String,
        body: Option<Map<String, Value>>,
    },
}

pub struct WriteCmd {
    pub doctype: String,
    pub kind: WriteKind,
    /// The rules of what this instance receives read-only (`None`: none): a stored document
    /// one of them takes is not changed.
    pub read_only: ReadOnly,
}

/// Read-only sharing rules for one call's commands (`Scope.read_only`).
pub type ReadOnly = Option<Arc<Vec<cocon_proto::documents::v1::ReadOnlyRule>>>;

/// Whether a stored document (`json`, its id `id`) is one a read-only rule takes.
fn guarded(rules: &[cocon_proto::documents::v1::ReadOnlyRule], id: &str, json: &[u8]) -> bool {
    let Ok(doc) = serde_json::from_slice::<Value>(json) else {
        return false;
    };
    rules
        .iter()
        .any(|r| cocon_common::shared_rule::accepts(&r.selector, &r.values, id, &doc))
}

#[derive(Debug, Clone)]
pub struct WriteOk {
    pub id: String,
    pub rev: String,
    pub json: Bytes,
}

struct Job {
    instance: String,
    cmds: Vec<WriteCmd>,
    traceparent: String,
    reply: oneshot::Sender<Vec<Result<WriteOk>>>,
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub log: EventLog,
    pub indexes: IndexCache,
    pub counts: CountCache,
    /// The long polls, woken by the commits of their instance and doctype.
    pub waiters: Arc<cocon_common::waiters::Waiters>,
    /// This replica's shards, when replicas share the store and own instances shard by
    /// shard: a write is committed only while its instance's shard is held.
    pub fence: std::sync::OnceLock<cocon_mesh::Shards>,
}

impl Committer {
    /// Starts the committer on a thread of its own, with its own single-threaded runtime: woken
    /// by the store when a commit is durable, it runs at once instead of queueing behind the
    /// request tasks of the shared runtime, and it is the bottleneck of every write.
    pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Committer> {
        let (tx, rx) = mpsc::channel(8192);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name("cocon-documents-committer".into())
            .spawn(move || runtime.block_on(run(shared, rx)))?;
        Ok(Committer { tx })
    }

    pub async fn write(&self, instance: &str, cmds: Vec<WriteCmd>) -> Result<Vec<Result<WriteOk>>> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            instance: instance.to_string(),
            cmds,
            traceparent: cocon_common::trace_context::current_traceparent().unwrap_or_default(),
            reply,
        };
        self.tx.send(job).await.map_err(|_| DocumentsError::ShuttingDown)?;
        rx.await.map_err(|_| DocumentsError::ShuttingDown)
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut n = jobs[0].cmds.len();
        while n < MAX_COMMANDS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.cmds.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("cocon_documents_commit_commands").record(n as f64);
        process(&shared, jobs).await;
    }
}

struct Pending {
    batch: Batch,
    overlay: Overlay,
    /// Next sequence per instance within this batch.
    seqs: foldhash::HashMap<String, u64>,
    /// (job, command) of each write in the batch.
    members: Vec<(usize, usize)>,
    /// The events of the batch, for the outbox.
    appended: Appended,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            batch: Batch::new(),
            overlay: Overlay::default(),
            seqs: Default::default(),
            members: Vec::new(),
            appended: Appended::default(),
        }
    }
}

async fn process(shared: &Shared, mut jobs: Vec<Job>) {
    let mut results: Vec<Vec<Option<Result<WriteOk>>>> =
        jobs.iter().map(|j| (0..j.cmds.len()).map(|_| None).collect()).collect();
    let mut pending = Pending::new();
    for ji in 0..jobs.len() {
        let cmds = std::mem::take(&mut jobs[ji].cmds);
        let instance = jobs[ji].instance.clone();
        if shared.fence.get().is_some_and(|shards| !shards.may_commit(&instance)) {
            // Handed over (or this replica may no longer write) since the call began.
            for result in &mut results[ji] {
                *result = Some(Err(DocumentsError::Moved));
            }
            continue;
        }
        // A job's documents (a bulk) share one time.
        let stamp = Stamp {
            occurred_at_us: cocon_common::time::now_us(),
            traceparent: std::mem::take(&mut jobs[ji].traceparent),
        };
        for (ci, cmd) in cmds.into_iter().enumerate() {
            let is_design = match &cmd.kind {
                WriteKind::Put { id, .. } => id.as_deref().is_some_and(|i| i.starts_with("_design/")),
                WriteKind::Delete { id, .. } => id.starts_with("_design/"),
                WriteKind::Replicate { body } => body
                    .get("_id")
                    .and_then(Value::as_str)
                    .is_some_and(|i| i.starts_with("_design/")),
                WriteKind::Local { .. } => false,
            };
            // A design document builds its indexes from committed documents: commit what is pending first.
            if is_design && !pending.members.is_empty() {
                flush(shared, &mut pending, &mut results).await;
            }
            match apply(shared, &mut pending, &instance, &stamp, cmd).await {
                Ok((ok, written)) => {
                    results[ji][ci] = Some(Ok(ok));
                    if written {
                        pending.members.push((ji, ci));
                    }
                }
                Err(Fatal::Rejected(e)) => results[ji][ci] = Some(Err(e)),
                Err(Fatal::Broken(e)) => {
                    // The batch may hold half of this write: drop all of it.
                    tracing::error!(error = %e, "write failed while projecting; the batch is dropped");
                    results[ji][ci] = Some(Err(e));
                    fail(shared, &mut pending, &mut results);
                }
            }
            if is_design {
                flush(shared, &mut pending, &mut results).await;
            }
        }
    }
    flush(shared, &mut pending, &mut results).await;
    for (job, res) in jobs.into_iter().zip(results) {
        let res = res
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DocumentsError::Corrupt("write result missing".into()))))
            .collect();
        let _ = job.reply.send(res);
    }
}

fn fail(shared: &Shared, pending: &mut Pending, results: &mut [Vec<Option<Result<WriteOk>>>]) {
    for (ji, ci) in pending.members.drain(..) {
        results[ji][ci] = Some(Err(DocumentsError::Corrupt("the write's batch failed".into())));
    }
    for instance in pending.seqs.keys() {
        shared.log.forget(instance);
    }
    *pending = Pending::new();
}

async fn flush(shared: &Shared, pending: &mut Pending, results: &mut [Vec<Option<Result<WriteOk>>>]) {
    if pending.batch.is_empty() {
        *pending = Pending::new();
        return;
    }
    let mut batch = std::mem::take(&mut pending.batch);
    pending.overlay.finish(&mut batch);
    let sealed = shared.log.seal(&mut batch, std::mem::take(&mut pending.appended));
    match shared.store.apply(batch).await {
        Ok(()) => {
            for (instance, next) in &pending.seqs {
                shared.log.advance(instance, next - 1);
            }
            // Readers may have cached the old definitions between projection and commit.
            for (instance, doctype) in &pending.overlay.changed_indexes {
                shared.indexes.invalidate(instance, doctype);
            }
            shared.counts.committed(&pending.overlay);
            shared.log.outbox().hand_over(sealed);
            if !shared.waiters.is_empty() {
                for (instance, doctype) in pending.overlay.touched() {
                    shared.waiters.wake(instance, doctype);
                }
            }
            *pending = Pending::new();
        }
        Err(err) => {
            match &err {
                cocon_storage::StorageError::InsufficientStorage(_) => {
                    tracing::warn!(error = %err, "writes refused for want of disk space")
                }
                _ => tracing::error!(error = %err, "commit failed"),
            }
            for (ji, ci) in pending.members.drain(..) {
                let each = match &err {
                    cocon_storage::StorageError::InsufficientStorage(why) => {
                        cocon_storage::StorageError::InsufficientStorage(why.clone())
                    }
                    other => cocon_storage::StorageError::Backend(other.to_string()),
                };
                results[ji][ci] = Some(Err(DocumentsError::Storage(each)));
            }
            for instance in pending.seqs.keys() {
                shared.log.forget(instance);
            }
            *pending = Pending::new();
        }
    }
}

enum Fatal {
    /// This write is refused (conflict, not found, bad input); nothing was added to the batch.
    Rejected(DocumentsError),
    /// Something broke after the batch was touched.
    Broken(DocumentsError),
}

fn new_rev(old_rev: Option<&str>, generation: u64, deleted: bool, body: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(old_rev.unwrap_or("").as_bytes());
    h.update([deleted as u8]);
    h.update(body);
    let mut digits = [0u8; 32];
    hex::encode_to_slice(h.finalize(), &mut digits).expect("16 bytes are 32 hex digits");
    let mut rev = generation.to_string();
    rev.push('-');
    rev.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
    rev
}

/// The fields without `_id` and `_rev`, serialised once: hashed for the revision, then spliced
/// into the stored document.
fn body_bytes(body: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(body).expect("a JSON map serialises")
}

/// `_id` and `_rev` first, then the fields (`body`, a serialised object), then `_deleted` when set.
fn document_json(id: &str, rev: &str, body: &[u8], deleted: bool) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + id.len() + rev.len() + 40);
    out.extend_from_slice(b"{\"_id\":");
    serde_json::to_writer(&mut out, id).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b",\"_rev\":");
    serde_json::to_writer(&mut out, rev).expect("writing to a Vec cannot fail");
    let fields = &body[1..body.len() - 1];
    if !fields.is_empty() {
        out.push(b',');
        out.extend_from_slice(fields);
    }
    if deleted {
        out.extend_from_slice(b",\"_deleted\":true");
    }
    out.push(b'}');
    Bytes::from(out)
}

/// A revision a command writes, before the winner is known.
struct Revision {
    id: String,
    rev: String,
    deleted: bool,
    json: Bytes,
    /// Its ancestors, newest first, down to the first one the tree held.
    ancestors: Vec<String>,
    /// The tree once it is merged in, when the written revision may not win (the document has
    /// branches, or the revision was replicated); `None` when it wins for sure.
    merged: Option<RevTree>,
}

async fn apply(
    shared: &Shared,
    pending: &mut Pending,
    instance: &str,
    stamp: &Stamp,
    cmd: WriteCmd,
) -> std::result::Result<(WriteOk, bool), Fatal> {
    let store = shared.store.as_ref();
    let doctype = cmd.doctype;
    let read_only = cmd.read_only;
    let reject = Fatal::Rejected;
    let (revision, old) = match cmd.kind {
        WriteKind::Put { id, fields } => {
            // Time-ordered ids (UUIDv7, 32 hex digits like cozy-stack's), as CouchDB's `sequential`
            // uuids: new documents land at the end of the B-tree instead of dirtying a random
            // page each (this alone took durable creates from 8k to 14k requests/s).
            let generated = id.is_none();
            let id = id.unwrap_or_else(|| {
                let mut buf = uuid::Uuid::encode_buffer();
                uuid::Uuid::now_v7().simple().encode_lower(&mut buf).to_owned()
            });
            validate::id(&id).map_err(reject)?;
            if id.starts_with(LOCAL_PREFIX) {
                return Err(reject(DocumentsError::BadRequest(
                    "_local documents are written through /data/:doctype/_local/:id".into(),
                )));
            }
            if generated {
                // 74 random bits after the time: no stored document has this id.
                pending.overlay.assume_new(instance, &doctype, &id);
            }
            let old = pending
                .overlay
                .doc(store, instance, &doctype, &id)
                .await
                .map_err(reject)?;
            // A document on one branch, written over its winner, needs no tree here.
            let linear = match (&old, fields.rev.as_deref()) {
                (None, _) => true,
                (Some(o), Some(r)) => o.rev == r && !o.branched,
                (Some(o), None) => !o.branched,
            };
            let tree = match linear {
                true => RevTree::default(),
                false => pending
                    .overlay
                    .tree(store, instance, &doctype, &id, old.as_ref())
                    .await
                    .map_err(reject)?,
            };
            let parent = match (&old, fields.rev.as_deref()) {
                (Some(o), Some(r)) if o.rev == r => Some((r, o.deleted)),
                // A live losing leaf: the write extends its branch, as CouchDB does.
                (Some(_), Some(r)) if tree.leaves().iter().any(|l| l.rev == r && !l.deleted) => Some((r, false)),
                (Some(o), None) if o.deleted => Some((o.rev.as_str(), true)),
                (None, None) => None,
                _ => return Err(reject(DocumentsError::Conflict)),
            };
            if fields.deleted && parent.is_none_or(|(_, deleted)| deleted) {
                return Err(reject(DocumentsError::NotFound("missing")));
            }
            let revision = edit(id, parent.map(|(r, _)| r), fields.deleted, &fields.json, tree);
            (revision, old)
        }
        WriteKind::Delete { id, rev } => {
            validate::id(&id).map_err(reject)?;
            let old = pending
                .overlay
                .doc(store, instance, &doctype, &id)
                .await
                .map_err(reject)?;
            let old = match old {
                None => return Err(reject(DocumentsError::NotFound("missing"))),
                Some(o) if o.deleted => return Err(reject(DocumentsError::NotFound("deleted"))),
                Some(o) => o,
            };
            let tree = match old.rev == rev && !old.branched {
                true => RevTree::default(),
                false => pending
                    .overlay
                    .tree(store, instance, &doctype, &id, Some(&old))
                    .await
                    .map_err(reject)?,
            };
            if old.rev != rev && !tree.leaves().iter().any(|l| l.rev == rev && !l.deleted) {
                return Err(reject(DocumentsError::Conflict));
            }
            let revision = edit(id, Some(&rev), true, &Fields::empty(), tree);
            (revision, Some(old))
        }
        WriteKind::Replicate { body } => {
            let (id, branch, deleted, body) = replicated(body).map_err(reject)?;
            let old = pending
                .overlay
                .doc(store, instance, &doctype, &id)
                .await
                .map_err(reject)?;
            let mut tree = pending
                .overlay
                .tree(store, instance, &doctype, &id, old.as_ref())
                .await
                .map_err(reject)?;
            let rev = format!("{}-{}", branch.start, branch.ids[0]);
            if tree.contains(&rev) {
                // Already known: nothing to write, as CouchDB.
                let ok = WriteOk {
                    id,
                    rev,
                    json: Bytes::new(),
                };
                return Ok((ok, false));
            }
            let known = branch
                .ids
                .iter()
                .enumerate()
                .position(|(i, hash)| tree.contains(&format!("{}-{hash}", branch.start - i as u64)));
            let ancestors = branch.ids[1..known.map_or(branch.ids.len(), |k| k + 1)]
                .iter()
                .enumerate()
                .map(|(i, hash)| format!("{}-{hash}", branch.start - 1 - i as u64))
                .collect();
            let ids: Vec<&str> = branch.ids.iter().map(String::as_str).collect();
            tree.merge(branch.start, &ids, deleted);
            let json = document_json(&id, &rev, &body_bytes(&body), deleted);
            let revision = Revision {
                id,
                rev,
                deleted,
                json,
                ancestors,
                merged: Some(tree),
            };
            (revision, old)
        }
        WriteKind::Local { id, body } => {
            return write_local(shared, pending, instance, stamp, &doctype, id, body).await;
        }
    };

    if let (Some(rules), Some(old)) = (&read_only, &old)
        && guarded(rules, &revision.id, &old.json)
    {
        return Err(reject(DocumentsError::Denied(format!(
            "{} is shared with you read-only: its owner's changes reach you, yours would not reach them",
            revision.id
        ))));
    }

    // The document after the write: the written revision, unless another leaf wins.
    let winner = revision
        .merged
        .as_ref()
        .and_then(|t| t.winner())
        .filter(|w| w.rev != revision.rev);
    let (rev, deleted, json) = match winner {
        None => (revision.rev.clone(), revision.deleted, revision.json.clone()),
        Some(w) => {
            let json = match &old {
                Some(o) if o.rev == w.rev => o.json.clone(),
                _ if w.deleted => document_json(&revision.id, &w.rev, b"{}", true),
                _ => pending
                    .overlay
                    .leaf(store, instance, &doctype, &revision.id, &w.rev)
                    .await
                    .map_err(reject)?
                    .ok_or_else(|| reject(DocumentsError::Corrupt(format!("the body of leaf {}", w.rev))))?,
            };
            (w.rev, w.deleted, json)
        }
    };
    let written = (rev != revision.rev).then(|| pb_events::Revision {
        rev: revision.rev.clone(),
        deleted: revision.deleted,
        body: revision.json.clone(),
    });
    let old_alive = old.as_ref().is_some_and(|o| !o.deleted);
    let verb = match (old_alive, deleted) {
        (_, true) => "deleted",
        (false, false) => "created",
        (true, false) => "updated",
    };
    let change = DocumentChanged {
        doctype: doctype.clone(),
        id: revision.id.clone(),
        rev,
        deleted,
        body: json,
        written,
        ancestors: revision.ancestors,
        tree: true,
    };
    record(shared, pending, instance, stamp, change, verb).await?;
    let ok = WriteOk {
        id: revision.id,
        rev: revision.rev,
        json: revision.json,
    };
    Ok((ok, true))
}

/// A new revision over `parent` (none for a creation), written by this server.
fn edit(id: String, parent: Option<&str>, deleted: bool, fields: &[u8], tree: RevTree) -> Revision {
    let generation = parent.map_or(0, generation) + 1;
    let rev = new_rev(parent, generation, deleted, fields);
    let json = document_json(&id, &rev, fields, deleted);
    // With one leaf, extending it wins; with branches, a deletion may uncover another leaf.
    let merged = (tree.leaves().len() > 1).then(|| {
        let mut tree = tree;
        let hash = rev.split_once('-').map_or("", |(_, h)| h).to_string();
        match parent.and_then(parse_rev) {
            Some((_, parent_hash)) => tree.merge(generation, &[&hash, parent_hash], deleted),
            None => tree.merge(generation, &[&hash], deleted),
        };
        tree
    });
    Revision {
        id,
        rev,
        deleted,
        json,
        ancestors: parent.map(str::to_string).into_iter().collect(),
        merged,
    }
}

/// A replicated revision's branch: `_revisions`, or the revision alone.
struct Branch {
    start: u64,
    ids: Vec<String>,
}

/// Reads a document sent with `new_edits: false`: its id, branch, deletion and other fields.
fn replicated(mut body: Map<String, Value>) -> Result<(String, Branch, bool, Map<String, Value>)> {
    let bad = |m: &str| DocumentsError::BadRequest(m.to_string());
    let id = match body.shift_remove("_id") {
        Some(Value::String(id)) => id,
        _ => return Err(bad("with new_edits=false every document needs an _id")),
    };
    validate::id(&id)?;
    if id.starts_with(LOCAL_PREFIX) {
        return Err(bad("_local documents are not replicated"));
    }
    let rev = match body.shift_remove("_rev") {
        Some(Value::String(r)) => r,
        _ => return Err(bad("with new_edits=false every document needs a _rev like 1-abc")),
    };
    let (start, hash) =
        parse_rev(&rev).ok_or_else(|| bad("with new_edits=false every document needs a _rev like 1-abc"))?;
    let deleted = match body.shift_remove("_deleted") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(bad("_deleted must be a boolean")),
    };
    let ids = match body.shift_remove("_revisions") {
        None => vec![hash.to_string()],
        Some(revisions) => {
            let start_of = revisions.get("start").and_then(Value::as_u64);
            let ids: Option<Vec<String>> = revisions
                .get("ids")
                .and_then(Value::as_array)
                .and_then(|ids| ids.iter().map(|i| i.as_str().map(str::to_string)).collect());
            match (start_of, ids) {
                (Some(s), Some(ids))
                    if s == start
                        && ids.first().is_some_and(|h| h == hash)
                        && ids.len() as u64 <= s
                        && ids.iter().all(|h| !h.is_empty()) =>
                {
                    ids
                }
                _ => {
                    return Err(bad(
                        "_revisions must be {\"start\": N, \"ids\": [...]} with the _rev's generation and hash first",
                    ));
                }
            }
        }
    };
    let mut ids = ids;
    ids.truncate(REVS_LIMIT);
    body::check_key_list(body.keys().map(String::as_str))?;
    body.shift_remove(body::CLIENT_TYPE);
    Ok((id, Branch { start, ids }, deleted, body))
}

/// Writes (`Some`) or deletes (`None`) a `_local/` document: its revision is `0-N`, checked as
/// CouchDB checks it, and it has no tree, no changes row and no replication.
async fn write_local(
    shared: &Shared,
    pending: &mut Pending,
    instance: &str,
    stamp: &Stamp,
    doctype: &str,
    id: String,
    body: Option<Map<String, Value>>,
) -> std::result::Result<(WriteOk, bool), Fatal> {
    let store = shared.store.as_ref();
    let reject = Fatal::Rejected;
    validate::id(&id).map_err(reject)?;
    let old = pending
        .overlay
        .local(store, instance, doctype, &id)
        .await
        .map_err(reject)?;
    let old_rev = old
        .as_ref()
        .and_then(|json| serde_json::from_slice::<Value>(json).ok())
        .and_then(|v| v.get("_rev").and_then(Value::as_str).map(str::to_string));
    let n = old_rev
        .as_deref()
        .and_then(|r| r.strip_prefix("0-"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let (deleted, mut fields) = match body {
        Some(mut map) => {
            let given = map.shift_remove("_rev");
            if old.is_some() && given.as_ref().and_then(Value::as_str) != old_rev.as_deref() {
                return Err(reject(DocumentsError::Conflict));
            }
            map.shift_remove("_id");
            let deleted = map.shift_remove("_deleted") == Some(Value::Bool(true));
            (deleted, map)
        }
        None => (true, Map::new()),
    };
    if deleted && old.is_none() {
        return Err(reject(DocumentsError::NotFound("missing")));
    }
    body::check_key_list(fields.keys().map(String::as_str)).map_err(reject)?;
    fields.shift_remove(body::CLIENT_TYPE);
    let rev = format!("0-{}", n + 1);
    let json = document_json(&id, &rev, &body_bytes(&fields), deleted);
    let change = DocumentChanged {
        doctype: doctype.to_string(),
        id: id.clone(),
        rev: rev.clone(),
        deleted,
        body: json.clone(),
        ..Default::default()
    };
    let verb = if deleted { "deleted" } else { "updated" };
    record(shared, pending, instance, stamp, change, verb).await?;
    Ok((WriteOk { id, rev, json }, true))
}

/// Gives `change` the instance's next sequence, projects it and appends its event to the batch.
async fn record(
    shared: &Shared,
    pending: &mut Pending,
    instance: &str,
    stamp: &Stamp,
    change: DocumentChanged,
    verb: &str,
) -> std::result::Result<(), Fatal> {
    let seq = match pending.seqs.get(instance) {
        Some(next) => *next,
        None => shared
            .log
            .next_seq(instance)
            .await
            .map_err(|e| Fatal::Rejected(e.into()))?,
    };
    pending.seqs.insert(instance.to_string(), seq + 1);
    let projection = Projection {
        store: shared.store.as_ref(),
        indexes: &shared.indexes,
        counts: &shared.counts,
    };
    projection
        .project(&mut pending.overlay, &mut pending.batch, instance, seq, &change)
        .await
        .map_err(Fatal::Broken)?;
    let doctype = change.doctype.clone();
    let topic = Topic::Document {
        doctype: &doctype,
        verb,
    };
    let event = envelope(instance, seq, topic, Payload::DocumentChanged(change), stamp);
    shared.log.append(&mut pending.batch, &mut pending.appended, &event);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_document_json_is_valid_and_ordered() {
        let mut body = Map::new();
        body.insert("b".into(), Value::from(1));
        body.insert("a".into(), Value::from("x\"y"));
        let json = document_json("id\"1", "1-abc", &body_bytes(&body), false);
        let parsed: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"_id": "id\"1", "_rev": "1-abc", "b": 1, "a": "x\"y"})
        );
        assert!(
            std::str::from_utf8(&json)
                .unwrap()
                .starts_with(r#"{"_id":"id\"1","_rev":"1-abc","b":1"#)
        );
        let empty = document_json("x", "2-def", &body_bytes(&Map::new()), true);
        assert_eq!(&empty[..], br#"{"_id":"x","_rev":"2-def","_deleted":true}"#);
    }

    #[test]
    fn test_revisions_are_the_generation_and_an_md5() {
        let rev = new_rev(None, 1, false, b"{}");
        let (generation, hash) = rev.split_once('-').unwrap();
        assert_eq!(generation, "1");
        assert_eq!(hash.len(), 32);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(
            rev,
            new_rev(None, 1, false, b"{}"),
            "the same write gives the same revision"
        );
        assert_ne!(new_rev(Some(&rev), 2, false, b"{}")[2..], rev[2..]);
        assert_ne!(new_rev(None, 1, true, b"{}"), rev);
    }
}
