//! Runs the queued jobs: one dispatcher per worker takes its jobs from the queue and runs up to
//! the worker's concurrency at once, each with its time limit; a failed run goes back to queued
//! and is retried after a growing delay until the job's runs are spent, then the job ends
//! errored. A run's start and end are recorded by the process that keeps the jobs: this one, or
//! in a runner process (`jobs.role = "runner"`) the keeper, over gRPC.
//!
//! A job offered twice (a restart offers the pending jobs again; the shared queue hands a
//! message to another process once its holder is silent past the time limit) starts only when
//! it is queued, or running for longer than its time limit (its process died): never two runs
//! at once. Runs lost that way count, with a little slack: a job that kills its process every
//! time ends errored instead of looping.

use crate::committer::Expect;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cocon_common::Shutdown;
use cocon_common::time::now_us;
use cocon_proto::events::v1::{Job, Konnector, Webapp};
use cocon_proto::jobs::v1 as pb;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{JobsError, Result};
use crate::jobs::{DONE, ERRORED, QUEUED, RUNNING};
use crate::queue::{Lease, Queued};
use crate::service::{Entry, JobsService};
use crate::tables::{APPS, KONNECTORS, PENDING, last_part};
use crate::workers::{Failure, Run};

impl JobsService {
    /// The dispatchers of every worker that runs here, after queueing again the jobs the last
    /// run of the process left queued or running.
    pub(crate) fn spawn_runners(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        let svc = self.clone();
        let names: Vec<&'static str> = self
            .inner
            .workers
            .all()
            .filter(|w| w.work.is_some())
            .map(|w| w.name)
            .collect();
        names
            .into_iter()
            .map(|name| {
                let svc = svc.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if svc.inner.config.is_runner() {
                        // The keeper offers the pending jobs again at its start.
                    } else if let Err(err) = svc.requeue_pending(name).await {
                        tracing::error!(worker = name, error = %err, "cannot queue again the jobs left by the last run; they wait for the next start");
                    }
                    svc.dispatch(name, shutdown).await
                })
            })
            .collect()
    }

    async fn requeue_pending(&self, worker: &str) -> Result<()> {
        let rows = PENDING
            .scan(self.store(), worker, cocon_storage::ScanRange::all())
            .await?;
        let count = rows.len();
        for (sort, ()) in rows {
            let text = String::from_utf8_lossy(&sort).into_owned();
            let Some((instance, _)) = text.split_once('\0') else {
                continue;
            };
            self.inner.queue.push(
                worker,
                Queued {
                    instance: instance.to_string(),
                    id: last_part(&sort),
                },
            );
        }
        if count > 0 {
            tracing::info!(worker, jobs = count, "queued again the jobs left by the last run");
        }
        Ok(())
    }

    async fn dispatch(&self, worker: &'static str, shutdown: Shutdown) {
        let concurrency = self.inner.workers.get(worker).map_or(1, |w| w.concurrency) as usize;
        if concurrency == 0 {
            if !self.inner.shared_queue {
                tracing::warn!(
                    worker,
                    "concurrency 0 and no other process to run them: this worker's jobs stay queued"
                );
            }
            return;
        }
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("never closed"),
                _ = shutdown.wait() => break,
            };
            let lease = tokio::select! {
                l = self.inner.queue.take(worker) => l,
                _ = shutdown.wait() => break,
            };
            let svc = self.clone();
            running.spawn(async move {
                svc.run_lease(worker, lease).await;
                drop(permit);
            });
            // Reap what ended, so the set holds only running jobs.
            while running.try_join_next().is_some() {}
        }
        // Drain: the jobs running finish (each within its time limit); queued ones wait for
        // the next start, durably.
        while running.join_next().await.is_some() {}
    }

    async fn run_lease(&self, worker_name: &'static str, lease: Lease) {
        let Some(worker) = self.inner.workers.get(worker_name) else {
            lease.done();
            return;
        };
        let Queued { instance, id } = lease.job.clone();
        let Started { job, konnector, app } = match self.start_run(&instance, &id).await {
            Ok(Start::Run(started)) => *started,
            Ok(Start::Skip) => {
                lease.done();
                return;
            }
            Ok(Start::Later(delay)) => {
                lease.retry(delay);
                return;
            }
            Err(err) => {
                tracing::warn!(instance, job = id, error = %err, "cannot start a job; it is tried again");
                lease.retry(worker.retry_delay(1));
                return;
            }
        };
        let (max_exec, timeout) = worker.limits_of(&job);
        let work = worker.work.clone().expect("dispatched workers run here");
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            timeout,
            work.run(Run {
                instance: &instance,
                job: &job,
                konnector: konnector.as_ref(),
                app: app.as_ref(),
                deadline: started + timeout,
            }),
        )
        .await;
        metrics::histogram!("cocon_jobs_run_seconds", "worker" => worker_name).record(started.elapsed().as_secs_f64());
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(failure)) => Some(failure),
            Err(_) => Some(Failure::transient(format!(
                "the job ran past its time limit ({} s) and was stopped",
                timeout.as_secs_f64()
            ))),
        };
        let result = match failure {
            None => self.end_run(&instance, job, None, false).await,
            Some(f) if f.retry && job.exec_count < max_exec => {
                tracing::info!(instance, job = id, worker = worker_name, runs = job.exec_count, error = %f.message, "job failed; it runs again");
                let delay = worker.retry_delay(job.exec_count);
                if let Err(err) = self.end_run(&instance, job, Some(f.message), true).await {
                    tracing::warn!(instance, job = id, error = %err, "cannot record a failed run; the job is tried again as it is");
                }
                lease.retry(delay);
                return;
            }
            Some(f) => {
                tracing::info!(instance, job = id, worker = worker_name, error = %f.message, "job errored");
                self.end_run(&instance, job, Some(f.message), false).await
            }
        };
        match result {
            Ok(()) => lease.done(),
            Err(err) => {
                // The run happened but its end is not recorded: the job stays running, and
                // runs again at the next start of the process, or is cleaned by /jobs/clean.
                tracing::error!(instance, job = id, error = %err, "cannot record a job's end");
                lease.done();
            }
        }
    }

    /// Records a run's start where the jobs are kept.
    async fn start_run(&self, instance: &str, id: &str) -> Result<Start> {
        let Some(keeper) = self.inner.keeper.get() else {
            return self.start(instance, id).await;
        };
        let reply = keeper
            .clone()
            .start_run(pb::StartRunRequest {
                scope: Some(self.own_scope(instance)),
                job_id: id.to_string(),
            })
            .await
            .map_err(|s| JobsError::Unavailable(format!("the jobs' keeper: {}", s.message())))?
            .into_inner();
        Ok(match reply.job {
            Some(job) => Start::Run(Box::new(Started {
                job,
                konnector: reply.konnector,
                app: reply.app,
            })),
            None if reply.check_again_ms > 0 => Start::Later(Duration::from_millis(reply.check_again_ms)),
            None => Start::Skip,
        })
    }

    /// Records a run's end where the jobs are kept: done, errored with `error`, or (`retry`)
    /// back to queued for another run.
    async fn end_run(&self, instance: &str, job: Job, error: Option<String>, retry: bool) -> Result<()> {
        let Some(keeper) = self.inner.keeper.get() else {
            return self.end(instance, job, error, retry).await;
        };
        keeper
            .clone()
            .end_run(pb::EndRunRequest {
                scope: Some(self.own_scope(instance)),
                job: Some(job),
                error: error.unwrap_or_default(),
                retry,
            })
            .await
            .map_err(|s| JobsError::Unavailable(format!("the jobs' keeper: {}", s.message())))?;
        Ok(())
    }

    /// A scope for this process's own calls to the keeper: a ticket derived from the mesh key.
    fn own_scope(&self, instance: &str) -> pb::Scope {
        pb::Scope {
            instance: instance.to_string(),
            ticket: self.inner.mesh_key.derive(crate::grpc::RUN_PURPOSE, &[instance]),
            trusted: false,
            domain: String::new(),
        }
    }

    /// Records a run's start, unless the job is gone or ended (`Skip`) or running elsewhere
    /// within its time limit (`Later`). The start and the end commit grouped with others, each
    /// only if the job is still as its caller read it (`committer::Expect`): two processes never
    /// both start one run, and the end of a run taken over changes nothing.
    pub(crate) async fn start(&self, instance: &str, id: &str) -> Result<Start> {
        let Some(mut job) = crate::tables::JOBS.get(self.store(), instance, id).await? else {
            return Ok(Start::Skip);
        };
        let Some(worker) = self.inner.workers.get(&job.worker) else {
            return Ok(Start::Skip);
        };
        let (max_exec, timeout) = worker.limits_of(&job);
        let now = now_us();
        // The start holds only if no other process started or ended it since this read.
        let as_read = Expect {
            id: job.id.clone(),
            state: job.state.clone(),
            exec_count: job.exec_count,
        };
        match job.state.as_str() {
            QUEUED => {}
            RUNNING => {
                // Alone, a running job at start was left by the last run of the process.
                let limit = job.run_started_at_us + timeout.as_micros() as i64;
                if self.inner.shared_queue && limit > now {
                    // Its run goes on in another process, which acks the offer when the run
                    // ends; if that process dies first, the offer comes back once the run is
                    // past its limit and is taken over then. (The ack wait alone is not enough:
                    // it starts at the delivery, which a loaded process may record late.)
                    let left = Duration::from_micros((limit - now) as u64);
                    return Ok(Start::Later(left + crate::bus_queue::ACK_MARGIN));
                }
                if job.exec_count >= max_exec + LOST_RUNS {
                    let error = format!(
                        "its runs were lost {} times (the process running it stopped): given up",
                        job.exec_count
                    );
                    self.finish(instance, job, Some(error)).await?;
                    return Ok(Start::Skip);
                }
            }
            _ => return Ok(Start::Skip),
        }
        job.state = RUNNING.to_string();
        job.exec_count += 1;
        job.run_started_at_us = now;
        if job.started_at_us == 0 {
            job.started_at_us = now;
        }
        if !self
            .commit_expecting(instance, vec![Entry::job(job.clone())], Some(as_read))
            .await?
        {
            return Ok(Start::Skip);
        }
        let konnector = self.konnector_of(instance, &job).await?;
        let app = self.app_of(instance, &job).await?;
        Ok(Start::Run(Box::new(Started { job, konnector, app })))
    }

    /// The web app whose service a `service` job runs, if its message names one installed.
    async fn app_of(&self, instance: &str, job: &Job) -> Result<Option<Webapp>> {
        if job.worker != "service" {
            return Ok(None);
        }
        match crate::workers::service_of(&job.message) {
            Some((slug, _)) => Ok(APPS.get(self.store(), instance, &slug).await?),
            None => Ok(None),
        }
    }

    /// The konnector a `konnector` job runs, if its message names one that is installed.
    async fn konnector_of(&self, instance: &str, job: &Job) -> Result<Option<Konnector>> {
        if job.worker != "konnector" {
            return Ok(None);
        }
        let slug = serde_json::from_slice::<serde_json::Value>(&job.message)
            .ok()
            .and_then(|m| m.get("konnector").and_then(|s| s.as_str()).map(str::to_string));
        match slug {
            Some(slug) => Ok(KONNECTORS.get(self.store(), instance, &slug).await?),
            None => Ok(None),
        }
    }

    /// Records a run's end: done, errored, or back to queued for another run. Only the job's
    /// current run ends it: the end of a run taken over meanwhile (its process was silent past
    /// the time limit) changes nothing.
    pub(crate) async fn end(&self, instance: &str, mut job: Job, error: Option<String>, retry: bool) -> Result<()> {
        if !retry {
            return self.finish(instance, job, error).await;
        }
        let current = this_run(&job);
        job.state = QUEUED.to_string();
        job.error = error.unwrap_or_default();
        self.commit_expecting(instance, vec![Entry::job(job)], Some(current))
            .await
            .map(|_| ())
    }

    /// Records a job's end: done, or errored with `error`.
    async fn finish(&self, instance: &str, mut job: Job, error: Option<String>) -> Result<()> {
        let current = this_run(&job);
        job.state = if error.is_some() { ERRORED } else { DONE }.to_string();
        job.error = error.unwrap_or_default();
        job.finished_at_us = now_us();
        metrics::counter!("cocon_jobs_finished_total", "worker" => job.worker.clone(), "state" => job.state.clone())
            .increment(1);
        if job.worker == "konnector" && !job.error.is_empty() {
            let kind = crate::health::error_kind(&job.error);
            metrics::counter!("cocon_konnector_failures_total", "kind" => kind).increment(1);
        }
        if self
            .commit_expecting(instance, vec![Entry::job(job)], Some(current))
            .await?
        {
            self.inner.finished.notify_waiters();
        }
        Ok(())
    }
}

