//! Where sharings live: every change is a `SharingChanged` event in `sharing.events` (the source
//! of truth), projected to `sharing.sharings`, in one atomic batch. The credentials (tokens and
//! client secrets for the other side, invitation states) are sealed before they reach the event:
//! neither the log, the table nor the bus holds them in the clear.

use async_trait::async_trait;
use cocon_common::sealed::Sealer;
use cocon_common::ticket::MeshKey;
use cocon_events::{Appended, EventLog, Projection, ProjectionError, Stamp, Topic, envelope};
use cocon_proto::events::v1::envelope::Payload;
use cocon_proto::events::v1::{Envelope, SharingChanged, SharingCheckpoint, SharingFilesTracked};
use cocon_storage::bytes::{BufMut, Bytes, BytesMut};
use cocon_storage::{Batch, Schema, Store, Table};
use serde::{Deserialize, Serialize};

use crate::doc::{Credentials, Sharing};
use crate::error::{Result, SharingError};

pub const EVENTS: &str = "sharing.events";
pub const OUTBOX: &str = "sharing.outbox";
pub const PROJECTIONS: [&str; 3] = [Sharings::NAME, Checkpoints::NAME, SharedFiles::NAME];

/// A sharing as stored and as its event carries it: the document without its credentials, and
/// the credentials sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub doc: Sharing,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sealed: String,
}

/// instance → sharing id → [`Stored`] as JSON.
pub struct Sharings;

impl Schema for Sharings {
    const NAME: &'static str = "sharing.sharings";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    type Sort<'a> = &'a str;
    type Row = Bytes;

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort(id: &str) -> Vec<u8> {
        id.as_bytes().to_vec()
    }

    fn encode(json: &Bytes, out: &mut BytesMut) {
        out.put_slice(json)
    }

    fn encoded_len(json: &Bytes) -> usize {
        json.len()
    }

    fn decode(_version: u8, json: Bytes) -> std::result::Result<Bytes, String> {
        Ok(json)
    }
}

pub const SHARINGS: Table<Sharings> = Table::new();

/// instance → (sharing, member, doctype) → the sequence of the doctype's changes sent to that
/// member.
pub struct Checkpoints;

impl Schema for Checkpoints {
    const NAME: &'static str = "sharing.checkpoints";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    type Sort<'a> = (&'a str, u32, &'a str);
    type Row = u64;

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort((sharing, member, doctype): (&str, u32, &str)) -> Vec<u8> {
        let mut key = Vec::with_capacity(sharing.len() + doctype.len() + 6);
        key.extend_from_slice(sharing.as_bytes());
        key.push(0);
        key.extend_from_slice(&member.to_be_bytes());
        key.extend_from_slice(doctype.as_bytes());
        key
    }

    fn encode(seq: &u64, out: &mut BytesMut) {
        out.put_u64(*seq)
    }

    fn encoded_len(_: &u64) -> usize {
        8
    }

    fn decode(_version: u8, payload: Bytes) -> std::result::Result<u64, String> {
        let bytes: [u8; 8] = payload.as_ref().try_into().map_err(|_| "checkpoint".to_string())?;
        Ok(u64::from_be_bytes(bytes))
    }
}

pub const CHECKPOINTS: Table<Checkpoints> = Table::new();

/// instance → (sharing, member, file id) → the revision of the shared file or directory the
/// member has, and whether it was removed there.
pub struct SharedFiles;

/// A row of [`SharedFiles`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub rev: String,
    pub removed: bool,
    /// A directory (rows written before this was recorded read as files).
    pub directory: bool,
}

/// The sort-key prefix of the rows of `sharing`'s member `member` in [`SharedFiles`].
pub fn shared_files_of(sharing: &str, member: u32) -> Vec<u8> {
    SharedFiles::sort((sharing, member, ""))
}

impl Schema for SharedFiles {
    const NAME: &'static str = "sharing.shared_files";
    const VERSION: u8 = 1;
    type Partition<'a> = &'a str;
    type Sort<'a> = (&'a str, u32, &'a str);
    type Row = Tracked;

    fn partition(instance: &str) -> Vec<u8> {
        instance.as_bytes().to_vec()
    }

    fn sort((sharing, member, id): (&str, u32, &str)) -> Vec<u8> {
        Checkpoints::sort((sharing, member, id))
    }

    fn encode(row: &Tracked, out: &mut BytesMut) {
        out.put_u8(row.removed as u8 | (row.directory as u8) << 1);
        out.put_slice(row.rev.as_bytes());
    }

