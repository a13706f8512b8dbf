//! Split processes over real NATS find each other in the replicas' directory, with no endpoint
//! written down: the edge reaches documents wherever it starts; a second documents replica is
//! refused with the reason (documents keeps state: one replica at a time until instances are
//! leased one by one); documents stopped and started on another port, or killed with -9 and
//! restarted on its data directory, is served again within seconds with no change of config.

use std::path::Path;
use std::time::{Duration, Instant};

use cocon_tests::{Api, Cocon, NatsServer, cocon_bin, make_mesh_key, make_mesh_tls};
use serde_json::json;

const FAST: [(&str, &str); 3] = [
    ("COCON_DIRECTORY__HEARTBEAT_MS", "200"),
    ("COCON_DIRECTORY__TTL_MS", "1000"),
    ("COCON_DIRECTORY__DRAIN_NOTICE_MS", "300"),
];

struct Mesh {
    dir: tempfile::TempDir,
    key: String,
    tls: String,
}

impl Mesh {
    fn new() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let key = make_mesh_key(dir.path()).unwrap().to_str().unwrap().to_string();
        let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
        Mesh { dir, key, tls }
    }

    async fn start(&self, nats: &NatsServer, name: &str, services: &str) -> Cocon {
        let env = FAST.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        super::split::mesh_process(&self.dir.path().join(name), services, nats, &self.key, &self.tls, env)
            .start()
            .await
            .unwrap()
    }
}

/// Reads `id` through `api` until it answers, for at most `limit`: how long that took.
async fn served_again(api: &Api, id: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let read = api.get(&format!("/data/io.cozy.notes/{id}")).await;
        if read.status == 200 {
            assert_eq!(read.get("title"), "found", "{}", read.text);
            return start.elapsed();
        }
        assert_eq!(read.status, 503, "a missing replica is 503: {}", read.text);
        assert!(start.elapsed() < limit, "not served again within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the first sample of `name` whose labels include every one of `labels`, from
/// the process's `/metrics`.
async fn metric(cocon: &Cocon, name: &str, labels: &[&str]) -> Option<f64> {
    let (status, body) = cocon.admin(reqwest::Method::GET, "/metrics", &[]).await.unwrap();
    assert_eq!(status, 200);
    let text = body.as_str().unwrap_or_default().to_string();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `cocon serve` that is expected to refuse to start: its exit status and what it printed.
fn refused(key: &str, tls: &str, nats: &str, data: &Path, services: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new(cocon_bin());
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--services", services, "--nats", nats])
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .env("COCON_MESH_KEY_FILE", key)
        .env("COCON_MESH_TLS__DIR", tls)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null());
    for (k, v) in FAST {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn test_split_processes_find_each_other_and_follow_a_moved_service() {
    let nats = NatsServer::start().await.unwrap();
    let mesh = Mesh::new();
    let mut documents = mesh.start(&nats, "documents", "documents,files").await;
    // No COCON_ENDPOINTS__*: the edge finds documents and files in the directory.
    let edge = mesh.start(&nats, "edge", "gateway,auth").await;
    let api = edge.instance("alice.test", "io.cozy.notes").await.unwrap();
    let created = api.post("/data/io.cozy.notes/", &json!({"title": "found"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.get("id").as_str().unwrap().to_string();
    // What each process knows shows in its metrics.
    assert_eq!(
        metric(
            &edge,
            "cocon_mesh_replicas",
            &["service=\"documents\"", "state=\"serving\""]
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(&documents, "cocon_mesh_lease_held", &["service=\"documents\""]).await,
        Some(1.0)
    );

    // A second documents replica is refused, and says why and what to do.
    let (ok, stderr) = tokio::task::spawn_blocking({
        let (key, tls, url) = (mesh.key.clone(), mesh.tls.clone(), nats.url());
        let data = mesh.dir.path().join("documents-2");
        move || refused(&key, &tls, &url, &data, "documents,files")
    })
    .await
    .unwrap();
    assert!(!ok, "two replicas of documents at once");
    let held_at = documents.grpc.clone().unwrap();
    assert!(
        stderr.contains(&format!("another replica of documents runs, at {held_at}"))
            && stderr.contains("stop that one"),
        "{stderr}"
    );

    // Stopped (it withdraws and releases its lease) and started again on another port: the
    // edge follows with no change to its configuration.
    documents.stop().await.unwrap();
    let during = api.get(&format!("/data/io.cozy.notes/{id}")).await;
    assert_eq!(during.status, 503, "{}", during.text);
    let documents = mesh.start(&nats, "documents", "documents,files").await;
    assert_ne!(documents.grpc.as_deref(), Some(held_at.as_str()), "another port");
    let moved = served_again(&api, &id, Duration::from_secs(5)).await;
    eprintln!("documents moved to another port: served again {moved:?} after it was ready");

    // Killed with -9 and restarted on its data directory at once: the same replica takes its
    // lease back without waiting for the dead one's heartbeats to run out.
    let mut documents = documents;
    documents.kill9();
    let _documents = mesh.start(&nats, "documents", "documents,files").await;
    let restarted = served_again(&api, &id, Duration::from_secs(5)).await;
    eprintln!("documents killed and restarted: served again {restarted:?} after it was ready");
}

/// A replica whose NATS is gone still stops well within an orchestrator's grace period: its
/// last words to the directory (draining, withdrawn) are given a bounded time, and its card and
/// lease are left to expire.
#[tokio::test]
async fn test_a_replica_whose_nats_is_gone_stops_promptly() {
    let mut nats = NatsServer::start().await.unwrap();
    let mesh = Mesh::new();
    let mut documents = mesh.start(&nats, "documents", "documents,files").await;
    nats.kill();
    let signalled = Instant::now();
    documents.stop().await.expect("a clean exit on SIGTERM");
    let took = signalled.elapsed();
    eprintln!("stopped {took:?} after SIGTERM with NATS gone");
    assert!(took < Duration::from_secs(15), "{took:?}");
}
