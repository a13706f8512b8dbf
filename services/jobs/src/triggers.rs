//! Triggers: created, read with their state, changed, deleted, launched by hand; fired by the
//! scheduler (`scheduler.rs`), by webhooks and by the events of the bus (`consumer.rs`), at
//! once or when their debounce window closes.

use bytes::Bytes;
use cocon_common::time::{now_us, parse_go_duration};
use cocon_proto::events::v1::{Job, Trigger, TriggerDebounced};
use cocon_storage::ScanRange;
use sha2::{Digest, Sha256};

use crate::error::{JobsError, Result};
use crate::jobs::{DONE, ERRORED, NewJob};
use crate::service::{Entry, JobsService, json_or_empty, new_id};
use crate::syntax::{self, Schedule};
use crate::tables::*;

/// A debounced webhook keeps at most this many payloads; later calls in the window are
/// counted in the log but their bodies dropped.
const MAX_DEBOUNCED_PAYLOADS: usize = 1000;

/// What a new trigger is made of.
#[derive(Debug, Clone, Default)]
pub struct NewTrigger {
    pub kind: String,
    pub arguments: String,
    pub worker: String,
    pub message: Bytes,
    pub debounce: String,
    pub has_options: bool,
    pub max_exec_count: u32,
    pub timeout_ns: u64,
}

/// What a trigger's jobs did (cozy-stack's `current_state`, computed from its last jobs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerState {
    pub status: String,
    pub last_success_us: i64,
    pub last_successful_job_id: String,
    pub last_execution_us: i64,
    pub last_executed_job_id: String,
    pub last_failure_us: i64,
    pub last_failed_job_id: String,
    pub last_error: String,
    pub last_manual_execution_us: i64,
    pub last_manual_job_id: String,
    pub consecutive_failures: u32,
    /// Konnectors' health (`health.rs`).
    pub last_error_kind: String,
    pub held: String,
    pub next_try_us: i64,
}

/// The seed of a periodic trigger's slot.
fn seed(instance: &str, id: &str) -> String {
    format!("{instance}/{id}")
}

fn schedule_of(instance: &str, trigger: &Trigger) -> Result<Schedule> {
    syntax::parse(
        &trigger.r#type,
        &trigger.arguments,
        &trigger.cron,
        &seed(instance, &trigger.id),
    )
    .map(|(s, _)| s)
}

impl JobsService {
    pub(crate) async fn create_trigger(
        &self,
        instance: &str,
        domain: &str,
        new: NewTrigger,
        trusted: bool,
    ) -> Result<Trigger> {
        self.check_worker(&new.worker, trusted)?;
        crate::jobs::check_message(&new.worker, &new.message, trusted)?;
        if (new.kind == "@client") != (new.worker == "client") {
            return Err(JobsError::BadRequest(
                "a @client trigger runs the client worker, and the client worker only @client triggers".into(),
            ));
        }
        if !new.debounce.is_empty() && parse_go_duration(&new.debounce).is_none() {
            return Err(JobsError::BadRequest(format!(
                "invalid debounce {:?}: use a duration such as 10s or 5m",
                new.debounce
            )));
        }
        let message = json_or_empty(&new.message, "the trigger's message")?;
        let id = new_id();
        let now = now_us();
        let (schedule, cron) = syntax::parse(&new.kind, &new.arguments, "", &seed(instance, &id))?;
        let trigger = Trigger {
            id,
            r#type: new.kind,
            arguments: new.arguments,
            worker: new.worker,
            message,
            debounce: new.debounce,
            has_options: new.has_options,
            max_exec_count: new.max_exec_count,
            timeout_ns: new.timeout_ns,
            created_at_us: now,
            updated_at_us: now,
            due_us: schedule.first_due(now),
            cron,
            domain: domain.to_string(),
        };
        {
            let _guard = self.lock(instance).await;
            self.commit(
                instance,
                vec![Entry::Trigger {
                    trigger: trigger.clone(),
                    verb: "created",
                    replaced_due_us: 0,
                }],
            )
            .await?;
        }
        if trigger.due_us > 0 {
            self.inner.schedule_changed.notify_one();
        }
        Ok(trigger)
    }

    pub(crate) async fn get_trigger(&self, instance: &str, id: &str) -> Result<Trigger> {
        TRIGGERS
            .get(self.store(), instance, id)
            .await?
            .ok_or_else(|| JobsError::NotFound(format!("there is no trigger {id}")))
    }