/// What a job is while the run that read it goes on.
fn this_run(job: &Job) -> Expect {
    Expect {
        id: job.id.clone(),
        state: RUNNING.to_string(),
        exec_count: job.exec_count,
    }
}

/// Runs lost to a dying process that a job gets beyond its `max_exec_count`.
const LOST_RUNS: u32 = 2;

/// What an offer of a job comes to.
pub(crate) enum Start {
    Run(Box<Started>),
    /// Gone or ended: the offer is dropped.
    Skip,
    /// Running in another process: the offer is checked again after this long.
    Later(Duration),
}

impl Start {
    #[cfg(test)]
    fn started(self) -> Option<Started> {
        match self {
            Start::Run(started) => Some(*started),
            _ => None,
        }
    }
}

/// A job whose run has started, and what it runs.
pub(crate) struct Started {
    pub job: Job,
    pub konnector: Option<Konnector>,
    pub app: Option<Webapp>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::jobs::NewJob;

    async fn service(dir: &std::path::Path) -> JobsService {
        service_sharing(dir, false).await
    }

    async fn service_sharing(dir: &std::path::Path, shared_queue: bool) -> JobsService {
        let store = cocon_storage::EmbeddedStore::open(&dir.join("store.redb")).unwrap();
        JobsService::build(
            crate::Config::default(),
            crate::Deps {
                store: Arc::new(store),
                bus: Arc::new(cocon_events::MemoryBus::new(cocon_events::streams::all(
                    &Default::default(),
                ))),
                mesh_key: cocon_common::ticket::MeshKey::random(),
                data_dir: dir.to_path_buf(),
                shared_queue,
                contexts: Default::default(),
            },
        )
        .await
        .unwrap()
    }

