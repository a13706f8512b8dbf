//! An event of the bus as a realtime client sees it: `{"event": VERB, "payload": {type, id,
//! doc}}`, with cozy's verbs and the documents as cozy-stack stores them (jobs and triggers as
//! their `io.cozy.jobs` and `io.cozy.triggers` documents).

use cocon_common::cozy::doctype;
use cocon_events::{Change, Message, decode_envelope};
use cocon_proto::events::v1::envelope::Payload;
use serde_json::{Value, json};

use crate::jobs::json;

pub struct Event {
    pub doctype: String,
    pub id: String,
    /// CREATED, UPDATED, DELETED or NOTIFIED.
    pub verb: &'static str,
    pub doc: Value,
    /// For a file or directory: the directory holding it, whose subscribers see it too.
    pub dir_id: Option<String>,
}

impl Event {
    /// The event a message of the bus is about, if realtime clients see it.
    pub fn of(message: &Message) -> Option<Event> {
        if message.subject.starts_with(cocon_events::live::REALTIME_PREFIX) {
            let mut body: Value = serde_json::from_slice(&message.payload).ok()?;
            // The jobs service's konnector logs come as creations, the initial sync of a
            // sharing as updates then a deletion, as in cozy-stack.
            let verb = match body.get("verb").and_then(Value::as_str) {
                Some("CREATED") => "CREATED",
                Some("UPDATED") => "UPDATED",
                Some("DELETED") => "DELETED",
                _ => "NOTIFIED",
            };
            return Some(Event {
                doctype: body.get("type")?.as_str()?.to_string(),
                id: body.get("id")?.as_str()?.to_string(),
                verb,
                doc: body.get_mut("doc").map(Value::take).unwrap_or(Value::Null),
                dir_id: None,
            });
        }
        let envelope = decode_envelope(&message.payload).ok()?;
        let verb_of_subject = envelope.subject.rsplit('.').next().unwrap_or_default();
        match envelope.payload.as_ref()? {
            Payload::JobChanged(changed) => {
                let job = changed.job.as_ref()?;
                let verb = match (changed.deleted, verb_of_subject) {
                    (true, _) => "DELETED",
                    (false, "queued") => "CREATED",
                    _ => "UPDATED",
                };
                Some(Event {
                    doctype: doctype::JOBS.into(),
                    id: job.id.clone(),
                    verb,
                    doc: attributes(json::job(job, &job.domain)),
                    dir_id: None,
                })
            }
            Payload::TriggerChanged(changed) => {
                let trigger = changed.trigger.as_ref()?;
                let verb = match (changed.deleted, verb_of_subject) {
                    (true, _) => "DELETED",
                    (false, "created") => "CREATED",
                    _ => "UPDATED",
                };
                Some(Event {
                    doctype: doctype::TRIGGERS.into(),
                    id: trigger.id.clone(),
                    verb,
                    doc: attributes(json::trigger(trigger, None, &trigger.domain, "")),
                    dir_id: None,
                })
            }
            _ => {
                let change = Change::of(&envelope)?;
                let dir_id = match change.doctype.as_str() {
                    doctype::FILES => change.doc.get("dir_id").and_then(Value::as_str).map(str::to_string),
                    _ => None,
                };
                Some(Event {
                    doctype: change.doctype,
                    id: change.id,
                    verb: change.verb,
                    doc: change.doc,
                    dir_id,
                })
            }
        }
    }

    /// The doctype an event of the bus is about, read from its subject alone: a room skips
    /// decoding what none of its sockets watches.
    pub fn doctype_of(subject: &str) -> Option<String> {
        let mut tokens = subject.split('.').skip(1);
        let (service, _instance) = (tokens.next()?, tokens.next()?);
        Some(match (service, tokens.next()) {
            ("documents" | "realtime", Some(doctype)) => cocon_events::subject::decode_token(doctype),
            ("files", _) => doctype::FILES.to_string(),
            ("jobs", Some("job")) => doctype::JOBS.to_string(),
            ("jobs", Some("trigger")) => doctype::TRIGGERS.to_string(),
            _ => return None,
        })
    }

    pub fn frame(&self) -> String {
        json!({
            "event": self.verb,
            "payload": {"type": self.doctype, "id": self.id, "doc": self.doc},
        })
        .to_string()
    }
}

/// A JSON-API resource's attributes: the document as stored.
fn attributes(mut resource: Value) -> Value {
    resource.get_mut("attributes").map(Value::take).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_the_doctype_of_an_event_reads_from_its_subject() {
        let of = |s: &str| Event::doctype_of(s);
        assert_eq!(
            of("cocon.documents.i1.io:cozy:notes.created").as_deref(),
            Some("io.cozy.notes")
        );
        assert_eq!(of("cocon.files.i1.updated").as_deref(), Some("io.cozy.files"));
        assert_eq!(of("cocon.jobs.i1.job.done").as_deref(), Some("io.cozy.jobs"));
        assert_eq!(of("cocon.jobs.i1.trigger.created").as_deref(), Some("io.cozy.triggers"));
        assert_eq!(
            of("cocon.realtime.i1.io:cozy:jobs:events").as_deref(),
            Some("io.cozy.jobs.events")
        );
        assert_eq!(of("cocon.auth.i1.session.created"), None);
    }
}
