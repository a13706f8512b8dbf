//! This process in the replicas' directory (`docs/scale-out.md`): the directory opened on the
//! process's NATS connection, and its gRPC services announced at the endpoint the others can
//! reach.

use std::net::SocketAddr;

use anyhow::Context;
use cocon_common::mesh_tls::MeshTls;
use cocon_common::ticket::MeshKey;
use cocon_mesh::{Announcement, Directory, Service};

use crate::config::Config;

/// The directory, on `nats`, under this replica's id.
pub async fn open(
    config: &Config,
    nats: async_nats::Client,
    key: MeshKey,
    tls: Option<&MeshTls>,
) -> anyhow::Result<Directory> {
    Directory::open(
        nats,
        key,
        tls.map(|t| t.client.clone()),
        config.directory.clone(),
        config.streams.replicas,
        replica_id(config)?,
    )
    .await
    .context("cannot open the replicas' directory on NATS")
}

/// Announces `services`, served at `bound`. On a store the replicas share (`sharded`), a
/// service that can own instances shard by shard does, beside its other replicas; a second
/// replica of another stateful service waits as a standby (not ready). On the embedded store
/// its data is its own disk's, so a second replica is refused. `None` when a signal came
/// while it waited.
pub async fn announce(
    config: &Config,
    directory: &Directory,
    bound: SocketAddr,
    services: &[&dyn Service],
    sharded: bool,
) -> anyhow::Result<Option<Vec<Announcement>>> {
    let endpoint = advertised(config, bound).await;
    let mut announcements = Vec::new();
    // Sharded services last: one takes shards as soon as it is announced, and must not hold
    // them while this process waits as another service's standby, not serving yet.
    let owns = |service: &&dyn Service| {
        service.sharding().is_some() && crate::services::owns_shards(config, service.kind(), sharded)
    };
    let mut services = services.to_vec();
    services.sort_by_key(owns);
    for service in services {
        let kind = service.kind();
        let announced = if owns(&service) {
            let announced = directory.announce_sharded(kind, &endpoint).await;
            if let Ok(Some(shards)) = announced.as_ref().map(|a| a.shards()) {
                service.own_shards(shards);
            }
            announced
        } else if sharded {
            tokio::select! {
                announced = directory.announce_standby(kind, &endpoint) => announced,
                _ = cocon_common::shutdown::os_signal() => {
                    tracing::info!("stopped while waiting as a standby");
                    return Ok(None);
                }
            }
        } else {
            directory.announce(kind, &endpoint).await
        };
        announcements
            .push(announced.with_context(|| format!("cannot announce {} in the replicas' directory", kind.as_str()))?);
    }
    tracing::info!(replica = directory.id(), endpoint = %endpoint, "announced in the replicas' directory");
    Ok(Some(announcements))
}

/// This replica's id in the directory, kept in its data directory: the same process
/// restarted is the same replica.
fn replica_id(config: &Config) -> anyhow::Result<String> {
    let path = config.data_dir.join("replica-id");
    cocon_common::fs::read_or_create_secret(&path, Directory::new_id)
        .with_context(|| format!("cannot read or create {}", path.display()))
}

/// The endpoint this process's gRPC is called at: `grpc_advertise`; or the address bound; or,
/// bound to every address (a container), the address of the interface its route to the NATS
/// server leaves by: the network the other processes share with it.
async fn advertised(config: &Config, bound: SocketAddr) -> String {
    if !config.grpc_advertise.is_empty() {
        return config.grpc_advertise.clone();
    }
    if !bound.ip().is_unspecified() {
        return format!("http://{bound}");
    }
    let ip = toward_nats(&config.nats_url).await.unwrap_or_else(|| {
        tracing::warn!("cannot tell which address other processes reach this one at: set grpc_advertise");
        std::net::Ipv4Addr::LOCALHOST.into()
    });
    // A socket address writes an IPv6 host in brackets, as a URL needs.
    format!("http://{}", SocketAddr::new(ip, bound.port()))
}

/// The local address of the route to the first NATS server of `url` (a UDP socket's
/// `connect` picks the route and sends nothing).
async fn toward_nats(url: &str) -> Option<std::net::IpAddr> {
    let server: async_nats::ServerAddr = url.split(',').next()?.trim().parse().ok()?;
    let server = tokio::net::lookup_host((server.host(), server.port()))
        .await
        .ok()?
        .next()?;
    let any: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(any).await.ok()?;
    socket.connect(server).await.ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}
