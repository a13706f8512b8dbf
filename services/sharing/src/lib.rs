//! The sharing service: cozy-to-cozy sharings between hosts (`cozy-protocols.md` §1).
//!
//! Event sourced: every change of a sharing is a `SharingChanged` event in its log
//! (`sharing.events`), projected to `sharing.sharings` in the same batch (`store.rs`); the
//! credentials each side holds for the other are sealed before they reach the event. Setting a
//! sharing up between two hosts (create, request, discovery, consent, answer) is `setup.rs`;
//! the calls to the other hosts are `peer.rs`.

mod doc;
mod error;
mod grpc;
mod peer;
mod rules;
mod service;
mod setup;
mod store;

use std::sync::Arc;

use cocon_common::Shutdown;
use cocon_events::{Relay, RelayConfig};
use cocon_mesh::{Clients, LocalServices, ServiceKind};
use cocon_proto::sharing::v1::sharing_service_server::SharingServiceServer;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

pub use error::SharingError;
pub use service::{Config, Deps, SharingService};
pub use store::SharingProjection;

impl cocon_mesh::Service for SharingService {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Sharing
    }

    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(SharingServiceServer::new(self.clone()));
    }

    fn offer(&self, local: &mut LocalServices) {
        local.sharing = Some(Arc::new(self.clone()));
    }

    fn connect(&self, clients: &Clients, _gateway: Option<&str>) {
        let _ = self.inner.clients.set(clients.clone());
    }

    fn spawn_background(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        let relay = Relay::new(
            self.inner.log.outbox().clone(),
            self.inner.bus.clone(),
            RelayConfig::default(),
        );
        vec![tokio::spawn(relay.run(shutdown))]
    }
}