    fn encoded_len(row: &Tracked) -> usize {
        1 + row.rev.len()
    }

    fn decode(_version: u8, payload: Bytes) -> std::result::Result<Tracked, String> {
        let (flag, rev) = payload.split_first().ok_or("shared file")?;
        Ok(Tracked {
            removed: flag & 1 == 1,
            directory: flag & 2 == 2,
            rev: String::from_utf8(rev.to_vec()).map_err(|e| e.to_string())?,
        })
    }
}

pub const SHARED_FILES: Table<SharedFiles> = Table::new();

const CREDENTIALS_LABEL: &str = "credentials";

fn sealer(mesh_key: &MeshKey, instance: &str) -> Sealer {
    Sealer::new(mesh_key, "cocon-sharing-credentials", instance)
}

/// The stored form of `sharing`, its credentials sealed for `instance`.
pub fn seal(mesh_key: &MeshKey, instance: &str, sharing: &Sharing) -> Bytes {
    let mut doc = sharing.clone();
    let credentials = std::mem::take(&mut doc.credentials);
    let sealed = if credentials.is_empty() {
        String::new()
    } else {
        let plain = serde_json::to_vec(&credentials).expect("credentials serialise");
        sealer(mesh_key, instance).seal(CREDENTIALS_LABEL, &plain)
    };
    Bytes::from(serde_json::to_vec(&Stored { doc, sealed }).expect("a sharing serialises"))
}