    /// With a shared queue, a copy of the offer of a job running within its time limit is
    /// checked again once that limit (and the ack margin) has passed: the process running it
    /// may die, and the job must not be left running then.
    #[tokio::test]
    async fn test_a_copy_offered_mid_run_comes_back_after_the_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service_sharing(dir.path(), true).await;
        let job = svc.push_job("i1", log_job()).await.unwrap();
        assert!(svc.start("i1", &job.id).await.unwrap().started().is_some());
        let limit = svc.inner.workers.get("log").unwrap().limits_of(&job).1;
        match svc.start("i1", &job.id).await.unwrap() {
            Start::Later(delay) => {
                assert!(delay <= limit + crate::bus_queue::ACK_MARGIN, "{delay:?}");
                assert!(delay > limit.saturating_sub(Duration::from_secs(5)), "{delay:?}");
            }
            _ => panic!("a copy offered mid-run neither runs nor is dropped"),
        }
        let stored = svc.get_job("i1", &job.id).await.unwrap();
        assert_eq!((stored.state.as_str(), stored.exec_count), (RUNNING, 1));
    }

    fn log_job() -> NewJob {
        NewJob {
            worker: "log".into(),
            message: b"{}".to_vec().into(),
            ..NewJob::default()
        }
    }

    /// Two processes offered the same job start it once; the end of a run that was taken over
    /// changes nothing, and the current run's end holds.
    #[tokio::test]
    async fn test_a_run_starts_once_and_only_the_current_run_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path()).await;
        let job = svc.push_job("i1", log_job()).await.unwrap();
        let (a, b) = tokio::join!(svc.start("i1", &job.id), svc.start("i1", &job.id));
        let started: Vec<Started> = [a.unwrap(), b.unwrap()]
            .into_iter()
            .filter_map(Start::started)
            .collect();
        assert_eq!(started.len(), 1, "one start of two holds");
        let first = started.into_iter().next().unwrap().job;
        assert_eq!(first.exec_count, 1);

        // Alone, a running job at a start was left by a run that died: it is taken over.
        let second = svc
            .start("i1", &job.id)
            .await
            .unwrap()
            .started()
            .expect("taken over")
            .job;
        assert_eq!(second.exec_count, 2);
        svc.end("i1", first, Some("the old run's late end".into()), false)
            .await
            .unwrap();
        let stored = svc.get_job("i1", &job.id).await.unwrap();
        assert_eq!(
            (stored.state.as_str(), stored.exec_count),
            (RUNNING, 2),
            "the old run changed nothing"
        );
        svc.end("i1", second, None, false).await.unwrap();
        let stored = svc.get_job("i1", &job.id).await.unwrap();
        assert_eq!(stored.state, DONE);
        assert!(stored.error.is_empty());
    }
}
