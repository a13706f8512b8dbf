//! The replicas' directory on a real NATS server: callers find the replicas of a service with
//! no endpoint written down, take them in turn, follow one that joins within a heartbeat, pass
//! over one that drains or dies without a failed call, and a service that keeps state runs as
//! one replica at a time, its lease taken over when its holder stops and fenced when lost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cocon_common::ticket::MeshKey;
use cocon_mesh::{Announcement, Clients, Directory, DirectoryConfig, Endpoints, LocalServices, MeshError, ServiceKind};
use cocon_proto::notifications::v1 as pb;
use cocon_proto::notifications::v1::notifications_service_server::NotificationsServiceServer;
use cocon_tests::NatsServer;

const CONFIG: DirectoryConfig = DirectoryConfig {
    heartbeat_ms: 200,
    ttl_ms: 1_000,
    drain_notice_ms: 0,
};

mod common;
use common::Named;

async fn open(nats: &NatsServer, key: &MeshKey) -> Directory {
    let client = async_nats::connect(nats.url()).await.unwrap();
    Directory::open(client, key.clone(), None, CONFIG, 1, Directory::new_id())
        .await
        .unwrap()
}

/// A notifications replica: a gRPC server and its card in the directory.
struct Replica {
    announcement: Option<Announcement>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn replica(nats: &NatsServer, key: &MeshKey, name: &'static str) -> Replica {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(NotificationsServiceServer::new(Named(name)))
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let directory = open(nats, key).await;
    let announcement = directory.announce(ServiceKind::Notifications, &endpoint).await.unwrap();
    Replica {
        announcement: Some(announcement),
        stop: Some(stop),
        server,
    }
}

impl Replica {
    /// Dies without a word: the server goes, the card stays until its heartbeats are missed.
    async fn die(mut self) {
        drop(self.announcement.take());
        let _ = self.stop.take().unwrap().send(());
        (&mut self.server).await.unwrap();
    }
}

/// Polls `check` every 20 ms until it holds, for at most `limit`; the time it took.
async fn until(limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn call(clients: &Clients) -> Result<String, tonic::Status> {
    let mut client = clients.notifications.clone();
    Ok(client.create(pb::CreateRequest::default()).await?.into_inner().dropped)
}

/// `n` calls: how many each replica answered; every call must succeed.
async fn calls(clients: &Clients, n: usize) -> HashMap<String, usize> {
    let mut answers = HashMap::new();
    for i in 0..n {
        let who = call(clients).await.unwrap_or_else(|e| panic!("call {i} failed: {e}"));
        *answers.entry(who).or_insert(0) += 1;
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_callers_follow_replicas_that_join_drain_and_die() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let caller = open(&nats, &key).await;
    let clients = Clients::connect(LocalServices::default(), &Endpoints::default(), None, Some(&caller)).unwrap();
    let route = caller.route(ServiceKind::Notifications);

    // Nothing registered: a clear error, not a hang.
    let none = call(&clients).await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unavailable, "{none:?}");
    assert!(
        none.message().contains("no replica of the notifications service"),
        "{none:?}"
    );

    let a = replica(&nats, &key, "a").await;
    let b = replica(&nats, &key, "b").await;
    until(Duration::from_secs(5), || route.replicas().len() == 2).await;
    let answers = calls(&clients, 20).await;
    assert_eq!(answers.get("a"), Some(&10), "taken in turn: {answers:?}");
    assert_eq!(answers.get("b"), Some(&10), "taken in turn: {answers:?}");

    // A replica that joins is called within a heartbeat or so.
    let _c = replica(&nats, &key, "c").await;
    let joined = Instant::now();
    loop {
        if call(&clients).await.unwrap() == "c" {
            break;
        }
        assert!(joined.elapsed() < Duration::from_secs(2), "c never called");
    }
    eprintln!(
        "a replica that joined was called {:?} after its card was written",
        joined.elapsed()
    );

    // One that drains is passed over as soon as callers read it, and no call fails.
    a.announcement.as_ref().unwrap().drain().await;
    until(Duration::from_secs(2), || route.replicas().iter().any(|r| r.2)).await;
    let answers = calls(&clients, 30).await;
    assert_eq!(answers.get("a"), None, "{answers:?}");

    // One that dies without a word: the calls that meet its closed port go to another, none
    // fails, and it is forgotten once its heartbeats are missed.
    let gone = route
        .replicas()
        .into_iter()
        .filter(|r| !r.2)
        .map(|r| r.0)
        .collect::<Vec<_>>();
    b.die().await;
    let answers = calls(&clients, 30).await;
    assert_eq!(answers.get("b"), None, "{answers:?}");
    assert_eq!(answers.get("c"), Some(&30), "{answers:?}");
    let forgotten = until(Duration::from_secs(3), || {
        let now: Vec<String> = route.replicas().into_iter().map(|r| r.0).collect();
        now.len() == 2 && gone.iter().filter(|id| now.contains(id)).count() == 1
    })
    .await;
    eprintln!("a dead replica forgotten {forgotten:?} after its death was first met");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_stateful_service_runs_as_one_replica_and_its_lease_is_fenced() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let one = open(&nats, &key).await;
    let two = open(&nats, &key).await;

    let held = one
        .announce(ServiceKind::Documents, "http://127.0.0.1:1")
        .await
        .unwrap();
    match two.announce(ServiceKind::Documents, "http://127.0.0.1:2").await {
        Err(MeshError::LeaseHeld { service, endpoint, .. }) => {
            assert_eq!(service, "documents");
            assert_eq!(endpoint, "http://127.0.0.1:1");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("two replicas of documents at once"),
    }
    // Another service is not held by documents' lease.
    let files = two.announce(ServiceKind::Files, "http://127.0.0.1:2").await.unwrap();

    // Released on a clean stop: the next replica takes it at once.
    held.withdraw().await;
    let second = two
        .announce(ServiceKind::Documents, "http://127.0.0.1:2")
        .await
        .unwrap();

    // A standby (a store the replicas share) waits for the lease and takes it over as soon as
    // its holder stops.
    let standby = tokio::spawn({
        let one = one.clone();
        async move { one.announce_standby(ServiceKind::Documents, "http://127.0.0.1:5").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!standby.is_finished(), "a standby took a lease that is held");
    second.withdraw().await;
    let released = Instant::now();
    let standby = tokio::time::timeout(Duration::from_secs(2), standby)
        .await
        .expect("the standby never took over")
        .unwrap()
        .unwrap();
    eprintln!("a standby took over {:?} after the holder stopped", released.elapsed());
    standby.withdraw().await;
    let second = two
        .announce(ServiceKind::Documents, "http://127.0.0.1:2")
        .await
        .unwrap();

    // Its holder dies and is restarted on the same data directory (the same replica id): it
    // takes its lease back at once, where another replica must wait.
    drop(second);
    assert!(matches!(
        one.announce(ServiceKind::Documents, "http://127.0.0.1:3").await,
        Err(MeshError::LeaseHeld { .. })
    ));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let restarted = Directory::open(client, key.clone(), None, CONFIG, 1, two.id().to_string())
        .await
        .unwrap();
    let again = restarted
        .announce(ServiceKind::Documents, "http://127.0.0.1:4")
        .await
        .unwrap();

    // Its holder dies for good: the lease is taken over once its heartbeats are missed, not
    // before.
    drop(again);
    let died = Instant::now();
    let third = loop {
        match one.announce(ServiceKind::Documents, "http://127.0.0.1:3").await {
            Ok(taken) => break taken,
            Err(MeshError::LeaseHeld { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("{other}"),
        }
        assert!(
            died.elapsed() < Duration::from_secs(5),
            "the lease of a dead replica was never taken over"
        );
    };
    let waited = died.elapsed();
    assert!(
        waited >= Duration::from_millis(600),
        "taken over while its holder might live: {waited:?}"
    );
    eprintln!("a dead holder's lease taken over after {waited:?}");

    // A holder whose lease was taken behind its back learns so at its next heartbeat.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(cocon_mesh::DIRECTORY_BUCKET)
        .await
        .unwrap();
    kv.put("lease.documents", "{}".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), third.lost())
        .await
        .expect("the holder never learned that its lease was taken");
    drop(files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_nats_restart_costs_no_route_and_no_lease() {
    let mut nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let caller = open(&nats, &key).await;
    let clients = Clients::connect(LocalServices::default(), &Endpoints::default(), None, Some(&caller)).unwrap();
    let route = caller.route(ServiceKind::Notifications);
    let _a = replica(&nats, &key, "a").await;
    let holder = open(&nats, &key).await;
    let held = holder
        .announce(ServiceKind::Documents, "http://127.0.0.1:1")
        .await
        .unwrap();
    until(Duration::from_secs(5), || route.replicas().len() == 1).await;

    // NATS down for longer than a replica's heartbeats are awaited: callers keep the replicas
    // they know (silence is not death while the directory cannot be read).
    nats.kill();
    let down = Instant::now();
    while down.elapsed() < Duration::from_millis(2_500) {
        assert_eq!(call(&clients).await.unwrap(), "a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nats.restart().await.unwrap();
    let back = now_ms();

    // The lease was kept on NATS's disk and is renewed by its holder once NATS is back.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value(cocon_mesh::DIRECTORY_BUCKET)
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let card: serde_json::Value = match kv.get("lease.documents").await.unwrap() {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap(),
            None => panic!("the lease vanished with the NATS restart"),
        };
        if card["at_ms"].as_i64().unwrap() > back {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the holder never renewed its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = open(&nats, &key).await;
    assert!(matches!(
        other.announce(ServiceKind::Documents, "http://127.0.0.1:2").await,
        Err(MeshError::LeaseHeld { .. })
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), held.lost())
            .await
            .is_err(),
        "the holder believes it lost its lease"
    );
    assert_eq!(call(&clients).await.unwrap(), "a");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
