//! `@event` triggers fed by the bus: the documents and files events are matched against the
//! instance's event triggers, and each one matched sets its trigger off.
//!
//! Redelivered events do not queue a job twice: the job of an (event, trigger) pair has an id
//! derived from both, and one that exists is not queued again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cocon_common::Shutdown;
use cocon_events::{Change, HandlerError, Message, decode_envelope, subject};
use cocon_proto::events::v1::envelope::Payload;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::event::{EventRule, Matched, field};
use crate::service::JobsService;
use crate::syntax::{self, Schedule};
use crate::tables::TRIGGERS;

/// An `@event` trigger with its rules read.
pub(crate) struct Watched {
    pub trigger: cocon_proto::events::v1::Trigger,
    pub rules: Vec<EventRule>,
}

/// Each instance's `@event` triggers, so that a write no trigger watches costs a lookup. A
/// commit that changes an instance's triggers forgets its entry (`JobsService::commit`); a
/// load that raced with a change is not kept (the generation moved).
#[derive(Default)]
pub(crate) struct EventTriggers {
    by_instance: Mutex<HashMap<String, Arc<Vec<Watched>>>>,
    generation: AtomicU64,
}

/// Past this many instances cached, the cache starts again empty.
const MAX_CACHED: usize = 100_000;

impl EventTriggers {
    fn get(&self, instance: &str) -> Option<Arc<Vec<Watched>>> {
        self.by_instance.lock().expect("cache poisoned").get(instance).cloned()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn put(&self, instance: &str, watched: Arc<Vec<Watched>>, generation: u64) {
        let mut map = self.by_instance.lock().expect("cache poisoned");
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(instance.to_string(), watched);
    }

    pub fn forget(&self, instance: &str) {
        let mut map = self.by_instance.lock().expect("cache poisoned");
        self.generation.fetch_add(1, Ordering::AcqRel);
        map.remove(instance);
    }
}

impl JobsService {
    /// The consumers of the documents and files streams that feed `@event` triggers.
    pub(crate) fn event_consumers(&self, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let svc = self.clone();
        cocon_events::spawn_consumers(
            &self.inner.bus,
            &[
                (
                    cocon_events::streams::DOCUMENTS,
                    "jobs-event-triggers-documents",
                    "cocon.documents.>",
                ),
                // `<instance>.<verb>`: the nodes' events, not the quota's.
                (
                    cocon_events::streams::FILES,
                    "jobs-event-triggers-files",
                    "cocon.files.*.*",
                ),
            ],
            move |message: Message| {
                let svc = svc.clone();
                async move {
                    svc.on_bus_event(&message)
                        .await
                        .map_err(|e| HandlerError(e.to_string()))
                }
            },
            &shutdown,
        )
    }

    async fn on_bus_event(&self, message: &Message) -> Result<()> {
        debug_assert!(subject::matches("cocon.>", &message.subject));
        let envelope = decode_envelope(&message.payload)?;
        // Most writes concern no trigger: they cost a lookup, not a parse of the document.
        let account = matches!(&envelope.payload, Some(Payload::DocumentChanged(d)) if d.doctype == cocon_common::cozy::doctype::ACCOUNTS);
        if !account && self.event_triggers(&envelope.instance).await?.is_empty() {
            return Ok(());
        }
        let Some(change) = Change::of(&envelope) else {
            return Ok(());
        };
        self.on_change(&envelope.instance, &envelope.id, envelope.occurred_at_us, &change)
            .await
    }

