//! What the tests of services owning shards share (feature `testkit`): a replica of a service
//! served over gRPC behind its shard guard, announced in the directory, stopped as `cocon
//! serve` stops it or frozen; and the waits of a scenario under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cocon_common::Shutdown;
use cocon_common::ticket::MeshKey;
use tonic::service::RoutesBuilder;

use crate::{Announcement, Directory, DirectoryConfig, SHARDS, Service, ShardGuardLayer};

/// Fast directory timings for tests: a heartbeat every 200 ms, a replica dead after 1 s.
pub const DIRECTORY: DirectoryConfig = DirectoryConfig {
    heartbeat_ms: 200,
    ttl_ms: 1_000,
    drain_notice_ms: 0,
};

/// A directory of its own on `nats_url` (a process's).
pub async fn directory(nats_url: &str, key: &MeshKey) -> Directory {
    let client = async_nats::connect(nats_url).await.expect("NATS answers");
    Directory::open(client, key.clone(), None, DIRECTORY, 1, Directory::new_id())
        .await
        .expect("the directory opens")
}

/// One replica of a service owning shards: its gRPC server behind the shard guard, its
/// background tasks, its card.
pub struct Replica {
    pub name: &'static str,
    announcement: Announcement,
    requests: Shutdown,
    background: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Replica {
    /// Announces `service` sharded in `directory`, gives it its shards, starts its
    /// background tasks and serves it on `listener` behind the guard of the calls whose paths
    /// start with `prefix`.
    pub async fn serve(
        name: &'static str,
        directory: &Directory,
        listener: tokio::net::TcpListener,
        service: impl Service + 'static,
        prefix: &'static str,
    ) -> Replica {
        let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
        let announcement = directory
            .announce_sharded(service.kind(), &endpoint)
            .await
            .expect("announced");
        let shards = announcement.shards().expect("sharded").clone();
        service.own_shards(&shards);
        let background = Shutdown::new();
        let tasks = service.spawn_background(background.clone());
        let requests = Shutdown::new();
        let stop = requests.clone();
        let waits = service.sharding().unwrap_or_default();
        let guard = ShardGuardLayer::new(shards, prefix).waiting(waits);
        let mut routes = RoutesBuilder::default();
        service.add_grpc(&mut routes);
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(guard)
                .add_routes(routes.routes())
                .serve_with_incoming_shutdown(
                    // As `cocon serve` does: small answers leave at once (no Nagle delay).
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stop.wait(),
                )
                .await
                .expect("the gRPC server runs");
        });
        Replica {
            name,
            announcement,
            requests,
            background,
            tasks,
            server,
        }
    }

    /// How many shards it holds and may write.
    pub fn held(&self) -> usize {
        self.announcement.shards().map_or(0, |s| s.held().len())
    }

    /// Waits until it holds every shard.
    pub async fn holds_all(&self) {
        let start = Instant::now();
        while self.held() < SHARDS {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} alone took {}",
                self.name,
                self.held()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops as `cocon serve` does on SIGTERM: drains (its shards go to the others, if any,
    /// once the writes under way end), finishes its calls, flushes its outbox, withdraws.
    pub async fn stop(self, others: bool) {
        self.announcement.drain().await;
        let start = Instant::now();
        while others && self.held() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} kept its shards",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.requests.trigger();
        self.server.await.expect("the gRPC server stopped");
        self.background.trigger();
        for task in self.tasks {
            task.await.expect("a background task stopped");
        }
        self.announcement.withdraw().await;
    }

    /// Freezes as a replica cut off from NATS, or paused, does: its heartbeats and background
    /// tasks (its outbox relay) stop at once, releasing nothing, but it still answers calls.
    /// Answers its server's task, to abort at the end.
    pub fn freeze(self) -> tokio::task::JoinHandle<()> {
        drop(self.announcement);
        for task in self.tasks {
            task.abort();
        }
        self.server
    }
}

/// Waits until `replicas` hold every shard between them, each some; how long it took.
pub async fn settled(replicas: &[&Replica]) -> Duration {
    let start = Instant::now();
    loop {
        let held: Vec<usize> = replicas.iter().map(|r| r.held()).collect();
        if held.iter().sum::<usize>() == SHARDS && held.iter().all(|h| *h > 0) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the shards did not settle: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `more` writes were acknowledged (counted in `done`) since now.
pub async fn writes(done: &AtomicUsize, more: usize) {
    let target = done.load(Ordering::SeqCst) + more;
    let start = Instant::now();
    while done.load(Ordering::SeqCst) < target {
        assert!(start.elapsed() < Duration::from_secs(30), "the writers stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A caller's directory and clients (a gateway's), following the shards of `kind`, once it
/// sees a replica. Keep the directory as long as the clients.
pub async fn caller(nats_url: &str, key: &MeshKey, kind: crate::ServiceKind) -> (Directory, crate::Clients) {
    let directory = directory(nats_url, key).await;
    let route = directory.sharded_route(kind).await.expect("the shards are watched");
    let start = Instant::now();
    while route.replicas().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the caller never saw a replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clients = crate::Clients::connect(
        crate::LocalServices::default(),
        &crate::Endpoints::default(),
        None,
        Some(&directory),
    )
    .expect("the clients connect");
    (directory, clients)
}

/// Writers under way: told to stop by `stop`, each write counted in `done`.
pub struct Writers<T> {
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub done: std::sync::Arc<AtomicUsize>,
    pub tasks: Vec<tokio::task::JoinHandle<T>>,
}

/// Starts `writers` tasks, `write(instances, stop, done)`, each over `per` instances of its
/// own (ids of 32 hex digits).
pub fn spawn_writers<F, Fut, T>(writers: u64, per: u64, write: F) -> Writers<T>
where
    F: Fn(Vec<String>, std::sync::Arc<std::sync::atomic::AtomicBool>, std::sync::Arc<AtomicUsize>) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let tasks = (0..writers)
        .map(|w| {
            let instances = (0..per).map(|i| format!("{:032x}", w * per + i + 1)).collect();
            tokio::spawn(write(instances, stop.clone(), done.clone()))
        })
        .collect();
    Writers { stop, done, tasks }
}

/// Checks that the projection the replicas wrote together equals a replay of the log: dumps
/// its tables, lets `stop` stop the last replica, replays the log into them, and compares.
pub async fn check_replay(
    store: std::sync::Arc<dyn cocon_storage::Store>,
    projection: &mut dyn cocon_events::Projection,
    stop: impl std::future::Future<Output = ()>,
) {
    let dump = |table: &'static str| {
        let store = store.clone();
        async move { store.scan_table(table, None, 1_000_000).await.expect("the table reads") }
    };
    let mut before = Vec::new();
    for table in projection.tables() {
        before.push(dump(table).await);
    }
    stop.await;
    cocon_events::rebuild(store.clone(), projection, &mut |_| {})
        .await
        .expect("the log replays");
    for (i, table) in projection.tables().iter().enumerate() {
        assert!(dump(table).await == before[i], "{table} rebuilt differs");
    }
}
