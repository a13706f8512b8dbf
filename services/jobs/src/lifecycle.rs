//! The jobs service in the mesh: its gRPC server, and what runs beside it (the outbox relay,
//! the workers' dispatchers, the scheduler, the consumers of `@event` triggers and of auth's
//! `instance.created` (Cocon's own apps installed) and `instance.destroyed`). A runner process (`jobs.role = "runner"`) serves nothing and runs only
//! the dispatchers, recording runs with the keeper of the jobs (`endpoints.jobs`).

use std::time::Duration;

use cocon_common::Shutdown;
use cocon_events::{Relay, RelayConfig, on_instance_destroyed};
use cocon_mesh::{LocalServices, ServiceKind};
use cocon_proto::jobs::v1::jobs_service_server::JobsServiceServer;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

use crate::JobsService;

impl cocon_mesh::Service for JobsService {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Jobs
    }

    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        if !self.inner.config.is_runner() {
            routes.add_service(JobsServiceServer::new(self.clone()));
        }
    }

    fn health_name(&self) -> Option<&'static str> {
        if self.inner.config.is_runner() {
            None
        } else {
            self.kind().grpc_name()
        }
    }

    fn offer(&self, local: &mut LocalServices) {
        if !self.inner.config.is_runner() {
            local.jobs = Some(std::sync::Arc::new(self.clone()));
        }
    }

    fn connect(&self, clients: &cocon_mesh::Clients, gateway: Option<&str>) {
        self.inner.konnectors.connect(clients, gateway);
        if self.inner.config.is_runner() {
            let _ = self.inner.keeper.set(clients.jobs.clone());
        }
    }

    fn spawn_background(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        if self.inner.config.is_runner() {
            return self.spawn_runners(shutdown);
        }
        let inner = &self.inner;
        let relay = Relay::new(inner.log.outbox().clone(), inner.bus.clone(), RelayConfig::default());
        let mut tasks = vec![tokio::spawn(relay.run(shutdown.clone()))];

        let svc = self.clone();
        let purge = move |instance: String| {
            let svc = svc.clone();
            async move { svc.purge_instance(&instance).await }
        };
        tasks.push(tokio::spawn(on_instance_destroyed(
            inner.bus.clone(),
            "jobs-instance-destroyed",
            Duration::from_secs(300),
            purge,
            shutdown.clone(),
        )));

        // Cocon's own apps on every new instance.
        let svc = self.clone();
        tasks.extend(cocon_events::spawn_consumers(
            &inner.bus,
            &[(
                cocon_events::streams::AUTH,
                "jobs-builtin-apps",
                "cocon.auth.*.instance.created",
            )],
            move |message: cocon_events::Message| {
                let svc = svc.clone();
                async move { svc.on_instance_created(&message).await }
            },
            &shutdown,
        ));

        let svc = self.clone();
        let refresh_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(
            async move { svc.refresh_builtins(refresh_shutdown).await },
        ));

        let svc = self.clone();
        let sweep_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(
            async move { svc.sweep_app_code_daily(sweep_shutdown).await },
        ));

        let svc = self.clone();
        let scheduler_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { svc.run_scheduler(scheduler_shutdown).await }));
        tasks.extend(self.event_consumers(shutdown.clone()));
        tasks.extend(self.spawn_runners(shutdown));
        tasks
    }
}
