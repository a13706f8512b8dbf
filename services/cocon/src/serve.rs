//! `cocon serve`: builds the services this process runs, connects to the others, and serves
//! HTTP (gateway), admin HTTP and, when split, gRPC, until SIGTERM; then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt as _;
use cocon_auth::AuthService;
use cocon_common::Shutdown;
use cocon_common::mesh_tls::MeshTls;
use cocon_common::ticket::MeshKey;
use cocon_documents::DocumentsService;
use cocon_events::{EventBus, EventKeys, MemoryBus, NatsBus, SignedBus};
use cocon_files::FilesService;
use cocon_gateway::{AuthClient, Clients, DocumentsClient, in_process, remote};
use cocon_proto::auth::v1::auth_service_client::AuthServiceClient;
use cocon_proto::documents::v1::documents_service_client::DocumentsServiceClient;
use cocon_proto::files::v1::files_service_client::FilesServiceClient;
use cocon_storage::{BlobStore, EmbeddedStore, LocalBlobs, S3Blobs, Store};
use tokio::net::TcpListener;

use crate::ServeArgs;
use crate::admin_http;
use crate::config::Config;

pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config: Config = cocon_common::config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(v) = &args.services {
        config.services = v.clone();
    }
    if let Some(v) = &args.nats {
        config.nats_url = v.clone();
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = &args.http_addr {
        config.http_addr = v.clone();
    }
    if let Some(v) = &args.admin_addr {
        config.admin_addr = v.clone();
    }
    if let Some(v) = &args.grpc_addr {
        config.grpc_addr = v.clone();
    }
    Ok(config)
}

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.store.backend.as_str() {
        "embedded" => {}
        "scylla" => {
            let store = cocon_storage::ScyllaStore::connect(&cocon_storage::ScyllaConfig {
                nodes: config
                    .store
                    .scylla_nodes
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect(),
                keyspace: config.store.keyspace.clone(),
                replication_factor: config.store.replication_factor,
            })
            .await?;
            return Ok(Arc::new(store));
        }
        other => bail!("unknown store backend {other:?}: use embedded or scylla"),
    }
    let path = config.data_dir.join("store.redb");
    let store = EmbeddedStore::open_with_options(&path, config.store.cache_mb << 20, config.store.min_free)
        .with_context(|| {
            format!(
                "cannot open {}: is another cocon using this data directory? stop it, or pick another with --data-dir",
                path.display()
            )
        })?;
    Ok(Arc::new(store))
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

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}: is the port taken? choose another in the config"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let enabled = config.enabled()?;
    let name = if enabled.len() == crate::config::ALL_SERVICES.len() {
        "cocon".to_string()
    } else {
        format!("cocon-{}", enabled.iter().copied().collect::<Vec<_>>().join("-"))
    };
    let _telemetry = cocon_common::telemetry::init(&name);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let all_in_one = enabled.len() == crate::config::ALL_SERVICES.len();
    let runs = |s: &str| enabled.contains(s);
    tracing::info!(services = ?enabled, data_dir = %config.data_dir.display(), "starting cocon");

    let stateful = runs("auth") || runs("documents") || runs("files");
    if !all_in_one && stateful && config.nats_url.is_empty() {
        bail!("running only some services needs a shared event bus: pass --nats nats://HOST:4222 (or COCON_NATS_URL)");
    }
    let mesh_key = if stateful {
        Some(mesh_key(&config, all_in_one)?)
    } else {
        None
    };
    let mesh_tls = mesh_tls(&config, all_in_one)?;
    let streams = cocon_events::streams::all(&config.streams);
    let bus: Arc<dyn EventBus> = if config.nats_url.is_empty() {
        Arc::new(MemoryBus::new(streams))
    } else {
        tracing::info!(url = %config.nats_url, "connecting to NATS");
        let nats: Arc<dyn EventBus> = Arc::new(
            NatsBus::connect_with(&config.nats_url, &config.nats, &streams)
                .await
                .context("cannot set up the NATS JetStream streams")?,
        );
        // On a network bus, every event is signed by its producer and checked by its consumers.
        match &mesh_key {
            Some(key) => {
                let producers: Vec<&str> = ["auth", "documents", "files"].into_iter().filter(|s| runs(s)).collect();
                Arc::new(SignedBus::new(nats, EventKeys::new(key.clone(), &producers)))
            }
            None => nats,
        }
    };
    let store = if stateful {
        Some(open_store(&config).await?)
    } else {
        None
    };

    let auth = match &store {
        Some(store) if runs("auth") => Some(
            AuthService::build(
                config.auth.clone(),
                cocon_auth::Deps {
                    store: store.clone(),
                    bus: bus.clone(),
                    data_dir: config.data_dir.clone(),
                    mesh_key: mesh_key.clone().expect("stateful processes load the mesh key"),
                },
            )
            .await?,
        ),
        _ => None,
    };
    let documents = match &store {
        Some(store) if runs("documents") => Some(
            DocumentsService::build(
                config.documents.clone(),
                cocon_documents::Deps {
                    store: store.clone(),
                    bus: bus.clone(),
                    mesh_key: mesh_key.clone().expect("stateful processes load the mesh key"),
                },
            )
            .await?,
        ),
        _ => None,
    };
    let files = match &store {
        Some(store) if runs("files") => {
            let blobs = open_blobs(&config).await?;
            Some(
                FilesService::build(
                    config.files.clone(),
                    cocon_files::Deps {
                        store: store.clone(),
                        blobs,
                        bus: bus.clone(),
                        mesh_key: mesh_key.clone().expect("stateful processes load the mesh key"),
                    },
                )
                .await?,
            )
        }
        _ => None,
    };
    let jobs = runs("jobs").then(|| cocon_jobs::Service::build(config.jobs.clone()));
    let sharing = runs("sharing").then(|| cocon_sharing::Service::build(config.sharing.clone()));
    let notifications =
        runs("notifications").then(|| cocon_notifications::Service::build(config.notifications.clone()));

    // A service in this process is called through its gRPC trait directly; one elsewhere
    // through a tonic client.
    let mesh_client = mesh_tls.as_ref().map(|t| &t.client);
    let clients = Clients {
        auth: match &auth {
            Some(a) => AuthClient::Local(Arc::new(a.clone())),
            None => AuthClient::Remote(AuthServiceClient::new(
                remote(&config.endpoints.auth, mesh_client).context("invalid endpoints.auth")?,
            )),
        },
        documents: match &documents {
            Some(d) => DocumentsClient::Local(Arc::new(d.clone())),
            None => DocumentsClient::Remote(
                DocumentsServiceClient::new(
                    remote(&config.endpoints.documents, mesh_client).context("invalid endpoints.documents")?,
                )
                .max_decoding_message_size(usize::MAX),
            ),
        },
        files: match &files {
            Some(f) => FilesServiceClient::new(in_process(f.grpc())),
            None => FilesServiceClient::new(
                remote(&config.endpoints.files, mesh_client).context("invalid endpoints.files")?,
            ),
        },
    };

    // Listeners first, so a taken port fails start-up before anything runs.
    let http = if runs("gateway") {
        Some(bind(&config.http_addr, "HTTP").await?)
    } else {
        None
    };
    let admin = bind(&config.admin_addr, "admin HTTP").await?;
    let skeleton_here = jobs.is_some() || sharing.is_some() || notifications.is_some();
    let grpc = if !all_in_one && (auth.is_some() || documents.is_some() || files.is_some() || skeleton_here) {
        Some(bind(&config.grpc_addr, "gRPC").await?)
    } else {
        None
    };

    let requests = Shutdown::new();
    let background = Shutdown::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    if let Some(a) = &auth {
        tasks.push(a.run_background(background.clone()));
    }
    if let Some(d) = &documents {
        tasks.extend(d.run_background(background.clone()));
    }
    if let Some(f) = &files {
        tasks.extend(f.run_background(background.clone()));
    }

    let admin_token = if runs("gateway") {
        let path = config
            .admin_token_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("admin-token"));
        Some(
            cocon_common::fs::read_or_create_secret(&path, || hex::encode(rand::random::<[u8; 32]>()))
                .with_context(|| format!("cannot read or create the admin token {}", path.display()))?,
        )
    } else {
        None
    };
    let mut gateway_config = config.gateway.clone();
    if gateway_config.public_port == 0
        && let Some(listener) = &http
    {
        gateway_config.public_port = listener.local_addr()?.port();
    }
    let gateway = runs("gateway").then(|| cocon_gateway::Gateway::build(gateway_config, clients.clone()));
    let admin_app = admin_http::router(
        ready.clone(),
        metrics,
        gateway
            .as_ref()
            .zip(admin_token)
            .map(|(g, token)| g.admin_router(token)),
    );
    let admin_addr = admin.local_addr()?;
    let admin_stop = background.clone();
    let admin_task = tokio::spawn(async move {
        let _ = axum::serve(admin.tap_io(no_delay), admin_app)
            .with_graceful_shutdown(async move { admin_stop.wait().await })
            .await;
    });

    let mut addrs = vec![format!("admin={admin_addr}")];
    let mut grpc_task = None;
    if let Some(listener) = grpc {
        let addr = listener.local_addr()?;
        addrs.push(format!("grpc={addr}"));
        let (reporter, health) = tonic_health::server::health_reporter();
        if let Some(s) = &jobs {
            s.register_health(&reporter).await;
        }
        if let Some(s) = &sharing {
            s.register_health(&reporter).await;
        }
        if let Some(s) = &notifications {
            s.register_health(&reporter).await;
        }
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &mesh_tls {
            server = server
                .tls_config(tls.server.clone())
                .context("cannot use the mesh's TLS certificates")?;
        }
        let mut router = server
            .trace_fn(|req| {
                let span = tracing::info_span!("grpc", path = %req.uri().path());
                cocon_common::trace_context::continue_trace(&span, req.headers());
                span
            })
            .add_service(health);
        if let Some(a) = &auth {
            reporter
                .set_serving::<cocon_proto::auth::v1::auth_service_server::AuthServiceServer<AuthService>>()
                .await;
            router = router.add_service(a.grpc());
        }
        if let Some(d) = &documents {
            reporter.set_serving::<cocon_proto::documents::v1::documents_service_server::DocumentsServiceServer<DocumentsService>>().await;
            router = router.add_service(d.grpc());
        }
        if let Some(f) = &files {
            reporter
                .set_serving::<cocon_proto::files::v1::files_service_server::FilesServiceServer<FilesService>>()
                .await;
            router = router.add_service(f.grpc());
        }
        let stop = requests.clone();
        grpc_task = Some(tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            if let Err(err) = router
                .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
                .await
            {
                tracing::error!(error = %err, "gRPC server failed");
            }
        }));
    }

    let mut http_task = None;
    if let Some(listener) = http {
        let addr: SocketAddr = listener.local_addr()?;
        addrs.insert(0, format!("http={addr}"));
        let app = gateway.as_ref().map(|g| g.router()).unwrap_or_default();
        let stop = requests.clone();
        http_task = Some(tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener.tap_io(no_delay), app)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await;
        }));
    }
    ready.store(true, Ordering::SeqCst);
    tracing::info!(listening = %addrs.join(" "), "cocon is ready");
    // A machine-readable line for scripts and tests that start cocon on port 0.
    println!("cocon ready {}", addrs.join(" "));

    cocon_common::shutdown::os_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    ready.store(false, Ordering::SeqCst);
    requests.trigger();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        if let Some(t) = http_task {
            let _ = t.await;
        }
        if let Some(t) = grpc_task {
            let _ = t.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = config.shutdown_grace_secs,
            "in-flight requests did not finish in time"
        );
    }
    tracing::info!("flushing the outbox");
    background.trigger();
    for task in tasks {
        let _ = task.await;
    }
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Small answers leave at once instead of waiting, under Nagle's algorithm, for the client to
/// acknowledge an earlier segment of the same connection.
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
}

