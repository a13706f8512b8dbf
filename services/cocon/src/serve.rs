//! `cocon serve`: builds the services this process runs, connects to the others, and serves
//! HTTP (gateway), admin HTTP and, when split, gRPC, until SIGTERM; then drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt as _;
use cocon_common::Shutdown;
use cocon_common::mesh_tls::MeshTls;
use cocon_common::ticket::MeshKey;
use cocon_events::{EventBus, EventKeys, MemoryBus, NatsBus, SignedBus};
use cocon_mesh::{Announcement, Clients, LocalServices, Service, ServiceKind, ShardGuardLayer};
use cocon_storage::{EmbeddedStore, Store};
use tokio::net::TcpListener;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;

use crate::ServeArgs;
use crate::admin_http;
use crate::config::Config;
use crate::services::Parts;

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
    config
        .contexts
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
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

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}: is the port taken? choose another in the config"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let enabled = config.enabled()?;
    // Nothing crosses a network when every service that serves runs here.
    let all_in_one = ServiceKind::DEFAULT.iter().all(|k| enabled.contains(k));
    let name = if enabled.iter().eq(ServiceKind::DEFAULT.iter()) {
        "cocon".to_string()
    } else {
        format!(
            "cocon-{}",
            enabled.iter().map(|k| k.as_str()).collect::<Vec<_>>().join("-")
        )
    };
    let _telemetry = cocon_common::telemetry::init(&name);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        // How late triggers fire, as a histogram (cumulative, so it sums across processes and
        // gives any quantile over any range): its alert is "p99 above a second".
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("cocon_jobs_trigger_lag_seconds".into()),
            &[
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ],
        )
        .context("cannot set the metrics' buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let names: Vec<&str> = enabled.iter().map(|k| k.as_str()).collect();
    tracing::info!(services = %names.join(","), data_dir = %config.data_dir.display(), "starting cocon");

    let stateful: Vec<ServiceKind> = enabled.iter().copied().filter(|k| k.keeps_state()).collect();
    if !all_in_one && !stateful.is_empty() && config.nats_url.is_empty() {
        bail!("running only some services needs a shared event bus: pass --nats nats://HOST:4222 (or COCON_NATS_URL)");
    }
    let runs_gateway = enabled.contains(&ServiceKind::Gateway);
    // A gateway on NATS checks the events it hands to realtime sockets, and signs its own.
    let gateway_on_nats = runs_gateway && !config.nats_url.is_empty();
    let mesh_key = if !stateful.is_empty() || gateway_on_nats || enabled.iter().any(|k| k.needs_mesh_key()) {
        Some(mesh_key(&config, all_in_one)?)
    } else {
        None
    };
    if runs_gateway && !all_in_one && config.nats_url.is_empty() {
        tracing::warn!("this gateway has no event bus (--nats): its /realtime/ sockets will see no events");
    }
    let mesh_tls = mesh_tls(&config, all_in_one)?;
    let enabled_list: Vec<ServiceKind> = enabled.iter().copied().collect();
    let (bus, nats) = open_bus(&config, mesh_key.as_ref(), &enabled_list).await?;
    // On NATS, split processes find each other in the replicas' directory.
    let directory = match (&nats, &mesh_key) {
        (Some(nats), Some(key)) if !all_in_one => {
            Some(crate::replicas::open(&config, nats.clone(), key.clone(), mesh_tls.as_ref()).await?)
        }
        _ => None,
    };
    let store = if stateful.is_empty() {
        None
    } else {
        Some(open_store(&config).await?)
    };

    // Replicas sharing a store own instances shard by shard (those services that can);
    // on the embedded store each replica's data is its own disk's: one at a time.
    let sharded = directory.is_some() && config.store.backend != "embedded";
    let parts = Parts {
        config: &config,
        bus,
        store,
        mesh_key,
        replica: directory.as_ref().map(|d| d.id().to_string()),
        sharded,
    };
    let mut services = Vec::new();
    for kind in &enabled {
        services.extend(crate::services::build(*kind, &parts).await?);
    }
    // A service in this process is called through its gRPC trait directly; one elsewhere
    // through a tonic client.
    let mut local = LocalServices::default();
    for service in &services {
        service.offer(&mut local);
    }
    if let Some(directory) = &directory {
        // Calls to documents and files go to the replica holding their instance's shard when
        // their replicas own shards; to any replica in turn when they do not (no lease seen).
        for kind in [ServiceKind::Documents, ServiceKind::Files] {
            directory
                .sharded_route(kind)
                .await
                .with_context(|| format!("cannot watch the {kind} shards on NATS"))?;
        }
    }
    let clients = Clients::connect(
        local,
        &config.endpoints,
        mesh_tls.as_ref().map(|t| &t.client),
        directory.as_ref(),
    )?;

    // Listeners first, so a taken port fails start-up before anything runs.
    let http = if runs_gateway {
        Some(bind(&config.http_addr, "HTTP").await?)
    } else {
        None
    };
    let admin = bind(&config.admin_addr, "admin HTTP").await?;
    let grpc = if !all_in_one && !services.is_empty() {
        Some(bind(&config.grpc_addr, "gRPC").await?)
    } else {
        None
    };

    // This process's services go in the replicas' directory before anything of theirs runs:
    // a stateful one takes its lease first, so that no second replica's consumers or relays
    // ever run beside the holder's. Calls that come before the gRPC server serves wait in the
    // bound listener's backlog.
    let announcements = match (grpc.as_ref().map(|l| l.local_addr()).transpose()?, &directory) {
        (Some(bound), Some(directory)) => {
            let serving: Vec<&dyn Service> = services
                .iter()
                .filter(|s| s.serving() && s.health_name().is_some())
                .map(|s| s.as_ref())
                .collect();
            match crate::replicas::announce(&config, directory, bound, &serving, sharded).await? {
                Some(announcements) => announcements,
                None => return Ok(()),
            }
        }
        _ => Vec::new(),
    };

    let gateway_url = match &http {
        Some(listener) => Some(format!("http://{}", listener.local_addr()?)),
        None => None,
    };
    for service in &services {
        service.connect(&clients, gateway_url.as_deref());
    }

    let requests = Shutdown::new();
    let background = Shutdown::new();
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for service in &services {
        tasks.extend(service.spawn_background(background.clone()));
    }
    let not_serving: Vec<ServiceKind> = services.iter().filter(|s| !s.serving()).map(|s| s.kind()).collect();

    let gateway = if runs_gateway {
        let mut gateway_config = config.gateway.clone();
        if gateway_config.public_port == 0
            && let Some(listener) = &http
        {
            gateway_config.public_port = listener.local_addr()?.port();
        }
        Some(cocon_gateway::Gateway::build(
            gateway_config,
            clients,
            Some(parts.bus.clone()),
            Arc::new(config.contexts.clone()),
        ))
    } else {
        None
    };
    let admin_routes = match &gateway {
        Some(gateway) => Some(gateway.admin_router(admin_token(&config)?)),
        None => None,
    };
    let admin_app = admin_http::router(ready.clone(), not_serving.clone(), metrics, admin_routes);
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
        addrs.push(format!("grpc={}", listener.local_addr()?));
        let guards = [
            shard_guard(&services, &announcements, ServiceKind::Documents),
            shard_guard(&services, &announcements, ServiceKind::Files),
        ];
        grpc_task = Some(serve_grpc(listener, &services, guards, mesh_tls.as_ref(), requests.clone()).await?);
    }
    let mut http_task = None;
    if let (Some(listener), Some(gateway)) = (http, &gateway) {
        let addr: SocketAddr = listener.local_addr()?;
        addrs.insert(0, format!("http={addr}"));
        let app = gateway.router().into_make_service_with_connect_info::<SocketAddr>();
        let stop = requests.clone();
        http_task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener.tap_io(no_delay), app)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await;
        }));
    }
    if not_serving.is_empty() {
        ready.store(true, Ordering::SeqCst);
    } else {
        let names: Vec<&str> = not_serving.iter().map(|k| k.as_str()).collect();
        tracing::warn!(
            not_serving = %names.join(","),
            "this process runs services that are not built yet: /ready answers 503"
        );
    }
    tracing::info!(listening = %addrs.join(" "), "cocon is ready");
    // A machine-readable line for scripts and tests that start cocon on port 0.
    println!("cocon ready {}", addrs.join(" "));

    let lost_lease = if announcements.is_empty() {
        cocon_common::shutdown::os_signal().await;
        false
    } else {
        let lost = futures::future::select_all(announcements.iter().map(|a| Box::pin(a.lost())));
        tokio::select! {
            _ = cocon_common::shutdown::os_signal() => false,
            _ = lost => true,
        }
    };
    ready.store(false, Ordering::SeqCst);
    if !announcements.is_empty() {
        // Callers stop picking this replica once they read that it drains; until then it
        // still takes their calls.
        tracing::info!("draining: telling the other processes");
        futures::future::join_all(announcements.iter().map(|a| a.drain())).await;
        tokio::time::sleep(config.directory.drain_notice()).await;
    }
    tracing::info!("shutting down: finishing in-flight requests");
    requests.trigger();
    if let Some(gateway) = &gateway {
        gateway.close_sockets();
    }
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        for task in http_task.into_iter().chain(grpc_task) {
            let _ = task.await;
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
    futures::future::join_all(announcements.into_iter().map(|a| a.withdraw())).await;
    tracing::info!("stopped");
    if lost_lease {
        bail!("this replica lost its lease to another replica of the same service: it stopped");
    }
    Ok(())
}

