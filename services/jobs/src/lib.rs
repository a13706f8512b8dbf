//! The jobs service: jobs, triggers and workers.
//!
//! Not built yet: this crate holds only the service's place in the mesh (its configuration
//! section and its gRPC health status), so deployments and probes already know it. It answers
//! NOT_SERVING until its API exists, and serves no route that would pretend to work.

use serde::Deserialize;

/// The name the service reports in gRPC health checks.
pub const HEALTH_NAME: &str = "cocon.jobs.v1.JobsService";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {}

pub struct Service {
    _config: Config,
}

impl Service {
    pub fn build(config: Config) -> Service {
        Service { _config: config }
    }

    /// Registers the service's (not yet serving) status with the process's health service.
    pub async fn register_health(&self, reporter: &tonic_health::server::HealthReporter) {
        reporter
            .set_service_status(HEALTH_NAME, tonic_health::ServingStatus::NotServing)
            .await;
    }
}
