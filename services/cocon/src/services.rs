//! The one place that names each service's crate: builds the service of a kind from its
//! configuration section and the parts this process shares.

use std::sync::Arc;

use anyhow::{Context, bail};
use cocon_common::ticket::MeshKey;
use cocon_events::EventBus;
use cocon_mesh::{Service, ServiceKind};
use cocon_storage::{BlobStore, LocalBlobs, S3Blobs, Store};

use crate::config::Config;

/// What the services of one process share.
pub struct Parts<'a> {
    pub config: &'a Config,
    pub bus: Arc<dyn EventBus>,
    /// Present when a service that keeps state runs here.
    pub store: Option<Arc<dyn Store>>,
    pub mesh_key: Option<MeshKey>,
    /// This process's replica id, when it is in the replicas' directory.
    pub replica: Option<String>,
    /// Whether the services that can own instances shard by shard do (a store the replicas
    /// share, and the directory).
    pub sharded: bool,
}

/// Whether `kind`'s replicas own instances shard by shard: on a store they share (`sharded`),
/// for the services built for it, files only when its contents are shared too (S3).
pub fn owns_shards(config: &Config, kind: ServiceKind, sharded: bool) -> bool {
    sharded
        && match kind {
            ServiceKind::Documents => true,
            ServiceKind::Files => config.files.blobs == "s3",
            _ => false,
        }
}

impl Parts<'_> {
    /// The outbox partition of `kind` in this process: its replica id when it owns shards.
    fn partition(&self, kind: ServiceKind) -> Option<String> {
        owns_shards(self.config, kind, self.sharded)
            .then(|| self.replica.clone())
            .flatten()
    }
}

impl Parts<'_> {
    fn store(&self) -> Arc<dyn Store> {
        self.store
            .clone()
            .expect("a process running a stateful service opens the store")
    }

    fn mesh_key(&self) -> MeshKey {
        self.mesh_key
            .clone()
            .expect("a process running a stateful service loads the mesh key")
    }
}

/// Builds the service `kind`; the gateway, which serves HTTP rather than gRPC, is built
/// apart, once the clients exist.
pub async fn build(kind: ServiceKind, parts: &Parts<'_>) -> anyhow::Result<Option<Box<dyn Service>>> {
    let config = parts.config;
    let service: Box<dyn Service> = match kind {
        ServiceKind::Gateway => return Ok(None),
        ServiceKind::Auth => Box::new(
            cocon_auth::AuthService::build(
                config.auth.clone(),
                cocon_auth::Deps {
                    store: parts.store(),
                    bus: parts.bus.clone(),
                    data_dir: config.data_dir.clone(),
                    mesh_key: parts.mesh_key(),
                    contexts: Arc::new(config.contexts.clone()),
                },
            )
            .await?,
        ),
        ServiceKind::Documents => Box::new(
            cocon_documents::DocumentsService::build(
                config.documents.clone(),
                cocon_documents::Deps {
                    store: parts.store(),
                    bus: parts.bus.clone(),
                    mesh_key: parts.mesh_key(),
                    partition: parts.partition(ServiceKind::Documents),
                },
            )
            .await?,
        ),
        ServiceKind::Files => Box::new(
            cocon_files::FilesService::build(
                config.files.clone(),
                cocon_files::Deps {
                    store: parts.store(),
                    blobs: open_blobs(config).await?,
                    bus: parts.bus.clone(),
                    mesh_key: parts.mesh_key(),
                    partition: parts.partition(ServiceKind::Files),
                },
            )
            .await?,
        ),
        ServiceKind::Jobs => Box::new(
            cocon_jobs::JobsService::build(
                config.jobs.clone(),
                cocon_jobs::Deps {
                    store: parts.store(),
                    bus: parts.bus.clone(),
                    mesh_key: parts.mesh_key(),
                    data_dir: config.data_dir.clone(),
                    shared_queue: !config.nats_url.is_empty(),
                    contexts: Arc::new(config.contexts.clone()),
                },
            )
            .await?,
        ),
        ServiceKind::Sharing => Box::new(
            cocon_sharing::SharingService::build(
                config.sharing.clone(),
                cocon_sharing::Deps {
                    store: parts.store(),
                    bus: parts.bus.clone(),
                    mesh_key: parts.mesh_key(),
                },
            )
            .await?,
        ),
        ServiceKind::Notifications => Box::new(cocon_notifications::NotificationsService::build(
            config.notifications.clone(),
            parts.mesh_key(),
            parts.bus.clone(),
        )),
    };
    Ok(Some(service))
}

/// Where the files service keeps contents: a local directory or an S3 bucket.
async fn open_blobs(config: &Config) -> anyhow::Result<Arc<dyn BlobStore>> {
    match config.files.blobs.as_str() {
        "local" => {
            let dir = config
                .files
                .blobs_dir
                .clone()
                .unwrap_or_else(|| config.data_dir.join("blobs"));
            let blobs = LocalBlobs::open(&dir)
                .with_context(|| format!("cannot open the blob directory {}", dir.display()))?
                .direct_io(config.files.blobs_direct_io)
                .min_free(config.store.min_free);
            Ok(Arc::new(blobs))
        }
        "s3" => {
            let s3 = &config.files.s3;
            tracing::info!(endpoint = %s3.endpoint, bucket = %s3.bucket, "file contents on S3");
            let blobs = S3Blobs::connect(s3).await.with_context(|| {
                "cannot use the S3 bucket for file contents: check files.s3 (endpoint, bucket, access_key, secret_key) or COCON_FILES__S3__*"
            })?;
            Ok(Arc::new(blobs))
        }
        other => bail!("unknown files.blobs backend {other:?}: use local or s3"),
    }
}

/// The projections of the service `kind`, to rebuild from its log.
pub async fn projections(
    kind: ServiceKind,
    store: Arc<dyn Store>,
) -> anyhow::Result<Vec<Box<dyn cocon_events::Projection>>> {
    Ok(match kind {
        ServiceKind::Auth => vec![Box::new(cocon_auth::AuthService::projection(store).await?)],
        ServiceKind::Documents => vec![Box::new(cocon_documents::DocumentsService::projection(store).await?)],
        ServiceKind::Files => vec![Box::new(cocon_files::FilesService::projection(store).await?)],
        ServiceKind::Jobs => vec![Box::new(cocon_jobs::JobsService::projection(store).await?)],
        ServiceKind::Sharing => vec![Box::new(cocon_sharing::SharingService::projection(store).await?)],
        ServiceKind::Gateway | ServiceKind::Notifications => Vec::new(),
    })
}
