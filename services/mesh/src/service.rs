//! The lifecycle every service shares: `cocon serve` builds the enabled ones, adds their gRPC
//! servers to one server, offers them to this process's clients, starts their background tasks,
//! and on shutdown stops taking requests, then stops the tasks and waits for them (the outbox
//! relays flush on the way out).

use std::fmt;
use std::str::FromStr;

use cocon_common::Shutdown;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

use crate::{LocalServices, MeshError};

/// The services a process can run, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKind {
    Gateway,
    Auth,
    Documents,
    Files,
    Jobs,
    Sharing,
    Notifications,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 7] = [
        ServiceKind::Gateway,
        ServiceKind::Auth,
        ServiceKind::Documents,
        ServiceKind::Files,
        ServiceKind::Jobs,
        ServiceKind::Sharing,
        ServiceKind::Notifications,
    ];

    /// What `cocon serve` runs when no service is named: every service.
    pub const DEFAULT: [ServiceKind; 7] = ServiceKind::ALL;

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Gateway => "gateway",
            ServiceKind::Auth => "auth",
            ServiceKind::Documents => "documents",
            ServiceKind::Files => "files",
            ServiceKind::Jobs => "jobs",
            ServiceKind::Sharing => "sharing",
            ServiceKind::Notifications => "notifications",
        }
    }

    /// The gRPC service name, as health checks ask for it (none for the gateway, which
    /// serves HTTP).
    pub fn grpc_name(self) -> Option<&'static str> {
        match self {
            ServiceKind::Gateway => None,
            ServiceKind::Auth => Some("cocon.auth.v1.AuthService"),
            ServiceKind::Documents => Some("cocon.documents.v1.DocumentsService"),
            ServiceKind::Files => Some("cocon.files.v1.FilesService"),
            ServiceKind::Jobs => Some("cocon.jobs.v1.JobsService"),
            ServiceKind::Sharing => Some("cocon.sharing.v1.SharingService"),
            ServiceKind::Notifications => Some("cocon.notifications.v1.NotificationsService"),
        }
    }

    /// Whether it needs the mesh key: to sign events, or (notifications) to prove to the
    /// documents service that it owns its doctype.
    pub fn needs_mesh_key(self) -> bool {
        self.keeps_state() || self == ServiceKind::Notifications
    }

    /// Whether it keeps state: an event log in the store, events it signs, the mesh key.
    /// (Notifications keeps none: the documents service stores them and the jobs service sends
    /// them.)
    pub fn keeps_state(self) -> bool {
        matches!(
            self,
            ServiceKind::Auth | ServiceKind::Documents | ServiceKind::Files | ServiceKind::Jobs | ServiceKind::Sharing
        )
    }

    /// The names, comma separated, for error messages and `--help`.
    pub fn names() -> String {
        ServiceKind::ALL.map(ServiceKind::as_str).join(",")
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceKind {
    type Err = MeshError;

    fn from_str(s: &str) -> Result<ServiceKind, MeshError> {
        ServiceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| MeshError::UnknownService(s.to_string()))
    }
}

/// A service of the mesh. Built by `cocon serve` from its configuration section and the shared
/// parts (store, bus, keys); everything after building goes through this trait.
pub trait Service: Send + Sync {
    fn kind(&self) -> ServiceKind;

    /// Adds its gRPC server to the process's (a service that does not serve yet adds none).
    fn add_grpc(&self, routes: &mut RoutesBuilder);

    /// Offers itself to this process's clients, which then call it without a socket.
    fn offer(&self, local: &mut LocalServices);

    /// Receives the clients of every service (itself included), once they exist, and the
    /// address of this process's gateway when it runs one (`http://127.0.0.1:8080`): for a
    /// service that calls others, or hands the public API to programs it runs.
    fn connect(&self, _clients: &crate::Clients, _gateway: Option<&str>) {}

    /// Starts its outbox relay, consumers and sweeps. Each ends once `shutdown` fires, having
    /// finished what it holds; the process waits for all of them before it exits.
    fn spawn_background(&self, shutdown: Shutdown) -> Vec<JoinHandle<()>>;

    /// The name its gRPC server answers health checks under; `None` when this process serves
    /// no API of it (a jobs runner: it only runs jobs, so nothing may route calls to it).
    fn health_name(&self) -> Option<&'static str> {
        self.kind().grpc_name()
    }

    /// For a service whose replicas own instances shard by shard when they share the store
    /// (rather than one replica at a time holding the service's lease): the gRPC methods that
    /// may wait long without writing (long polls), which do not hold their shard.
    fn sharding(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Receives this replica's shards once it is announced sharded, before any is taken.
    fn own_shards(&self, _shards: &crate::Shards) {}

    /// Whether it serves its API. A process running a service that does not answers `/ready`
    /// 503 and reports it NOT_SERVING in gRPC health, so no deployment routes to it.
    fn serving(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceKind;

    #[test]
    fn test_names_parse_back() {
        for kind in ServiceKind::ALL {
            assert_eq!(kind.as_str().parse::<ServiceKind>().unwrap(), kind);
        }
        let err = "billing".parse::<ServiceKind>().unwrap_err().to_string();
        assert!(
            err.contains("gateway,auth,documents,files,jobs,sharing,notifications"),
            "{err}"
        );
    }
}
