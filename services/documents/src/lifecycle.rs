//! The documents service in the mesh: its gRPC server, its outbox relay, and the consumer that
//! erases a destroyed instance's documents.

use std::sync::Arc;
use std::time::Duration;

use cocon_common::Shutdown;
use cocon_events::{Relay, RelayConfig, adopt_orphans, on_instance_destroyed};
use cocon_mesh::{LocalServices, ServiceKind};
use cocon_proto::documents::v1::documents_service_server::DocumentsServiceServer;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

use crate::DocumentsService;

impl cocon_mesh::Service for DocumentsService {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Documents
    }

    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(
            DocumentsServiceServer::new(self.clone())
                .max_decoding_message_size(self.config.max_doc_bytes * 8 + 1024 * 1024)
                .max_encoding_message_size(usize::MAX),
        );
    }

    fn sharding(&self) -> Option<&'static [&'static str]> {
        Some(&["Changes"])
    }

    fn own_shards(&self, shards: &cocon_mesh::Shards) {
        DocumentsService::own_shards(self, shards);
    }

    fn offer(&self, local: &mut LocalServices) {
        local.documents = Some(Arc::new(self.clone()));
    }

    fn spawn_background(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        let relay = Relay::new(
            self.shared.log.outbox().clone(),
            self.bus.clone(),
            RelayConfig::default(),
        );
        let relay = tokio::spawn(relay.run(shutdown.clone()));
        let mut tasks = Vec::new();
        if let Some(shards) = self.shared.fence.get() {
            // A partition is a replica's id: one that holds no shard any more has stopped
            // writing (or died); what it left is relayed here.
            let shards = shards.clone();
            tasks.push(tokio::spawn(adopt_orphans(
                self.shared.log.outbox().clone(),
                self.bus.clone(),
                move |replica| !shards.holders().contains(replica),
                shutdown.clone(),
            )));
        }
        let svc = self.clone();
        let purge = move |instance: String| {
            let svc = svc.clone();
            async move { svc.purge_instance(&instance).await }
        };
        let consumer = tokio::spawn(on_instance_destroyed(
            self.bus.clone(),
            "documents-instance-destroyed",
            Duration::from_secs(60),
            purge,
            shutdown,
        ));
        tasks.extend([relay, consumer]);
        tasks
    }
}
