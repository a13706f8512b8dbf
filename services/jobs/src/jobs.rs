//! Jobs: queued by a caller or a trigger, run by their worker, ended done or errored; read,
//! waited for, ended by a client (`client` jobs), purged and cleaned.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use cocon_common::time::now_us;
use cocon_proto::events::v1::Job;
use cocon_storage::{ScanRange, Schema};

use crate::error::{JobsError, Result};
use crate::queue::Queued;
use crate::service::{Entry, JobsService, new_id};
use crate::tables::*;

pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const DONE: &str = "done";
pub const ERRORED: &str = "errored";

/// At most this many jobs per state in a worker's queue listing (cozy-stack's).
const LISTED_PER_STATE: usize = 50;

/// What a new job is made of.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    /// Given for jobs that must be queued once whatever happens (an event delivered twice);
    /// empty for a fresh one.
    pub id: String,
    /// The instance's domain (cozy's `domain`, a konnector's COZY_URL).
    pub domain: String,
    pub worker: String,
    pub message: Bytes,
    pub max_exec_count: u32,
    pub timeout_ms: u64,
    pub manual: bool,
    pub forward_logs: bool,
    pub trigger_id: String,
    pub event: Bytes,
    pub payload: Bytes,
    pub debounced: bool,
}

/// Only the server and its command line send Cocon's own mails: a template speaks as Cocon,
/// and an app could dress a link of its own as a passphrase reset.
pub(crate) fn check_message(worker: &str, message: &[u8], trusted: bool) -> Result<()> {
    let names_template = || {
        serde_json::from_slice::<serde_json::Value>(message)
            .ok()
            .and_then(|m| m.get("template_name").and_then(|t| t.as_str()).map(|t| !t.is_empty()))
            .unwrap_or(false)
    };
    if worker == "sendmail" && !trusted && names_template() {
        return Err(JobsError::Denied(
            "only Cocon and its command line send template mails: send the mail's parts instead".into(),
        ));
    }
    Ok(())
}

impl JobsService {
    /// Checks that the worker exists and that the caller may queue its jobs.
    pub(crate) fn check_worker(&self, worker: &str, trusted: bool) -> Result<()> {
        let Some(w) = self.inner.workers.get(worker) else {
            return Err(JobsError::NotFound(format!("there is no worker named {worker:?}")));
        };
        if w.reserved && !trusted {
            return Err(JobsError::Denied(format!(
                "the {worker} worker is reserved to the server and its command line"
            )));
        }
        Ok(())
    }

    /// A job as it is queued: a `client` job starts running at once (the client runs it).
    pub(crate) fn new_job(&self, new: NewJob) -> Job {
        let now = now_us();
        let client = self.inner.workers.get(&new.worker).is_none_or(|w| w.work.is_none());
        Job {
            id: if new.id.is_empty() { new_id() } else { new.id },
            worker: new.worker,
            trigger_id: new.trigger_id,
            message: new.message,
            event: new.event,
            payload: new.payload,
            manual: new.manual,
            debounced: new.debounced,
            forward_logs: new.forward_logs,
            max_exec_count: new.max_exec_count,
            timeout_ms: new.timeout_ms,
            state: if client { RUNNING } else { QUEUED }.to_string(),
            queued_at_us: now,
            started_at_us: if client { now } else { 0 },
            run_started_at_us: if client { now } else { 0 },
            finished_at_us: 0,
            error: String::new(),
            exec_count: 0,
            domain: new.domain,
        }
    }

    /// Hands jobs just committed to their workers' queues.
    pub(crate) fn enqueue(&self, instance: &str, jobs: &[Job]) {
        for job in jobs.iter().filter(|j| j.state == QUEUED) {
            metrics::counter!("cocon_jobs_queued_total", "worker" => job.worker.clone()).increment(1);
            self.inner.queue.push(
                &job.worker,
                Queued {
                    instance: instance.to_string(),
                    id: job.id.clone(),
                },
            );
        }
    }

    /// Queues a job; one with a given id that exists already is answered as it is.
    pub(crate) async fn push_job(&self, instance: &str, new: NewJob) -> Result<Job> {
        let given_id = !new.id.is_empty();
        let job = self.new_job(new);
        if given_id {
            let _guard = self.lock(instance).await;
            if let Some(existing) = JOBS.get(self.store(), instance, &job.id).await? {
                return Ok(existing);
            }
            self.commit(instance, vec![Entry::job(job.clone())]).await?;
        } else {
            // A fresh id: nothing to read first, so it commits with whatever else waits.
            self.commit_grouped(instance, vec![Entry::job(job.clone())]).await?;
        }
        self.enqueue(instance, std::slice::from_ref(&job));
        Ok(job)
    }

    pub(crate) async fn get_job(&self, instance: &str, id: &str) -> Result<Job> {
        JOBS.get(self.store(), instance, id)
            .await?
            .ok_or_else(|| JobsError::NotFound(format!("there is no job {id}")))
    }

