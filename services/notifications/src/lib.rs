//! The notifications service: what apps, konnectors, OAuth clients and the server tell the
//! person, as cozy-stack's `POST /notifications` takes it. A notification is checked against
//! its category (declared in the konnector's manifest or the OAuth client's registration),
//! dropped when its category is stateful and its state unchanged or when the last one came
//! sooner than the category's `min_interval`, stored as an `io.cozy.notifications` document
//! (the notification center reads them through `/data` and realtime), then handed to its
//! channels: mail through the jobs service's `sendmail`, now or at its `at` time.
//!
//! It keeps no state of its own: the documents service stores the notifications (their
//! events are the log), the jobs service sends and schedules the mails.

mod category;
mod channels;
mod create;
mod error;
mod grpc;
mod stack;

use std::sync::{Arc, OnceLock};

use cocon_common::Shutdown;
use cocon_common::ticket::MeshKey;
use cocon_mesh::{Clients, LocalServices, ServiceKind};
use cocon_proto::notifications::v1::notifications_service_server::NotificationsServiceServer;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

pub use error::NotificationsError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {}

#[derive(Clone)]
pub struct NotificationsService {
    inner: Arc<Inner>,
}

struct Inner {
    clients: OnceLock<Clients>,
    /// Proves to the documents service that this service owns `io.cozy.notifications`, and
    /// signs the tickets of the server's own notifications.
    mesh_key: MeshKey,
    bus: Arc<dyn cocon_events::EventBus>,
    /// The instances whose `io.cozy.notifications` index (by source, then time) this process
    /// made sure of: finding a source's last notification needs it.
    indexed: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// At most this many instances in [`Inner::indexed`].
const MAX_INDEXED: usize = 100_000;

impl NotificationsService {
    pub fn build(_config: Config, mesh_key: MeshKey, bus: Arc<dyn cocon_events::EventBus>) -> NotificationsService {
        NotificationsService {
            inner: Arc::new(Inner {
                clients: OnceLock::new(),
                mesh_key,
                bus,
                indexed: Default::default(),
            }),
        }
    }

    fn clients(&self) -> Result<&Clients, NotificationsError> {
        self.inner
            .clients
            .get()
            .ok_or_else(|| NotificationsError::Unavailable("the notifications service is starting".into()))
    }
}

impl cocon_mesh::Service for NotificationsService {
    fn kind(&self) -> ServiceKind {
        ServiceKind::Notifications
    }

    fn add_grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(NotificationsServiceServer::new(self.clone()));
    }

    fn offer(&self, local: &mut LocalServices) {
        local.notifications = Some(Arc::new(self.clone()));
    }

    fn connect(&self, clients: &Clients, _gateway: Option<&str>) {
        let _ = self.inner.clients.set(clients.clone());
    }

    fn spawn_background(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>> {
        self.stack_consumers(shutdown)
    }
}
