//! How every service stamps its events: one [`Topic`] per stream says the event's type and
//! subject, and [`envelope`] gives it its id (`<service>:<instance>:<seq>`), its time and the
//! trace it belongs to. Ids, types and subjects are the wire format consumers filter on.

use cocon_proto::events::v1::Envelope;
use cocon_proto::events::v1::envelope::Payload;

use crate::subject;

/// The schema of the envelopes written today; a reader accepts this one and the ones before.
pub const SCHEMA_VERSION: u32 = 1;

/// What an event is about, per publishing service.
#[derive(Debug, Clone, Copy)]
pub enum Topic<'a> {
    /// An auth event: `auth.<entity>.<verb>` on `cocon.auth.<instance>.<entity>.<verb>`.
    Auth { entity: &'a str, verb: &'a str },
    /// A document's change: `documents.doc.<verb>` on
    /// `cocon.documents.<instance>.<doctype>.<verb>`.
    Document { doctype: &'a str, verb: &'a str },
    /// A files event (`created`, `quota.set`, …): `files.<kind>` on `cocon.files.<instance>.<kind>`.
    File { kind: &'a str },
    /// A jobs event: `jobs.<entity>.<verb>` (`jobs.job.queued`, `jobs.trigger.created`) on
    /// `cocon.jobs.<instance>.<entity>.<verb>`.
    Jobs { entity: &'a str, verb: &'a str },
    /// A sharing event: `sharing.sharing.<verb>` on `cocon.sharing.<instance>.sharing.<verb>`.
    Sharing { verb: &'a str },
}

impl Topic<'_> {
    fn service(&self) -> &'static str {
        match self {
            Topic::Auth { .. } => "auth",
            Topic::Document { .. } => "documents",
            Topic::File { .. } => "files",
            Topic::Jobs { .. } => "jobs",
            Topic::Sharing { .. } => "sharing",
        }
    }

    fn event_type(&self) -> String {
        match self {
            Topic::Auth { entity, verb } => format!("auth.{entity}.{verb}"),
            Topic::Document { verb, .. } => format!("documents.doc.{verb}"),
            Topic::File { kind } => format!("files.{kind}"),
            Topic::Jobs { entity, verb } => format!("jobs.{entity}.{verb}"),
            Topic::Sharing { verb } => format!("sharing.sharing.{verb}"),
        }
    }

    fn subject(&self, instance: &str) -> String {
        match self {
            Topic::Auth { entity, verb } => subject::auth(instance, entity, verb),
            Topic::Document { doctype, verb } => subject::document(instance, doctype, verb),
            Topic::File { kind } => subject::file(instance, kind),
            Topic::Jobs { entity, verb } => subject::jobs(instance, entity, verb),
            Topic::Sharing { verb } => subject::sharing(instance, verb),
        }
    }
}

/// When and in which trace the events of one commit happened: taken once per commit, so its
/// events share them.
#[derive(Debug, Clone, Default)]
pub struct Stamp {
    pub occurred_at_us: i64,
    pub traceparent: String,
}

impl Stamp {
    /// Now, in the current trace (if any).
    pub fn now() -> Stamp {
        Stamp {
            occurred_at_us: cocon_common::time::now_us(),
            traceparent: cocon_common::trace_context::current_traceparent().unwrap_or_default(),
        }
    }
}

/// The envelope of the event number `seq` of `instance`.
pub fn envelope(instance: &str, seq: u64, topic: Topic<'_>, payload: Payload, stamp: &Stamp) -> Envelope {
    Envelope {
        id: format!("{}:{instance}:{seq}", topic.service()),
        r#type: topic.event_type(),
        schema_version: SCHEMA_VERSION,
        occurred_at_us: stamp.occurred_at_us,
        instance: instance.to_string(),
        seq,
        traceparent: stamp.traceparent.clone(),
        subject: topic.subject(instance),
        payload: Some(payload),
    }
}

#[cfg(test)]
mod tests {
    use cocon_proto::events::v1::DiskQuotaSet;

    use super::*;

    /// The ids, types and subjects each service published before the kit, unchanged.
    #[test]
    fn test_envelopes_keep_the_wire_names() {
        let stamp = Stamp {
            occurred_at_us: 7,
            traceparent: "00-t-s-01".into(),
        };
        let payload = || Payload::DiskQuotaSet(DiskQuotaSet { bytes: 1 });
        let auth = envelope(
            "i1",
            3,
            Topic::Auth {
                entity: "session",
                verb: "created",
            },
            payload(),
            &stamp,
        );
        assert_eq!(
            (auth.id.as_str(), auth.r#type.as_str(), auth.subject.as_str()),
            ("auth:i1:3", "auth.session.created", "cocon.auth.i1.session.created")
        );
        let doc = envelope(
            "i1",
            4,
            Topic::Document {
                doctype: "io.cozy.notes",
                verb: "updated",
            },
            payload(),
            &stamp,
        );
        assert_eq!(
            (doc.id.as_str(), doc.r#type.as_str(), doc.subject.as_str()),
            (
                "documents:i1:4",
                "documents.doc.updated",
                "cocon.documents.i1.io:cozy:notes.updated"
            )
        );
        let file = envelope("i1", 5, Topic::File { kind: "quota.set" }, payload(), &stamp);
        assert_eq!(
            (file.id.as_str(), file.r#type.as_str(), file.subject.as_str()),
            ("files:i1:5", "files.quota.set", "cocon.files.i1.quota.set")
        );
        assert_eq!(
            (file.occurred_at_us, file.traceparent.as_str(), file.seq),
            (7, "00-t-s-01", 5)
        );
        assert_eq!(file.schema_version, SCHEMA_VERSION);
    }
}