    /// The instance's `@event` triggers with their rules, from the cache or the table.
    async fn event_triggers(&self, instance: &str) -> Result<Arc<Vec<Watched>>> {
        let cache = &self.inner.event_triggers;
        if let Some(found) = cache.get(instance) {
            return Ok(found);
        }
        let generation = cache.generation();
        let watched: Vec<Watched> = TRIGGERS
            .rows(self.store(), instance)
            .await?
            .into_iter()
            .filter(|t| t.r#type == "@event")
            .filter_map(|trigger| match syntax::parse("@event", &trigger.arguments, "", "") {
                Ok((Schedule::Event(rules), _)) => Some(Watched { trigger, rules }),
                _ => None,
            })
            .collect();
        let watched = Arc::new(watched);
        cache.put(instance, watched.clone(), generation);
        Ok(watched)
    }

    /// Sets off the instance's `@event` triggers that `change` matches.
    pub(crate) async fn on_change(
        &self,
        instance: &str,
        event_id: &str,
        occurred_at_us: i64,
        change: &Change,
    ) -> Result<()> {
        if change.doctype == cocon_common::cozy::doctype::ACCOUNTS {
            self.account_changed(instance, &change.id, occurred_at_us).await?;
            if change.verb == "DELETED" {
                self.account_deleted(instance, event_id, occurred_at_us, &change.id, &change.doc)
                    .await?;
            }
        }
        for Watched { trigger, rules } in self.event_triggers(instance).await?.iter() {
            // A trigger sees the changes made after it was created, not a replay of older ones.
            if occurred_at_us < trigger.created_at_us {
                continue;
            }
            if !self.matches_any(instance, &trigger.id, rules, change).await? {
                continue;
            }
            let event = event_json(change, &trigger.domain);
            let job_id = job_id_for(event_id, &trigger.id, occurred_at_us);
            self.set_off_once(instance, trigger, event, job_id).await?;
        }
        Ok(())
    }

    async fn matches_any(&self, instance: &str, trigger: &str, rules: &[EventRule], change: &Change) -> Result<bool> {
        let mut matched = false;
        for rule in rules {
            if let Some(path) = rule.watched_field(&change.doctype) {
                // Recorded whatever the verb: the next change compares with it.
                let value = field(&change.doc, path).cloned().unwrap_or(Value::Null);
                let changed = self.field_changed(instance, trigger, &change.id, &value).await?;
                matched |= changed && rule.verb_matches(change.verb);
                continue;
            }
            let direct = rule.matches(&change.doctype, change.verb, &change.id, &change.doc) == Matched::Yes;
            matched |= direct
                || (rule.names_directories(&change.doctype, change.verb)
                    && self.under_any(instance, change, &rule.values).await?);
        }
        Ok(matched)
    }

    /// Whether a changed file or directory is under one of the directories `ids` names (cozy
    /// matches a directory's subtree; a trashed node by where it came from; a moved node by
    /// where it went and where it left).
    async fn under_any(&self, instance: &str, change: &Change, ids: &[String]) -> Result<bool> {
        let mut paths = Vec::new();
        if let Some((path, _)) = self.node_path(instance, &change.id).await? {
            paths.push(path);
        }
        if let Some(restore) = change.doc.get("restore_path").and_then(Value::as_str) {
            paths.push(restore.to_string());
        }
        // The directory it left holds it no more: a path inside it stands for where it was.
        if let Some(old_dir) = &change.old_dir
            && let Some((dir, true)) = self.node_path(instance, old_dir).await?
        {
            paths.push(if dir == "/" {
                "/\0".to_string()
            } else {
                format!("{dir}/\0")
            });
        }
        if paths.is_empty() {
            return Ok(false);
        }
        for id in ids {
            if let Some((dir, true)) = self.node_path(instance, id).await? {
                let prefix = if dir == "/" { dir } else { format!("{dir}/") };
                if paths.iter().any(|p| p.starts_with(&prefix) && *p != prefix) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A node's path and whether it is a directory, asked of the files service; `None` when
    /// it is gone.
    async fn node_path(&self, instance: &str, id: &str) -> Result<Option<(String, bool)>> {
        use cocon_proto::files::v1 as files;
        let Some(clients) = self.inner.konnectors.clients.get() else {
            return Err(crate::error::JobsError::Storage(cocon_storage::StorageError::Backend(
                "the jobs service is not connected to the files service yet".into(),
            )));
        };
        let ticket = self.inner.mesh_key.issue(instance, cocon_common::time::now_secs() + 60);
        let request = files::GetFileRequest {
            scope: Some(files::Scope {
                instance: instance.to_string(),
                ticket,
                within: Vec::new(),
                read_only: Vec::new(),
            }),
            id: id.to_string(),
            limit: 1,
            ..Default::default()
        };
        match clients.files.clone().get_file(request).await {
            Ok(answer) => Ok(answer.into_inner().file.map(|f| (f.path, f.directory))),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(crate::error::JobsError::Storage(cocon_storage::StorageError::Backend(
                format!("cannot ask the files service where {id} is: {}", status.message()),
            ))),
        }
    }
}

/// `{"domain","verb","doc"}`: what cozy-stack puts in an event-triggered job's `event`.
fn event_json(change: &Change, domain: &str) -> Bytes {
    let mut map = Map::new();
    if !domain.is_empty() {
        map.insert("domain".into(), Value::String(domain.to_string()));
    }
    map.insert("verb".into(), Value::String(change.verb.to_string()));
    map.insert("doc".into(), change.doc.clone());
    Bytes::from(serde_json::to_vec(&Value::Object(map)).expect("JSON writes"))
}

/// A job id that is the same for the same (event, trigger), and sorts by the event's time as
/// the other job ids do (a UUID v7 whose random part is derived from both).
pub(crate) fn job_id_for(event_id: &str, trigger_id: &str, occurred_at_us: i64) -> String {
    let digest = Sha256::digest(format!("{event_id}\0{trigger_id}").as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = (occurred_at_us.max(0) / 1000) as u64;
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .simple()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_the_same_event_and_trigger_give_the_same_job_id() {
        let a = super::job_id_for("documents:i:7", "t1", 1_700_000_000_000_000);
        assert_eq!(a, super::job_id_for("documents:i:7", "t1", 1_700_000_000_000_000));
        assert_ne!(a, super::job_id_for("documents:i:8", "t1", 1_700_000_000_000_000));
        assert_ne!(a, super::job_id_for("documents:i:7", "t2", 1_700_000_000_000_000));
        let later = super::job_id_for("documents:i:1", "t1", 1_700_000_001_000_000);
        assert!(later > a, "ids sort by the event's time");
        assert_eq!(a.len(), 32);
    }
}
