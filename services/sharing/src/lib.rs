//! The sharing service: cozy-to-cozy sharings between hosts (`cozy-protocols.md` §1).
//!
//! Event sourced: every change of a sharing is a `SharingChanged` event in its log
//! (`sharing.events`), projected to `sharing.sharings` in the same batch (`store.rs`); the
//! credentials each side holds for the other are sealed before they reach the event. Setting a
//! sharing up between two hosts (create, request, discovery, consent, answer) is `setup.rs`;
//! the calls to the other hosts are `peer.rs`.

mod classes;
mod doc;
mod error;
mod files;
mod files_rule;
mod groups;
mod grpc;
mod guards;
mod initial;
mod members;
mod peer;
mod replicate;
mod revoke;
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
        let mut tasks = vec![tokio::spawn(relay.run(shutdown.clone()))];
        // Each change of a shared doctype wakes the senders of its instance (`replicate.rs`).
        let svc = self.clone();
        let wake = move |message: cocon_events::Message| {
            let svc = svc.clone();
            async move {
                let mut tokens = message.subject.split('.').skip(2);
                if let (Some(instance), Some(doctype)) = (tokens.next(), tokens.next()) {
                    let doctype = cocon_events::subject::decode_token(doctype);
                    svc.inner.senders.changed(instance, &doctype);
                    // A contact joined or left a group: so do the sharings' members.
                    use cocon_common::cozy::doctype::{CONTACTS, CONTACTS_GROUPS};
                    if doctype == CONTACTS || doctype == CONTACTS_GROUPS {
                        svc.contacts_changed(instance);
                    }
                }
                Ok(())
            }
        };
        tasks.extend(cocon_events::spawn_consumers(
            &self.inner.bus,
            &[(
                cocon_events::streams::DOCUMENTS,
                "sharing-documents",
                "cocon.documents.>",
            )],
            wake,
            &shutdown,
        ));
        // And each change of a file or directory, the senders of shared folders.
        let svc = self.clone();
        let wake_files = move |message: cocon_events::Message| {
            let svc = svc.clone();
            async move {
                if let Some(instance) = message.subject.split('.').nth(2) {
                    svc.inner.senders.changed(instance, cocon_common::cozy::doctype::FILES);
                }
                Ok(())
            }
        };
        tasks.extend(cocon_events::spawn_consumers(
            &self.inner.bus,
            &[(cocon_events::streams::FILES, "sharing-files", "cocon.files.>")],
            wake_files,
            &shutdown,
        ));
        let svc = self.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(err) = svc.start_all_senders(shutdown).await {
                tracing::error!(error = %err, "the sharings' replication did not start");
            }
        }));
        tasks
    }
}
