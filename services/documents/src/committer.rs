//! The write path. One task takes write commands from every caller, checks revisions, assigns
//! per-instance sequences, appends events and their projections to one batch, and commits it
//! with one fsync (group commit). Being the only writer, it sees every earlier write, so
//! revision checks and sequences need no locks.

use std::sync::Arc;

use bytes::Bytes;
use cocon_events::{Appended, EventLog, Stamp, Topic, envelope};
use cocon_proto::events::v1::{DocumentChanged, envelope::Payload};
use cocon_storage::{Batch, Store};
use md5::{Digest, Md5};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::body::Fields;
use crate::projection::{CountCache, IndexCache, Overlay, Projection};
use crate::record::generation;
use crate::{DocumentsError, error::Result, validate};

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
    /// Replication (`new_edits: false`): store the revision given, if it wins.
    Replicate {
        body: Map<String, Value>,
    },
}

pub struct WriteCmd {
    pub doctype: String,
    pub kind: WriteKind,
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

async fn apply(
    shared: &Shared,
    pending: &mut Pending,
    instance: &str,
    stamp: &Stamp,
    cmd: WriteCmd,
) -> std::result::Result<(WriteOk, bool), Fatal> {
    let store = shared.store.as_ref();
    let doctype = cmd.doctype;
    let reject = Fatal::Rejected;
    let (id, rev, deleted, json, old_alive) = match cmd.kind {
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
            if generated {
                // 74 random bits after the time: no stored document has this id.
                pending.overlay.assume_new(instance, &doctype, &id);
            }
            let old = pending
                .overlay
                .doc(store, instance, &doctype, &id)
                .await
                .map_err(reject)?;
            let expected = fields.rev;
            let deleted = fields.deleted;
            let old_alive = old.as_ref().is_some_and(|o| !o.deleted);
            match (&old, expected.as_deref()) {
                (Some(o), Some(r)) if o.rev == r => {}
                (Some(o), None) if o.deleted => {}
                (None, None) => {}
                _ => return Err(reject(DocumentsError::Conflict)),
            }
            if deleted && !old_alive {
                return Err(reject(DocumentsError::NotFound("missing")));
            }
            let generation = old.as_ref().map_or(0, |o| o.generation()) + 1;
            let old_rev = old.as_ref().map(|o| o.rev.as_str());
            let rev = new_rev(old_rev, generation, deleted, &fields.json);
            let json = document_json(&id, &rev, &fields.json, deleted);
            (id, rev, deleted, json, old_alive)
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
            if old.rev != rev {
                return Err(reject(DocumentsError::Conflict));
            }
            let generation = old.generation() + 1;
            let empty = Fields::empty();
            let rev = new_rev(Some(&old.rev), generation, true, &empty);
            let json = document_json(&id, &rev, &empty, true);
            (id, rev, true, json, true)
        }
        WriteKind::Replicate { mut body } => {
            let id = match body.shift_remove("_id") {
                Some(Value::String(id)) => id,
                _ => {
                    return Err(reject(DocumentsError::BadRequest(
                        "with new_edits=false every document needs an _id".into(),
                    )));
                }
            };
            let rev = match body.shift_remove("_rev") {
                Some(Value::String(r)) if generation(&r) > 0 => r,
                _ => {
                    return Err(reject(DocumentsError::BadRequest(
                        "with new_edits=false every document needs a _rev like 1-abc".into(),
                    )));
                }
            };
            validate::id(&id).map_err(reject)?;
            let deleted = body.shift_remove("_deleted").is_some_and(|d| d == Value::Bool(true));
            body.shift_remove("_revisions");
            let old = pending
                .overlay
                .doc(store, instance, &doctype, &id)
                .await
                .map_err(reject)?;
            let wins = old
                .as_ref()
                .is_none_or(|o| (generation(&rev), rev.as_str()) > (o.generation(), o.rev.as_str()));
            if !wins {
                // Already known (or beaten): nothing to write, as CouchDB.
                return Ok((
                    WriteOk {
                        id,
                        rev,
                        json: Bytes::new(),
                    },
                    false,
                ));
            }
            let json = document_json(&id, &rev, &body_bytes(&body), deleted);
            (id, rev, deleted, json, old.as_ref().is_some_and(|o| !o.deleted))
        }
    };

    let seq = match pending.seqs.get(instance) {
        Some(next) => *next,
        None => shared.log.next_seq(instance).await.map_err(|e| reject(e.into()))?,
    };
    pending.seqs.insert(instance.to_string(), seq + 1);
    let verb = match (old_alive, deleted) {
        (_, true) => "deleted",
        (false, false) => "created",
        (true, false) => "updated",
    };
    let change = DocumentChanged {
        doctype: doctype.clone(),
        id: id.clone(),
        rev: rev.clone(),
        deleted,
        body: json.clone(),
    };
    let projection = Projection {
        store,
        indexes: &shared.indexes,
        counts: &shared.counts,
    };
    projection
        .project(&mut pending.overlay, &mut pending.batch, instance, seq, &change)
        .await
        .map_err(Fatal::Broken)?;
    let topic = Topic::Document {
        doctype: &doctype,
        verb,
    };
    let event = envelope(instance, seq, topic, Payload::DocumentChanged(change), stamp);
    shared.log.append(&mut pending.batch, &mut pending.appended, &event);
    Ok((WriteOk { id, rev, json }, true))
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
