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
    AuthClient, DocumentsClient, FilesClient, GrpcChannel, JobsClient, MeshError, NotificationsClient, SharingClient,
    remote,
};

/// Where to reach the services this process does not run (`[endpoints]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Endpoints {
    pub auth: String,
    pub documents: String,
    pub files: String,
    pub jobs: String,
    pub notifications: String,
    pub sharing: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            auth: "http://127.0.0.1:7070".into(),
            documents: "http://127.0.0.1:7070".into(),
            files: "http://127.0.0.1:7070".into(),
            jobs: "http://127.0.0.1:7070".into(),
            notifications: "http://127.0.0.1:7070".into(),
            sharing: "http://127.0.0.1:7070".into(),
        }
    }
}

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
    /// Calls the services in `local` directly and the others at their `endpoints`, over the
    /// mesh's mutual TLS when `tls` is given. Remote channels connect lazily.
    pub fn connect(
        local: LocalServices,
        endpoints: &Endpoints,
        tls: Option<&tonic::transport::ClientTlsConfig>,
    ) -> Result<Clients, MeshError> {
        let channel = |service: &'static str, endpoint: &str| {
            remote(endpoint, tls).map_err(|source| MeshError::InvalidEndpoint {
                service,
                endpoint: endpoint.to_string(),
                source,
            })
        };
        Ok(Clients {
            auth: match local.auth {
                Some(service) => AuthClient::Local(service),
                None => AuthClient::Remote(AuthServiceClient::new(channel("auth", &endpoints.auth)?)),
            },
            documents: match local.documents {
                Some(service) => DocumentsClient::Local(service),
                None => DocumentsClient::Remote(
                    DocumentsServiceClient::new(channel("documents", &endpoints.documents)?)
                        .max_decoding_message_size(usize::MAX),
                ),
            },
            files: FilesClient::new(match local.files {
                Some(channel) => channel,
                None => channel("files", &endpoints.files)?,
            }),
            jobs: match local.jobs {
                Some(service) => JobsClient::Local(service),
                None => JobsClient::Remote(JobsServiceClient::new(channel("jobs", &endpoints.jobs)?)),
            },
            notifications: match local.notifications {
                Some(service) => NotificationsClient::Local(service),
                None => NotificationsClient::Remote(NotificationsServiceClient::new(channel(
                    "notifications",
                    &endpoints.notifications,
                )?)),
            },
            sharing: match local.sharing {
                Some(service) => SharingClient::Local(service),
                None => SharingClient::Remote(SharingServiceClient::new(channel("sharing", &endpoints.sharing)?)),
            },
        })
    }
}
