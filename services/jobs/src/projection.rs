//! What the jobs service reads, derived from its log: the jobs and their indexes (per worker,
//! per trigger, the pending ones), the triggers, the schedule and the debounce windows. One
//! function, [`project`], writes an event's rows; the live path calls it in the event's own
//! batch and [`JobsProjection`] replays the log through it.

use async_trait::async_trait;
use cocon_events::{EventLog, Projection, ProjectionError};
use cocon_proto::events::v1::envelope::Payload;
use cocon_proto::events::v1::{Envelope, Job, Trigger, TriggerDebounced};
use cocon_storage::{Batch, Store};

use crate::tables::*;

/// Writes the rows an event of `instance` changes. Needs no read: each event holds the whole
/// new state of what it changes, and the due time it replaces.
pub(crate) fn project(batch: &mut Batch, instance: &str, payload: &Payload) {
    match payload {
        Payload::JobChanged(change) => {
            let Some(job) = &change.job else { return };
            project_job(batch, instance, job, change.deleted)
        }
        Payload::TriggerChanged(change) => {
            let Some(trigger) = &change.trigger else { return };
            project_trigger(batch, instance, trigger, change.deleted, change.replaced_due_us)
        }
        Payload::TriggerDebounced(pending) => project_debounce(batch, instance, pending),
        Payload::KonnectorChanged(change) => {
            let Some(konnector) = &change.konnector else { return };
            if change.deleted {
                KONNECTORS.delete(batch, instance, &konnector.slug);
            } else {
                KONNECTORS.put(batch, instance, &konnector.slug, konnector);
            }
        }
        Payload::WebappChanged(change) => {
            let Some(app) = &change.webapp else { return };
            if change.deleted {
                APPS.delete(batch, instance, &app.slug);
            } else {
                APPS.put(batch, instance, &app.slug, app);
            }
        }
        _ => {}
    }
}

fn project_job(batch: &mut Batch, instance: &str, job: &Job, deleted: bool) {
    let id = job.id.as_str();
    if deleted {
        JOBS.delete(batch, instance, id);
        BY_WORKER.delete(batch, (instance, &job.worker), id);
        if !job.trigger_id.is_empty() {
            BY_TRIGGER.delete(batch, (instance, &job.trigger_id), id);
        }
        PENDING.delete(batch, &job.worker, (instance, id));
        return;
    }
    JOBS.put(batch, instance, id, job);
    BY_WORKER.put(batch, (instance, &job.worker), id, &());
    if !job.trigger_id.is_empty() {
        BY_TRIGGER.put(batch, (instance, &job.trigger_id), id, &());
    }
    if matches!(job.state.as_str(), "queued" | "running") {
        PENDING.put(batch, &job.worker, (instance, id), &());
    } else {
        PENDING.delete(batch, &job.worker, (instance, id));
    }
}

fn project_trigger(batch: &mut Batch, instance: &str, trigger: &Trigger, deleted: bool, replaced_due_us: i64) {
    let shard = shard_of(instance);
    let due_key = |due_us| DueKey {
        due_us,
        kind: DueKind::Fire,
        instance,
        trigger: &trigger.id,
    };
    if replaced_due_us > 0 && (deleted || replaced_due_us != trigger.due_us) {
        DUE.delete(batch, shard, &due_key(replaced_due_us));
    }
    if deleted {
        TRIGGERS.delete(batch, instance, &trigger.id);
        DEBOUNCE.delete(batch, instance, &trigger.id);
        SEEN.delete_partition(batch, (instance, &trigger.id));
        return;
    }
    TRIGGERS.put(batch, instance, &trigger.id, trigger);
    if trigger.due_us > 0 {
        DUE.put(batch, shard, &due_key(trigger.due_us), &());
    }
}

fn project_debounce(batch: &mut Batch, instance: &str, pending: &TriggerDebounced) {
    let shard = shard_of(instance);
    let due_key = |due_us| DueKey {
        due_us,
        kind: DueKind::Debounce,
        instance,
        trigger: &pending.trigger_id,
    };
    if pending.replaced_due_us > 0 && (pending.closed || pending.replaced_due_us != pending.due_us) {
        DUE.delete(batch, shard, &due_key(pending.replaced_due_us));
    }
    if pending.closed {
        DEBOUNCE.delete(batch, instance, &pending.trigger_id);
        return;
    }
    DEBOUNCE.put(batch, instance, &pending.trigger_id, pending);
    DUE.put(batch, shard, &due_key(pending.due_us), &());
}

/// The jobs projection, replayed: its rows need no reads, so events are written in order, a
/// thousand per batch.
pub struct JobsProjection {
    log: EventLog,
    batch: Batch,
    pending: usize,
}

impl JobsProjection {
    pub(crate) fn new(log: EventLog) -> JobsProjection {
        JobsProjection {
            log,
            batch: Batch::new(),
            pending: 0,
        }
    }
}

#[async_trait]
impl Projection for JobsProjection {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn log(&self) -> &EventLog {
        &self.log
    }

    fn tables(&self) -> &'static [&'static str] {
        &PROJECTIONS
    }

    async fn apply(&mut self, store: &dyn Store, event: Envelope) -> Result<(), ProjectionError> {
        if let Some(payload) = &event.payload {
            project(&mut self.batch, &event.instance, payload);
            self.pending += 1;
        }
        if self.pending >= 1000 {
            self.finish(store).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, store: &dyn Store) -> Result<(), ProjectionError> {
        let batch = std::mem::take(&mut self.batch);
        self.pending = 0;
        if !batch.is_empty() {
            store.apply(batch).await?;
        }
        Ok(())
    }
}
