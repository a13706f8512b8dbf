//! The scheduler: fires the triggers and closes the debounce windows that are due, in time
//! order, from the schedule the log projects (`jobs.due`). It sleeps until the next due time
//! (at most a second), or until a change brings one sooner.
//!
//! A time missed while the server was down fires once when it starts again, then the trigger
//! goes on from now (`Schedule::next_due`).

use std::time::Duration;

use cocon_common::Shutdown;
use cocon_common::time::now_us;
use cocon_storage::ScanRange;

use crate::error::Result;
use crate::service::JobsService;
use crate::tables::*;

/// Rows read per shard and pass.
const PAGE: usize = 1000;
/// The longest sleep: a trigger created by another process is seen within it.
const MAX_SLEEP: Duration = Duration::from_secs(1);

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
        for shard in 0..DUE_SHARDS {
            loop {
                let now = now_us();
                let rows = DUE.scan(self.store(), shard, ScanRange::all().limit(PAGE)).await?;
                let mut handled = 0;
                for (sort, ()) in &rows {
                    let Some(row) = DueRow::parse(sort) else { continue };
                    if row.due_us > now {
                        next = next.min(row.due_us);
                        break;
                    }
                    let lag_ms = (now - row.due_us) as f64 / 1000.0;
                    metrics::histogram!("cocon_jobs_trigger_lag_seconds").record(lag_ms / 1000.0);
                    let result = match row.kind {
                        DueKind::Fire => self.fire(&row.instance, &row.trigger, row.due_us).await,
                        DueKind::Debounce => self.close_window(&row.instance, &row.trigger, row.due_us).await,
                    };
                    if let Err(err) = result {
                        tracing::warn!(instance = %row.instance, trigger = %row.trigger, error = %err, "cannot fire a trigger; trying again in a second");
                        next = next.min(now + MAX_SLEEP.as_micros() as i64);
                        break;
                    }
                    handled += 1;
                }
                if handled < PAGE {
                    break;
                }
            }
        }
        let now = now_us();
        Ok(Duration::from_micros(next.saturating_sub(now).max(0) as u64).min(MAX_SLEEP))
    }
}