    /// Answers the job once it is done or errored, or as it is when `max_wait` passes.
    pub(crate) async fn wait_job(&self, instance: &str, id: &str, max_wait: Duration) -> Result<Job> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Registered before the read: an end between the read and the wait wakes it.
            let finished = self.inner.finished.notified();
            let job = self.get_job(instance, id).await?;
            if matches!(job.state.as_str(), DONE | ERRORED) {
                return Ok(job);
            }
            // A job ended by another replica wakes no one here: look again every second.
            let wake = (deadline).min(tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = finished => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.get_job(instance, id).await;
            }
        }
    }

    /// A worker's jobs that are queued or running, oldest first, at most 50 of each.
    pub(crate) async fn list_queue(&self, instance: &str, worker: &str) -> Result<Vec<Job>> {
        let rows = PENDING
            .scan(self.store(), worker, ScanRange::prefix(&Pending::sort((instance, ""))))
            .await?;
        let (mut queued, mut running) = (0, 0);
        let mut jobs = Vec::new();
        for (sort, ()) in rows {
            let Some(job) = JOBS.get(self.store(), instance, &last_part(&sort)).await? else {
                continue;
            };
            let count = if job.state == QUEUED { &mut queued } else { &mut running };
            *count += 1;
            if *count <= LISTED_PER_STATE {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    /// Ends a job a client ran (`PATCH /jobs/:id`): done, or errored with its error.
    pub(crate) async fn patch_job(&self, instance: &str, id: &str, state: &str, error: &str) -> Result<Job> {
        if !matches!(state, DONE | ERRORED) {
            return Err(JobsError::BadRequest(format!(
                "a job can only be set done or errored, not {state:?}"
            )));
        }
        let _guard = self.lock(instance).await;
        let mut job = self.get_job(instance, id).await?;
        if self.inner.workers.get(&job.worker).is_some_and(|w| w.work.is_some()) {
            return Err(JobsError::Denied(format!(
                "job {id} is run by the server's {} worker; only client jobs are ended by their client",
                job.worker
            )));
        }
        if matches!(job.state.as_str(), DONE | ERRORED) {
            return Err(JobsError::Conflict(format!(
                "job {id} has ended already ({})",
                job.state
            )));
        }
        job.state = state.to_string();
        job.error = if state == ERRORED {
            error.to_string()
        } else {
            String::new()
        };
        job.finished_at_us = now_us();
        self.commit(instance, vec![Entry::job(job.clone())]).await?;
        self.inner.finished.notify_waiters();
        Ok(job)
    }

    /// Removes the finished jobs that ended before `older_than` ago, of `workers` (all when
    /// empty), keeping each worker's last job of each state. Answers how many went.
    pub(crate) async fn purge_jobs(&self, instance: &str, older_than: Duration, workers: &[String]) -> Result<u64> {
        let cutoff = now_us() - older_than.as_micros() as i64;
        let _guard = self.lock(instance).await;
        let mut jobs = JOBS.rows(self.store(), instance).await?;
        // Newest first: the first of each (worker, state) is kept.
        jobs.reverse();
        let mut kept: HashSet<(String, String)> = HashSet::new();
        let mut gone = Vec::new();
        for job in jobs {
            let first_of_kind = kept.insert((job.worker.clone(), job.state.clone()));
            let finished = matches!(job.state.as_str(), DONE | ERRORED);
            let selected = workers.is_empty() || workers.contains(&job.worker);
            if finished && selected && !first_of_kind && job.finished_at_us < cutoff {
                gone.push(Entry::Job { job, deleted: true });
            }
        }
        let count = gone.len() as u64;
        let mut gone = gone.into_iter().peekable();
        while gone.peek().is_some() {
            self.commit(instance, gone.by_ref().take(500).collect()).await?;
        }
        Ok(count)
    }

    /// Marks as done the jobs queued or running for more than an hour (cozy's `/jobs/clean`,
    /// for jobs a crashed runner left behind). Answers how many.
    pub(crate) async fn clean_jobs(&self, instance: &str) -> Result<u64> {
        let cutoff = now_us() - 3_600_000_000;
        let _guard = self.lock(instance).await;
        let mut cleaned = Vec::new();
        for mut job in JOBS.rows(self.store(), instance).await? {
            let since = if job.started_at_us > 0 {
                job.started_at_us
            } else {
                job.queued_at_us
            };
            if matches!(job.state.as_str(), QUEUED | RUNNING) && since < cutoff {
                job.state = DONE.to_string();
                job.finished_at_us = now_us();
                cleaned.push(Entry::job(job));
            }
        }
        let count = cleaned.len() as u64;
        self.commit(instance, cleaned).await?;
        self.inner.finished.notify_waiters();
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::check_message;

    #[test]
    fn test_only_the_server_and_its_command_line_send_template_mails() {
        let template = br#"{"mode":"noreply","template_name":"passphrase_reset"}"#;
        let parts = br#"{"mode":"noreply","parts":[{"type":"text/plain","body":"hi"}]}"#;
        assert!(check_message("sendmail", template, false).is_err());
        assert!(check_message("sendmail", template, true).is_ok());
        assert!(check_message("sendmail", parts, false).is_ok());
        assert!(
            check_message("log", template, false).is_ok(),
            "other workers' messages are theirs"
        );
        assert!(
            check_message("sendmail", b"not json", false).is_ok(),
            "the worker refuses it itself"
        );
    }
}
