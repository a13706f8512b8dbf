//! The one place where a client is chosen: the service itself when it runs in this process,
//! a gRPC client to its endpoint otherwise.

use std::sync::Arc;

use cocon_proto::auth::v1::auth_service_client::AuthServiceClient;
use cocon_proto::auth::v1::auth_service_server::AuthService;
use cocon_proto::documents::v1::documents_service_client::DocumentsServiceClient;
use cocon_proto::documents::v1::documents_service_server::DocumentsService;
use cocon_proto::jobs::v1::jobs_service_client::JobsServiceClient;
use serde::Deserialize;

use cocon_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use cocon_proto::notifications::v1::notifications_service_server::NotificationsService;
use cocon_proto::sharing::v1::sharing_service_client::SharingServiceClient;
use cocon_proto::sharing::v1::sharing_service_server::SharingService;

use crate::{
    AuthClient, Directory, DocumentsClient, FilesClient, GrpcChannel, JobsClient, MeshError, NotificationsClient,
    Route, ServiceKind, SharingClient, remote,
};

/// Where to reach the services this process does not run (`[endpoints]`). A service left out
/// is found in the replicas' directory when this process is on NATS, and at
/// `http://127.0.0.1:7070` otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Endpoints {
    pub auth: Option<String>,
    pub documents: Option<String>,
    pub files: Option<String>,
    pub jobs: Option<String>,
    pub notifications: Option<String>,
    pub sharing: Option<String>,
}

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";

/// The services running in this process, as each offered itself ([`crate::Service::offer`]).
#[derive(Default)]
pub struct LocalServices {
    pub auth: Option<Arc<dyn AuthService>>,
    pub documents: Option<Arc<dyn DocumentsService>>,
    /// Files streams uploads and downloads, so even in process it is called through gRPC's
    /// framing ([`crate::in_process`]).
    pub files: Option<GrpcChannel>,
    pub jobs: Option<Arc<dyn crate::clients::LocalJobs>>,
    pub notifications: Option<Arc<dyn NotificationsService>>,
    pub sharing: Option<Arc<dyn SharingService>>,
}

/// Every service as its callers reach it.
#[derive(Clone)]
pub struct Clients {
    pub auth: AuthClient,
    pub documents: DocumentsClient,
    pub files: FilesClient,
    pub jobs: JobsClient,
    pub notifications: NotificationsClient,
    pub sharing: SharingClient,
}

impl Clients {
    /// Calls the services in `local` directly and the others at their `endpoints`, or at the
    /// replicas `directory` lists, over the mesh's mutual TLS when `tls` is given. Remote
    /// channels connect lazily.
    pub fn connect(
        local: LocalServices,
        endpoints: &Endpoints,
        tls: Option<&tonic::transport::ClientTlsConfig>,
        directory: Option<&Directory>,
    ) -> Result<Clients, MeshError> {
        let route = |kind: ServiceKind, endpoint: &Option<String>| -> Result<Route, MeshError> {
            let service = kind.as_str();
            let fixed = |endpoint: &str| {
                remote(endpoint, tls)
                    .map(|channel| Route::fixed(service, channel, endpoint))
                    .map_err(|source| MeshError::InvalidEndpoint {
                        service,
                        endpoint: endpoint.to_string(),
                        source,
                    })
            };
            match (endpoint, directory) {
                (Some(endpoint), _) => fixed(endpoint),
                (None, Some(directory)) => Ok(directory.route(kind)),
                (None, None) => fixed(DEFAULT_ENDPOINT),
            }
        };
        Ok(Clients {
            auth: match local.auth {
                Some(service) => AuthClient::Local(service),
                None => {
                    let route = route(ServiceKind::Auth, &endpoints.auth)?;
                    AuthClient::Remote(AuthServiceClient::new(route.channel()), route)
                }
            },
            documents: match local.documents {
                Some(service) => DocumentsClient::Local(service),
                None => {
                    let route = route(ServiceKind::Documents, &endpoints.documents)?;
                    DocumentsClient::Remote(
                        DocumentsServiceClient::new(route.channel()).max_decoding_message_size(usize::MAX),
                        route,
                    )
                }
            },
            files: match local.files {
                Some(channel) => FilesClient::new(channel, None),
                None => {
                    let route = route(ServiceKind::Files, &endpoints.files)?;
                    FilesClient::new(route.channel(), Some(route))
                }
            },
            jobs: match local.jobs {
                Some(service) => JobsClient::Local(service),
                None => {
                    let route = route(ServiceKind::Jobs, &endpoints.jobs)?;
                    JobsClient::Remote(JobsServiceClient::new(route.channel()), route)
                }
            },
            notifications: match local.notifications {
                Some(service) => NotificationsClient::Local(service),
                None => {
                    let route = route(ServiceKind::Notifications, &endpoints.notifications)?;
                    NotificationsClient::Remote(NotificationsServiceClient::new(route.channel()), route)
                }
            },
            sharing: match local.sharing {
                Some(service) => SharingClient::Local(service),
                None => {
                    let route = route(ServiceKind::Sharing, &endpoints.sharing)?;
                    SharingClient::Remote(SharingServiceClient::new(route.channel()), route)
                }
            },
        })
    }
}