    /// The trigger's jobs, newest first.
    pub(crate) async fn trigger_jobs(&self, instance: &str, id: &str, limit: usize) -> Result<Vec<Job>> {
        let rows = BY_TRIGGER
            .scan(
                self.store(),
                (instance, id),
                ScanRange::all().reverse(true).limit(limit),
            )
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for (sort, ()) in rows {
            if let Some(job) = JOBS.get(self.store(), instance, &last_part(&sort)).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// What the trigger's last jobs did, and, for a konnector, its health.
    pub(crate) async fn trigger_state(&self, instance: &str, trigger: &Trigger) -> Result<TriggerState> {
        let mut state = self.jobs_state(instance, &trigger.id).await?;
        if !state.last_error.is_empty() {
            state.last_error_kind = crate::health::error_kind(&state.last_error).to_string();
        }
        state.next_try_us = trigger.due_us;
        if let Some(hold) = self.hold_of(instance, trigger, &state).await? {
            state.held = hold.reason().to_string();
            state.next_try_us = match hold {
                crate::health::Hold::UntilAccountChanges(_) => 0,
                crate::health::Hold::Until(until) => {
                    // The first scheduled time after the wait (the schedule does not move).
                    let schedule = schedule_of(instance, trigger).ok();
                    let mut next = trigger.due_us;
                    while next > 0 && next < until {
                        match schedule.as_ref().and_then(|s| s.next_due(next, next)) {
                            Some(n) if n > next => next = n,
                            _ => break,
                        }
                    }
                    next
                }
            };
        }
        Ok(state)
    }

    /// What the trigger's last jobs did (cozy-stack's `current_state`).
    async fn jobs_state(&self, instance: &str, id: &str) -> Result<TriggerState> {
        let jobs = self.trigger_jobs(instance, id, 100).await?;
        let mut state = TriggerState::default();
        let mut failures_counted = false;
        for job in &jobs {
            if state.status.is_empty() {
                state.status = job.state.clone();
                state.last_execution_us = job.queued_at_us;
                state.last_executed_job_id = job.id.clone();
            }
            if job.manual && state.last_manual_job_id.is_empty() {
                state.last_manual_execution_us = job.queued_at_us;
                state.last_manual_job_id = job.id.clone();
            }
            match job.state.as_str() {
                DONE => {
                    failures_counted = true;
                    if state.last_successful_job_id.is_empty() {
                        state.last_success_us = job.finished_at_us;
                        state.last_successful_job_id = job.id.clone();
                    }
                }
                ERRORED => {
                    if !failures_counted {
                        state.consecutive_failures += 1;
                    }
                    if state.last_failed_job_id.is_empty() {
                        state.last_failure_us = job.finished_at_us;
                        state.last_failed_job_id = job.id.clone();
                        state.last_error = job.error.clone();
                    }
                }
                _ => {}
            }
        }
        Ok(state)
    }

    /// The instance's triggers of `workers` and `types` (all when empty), in id order.
    pub(crate) async fn list_triggers(
        &self,
        instance: &str,
        workers: &[String],
        types: &[String],
    ) -> Result<Vec<Trigger>> {
        Ok(TRIGGERS
            .rows(self.store(), instance)
            .await?
            .into_iter()
            .filter(|t| workers.is_empty() || workers.contains(&t.worker))
            .filter(|t| types.is_empty() || types.contains(&t.r#type))
            .collect())
    }

    /// Changes a trigger's arguments (`@cron` only, as cozy-stack) and/or message.
    pub(crate) async fn patch_trigger(
        &self,
        instance: &str,
        id: &str,
        arguments: Option<String>,
        message: Option<Bytes>,
        trusted: bool,
    ) -> Result<Trigger> {
        let _guard = self.lock(instance).await;
        let mut trigger = self.get_trigger(instance, id).await?;
        if let Some(message) = &message {
            crate::jobs::check_message(&trigger.worker, message, trusted)?;
        }
        let replaced_due_us = trigger.due_us;
        if let Some(arguments) = arguments {
            if trigger.r#type != "@cron" {
                return Err(JobsError::BadRequest(format!(
                    "only the arguments of a @cron trigger change; this one is {}",
                    trigger.r#type
                )));
            }
            let (schedule, _) = syntax::parse("@cron", &arguments, "", "")?;
            trigger.arguments = arguments;
            trigger.due_us = schedule.first_due(now_us());
        }
        if let Some(message) = message {
            trigger.message = json_or_empty(&message, "the trigger's message")?;
        }
        trigger.updated_at_us = now_us();
        self.commit(
            instance,
            vec![Entry::Trigger {
                trigger: trigger.clone(),
                verb: "updated",
                replaced_due_us,
            }],
        )
        .await?;
        self.inner.schedule_changed.notify_one();
        Ok(trigger)
    }

    pub(crate) async fn delete_trigger(&self, instance: &str, id: &str) -> Result<()> {
        let _guard = self.lock(instance).await;
        let trigger = self.get_trigger(instance, id).await?;
        let mut entries = Vec::with_capacity(2);
        if let Some(pending) = DEBOUNCE.get(self.store(), instance, id).await? {
            entries.push(Entry::Debounce(TriggerDebounced {
                trigger_id: id.to_string(),
                replaced_due_us: pending.due_us,
                closed: true,
                ..TriggerDebounced::default()
            }));
        }
        let replaced_due_us = trigger.due_us;
        entries.push(Entry::Trigger {
            trigger,
            verb: "deleted",
            replaced_due_us,
        });
        self.commit(instance, entries).await
    }

    /// A job of the trigger, as the trigger makes it.
    fn job_of(&self, trigger: &Trigger) -> NewJob {
        NewJob {
            domain: trigger.domain.clone(),
            worker: trigger.worker.clone(),
            message: trigger.message.clone(),
            max_exec_count: if trigger.has_options { trigger.max_exec_count } else { 0 },
            timeout_ms: if trigger.has_options {
                trigger.timeout_ns / 1_000_000
            } else {
                0
            },
            trigger_id: trigger.id.clone(),
            ..NewJob::default()
        }
    }

    /// Queues a job from the trigger now (`POST /jobs/triggers/:id/launch`).
    pub(crate) async fn launch_trigger(&self, instance: &str, id: &str) -> Result<Job> {
        let trigger = self.get_trigger(instance, id).await?;
        let mut new = self.job_of(&trigger);
        new.manual = true;
        self.push_job(instance, new).await
    }

    /// What firing a scheduled trigger for its due time `due` commits: its job, and the
    /// trigger moved to its next time (or deleted, for one-shots). Nothing when that due time
    /// was handled already (another pass, a trigger changed since), so a time fires once. The
    /// caller holds the instance's lock and commits.
    pub(crate) async fn fire_entries(&self, instance: &str, id: &str, due: i64) -> Result<(Vec<Entry>, Option<Job>)> {
        let Some(mut trigger) = TRIGGERS.get(self.store(), instance, id).await? else {
            return Ok((Vec::new(), None));
        };
        if trigger.due_us != due {
            return Ok((Vec::new(), None));
        }
        let next = match schedule_of(instance, &trigger) {
            Ok(schedule) if schedule.one_shot() => None,
            Ok(schedule) => schedule.next_due(due, now_us()),
            Err(err) => {
                tracing::warn!(instance, trigger = id, error = %err, "a stored trigger no longer reads; it stops firing");
                Some(0)
            }
        };
        // A konnector held (its login failed, or it failed again and again) skips this time.
        let held = if trigger.worker == "konnector" {
            let state = self.jobs_state(instance, id).await?;
            self.hold_of(instance, &trigger, &state).await?
        } else {
            None
        };
        let job = match &held {
            Some(hold) => {
                metrics::counter!("cocon_konnector_runs_held_total", "reason" => hold.reason()).increment(1);
                tracing::info!(instance, trigger = id, reason = hold.reason(), "konnector run held");
                None
            }
            None => Some(self.new_job(self.job_of(&trigger))),
        };
        let mut entries: Vec<Entry> = job.iter().cloned().map(Entry::job).collect();
        match next {
            None => entries.push(Entry::Trigger {
                trigger,
                verb: "deleted",
                replaced_due_us: due,
            }),
            Some(next) => {
                trigger.due_us = next;
                entries.push(Entry::Trigger {
                    trigger,
                    verb: "updated",
                    replaced_due_us: due,
                });
            }
        }
        Ok((entries, job))
    }

    /// Queues the job of a trigger that an event or a webhook call set off, or holds it in the
    /// trigger's debounce window: the window's first event is kept (`@event`), and a webhook's
    /// payloads are all kept, in order.
    pub(crate) async fn set_off(&self, instance: &str, trigger: &Trigger, event: Bytes, payload: Bytes) -> Result<()> {
        let Some(debounce) = parse_go_duration(&trigger.debounce).filter(|d| !d.is_zero()) else {
            let mut new = self.job_of(trigger);
            new.event = event;
            new.payload = payload;
            self.push_job(instance, new).await?;
            return Ok(());
        };
        let _guard = self.lock(instance).await;
        let pending = match DEBOUNCE.get(self.store(), instance, &trigger.id).await? {
            Some(mut pending) => {
                if payload.is_empty() || pending.payloads.len() >= MAX_DEBOUNCED_PAYLOADS {
                    // Nothing new to keep: the window's first event stands for the others.
                    return Ok(());
                }
                pending.payloads.push(payload);
                pending.replaced_due_us = pending.due_us;
                pending
            }
            None => TriggerDebounced {
                trigger_id: trigger.id.clone(),
                due_us: now_us() + debounce.as_micros() as i64,
                event,
                payloads: if payload.is_empty() { Vec::new() } else { vec![payload] },
                replaced_due_us: 0,
                closed: false,
            },
        };
        self.commit(instance, vec![Entry::Debounce(pending)]).await?;
        self.inner.schedule_changed.notify_one();
        Ok(())
    }

    /// [`JobsService::set_off`] for an event, whose job (when not debounced) has the id
    /// `job_id`, so that the event delivered again does not queue it twice.
    pub(crate) async fn set_off_once(
        &self,
        instance: &str,
        trigger: &Trigger,
        event: Bytes,
        job_id: String,
    ) -> Result<()> {
        if parse_go_duration(&trigger.debounce).is_some_and(|d| !d.is_zero()) {
            return self.set_off(instance, trigger, event, Bytes::new()).await;
        }
        let mut new = self.job_of(trigger);
        new.id = job_id;
        new.event = event;
        self.push_job(instance, new).await.map(|_| ())
    }

    /// Whether a document's field differs from the value last seen for it by the trigger
    /// (`!=` rules); records the new one.
    pub(crate) async fn field_changed(
        &self,
        instance: &str,
        trigger: &str,
        doc_id: &str,
        value: &serde_json::Value,
    ) -> Result<bool> {
        let digest: [u8; 32] = Sha256::digest(serde_json::to_vec(value).expect("JSON writes")).into();
        let seen = SEEN.get(self.store(), (instance, trigger), doc_id).await?;
        if seen == Some(digest) {
            return Ok(false);
        }
        let mut batch = cocon_storage::Batch::new();
        SEEN.put(&mut batch, (instance, trigger), doc_id, &digest);
        self.store().apply(batch).await?;
        Ok(true)
    }

    /// What closing a trigger's debounce window due at `due` commits: the window closed, and
    /// the job with what it held. The caller holds the instance's lock and commits.
    pub(crate) async fn close_entries(&self, instance: &str, id: &str, due: i64) -> Result<(Vec<Entry>, Option<Job>)> {
        let Some(pending) = DEBOUNCE.get(self.store(), instance, id).await? else {
            return Ok((Vec::new(), None));
        };
        if pending.due_us != due {
            return Ok((Vec::new(), None));
        }
        let mut entries = vec![Entry::Debounce(TriggerDebounced {
            trigger_id: id.to_string(),
            replaced_due_us: due,
            closed: true,
            ..TriggerDebounced::default()
        })];
        let job = match TRIGGERS.get(self.store(), instance, id).await? {
            Some(trigger) => {
                let mut new = self.job_of(&trigger);
                new.debounced = true;
                new.event = pending.event;
                if !pending.payloads.is_empty() {
                    new.payload = merged_payloads(&pending.payloads);
                }
                let job = self.new_job(new);
                entries.push(Entry::job(job.clone()));
                Some(job)
            }
            None => None,
        };
        Ok((entries, job))
    }

    /// A call of a webhook (`POST /jobs/webhooks/:id`): the body is its job's payload.
    pub(crate) async fn call_webhook(&self, instance: &str, id: &str, payload: Bytes, manual: bool) -> Result<()> {
        let not_found = || JobsError::NotFound(format!("there is no webhook {id}"));
        let trigger = TRIGGERS.get(self.store(), instance, id).await?.ok_or_else(not_found)?;
        if trigger.r#type != "@webhook" {
            return Err(not_found());
        }
        if !self.inner.webhooks.allow(instance, id) {
            return Err(JobsError::TooMany(format!(
                "webhook {id} was called more than {} times in a minute; call it again later",
                self.inner.config.webhook_calls_per_minute
            )));
        }
        let payload = json_or_empty(&payload, "the webhook's body")?;
        if manual {
            let mut new = self.job_of(&trigger);
            new.payload = payload;
            new.manual = true;
            self.push_job(instance, new).await?;
            return Ok(());
        }
        self.set_off(instance, &trigger, Bytes::new(), payload).await
    }
}

/// `{"payloads":[p1,p2,…]}`, from payloads that are each JSON already.
fn merged_payloads(payloads: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(16 + payloads.iter().map(|p| p.len() + 1).sum::<usize>());
    out.extend_from_slice(b"{\"payloads\":[");
    for (i, p) in payloads.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}
