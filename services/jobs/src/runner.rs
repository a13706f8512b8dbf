//! Runs the queued jobs: one dispatcher per worker takes its jobs from the queue and runs up to
//! the worker's concurrency at once, each with its time limit; a failed run is retried after a
//! growing delay until the job's runs are spent, then the job ends errored.

use std::sync::Arc;
use std::time::Instant;

use cocon_common::Shutdown;
use cocon_common::time::now_us;
use cocon_proto::events::v1::Job;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::error::Result;
use crate::jobs::{DONE, ERRORED, QUEUED, RUNNING};
use crate::queue::{Lease, Queued};
use crate::service::{Entry, JobsService};
use crate::tables::{PENDING, last_part};
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
                    if let Err(err) = svc.requeue_pending(name).await {
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
        let job = match self.start(&instance, &id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                lease.done();
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
            None => self.finish(&instance, job, None).await,
            Some(f) if f.retry && job.exec_count < max_exec => {
                tracing::info!(instance, job = id, worker = worker_name, runs = job.exec_count, error = %f.message, "job failed; it runs again");
                lease.retry(worker.retry_delay(job.exec_count));
                return;
            }
            Some(f) => {
                tracing::info!(instance, job = id, worker = worker_name, error = %f.message, "job errored");
                self.finish(&instance, job, Some(f.message)).await
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

    /// Records a run's start; `None` when the job is gone or ended meanwhile. Only its runner
    /// changes a running job (a client ends only `client` jobs, which never run here), so the
    /// start and the end commit without the instance's lock, grouped with others.
    async fn start(&self, instance: &str, id: &str) -> Result<Option<Job>> {
        let Some(mut job) = crate::tables::JOBS.get(self.store(), instance, id).await? else {
            return Ok(None);
        };
        if !matches!(job.state.as_str(), QUEUED | RUNNING) {
            return Ok(None);
        }
        job.state = RUNNING.to_string();
        job.exec_count += 1;
        if job.started_at_us == 0 {
            job.started_at_us = now_us();
        }
        self.commit_grouped(instance, vec![Entry::job(job.clone())]).await?;
        Ok(Some(job))
    }

    /// Records a job's end: done, or errored with `error`.
    async fn finish(&self, instance: &str, mut job: Job, error: Option<String>) -> Result<()> {
        job.state = if error.is_some() { ERRORED } else { DONE }.to_string();
        job.error = error.unwrap_or_default();
        job.finished_at_us = now_us();
        metrics::counter!("cocon_jobs_finished_total", "worker" => job.worker.clone(), "state" => job.state.clone())
            .increment(1);
        if job.worker == "konnector" && !job.error.is_empty() {
            let kind = crate::health::error_kind(&job.error);
            metrics::counter!("cocon_konnector_failures_total", "kind" => kind).increment(1);
        }
        self.commit_grouped(instance, vec![Entry::job(job)]).await?;
        self.inner.finished.notify_waiters();
        Ok(())
    }
}