/// The mesh's mutual TLS, required between split processes unless the operator says the
/// network is trusted (`mesh_tls.insecure`); all in one process, nothing crosses a network.
fn mesh_tls(config: &Config, all_in_one: bool) -> anyhow::Result<Option<MeshTls>> {
    let tls = &config.mesh_tls;
    match &tls.dir {
        Some(dir) => MeshTls::load(dir, &tls.server_name).map(Some).with_context(|| {
            format!(
                "cannot read the mesh's TLS certificates in {}: make them with `cocon mesh-cert {}`",
                dir.display(),
                dir.display()
            )
        }),
        None if all_in_one || tls.insecure => Ok(None),
        None => bail!(
            "split services call each other over mutual TLS: make certificates with `cocon mesh-cert DIR` and give every process COCON_MESH_TLS__DIR=DIR (or mesh_tls.dir); on a network nothing else reaches, mesh_tls.insecure = true turns it off"
        ),
    }
}

/// The mesh key of a process running auth, documents or files: made at first start when everything
/// runs here, given explicitly when the services are split over processes (each must hold the
/// same key).
fn mesh_key(config: &Config, all_in_one: bool) -> anyhow::Result<MeshKey> {
    match &config.mesh_key_file {
        Some(path) => MeshKey::load(path, false).with_context(|| {
            format!(
                "cannot read the mesh key {}: give every process running auth, documents or files the same key file (make one with `cocon mesh-key {}`)",
                path.display(),
                path.display()
            )
        }),
        None if all_in_one => {
            let path = config.data_dir.join("secrets").join("mesh.key");
            MeshKey::load(&path, true).with_context(|| format!("cannot read or create the mesh key {}", path.display()))
        }
        None => bail!(
            "split services need the mesh key shared by auth, documents and files: make one with `cocon mesh-key FILE` and set COCON_MESH_KEY_FILE=FILE (or mesh_key_file) for each process"
        ),
    }
}
