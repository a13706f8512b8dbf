//! Cocon split over a three-node JetStream cluster (every stream and the replicas' directory
//! in three copies): steady writes go on while the node leading the documents' stream is
//! killed with -9 and restarted; no write fails, and every acknowledged write's event is in
//! the stream, once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cocon_proto::events::v1::{Envelope, envelope::Payload};
use cocon_tests::{Cocon, NatsCluster, StreamReader, make_mesh_key, make_mesh_tls};
use prost::Message as _;
use serde_json::json;

const WRITERS: usize = 4;

async fn process(dir: &std::path::Path, name: &str, services: &str, nats: &str, key: &str, tls: &str) -> Cocon {
    Cocon::builder(&dir.join(name))
        .arg("--services")
        .arg(services)
        .arg("--nats")
        .arg(nats)
        .env("COCON_MESH_KEY_FILE", key)
        .env("COCON_MESH_TLS__DIR", tls)
        .env("COCON_STREAMS__REPLICAS", "3")
        // Each stream reserves its max_bytes on every node: keep the reservation small.
        .env("COCON_STREAMS__MAX_BYTES", "67108864")
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn test_a_nats_node_killed_under_load_loses_no_acknowledged_write() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await.unwrap();
    eprintln!("three NATS nodes healthy in {:?}", started.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let key = make_mesh_key(dir.path()).unwrap().to_str().unwrap().to_string();
    let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
    let urls = cluster.urls();
    let started = Instant::now();
    let _documents = process(dir.path(), "documents", "documents,files", &urls, &key, &tls).await;
    let edge = process(dir.path(), "edge", "gateway,auth", &urls, &key, &tls).await;
    eprintln!("the mesh started on the cluster in {:?}", started.elapsed());
    assert_eq!(cluster.stream_replicas("COCON_DOCUMENTS").await.unwrap(), 3);
    assert_eq!(cluster.stream_replicas("KV_cocon_replicas").await.unwrap(), 3);
    let api = edge.instance("alice.test", "io.cozy.notes").await.unwrap();
    let instance = edge.instance_id("alice.test").await.unwrap();

    // Steady writes, each to a new document, by a few writers at once.
    let stop = Arc::new(AtomicBool::new(false));
    let load_start = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("w{w}-{i}");
                    let sent = Instant::now();
                    let reply = api.put(&format!("/data/io.cozy.notes/{id}"), &json!({"i": i})).await;
                    done.push((id, reply.status, sent.duration_since(load_start), sent.elapsed()));
                    i += 1;
                }
                done
            })
        })
        .collect();

    // The load's phases: before, with the stream's leader dead, after it is back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.stream_leader("COCON_DOCUMENTS").await.unwrap();
    let killed = load_start.elapsed();
    cluster.kill(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(leader).await.unwrap();
    let back = load_start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);

    let mut results = Vec::new();
    for w in writers {
        results.extend(w.await.unwrap());
    }
    let failed: Vec<_> = results.iter().filter(|r| r.1 != 200 && r.1 != 201).collect();
    assert!(
        failed.is_empty(),
        "writes failed while a NATS node was down: {failed:?}"
    );
    let during: Vec<Duration> = results
        .iter()
        .filter(|r| r.2 >= killed && r.2 < back)
        .map(|r| r.3)
        .collect();
    assert!(!during.is_empty(), "no write was made while the node was down");
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.3).collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "{} writes ({} while {} was down), 0 failed; p99 {p99:?}, slowest {:?}",
        results.len(),
        during.len(),
        cluster.name(leader),
        latencies.last().unwrap()
    );

    // Every acknowledged write's event reaches the stream, once.
    let acked: HashSet<String> = results.iter().map(|r| r.0.clone()).collect();
    let mut reader = StreamReader::open_with(
        cluster.connect().await.unwrap(),
        "COCON_DOCUMENTS",
        "after-the-kill",
        &format!("cocon.documents.{instance}.>"),
    )
    .await
    .unwrap();
    let (mut seen, mut envelopes) = (HashSet::new(), HashSet::new());
    let reading = Instant::now();
    while !acked.is_subset(&seen) {
        let Some(m) = reader.next(Duration::from_secs(20)).await else {
            panic!(
                "{} acknowledged writes have no event in the stream",
                acked.difference(&seen).count()
            );
        };
        let envelope = Envelope::decode(m.payload.as_ref()).unwrap();
        assert!(
            envelope_unique(&mut envelopes, &envelope),
            "an event twice: {}",
            envelope.id
        );
        if let Some(Payload::DocumentChanged(changed)) = envelope.payload
            && changed.doctype == "io.cozy.notes"
        {
            seen.insert(changed.id);
        }
    }
    eprintln!("every event read back in {:?}", reading.elapsed());
}

fn envelope_unique(seen: &mut HashSet<String>, envelope: &Envelope) -> bool {
    seen.insert(envelope.id.clone())
}
