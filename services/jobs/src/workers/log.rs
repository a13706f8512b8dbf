//! The `log` worker: writes the job's arguments to the server's log (cozy-stack's, for
//! debugging; also the cheapest job there is, which the benchmarks queue).

use async_trait::async_trait;

use super::{Failure, Run, Work};

pub struct Log;

#[async_trait]
impl Work for Log {
    async fn run(&self, run: Run<'_>) -> Result<(), Failure> {
        tracing::info!(
            instance = run.instance,
            job = %run.job.id,
            arguments = %String::from_utf8_lossy(&run.job.message),
            "log job"
        );
        Ok(())
    }
}