/// The in-process bus, or NATS JetStream; on NATS every event is signed by its producer and
/// checked by its consumers. `enabled`: the services of this process, whose events it signs.
async fn open_bus(
    config: &Config,
    mesh_key: Option<&MeshKey>,
    enabled: &[ServiceKind],
) -> anyhow::Result<(Arc<dyn EventBus>, Option<async_nats::Client>)> {
    let streams = cocon_events::streams::all(&config.streams);
    if config.nats_url.is_empty() {
        return Ok((Arc::new(MemoryBus::new(streams)), None));
    }
    tracing::info!(url = %config.nats_url, "connecting to NATS");
    let nats_bus = NatsBus::connect_with(&config.nats_url, &config.nats, &streams)
        .await
        .context("cannot set up the NATS JetStream streams")?;
    let client = nats_bus.client().clone();
    let nats: Arc<dyn EventBus> = Arc::new(nats_bus);
    let bus: Arc<dyn EventBus> = match mesh_key {
        Some(key) => {
            let mut producers: Vec<&str> = enabled.iter().filter(|k| k.keeps_state()).map(|k| k.as_str()).collect();
            if enabled.contains(&ServiceKind::Gateway) || producers.contains(&"jobs") || producers.contains(&"files") {
                // What the realtime sockets of every gateway get without a store: `POST
                // /realtime/…`, konnectors' log lines, thumbnails made.
                producers.push("realtime");
            }
            if producers.contains(&"jobs") {
                // The jobs' shared queue (`cocon.jobq.<worker>`).
                producers.push("jobq");
            }
            Arc::new(SignedBus::new(nats, EventKeys::new(key.clone(), &producers)))
        }
        None => nats,
    };
    Ok((bus, Some(client)))
}

