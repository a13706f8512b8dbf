//! The files service in the mesh: its gRPC server, and what runs beside it (the outbox relay,
//! the consumers of auth's events, the sweeps, thumbnails, and the tasks left by the last run).

use std::future::Future;
use std::time::Duration;

use cocon_common::Shutdown;
use cocon_events::{ConsumerSpec, HandlerError, Relay, RelayConfig, adopt_orphans, on_instance_destroyed};
use cocon_mesh::{LocalServices, ServiceKind, in_process};
use cocon_proto::events::v1::envelope::Payload;
use cocon_proto::files::v1::files_service_server::FilesServiceServer;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

use crate::FilesService;

impl FilesService {
    fn server(&self) -> FilesServiceServer<FilesService> {
        FilesServiceServer::new(self.clone())
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20)
    }
}

impl cocon_mesh::Service for FilesService {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Files
    }

    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(self.server());
    }

    fn offer(&self, local: &mut LocalServices) {
        local.files = Some(in_process(self.server()));
    }

    fn connect(&self, clients: &cocon_mesh::Clients, _gateway: Option<&str>) {
        let _ = self.inner.clients.set(clients.clone());
    }

    fn sharding(&self) -> Option<&'static [&'static str]> {
        Some(&["Changes"])
    }

    fn own_shards(&self, shards: &cocon_mesh::Shards) {
        FilesService::own_shards(self, shards);
    }

    fn spawn_background(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        let inner = &self.inner;
        let relay = Relay::new(inner.log.outbox().clone(), inner.bus.clone(), RelayConfig::default());
        let relay = tokio::spawn(relay.run(shutdown.clone()));

        let svc = self.clone();
        let purge = move |instance: String| {
            let svc = svc.clone();
            async move { svc.purge_instance(&instance).await }
        };
        let destroyed = tokio::spawn(on_instance_destroyed(
            inner.bus.clone(),
            "files-instance-destroyed",
            Duration::from_secs(300),
            purge,
            shutdown.clone(),
        ));

        let svc = self.clone();
        let quota_spec = ConsumerSpec {
            stream: cocon_events::streams::AUTH.into(),
            durable: "files-disk-quota".into(),
            filter: "cocon.auth.*.instance.quota".into(),
            max_deliver: 10,
            ack_wait: Duration::from_secs(30),
        };
        let quotas = tokio::spawn(cocon_events::run_consumer(
            inner.bus.clone(),
            quota_spec,
            move |message| {
                let svc = svc.clone();
                async move {
                    let envelope =
                        cocon_events::decode_envelope(&message.payload).map_err(|e| HandlerError(e.to_string()))?;
                    let Some(Payload::DiskQuotaSet(quota)) = envelope.payload else {
                        return Ok(());
                    };
                    svc.quota_set(&envelope.instance, quota.bytes)
                        .await
                        .map_err(|e| HandlerError(e.to_string()))
                }
            },
            shutdown.clone(),
        ));

        let thumbnails = tokio::spawn(self.thumbnails_consumer(shutdown.clone()));

        // A tenth of the expiry, so an upload goes at most 10% past it; at least every second.
        let every = Duration::from_secs((inner.config.upload_expiry_secs / 10).clamp(1, 600));
        let svc = self.clone();
        let sweeper = periodic(every, shutdown.clone(), move || {
            let svc = svc.clone();
            async move {
                if svc.inner.fence.get().is_some()
                    && let Err(err) = svc.resume_tasks().await
                {
                    // Replicas own shards: those taken from another may hold its unfinished tasks.
                    tracing::warn!(error = %err, "cannot resume the tasks of the instances taken over; trying again later");
                }
                if let Err(err) = svc.sweep_uploads().await {
                    tracing::warn!(error = %err, "cannot remove abandoned uploads; trying again later");
                }
                if let Err(err) = svc.sweep_links().await {
                    tracing::warn!(error = %err, "cannot remove expired links; trying again later");
                }
            }
        });

        let mut tasks = vec![relay, destroyed, quotas, thumbnails, sweeper];
        if let Some(shards) = inner.fence.get() {
            // A partition is a replica's id: one that holds no shard any more has stopped
            // writing (or died); what it left is relayed here.
            let shards = shards.clone();
            tasks.push(tokio::spawn(adopt_orphans(
                inner.log.outbox().clone(),
                inner.bus.clone(),
                move |replica| !shards.holders().contains(replica),
                shutdown.clone(),
            )));
        }
        if inner.config.orphan_sweep_secs > 0 {
            let svc = self.clone();
            let every = Duration::from_secs(inner.config.orphan_sweep_secs);
            tasks.push(periodic(every, shutdown, move || {
                let svc = svc.clone();
                async move {
                    if let Err(err) = svc.sweep_orphans().await {
                        tracing::warn!(error = %err, "cannot sweep orphaned blobs; trying again later");
                    }
                }
            }));
        }

        let svc = self.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(err) = svc.resume_tasks().await {
                tracing::warn!(error = %err, "cannot resume the background tasks left by the last run");
            }
        }));
        tasks
    }
}

/// Runs `task` every `every` (first after one period) until `shutdown`.
fn periodic<F, Fut>(every: Duration, shutdown: Shutdown, task: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
            task().await;
        }
    })
}