/// A stored sharing without its credentials (left sealed): what is shown, and what the guards
/// read.
pub fn open_shown(json: &[u8]) -> Result<Sharing> {
    let stored: Stored = serde_json::from_slice(json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
    Ok(stored.doc)
}

/// A stored sharing with its credentials opened.
pub fn open(mesh_key: &MeshKey, instance: &str, json: &[u8]) -> Result<Sharing> {
    let stored: Stored = serde_json::from_slice(json).map_err(|e| SharingError::Corrupt(e.to_string()))?;
    let mut sharing = stored.doc;
    if !stored.sealed.is_empty() {
        let plain = sealer(mesh_key, instance)
            .open(CREDENTIALS_LABEL, &stored.sealed)
            .ok_or_else(|| SharingError::Corrupt("the credentials do not open with this mesh key".into()))?;
        sharing.credentials =
            serde_json::from_slice::<Vec<Credentials>>(&plain).map_err(|e| SharingError::Corrupt(e.to_string()))?;
    }
    Ok(sharing)
}

fn project(batch: &mut Batch, instance: &str, payload: &Payload) {
    match payload {
        Payload::SharingChanged(change) if change.deleted => SHARINGS.delete(batch, instance, &change.id),
        Payload::SharingChanged(change) => SHARINGS.put(batch, instance, &change.id, &change.doc),
        Payload::SharingCheckpoint(c) => {
            CHECKPOINTS.put(batch, instance, (&c.sharing_id, c.member, &c.doctype), &c.seq);
        }
        Payload::SharingFilesTracked(t) => {
            for f in &t.files {
                let row = Tracked {
                    rev: f.rev.clone(),
                    removed: f.removed,
                    directory: f.directory,
                };
                SHARED_FILES.put(batch, instance, (&t.sharing_id, t.member, &f.id), &row);
            }
        }
        _ => {}
    }
}

/// Records the revisions of shared files a member now has.
pub async fn track(
    log: &EventLog,
    store: std::sync::Arc<dyn Store>,
    instance: &str,
    tracked: SharingFilesTracked,
) -> Result<()> {
    if tracked.files.is_empty() {
        return Ok(());
    }
    append_one(log, store, instance, Payload::SharingFilesTracked(tracked), "tracked").await
}

/// Appends one event and its projection, durably.
async fn append_one(
    log: &EventLog,
    store: std::sync::Arc<dyn Store>,
    instance: &str,
    payload: Payload,
    verb: &'static str,
) -> Result<()> {
    let seq = log.next_seq(instance).await?;
    let mut batch = Batch::new();
    let mut appended = Appended::default();
    project(&mut batch, instance, &payload);
    let event = envelope(instance, seq, Topic::Sharing { verb }, payload, &Stamp::now());
    log.append(&mut batch, &mut appended, &event);
    let sealed = log.seal(&mut batch, appended);
    log.commit(store, instance, seq, batch, sealed).await?;
    Ok(())
}

/// Records that member `member` of `sharing` was sent the changes of `doctype` up to `seq`.
pub async fn checkpoint(
    log: &EventLog,
    store: std::sync::Arc<dyn Store>,
    instance: &str,
    checkpoint: SharingCheckpoint,
) -> Result<()> {
    append_one(
        log,
        store,
        instance,
        Payload::SharingCheckpoint(checkpoint),
        "checkpoint",
    )
    .await
}

/// Appends the change of each sharing (`verb`: created, updated or deleted) and its projection
/// in one atomic batch, durably. The caller holds the instance's stripe.
pub async fn commit(
    log: &EventLog,
    store: std::sync::Arc<dyn Store>,
    mesh_key: &MeshKey,
    instance: &str,
    changes: &[(&Sharing, &'static str)],
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let first = log.next_seq(instance).await?;
    let last = first + changes.len() as u64 - 1;
    let stamp = Stamp::now();
    let mut batch = Batch::new();
    let mut appended = Appended::default();
    for (i, (sharing, verb)) in changes.iter().enumerate() {
        let payload = Payload::SharingChanged(SharingChanged {
            id: sharing.id.clone(),
            doc: seal(mesh_key, instance, sharing),
            deleted: *verb == "deleted",
        });
        project(&mut batch, instance, &payload);
        let event = envelope(instance, first + i as u64, Topic::Sharing { verb }, payload, &stamp);
        log.append(&mut batch, &mut appended, &event);
    }
    let sealed = log.seal(&mut batch, appended);
    log.commit(store, instance, last, batch, sealed).await?;
    Ok(())
}

/// The sharings projection, replayed from the log.
pub struct SharingProjection {
    log: EventLog,
    batch: Batch,
}

impl SharingProjection {
    pub(crate) fn new(log: EventLog) -> SharingProjection {
        SharingProjection {
            log,
            batch: Batch::new(),
        }
    }
}

#[async_trait]
impl Projection for SharingProjection {
    fn name(&self) -> &'static str {
        "sharing"
    }

    fn log(&self) -> &EventLog {
        &self.log
    }

    fn tables(&self) -> &'static [&'static str] {
        &PROJECTIONS
    }

    async fn apply(&mut self, store: &dyn Store, event: Envelope) -> std::result::Result<(), ProjectionError> {
        if let Some(payload) = &event.payload {
            project(&mut self.batch, &event.instance, payload);
        }
        if self.batch.len() >= 1000 {
            self.finish(store).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, store: &dyn Store) -> std::result::Result<(), ProjectionError> {
        let batch = std::mem::take(&mut self.batch);
        if !batch.is_empty() {
            store.apply(batch).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tracked_rows_keep_their_flags_and_older_rows_read_as_files() {
        for row in [
            Tracked {
                rev: "2-ab".into(),
                removed: true,
                directory: true,
            },
            Tracked {
                rev: "1-cd".into(),
                removed: false,
                directory: true,
            },
            Tracked {
                rev: "3-ef".into(),
                removed: true,
                directory: false,
            },
        ] {
            let mut out = BytesMut::new();
            SharedFiles::encode(&row, &mut out);
            assert_eq!(out.len(), SharedFiles::encoded_len(&row));
            assert_eq!(SharedFiles::decode(1, out.freeze()).unwrap(), row);
        }
        // A row written before directories were recorded: removed, a file.
        let old = SharedFiles::decode(1, Bytes::from_static(b"\x011-aa")).unwrap();
        assert!(old.removed && !old.directory);
        // The rows of one member of one sharing share a prefix no other member's has.
        let a = shared_files_of("s1", 0);
        assert!(SharedFiles::sort(("s1", 0, "f1")).starts_with(&a));
        assert!(!SharedFiles::sort(("s1", 1, "f1")).starts_with(&a));
        assert!(!SharedFiles::sort(("s10", 0, "f1")).starts_with(&a));
    }

    #[test]
    fn test_credentials_are_sealed_in_the_stored_form() {
        let mesh = MeshKey::random();
        let sharing = Sharing {
            id: "s".into(),
            credentials: vec![Credentials {
                state: "the-state".into(),
                access_token: Some(serde_json::json!({"access_token": "tok-123"})),
                ..Default::default()
            }],
            ..Default::default()
        };
        let stored = seal(&mesh, "alice", &sharing);
        let text = String::from_utf8_lossy(&stored);
        assert!(!text.contains("the-state") && !text.contains("tok-123"), "{text}");
        assert_eq!(open(&mesh, "alice", &stored).unwrap(), sharing);
        assert!(open(&mesh, "bob", &stored).is_err(), "another instance's key");
    }
}
