//! The jobs service: its state, and the write path (events and their projection in one atomic
//! batch, under the instance's stripe).

use std::sync::Arc;

use cocon_common::ticket::MeshKey;
use cocon_events::{Appended, EventBus, EventLog, Stamp, Stripes, Topic, envelope};
use cocon_proto::events::v1::envelope::Payload;
use cocon_proto::events::v1::{
    Job, JobChanged, Konnector, KonnectorChanged, Trigger, TriggerChanged, TriggerDebounced, Webapp, WebappChanged,
};
use cocon_storage::{Batch, Store};
use tokio::sync::{MutexGuard, Notify};

use crate::config::Config;
use crate::error::{JobsError, Result};
use crate::projection::{JobsProjection, project};
use crate::queue::{MemoryQueue, Queue};
use crate::tables::*;
use crate::webhook::WebhookLimits;
use crate::workers::Workers;

pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Checks the instance ticket of every call (signed by the auth service).
    pub mesh_key: MeshKey,
    /// Where konnectors' code and runs go by default.
    pub data_dir: std::path::PathBuf,
    /// The bus is shared by processes (NATS): the jobs wait in its work queue, where every
    /// jobs process takes them; otherwise in this process's memory.
    pub shared_queue: bool,
    /// The configuration's contexts: the apps their new instances get, their registries.
    pub contexts: Arc<cocon_common::context::Contexts>,
}

#[derive(Clone)]
pub struct JobsService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub log: EventLog,
    pub mesh_key: MeshKey,
    pub workers: Workers,
    pub queue: Arc<dyn Queue>,
    /// Whether the queue is shared with other processes (`bus_queue.rs`).
    pub shared_queue: bool,
    /// In a runner process, the process that keeps the jobs, set once the mesh is connected.
    pub keeper: std::sync::OnceLock<cocon_mesh::JobsClient>,
    stripes: Stripes,
    /// Woken when a job ends, for the callers waiting on one.
    pub finished: Notify,
    /// Woken when something may be due sooner than the scheduler thought.
    pub schedule_changed: Notify,
    pub webhooks: WebhookLimits,
    /// Group commit of the changes that need no read first (`committer.rs`).
    pub committer: crate::committer::Sender,
    /// Konnectors: their code on disk, and how they run.
    pub konnectors: Arc<crate::konnectors::Runtime>,
    /// Each instance's `@event` triggers, for the consumer of the documents and files events.
    pub event_triggers: crate::consumer::EventTriggers,
    /// Where installed code comes from (`install.rs`).
    pub fetcher: crate::install::Fetcher,
    /// Where web apps' code is kept.
    pub apps_dir: std::path::PathBuf,
    pub contexts: Arc<cocon_common::context::Contexts>,
}

/// An entry of the jobs log.
pub(crate) enum Entry {
    Job {
        job: Job,
        deleted: bool,
    },
    /// `verb`: created, updated or deleted.
    Trigger {
        trigger: Trigger,
        verb: &'static str,
        replaced_due_us: i64,
    },
    Debounce(TriggerDebounced),
    Konnector {
        konnector: Konnector,
        deleted: bool,
    },
    Webapp {
        app: Webapp,
        deleted: bool,
    },
}

impl Entry {
    pub fn job(job: Job) -> Entry {
        Entry::Job { job, deleted: false }
    }

