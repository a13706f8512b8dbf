//! What changed, as Cozy's clients see it: the document or file an event of the documents or
//! files service is about, with cozy's verb (`@event` triggers match it; realtime clients get it).

use cocon_proto::events::v1::Envelope;
use cocon_proto::events::v1::envelope::Payload;
use serde_json::{Map, Value};

/// A change of a document or a file, as `@event` triggers and realtime clients see it.
pub struct Change {
    pub doctype: String,
    /// CREATED, UPDATED or DELETED.
    pub verb: &'static str,
    pub id: String,
    pub doc: Value,
    /// The directory a file or directory was moved out of by this change.
    pub old_dir: Option<String>,
}

/// What a file's event holds that is the server's own, not the document's.
const INTERNAL_FILE_FIELDS: [&str; 3] = ["blob", "restore_name", "dav_properties"];

impl Change {
    /// The change an event of the documents or files service is about, if any.
    pub fn of(envelope: &Envelope) -> Option<Change> {
        match envelope.payload.as_ref()? {
            // CouchDB's local documents (replication checkpoints) are nobody's change.
            Payload::DocumentChanged(d) if d.id.starts_with("_local/") => None,
            Payload::DocumentChanged(d) => {
                let verb = envelope.subject.rsplit('.').next().unwrap_or_default();
                let verb = match verb {
                    "created" => "CREATED",
                    "deleted" => "DELETED",
                    _ if d.deleted => "DELETED",
                    _ => "UPDATED",
                };
                let doc = serde_json::from_slice(&d.body).unwrap_or(Value::Null);
                Some(Change {
                    doctype: d.doctype.clone(),
                    verb,
                    id: d.id.clone(),
                    doc,
                    old_dir: None,
                })
            }
            Payload::FileChanged(f) => {
                let verb = match envelope.subject.rsplit('.').next().unwrap_or_default() {
                    "created" => "CREATED",
                    "deleted" => "DELETED",
                    _ => "UPDATED",
                };
                let mut doc = if f.file.is_empty() {
                    let mut gone = Map::new();
                    gone.insert("_id".into(), Value::String(f.id.clone()));
                    if !f.deleted_rev.is_empty() {
                        gone.insert("_rev".into(), Value::String(f.deleted_rev.clone()));
                    }
                    gone.insert("_deleted".into(), Value::Bool(true));
                    Value::Object(gone)
                } else {
                    serde_json::from_slice(&f.file).unwrap_or(Value::Null)
                };
                if let Value::Object(map) = &mut doc
                    && !f.file.is_empty()
                {
                    for internal in INTERNAL_FILE_FIELDS {
                        map.remove(internal);
                    }
                    map.entry("trashed").or_insert(Value::Bool(false));
                    // cozy-stack writes sizes as strings (they may exceed what JSON numbers keep).
                    if let Some(size) = map.get_mut("size")
                        && let Some(n) = size.as_u64()
                    {
                        *size = Value::String(n.to_string());
                    }
                }
                Some(Change {
                    doctype: cocon_common::cozy::doctype::FILES.to_string(),
                    verb,
                    id: f.id.clone(),
                    doc,
                    old_dir: (!f.old_dir_id.is_empty()).then(|| f.old_dir_id.clone()),
                })
            }
            _ => None,
        }
    }
}
