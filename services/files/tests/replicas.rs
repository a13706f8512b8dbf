//! Replicas of the files service sharing one store, as they share ScyllaDB in production (here
//! one embedded store and one blob directory in one process stand in for it, with a real NATS
//! server for the shards' leases): they own instances shard by shard, and while a second
//! replica joins and leaves under a steady load of uploads, no upload fails, every file
//! acknowledged downloads with its content, and the projection still equals a replay of the
//! log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cocon_common::ticket::MeshKey;
use cocon_events::{EventBus, MemoryBus};
use cocon_files::{Config, Deps, FilesService, ROOT_ID};
use cocon_mesh::testkit::{self, Replica, settled};
use cocon_mesh::{Clients, ServiceKind};
use cocon_proto::files::v1 as pb;
use cocon_storage::{BlobStore, EmbeddedStore, LocalBlobs, Store};
use cocon_tests::NatsServer;
use futures::StreamExt;

/// A files replica on the shared store and blob directory, served on a port of its own.
async fn start(nats: &NatsServer, key: &MeshKey, store: &Arc<dyn Store>, blobs: &Arc<dyn BlobStore>) -> Replica {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let directory = testkit::directory(&nats.url(), key).await;
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new(cocon_events::streams::all(
        &cocon_events::streams::Limits::default(),
    )));
    let deps = Deps {
        store: store.clone(),
        blobs: blobs.clone(),
        bus,
        mesh_key: key.clone(),
        partition: Some(directory.id().to_string()),
    };
    let service = FilesService::build(Config::default(), deps).await.unwrap();
    Replica::serve("files", &directory, listener, service, "/cocon.files.v1.FilesService/").await
}

fn scope(key: &MeshKey, instance: &str) -> Option<pb::Scope> {
    Some(pb::Scope {
        instance: instance.to_string(),
        ticket: key.issue(instance, cocon_common::time::now_secs() + 600),
        ..Default::default()
    })
}

/// The content of upload `n` of `instance`: 64 KiB, different for each.
fn content(instance: &str, n: u64) -> Bytes {
    Bytes::from(format!("{instance}/{n:06};").repeat(64 * 1024 / 40))
}

/// A writer: uploads new files to each of its instances in turn, each in several chunks, until
/// told to stop. Every upload must succeed. Answers the (instance, n, file id) acknowledged
/// and each upload's latency.
async fn writer(
    clients: Clients,
    key: MeshKey,
    instances: Vec<String>,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> (Vec<(String, u64, String)>, Vec<Duration>) {
    let mut acked = Vec::new();
    let mut latencies = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        for instance in &instances {
            let body = content(instance, n);
            let header = pb::UploadPart {
                part: Some(pb::upload_part::Part::Header(Box::new(pb::UploadHeader {
                    scope: scope(&key, instance),
                    parent_id: ROOT_ID.into(),
                    name: format!("f{n:06}.txt"),
                    size: body.len() as i64,
                    mime: "text/plain".into(),
                    ..Default::default()
                }))),
            };
            let chunks: Vec<pb::UploadPart> = body
                .chunks(16 * 1024)
                .map(|c| pb::UploadPart {
                    part: Some(pb::upload_part::Part::Data(Bytes::copy_from_slice(c))),
                })
                .collect();
            let parts = futures::stream::iter(std::iter::once(header).chain(chunks));
            let started = Instant::now();
            let answer = clients
                .files
                .clone()
                .upload(instance, parts)
                .await
                .unwrap_or_else(|e| panic!("an upload to {instance} failed: {e}"))
                .into_inner();
            latencies.push(started.elapsed());
            acked.push((instance.clone(), n, answer.file.unwrap().id));
            done.fetch_add(1, Ordering::SeqCst);
        }
    }
    (acked, latencies)
}

async fn download(clients: &Clients, key: &MeshKey, instance: &str, id: &str) -> Vec<u8> {
    let mut parts = clients
        .files
        .clone()
        .download(pb::DownloadRequest {
            scope: scope(key, instance),
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut body = Vec::new();
    while let Some(part) = parts.next().await {
        if let Some(pb::download_part::Part::Data(data)) = part.unwrap().part {
            body.extend_from_slice(&data);
        }
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_files_replicas_on_a_shared_store_hand_instances_over_under_uploads() {
    let nats = NatsServer::start().await.unwrap();
    let key = MeshKey::random();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap());
    let blobs: Arc<dyn BlobStore> = Arc::new(LocalBlobs::open(&dir.path().join("blobs")).unwrap());

    let a = start(&nats, &key, &store, &blobs).await;
    a.holds_all().await;
    let (_caller, clients) = testkit::caller(&nats.url(), &key, ServiceKind::Files).await;
    let testkit::Writers {
        stop,
        done,
        tasks: writers,
    } = testkit::spawn_writers(4, 5, |instances, stop, done| {
        writer(clients.clone(), key.clone(), instances, stop, done)
    });
    testkit::writes(&done, 100).await;

    // files 1 → 2 → 1: b joins, then leaves; a takes back the instances it wrote before and
    // must not trust what it cached of them.
    let b = start(&nats, &key, &store, &blobs).await;
    let joined = settled(&[&a, &b]).await;
    testkit::writes(&done, 100).await;
    let left = Instant::now();
    b.stop(true).await;
    let left = left.elapsed();
    testkit::writes(&done, 100).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut latencies = Vec::new();
    for w in writers {
        let (a, l) = w.await.expect("every upload succeeded");
        acked.extend(a);
        latencies.extend(l);
    }

    // Every acknowledged file downloads whole, with its content.
    for (instance, n, id) in &acked {
        let body = download(&clients, &key, instance, id).await;
        assert!(body == content(instance, *n), "{instance} file {n} reads back whole");
    }

    // The projection both replicas wrote equals a replay of the log.
    let mut projection = FilesService::projection(store.clone()).await.unwrap();
    testkit::check_replay(store.clone(), &mut projection, a.stop(false)).await;

    latencies.sort();
    println!(
        "{} uploads of 64 KiB, 0 failed; p50 {:?}, p99 {:?}, max {:?}; b took its half in {joined:?} and handed it back in {left:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies.last().unwrap()
    );
}
