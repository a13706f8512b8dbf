//! The auth service in the mesh: its gRPC server, and its outbox relay.

use std::sync::Arc;

use cocon_common::Shutdown;
use cocon_events::{Relay, RelayConfig};
use cocon_mesh::{LocalServices, ServiceKind};
use cocon_proto::auth::v1::auth_service_server::AuthServiceServer;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

use crate::AuthService;

impl cocon_mesh::Service for AuthService {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Auth
    }

    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(AuthServiceServer::new(self.clone()));
    }

    fn offer(&self, local: &mut LocalServices) {
        local.auth = Some(Arc::new(self.clone()));
    }

    /// Publishes the service's events until shutdown (the outbox relay).
    fn spawn_background(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        let inner = self.inner();
        let relay = Relay::new(inner.log.outbox().clone(), inner.bus.clone(), RelayConfig::default());
        vec![tokio::spawn(relay.run(shutdown))]
    }
}