    fn into_event(self) -> (&'static str, String, Payload) {
        match self {
            Entry::Job { job, deleted } => {
                let verb = if deleted {
                    "deleted".to_string()
                } else {
                    job.state.clone()
                };
                let payload = Payload::JobChanged(JobChanged {
                    job: Some(job),
                    deleted,
                });
                ("job", verb, payload)
            }
            Entry::Trigger {
                trigger,
                verb,
                replaced_due_us,
            } => {
                let payload = Payload::TriggerChanged(TriggerChanged {
                    trigger: Some(trigger),
                    deleted: verb == "deleted",
                    replaced_due_us,
                });
                ("trigger", verb.to_string(), payload)
            }
            Entry::Debounce(pending) => {
                let verb = if pending.closed { "closed" } else { "pending" };
                ("debounce", verb.to_string(), Payload::TriggerDebounced(pending))
            }
            Entry::Konnector { konnector, deleted } => {
                let verb = if deleted { "uninstalled" } else { "installed" };
                let payload = Payload::KonnectorChanged(KonnectorChanged {
                    konnector: Some(konnector),
                    deleted,
                });
                ("konnector", verb.to_string(), payload)
            }
            Entry::Webapp { app, deleted } => {
                let verb = if deleted { "uninstalled" } else { "installed" };
                let payload = Payload::WebappChanged(WebappChanged {
                    webapp: Some(app),
                    deleted,
                });
                ("app", verb.to_string(), payload)
            }
        }
    }
}

impl JobsService {
    pub async fn build(config: Config, deps: Deps) -> Result<JobsService> {
        let log = EventLog::open(deps.store.clone(), EVENTS, OUTBOX).await?;
        let apps_dir = config.apps.dir.clone().unwrap_or_else(|| deps.data_dir.join("apps"));
        let konnectors = Arc::new(crate::konnectors::Runtime::new(
            &config.konnectors,
            &deps.data_dir,
            apps_dir.clone(),
        )?);
        let _ = konnectors.bus.set(deps.bus.clone());
        let smtp_of_contexts = config.smtp.of_contexts(&deps.contexts).map_err(JobsError::BadRequest)?;
        let workers = Workers::new(&config, Some(konnectors.clone()), smtp_of_contexts);
        match config.role.as_str() {
            "all" => {}
            "runner" if deps.shared_queue => {}
            "runner" => {
                return Err(JobsError::BadRequest(
                    "jobs.role = \"runner\" takes its jobs from the shared queue: start it with --nats".into(),
                ));
            }
            other => {
                return Err(JobsError::BadRequest(format!(
                    "unknown jobs.role {other:?}: use all or runner"
                )));
            }
        }
        let queue: Arc<dyn Queue> = if deps.shared_queue {
            let timeouts = workers.all().map(|w| (w.name.to_string(), w.timeout)).collect();
            Arc::new(crate::bus_queue::BusQueue::new(deps.bus.clone(), timeouts))
        } else {
            Arc::new(MemoryQueue::new())
        };
        let webhooks = WebhookLimits::new(config.webhook_calls_per_minute);
        let (committer, commands) = tokio::sync::mpsc::unbounded_channel();
        let fetcher = crate::install::Fetcher::new(&config.apps.registry, config.apps.max_mib << 20);
        let service = JobsService {
            inner: Arc::new(Inner {
                config,
                store: deps.store,
                bus: deps.bus,
                log,
                mesh_key: deps.mesh_key,
                workers,
                queue,
                shared_queue: deps.shared_queue,
                keeper: std::sync::OnceLock::new(),
                stripes: Stripes::default(),
                finished: Notify::new(),
                schedule_changed: Notify::new(),
                webhooks,
                committer,
                konnectors,
                event_triggers: Default::default(),
                fetcher,
                apps_dir,
                contexts: deps.contexts,
            }),
        };
        crate::committer::spawn(Arc::downgrade(&service.inner), commands);
        Ok(service)
    }

    /// The projection, to rebuild from the log.
    pub async fn projection(store: Arc<dyn Store>) -> Result<JobsProjection> {
        Ok(JobsProjection::new(EventLog::open(store, EVENTS, OUTBOX).await?))
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The instance's writer lock: what a change reads and the change itself happen under it.
    pub(crate) async fn lock(&self, instance: &str) -> MutexGuard<'_, ()> {
        self.inner.stripes.of(instance).lock().await
    }

