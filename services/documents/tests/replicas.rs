//! Replicas of the documents service sharing one store, as they share ScyllaDB in production
//! (here one embedded store in one process stands in for it, with a real NATS server for the
//! shards' leases): they own instances shard by shard, and while replicas join and leave
//! under a steady load of writes, no call fails, no acknowledged write is lost, no sequence
//! is given twice (a replica taking back shards forgets what it cached of them), and the
//! projection still equals a replay of the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cocon_common::ticket::MeshKey;
use cocon_documents::{Config, Deps, DocumentsService};
use cocon_events::{EventBus, EventLog, MemoryBus, NatsBus};
use cocon_mesh::testkit::{self, Replica, settled};
use cocon_mesh::{Clients, Directory, ServiceKind};
use cocon_proto::documents::v1 as pb;
use cocon_storage::{EmbeddedStore, ScanRange, Store};
use cocon_tests::NatsServer;

const DOCTYPE: &str = "io.cozy.counters";

/// A documents replica on the shared store, served on a port of its own.
async fn start(
    name: &'static str,
    nats: &NatsServer,
    key: &MeshKey,
    store: &Arc<dyn Store>,
    bus: &Arc<dyn EventBus>,
) -> Replica {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let directory = testkit::directory(&nats.url(), key).await;
    let deps = Deps {
        store: store.clone(),
        bus: bus.clone(),
        mesh_key: key.clone(),
        partition: Some(directory.id().to_string()),
    };
    let service = DocumentsService::build(Config::default(), deps).await.unwrap();
    Replica::serve(
        name,
        &directory,
        listener,
        service,
        "/cocon.documents.v1.DocumentsService/",
    )
    .await
}

/// The scope of a call on `instance`'s counters, with the ticket the auth service would give.
fn scope(key: &MeshKey, instance: &str) -> Option<pb::Scope> {
    Some(pb::Scope {
        instance: instance.to_string(),
        doctype: DOCTYPE.into(),
        ticket: key.issue(instance, cocon_common::time::now_secs() + 600),
        ..Default::default()
    })
}

/// What the writers did: per instance, the writes acknowledged and the last value written;
/// and each write's latency.
#[derive(Default)]
struct Written {
    acked: HashMap<String, (u64, u64)>,
    latencies: Vec<Duration>,
}

