//! The scheduler: fires the triggers and closes the debounce windows that are due, in time
//! order, from the schedule the log projects (`jobs.due`). What is due for one instance is one
//! commit; instances are handled side by side. It sleeps until the next due time (at most a
//! second), or until a change brings one sooner.
//!
//! A time missed while the server was down fires once when it starts again, then the trigger
//! goes on from now (`Schedule::next_due`).

use std::collections::BTreeMap;
use std::time::Duration;

use cocon_common::Shutdown;
use cocon_common::time::now_us;
use cocon_storage::ScanRange;
use futures::StreamExt;

use crate::error::Result;
use crate::service::JobsService;
use crate::tables::*;

/// Rows read per shard and pass.
const PAGE: usize = 1000;
/// The longest sleep: a trigger created by another process is seen within it.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Instances whose due rows are handled at once.
const PARALLEL: usize = 64;

impl JobsService {
    pub(crate) async fn run_scheduler(&self, shutdown: Shutdown) {
        loop {
            // Registered before the pass: a change during it wakes the next wait.
            let changed = self.inner.schedule_changed.notified();
            let sleep = match self.scheduler_pass().await {
                Ok(next) => next,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the schedule; trying again in a second");
                    MAX_SLEEP
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = changed => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// Handles everything due now; answers how long until the next due time.
    async fn scheduler_pass(&self) -> Result<Duration> {
        let mut next = i64::MAX;
        // A bounded number of pages per pass: the wait in between lets the rest of the service
        // breathe when a backlog is due at once.
        for _ in 0..100 {
            let now = now_us();
            let mut due: BTreeMap<String, Vec<DueRow>> = BTreeMap::new();
            let mut full = false;
            for shard in 0..DUE_SHARDS {
                let rows = DUE.scan(self.store(), shard, ScanRange::all().limit(PAGE)).await?;
                full |= rows.len() == PAGE;
                for (sort, ()) in rows {
                    let Some(row) = DueRow::parse(&sort) else { continue };
                    if row.due_us > now {
                        next = next.min(row.due_us);
                        break;
                    }
                    due.entry(row.instance.clone()).or_default().push(row);
                }
            }
            if due.is_empty() {
                break;
            }
            let failed = futures::stream::iter(due)
                .map(|(instance, rows)| async move { self.fire_all(&instance, rows, now).await })
                .buffer_unordered(PARALLEL)
                .filter(|ok| futures::future::ready(!ok))
                .count()
                .await;
            if failed > 0 {
                next = next.min(now + MAX_SLEEP.as_micros() as i64);
                break;
            }
            if !full {
                break;
            }
        }
        let now = now_us();
        Ok(Duration::from_micros(next.saturating_sub(now).max(0) as u64).min(MAX_SLEEP))
    }

    /// Fires what is due for one instance in one commit; false if it failed (tried again).
    async fn fire_all(&self, instance: &str, rows: Vec<DueRow>, now: i64) -> bool {
        let result = async {
            let _guard = self.lock(instance).await;
            let mut entries = Vec::new();
            let mut jobs = Vec::new();
            let mut stale = Vec::new();
            for row in &rows {
                metrics::histogram!("cocon_jobs_trigger_lag_seconds").record((now - row.due_us) as f64 / 1e6);
                let (more, job) = match row.kind {
                    DueKind::Fire => self.fire_entries(instance, &row.trigger, row.due_us).await?,
                    DueKind::Debounce => self.close_entries(instance, &row.trigger, row.due_us).await?,
                };
                if more.is_empty() {
                    stale.push(row);
                }
                entries.extend(more);
                jobs.extend(job);
            }
            self.commit(instance, entries).await?;
            if !stale.is_empty() {
                // A row the projection should have removed: never leave it to be read again.
                tracing::warn!(
                    instance,
                    rows = stale.len(),
                    "removing schedule rows that name nothing due"
                );
                let mut batch = cocon_storage::Batch::new();
                for row in stale {
                    DUE.delete(&mut batch, shard_of(instance), &row.key());
                }
                self.store().apply(batch).await?;
            }
            Ok::<_, crate::error::JobsError>(jobs)
        }
        .await;
        match result {
            Ok(jobs) => {
                self.enqueue(instance, &jobs);
                true
            }
            Err(err) => {
                tracing::warn!(instance, error = %err, "cannot fire the triggers due; trying again in a second");
                false
            }
        }
    }
}