/// The admin API's secret, made (mode 0600) at first start unless the config names a file.
fn admin_token(config: &Config) -> anyhow::Result<String> {
    let path = config
        .admin_token_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("admin-token"));
    cocon_common::fs::read_or_create_secret(&path, || hex::encode(rand::random::<[u8; 32]>()))
        .with_context(|| format!("cannot read or create the admin token {}", path.display()))
}

/// Serves the services' gRPC servers and the health service on `listener` until `stop`.
/// The guard of `kind`'s calls when this process runs it sharded: a call on an instance whose
/// shard this replica does not hold is refused before it runs.
fn shard_guard(
    services: &[Box<dyn Service>],
    announcements: &[Announcement],
    kind: ServiceKind,
) -> Option<ShardGuardLayer> {
    let shards = announcements.iter().find(|a| a.kind() == kind)?.shards()?;
    let waits = services.iter().find(|s| s.kind() == kind)?.sharding()?;
    let prefix: &'static str = match kind {
        ServiceKind::Documents => "/cocon.documents.v1.DocumentsService/",
        ServiceKind::Files => "/cocon.files.v1.FilesService/",
        _ => return None,
    };
    Some(ShardGuardLayer::new(shards.clone(), prefix).waiting(waits))
}

async fn serve_grpc(
    listener: TcpListener,
    services: &[Box<dyn Service>],
    guards: [Option<ShardGuardLayer>; 2],
    tls: Option<&MeshTls>,
    stop: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut routes = RoutesBuilder::default();
    routes.add_service(health);
    for service in services {
        service.add_grpc(&mut routes);
        if let Some(name) = service.health_name() {
            let status = if service.serving() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(name, status).await;
        }
    }
    let [documents_guard, files_guard] = guards;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server
            .tls_config(tls.server.clone())
            .context("cannot use the mesh's TLS certificates")?;
    }
    let router = server
        .layer(tower::util::option_layer(documents_guard))
        .layer(tower::util::option_layer(files_guard))
        .trace_fn(|req| {
            let span = tracing::info_span!("grpc", path = %req.uri().path());
            cocon_common::trace_context::continue_trace(&span, req.headers());
            span
        })
        .add_routes(routes.routes());
    Ok(tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        if let Err(err) = router
            .serve_with_incoming_shutdown(incoming, async move { stop.wait().await })
            .await
        {
            tracing::error!(error = %err, "gRPC server failed");
        }
    }))
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
                "cannot read the mesh key {}: give every process running auth, documents, files, jobs or a gateway on NATS the same key file (make one with `cocon mesh-key {}`)",
                path.display(),
                path.display()
            )
        }),
        None if all_in_one => {
            let path = config.data_dir.join("secrets").join("mesh.key");
            MeshKey::load(&path, true).with_context(|| format!("cannot read or create the mesh key {}", path.display()))
        }
        None => bail!(
            "split services need the mesh key shared by auth, documents, files, jobs and the gateways on NATS: make one with `cocon mesh-key FILE` and set COCON_MESH_KEY_FILE=FILE (or mesh_key_file) for each process"
        ),
    }
}