/// A writer: updates a counter document of each of its instances in turn, with the revision
/// the last write returned, until told to stop. Every call must succeed.
async fn writer(
    clients: Clients,
    key: MeshKey,
    instances: Vec<String>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Written {
    let mut written = Written::default();
    let mut revs: HashMap<String, String> = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        for instance in &instances {
            let mut body = serde_json::json!({ "n": n });
            if let Some(rev) = revs.get(instance) {
                body["_rev"] = rev.clone().into();
            }
            let req = pb::PutDocumentRequest {
                scope: scope(&key, instance),
                id: "counter".into(),
                body: serde_json::to_vec(&body).unwrap().into(),
                ..Default::default()
            };
            let started = Instant::now();
            let answer = clients
                .documents
                .clone()
                .put_document(req)
                .await
                .unwrap_or_else(|e| panic!("a write to {instance} failed: {e}"))
                .into_inner();
            written.latencies.push(started.elapsed());
            revs.insert(instance.clone(), answer.rev);
            let acked = written.acked.entry(instance.clone()).or_default();
            *acked = (acked.0 + 1, n);
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
    written
}

/// Eight writers over 40 instances, calling through a gateway's view of the shards.
struct Load {
    _caller: Directory,
    clients: Clients,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    writers: Vec<tokio::task::JoinHandle<Written>>,
}

impl Load {
    /// Starts once the caller sees a documents replica.
    async fn start(nats: &NatsServer, key: &MeshKey) -> Load {
        let (caller, clients) = testkit::caller(&nats.url(), key, ServiceKind::Documents).await;
        let testkit::Writers {
            stop,
            done,
            tasks: writers,
        } = testkit::spawn_writers(8, 5, |instances, stop, done| {
            writer(clients.clone(), key.clone(), instances, stop, done)
        });
        Load {
            _caller: caller,
            clients,
            stop,
            done,
            writers,
        }
    }

    /// Waits until `more` writes were acknowledged since now.
    async fn writes(&self, more: usize) {
        testkit::writes(&self.done, more).await
    }

    /// Stops the writers: what they wrote, and every write's latency, sorted.
    async fn finish(self) -> (Clients, HashMap<String, (u64, u64)>, Vec<Duration>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut acked = HashMap::new();
        let mut latencies = Vec::new();
        for w in self.writers {
            let written = w.await.expect("every write succeeded");
            acked.extend(written.acked);
            latencies.extend(written.latencies);
        }
        assert_eq!(acked.len(), 40);
        latencies.sort();
        (self.clients, acked, latencies)
    }
}

/// Every acknowledged write is in the log once, under its own sequence, and each document
/// holds the last value written.
async fn check_writes(store: &Arc<dyn Store>, clients: &Clients, key: &MeshKey, acked: &HashMap<String, (u64, u64)>) {
    for (instance, (count, last)) in acked {
        let events = store
            .scan("documents.events", instance.as_bytes(), ScanRange::all())
            .await
            .unwrap();
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| u64::from_be_bytes(e.sort.as_slice().try_into().unwrap()))
            .collect();
        assert_eq!(
            seqs,
            (1..=*count).collect::<Vec<u64>>(),
            "{instance}: one event per acknowledged write, no sequence given twice"
        );
        let doc = clients
            .documents
            .clone()
            .get_document(pb::GetDocumentRequest {
                scope: scope(key, instance),
                id: "counter".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let doc: serde_json::Value = serde_json::from_slice(&doc.json).unwrap();
        assert_eq!(doc["n"], *last, "{instance} holds its last write");
        assert!(
            doc["_rev"].as_str().unwrap().starts_with(&format!("{count}-")),
            "{instance}: one revision per write"
        );
    }
}

/// Waits until every writer's outbox partition is published: by its own relay as it stopped,
/// or by a survivor that adopted it.
async fn check_outboxes(store: &Arc<dyn Store>, replicas: usize) {
    let log = EventLog::open(store.clone(), "documents.events", "documents.outbox")
        .await
        .unwrap();
    let partitions = log.outbox().partitions().await.unwrap();
    assert_eq!(
        partitions.len(),
        replicas + 1,
        "the sole partition and one per replica: {partitions:?}"
    );
    let flushed = Instant::now();
    for partition in &partitions {
        while log.outbox().of_partition(partition).backlog().await.unwrap() > 0 {
            assert!(
                flushed.elapsed() < Duration::from_secs(10),
                "{partition} was never relayed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn figures(latencies: &[Duration]) -> String {
    format!(
        "{} writes, 0 failed; p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies.last().unwrap()
    )
}

async fn store_in(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_replicas_on_a_shared_store_hand_instances_over_under_load_losing_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir).await;
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(cocon_events::streams::all(
        &cocon_events::streams::Limits::default(),
    )));

    let a = start("a", &nats, &key, &store, &bus).await;
    a.holds_all().await;
    let load = Load::start(&nats, &key).await;
    load.writes(200).await;

    // b joins, then c; then b leaves (its shards go back to a and c: a takes back instances
    // it wrote before and must not trust what it cached of them), then a leaves.
    let b = start("b", &nats, &key, &store, &bus).await;
    let joined_b = settled(&[&a, &b]).await;
    load.writes(200).await;
    let c = start("c", &nats, &key, &store, &bus).await;
    let joined_c = settled(&[&a, &b, &c]).await;
    load.writes(200).await;
    let left = Instant::now();
    b.stop(true).await;
    let left_b = left.elapsed();
    settled(&[&a, &c]).await;
    load.writes(200).await;
    let left = Instant::now();
    a.stop(true).await;
    let left_a = left.elapsed();
    settled(&[&c]).await;
    load.writes(200).await;
    let (clients, acked, latencies) = load.finish().await;

    check_writes(&store, &clients, &key, &acked).await;
    check_outboxes(&store, 3).await;

    // The projection the replicas wrote together equals a replay of the log.
    let mut projection = DocumentsService::projection(store.clone()).await.unwrap();
    testkit::check_replay(store.clone(), &mut projection, c.stop(false)).await;
    println!(
        "{}; b's half taken in {joined_b:?}, c's third in {joined_c:?}; b left in {left_b:?}, a in {left_a:?}",
        figures(&latencies)
    );
}

/// A replica that freezes (cut off from NATS, or paused) with writes going to it: it stops
/// writing before its card can be thought dead, calls to its shards wait and then go to the
/// replicas that take them, no call fails, no acknowledged write is lost or written twice,
/// and what its outbox held reaches JetStream, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_frozen_replicas_instances_are_taken_over_with_nothing_lost() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir).await;
    let limits = cocon_events::streams::Limits::default();
    let bus: Arc<dyn EventBus> = Arc::new(
        NatsBus::connect(&nats.url(), &cocon_events::streams::all(&limits))
            .await
            .unwrap(),
    );

    let a = start("a", &nats, &key, &store, &bus).await;
    a.holds_all().await;
    let b = start("b", &nats, &key, &store, &bus).await;
    let c = start("c", &nats, &key, &store, &bus).await;
    settled(&[&a, &b, &c]).await;
    let load = Load::start(&nats, &key).await;
    load.writes(300).await;

    let frozen = Instant::now();
    let zombie = c.freeze();
    let taken = settled(&[&a, &b]).await + frozen.elapsed();
    load.writes(300).await;
    let (clients, acked, latencies) = load.finish().await;
    zombie.abort();

    check_writes(&store, &clients, &key, &acked).await;
    check_outboxes(&store, 3).await;

    // Every acknowledged write's event is on the stream, once.
    let mut sub = bus
        .subscribe(cocon_events::ConsumerSpec {
            stream: cocon_events::streams::DOCUMENTS.into(),
            durable: "test-replicas".into(),
            filter: "cocon.documents.>".into(),
            max_deliver: 1,
            ack_wait: Duration::from_secs(30),
        })
        .await
        .unwrap();
    let expected: u64 = acked.values().map(|(count, _)| count).sum();
    let mut seen = std::collections::HashSet::new();
    while (seen.len() as u64) < expected {
        let delivery = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {expected} events on the stream", seen.len()))
            .unwrap()
            .unwrap();
        let event = cocon_events::decode_envelope(&delivery.message.payload).unwrap();
        assert!(
            seen.insert((event.instance.clone(), event.seq)),
            "{} {} published twice",
            event.instance,
            event.seq
        );
        delivery.ack().await.unwrap();
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(extra.is_err(), "nothing past the acknowledged writes");

    a.stop(true).await;
    b.stop(false).await;
    println!(
        "{}; the frozen replica's shards taken {taken:?} after it froze",
        figures(&latencies)
    );
}