    /// Appends the entries' events and their projection in one atomic batch, durably. The
    /// caller holds the instance's stripe.
    pub(crate) async fn commit(&self, instance: &str, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let log = &self.inner.log;
        let first = log.next_seq(instance).await?;
        let last = first + entries.len() as u64 - 1;
        let triggers_change = entries.iter().any(|e| matches!(e, Entry::Trigger { .. }));
        let stamp = Stamp::now();
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        for (i, entry) in entries.into_iter().enumerate() {
            let (entity, verb, payload) = entry.into_event();
            project(&mut batch, instance, &payload);
            let event = envelope(
                instance,
                first + i as u64,
                Topic::Jobs { entity, verb: &verb },
                payload,
                &stamp,
            );
            log.append(&mut batch, &mut appended, &event);
        }
        let sealed = log.seal(&mut batch, appended);
        let committed = log
            .commit(self.inner.store.clone(), instance, last, batch, sealed)
            .await;
        if triggers_change {
            // After the commit (and whatever its outcome): a load from now on reads it.
            self.inner.event_triggers.forget(instance);
        }
        committed.map_err(JobsError::from)
    }

    /// The instance a call is for, once its ticket shows the auth service accepted a token of
    /// that very instance.
    pub(crate) fn check_ticket(&self, instance: &str, ticket: &str) -> Result<()> {
        if instance.is_empty() {
            return Err(JobsError::BadRequest("missing instance".into()));
        }
        self.inner
            .mesh_key
            .verify(instance, ticket, cocon_common::time::now_secs())
            .map_err(|e| match e {
                cocon_common::ticket::TicketError::Expired => JobsError::Expired,
                other => JobsError::Denied(other.to_string()),
            })
    }

    /// Forgets everything of a destroyed instance: its log, jobs, triggers and schedule.
    pub(crate) async fn purge_instance(&self, instance: &str) -> Result<()> {
        let _guard = self.lock(instance).await;
        let store = self.store();
        let mut batch = Batch::new();
        let shard = shard_of(instance);
        for trigger in TRIGGERS.rows(store, instance).await? {
            if trigger.due_us > 0 {
                let key = DueKey {
                    due_us: trigger.due_us,
                    kind: DueKind::Fire,
                    instance,
                    trigger: &trigger.id,
                };
                DUE.delete(&mut batch, shard, &key);
            }
            BY_TRIGGER.delete_partition(&mut batch, (instance, &trigger.id));
            SEEN.delete_partition(&mut batch, (instance, &trigger.id));
        }
        for pending in DEBOUNCE.rows(store, instance).await? {
            let key = DueKey {
                due_us: pending.due_us,
                kind: DueKind::Debounce,
                instance,
                trigger: &pending.trigger_id,
            };
            DUE.delete(&mut batch, shard, &key);
        }
        for job in JOBS.rows(store, instance).await? {
            PENDING.delete(&mut batch, &job.worker, (instance, &job.id));
            BY_WORKER.delete(&mut batch, (instance, &job.worker), &job.id);
            BY_TRIGGER.delete(&mut batch, (instance, &job.trigger_id), &job.id);
        }
        JOBS.delete_partition(&mut batch, instance);
        KONNECTORS.delete_partition(&mut batch, instance);
        APPS.delete_partition(&mut batch, instance);
        ACCOUNTS_CHANGED.delete_partition(&mut batch, instance);
        TRIGGERS.delete_partition(&mut batch, instance);
        DEBOUNCE.delete_partition(&mut batch, instance);
        self.inner.log.delete_instance(&mut batch, instance);
        self.store().apply(batch).await?;
        self.inner.log.forget(instance);
        self.inner.event_triggers.forget(instance);
        let _ = tokio::fs::remove_dir_all(self.inner.konnectors.dir.join(instance)).await;
        Ok(())
    }
}

/// A fresh id: 32 hex digits, in time order (job ids sort as they were queued).
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Rejects JSON that does not parse; `{}` for none.
pub(crate) fn json_or_empty(bytes: &[u8], what: &str) -> Result<bytes::Bytes> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(bytes::Bytes::from_static(b"{}"));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| JobsError::BadRequest(format!("{what} is not valid JSON: {e}")))?;
    Ok(bytes::Bytes::copy_from_slice(bytes))
}
