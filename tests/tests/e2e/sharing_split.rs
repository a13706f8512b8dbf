//! Sharing with a host in split mode: alice's host runs its gateway and auth in one process,
//! the sharing service in another and the data services in a third, over real NATS (mutual TLS
//! between them, signed events); bob's host is a plain `cocon serve`. The sharing service sees
//! alice's writes through the documents events on NATS and reaches the documents process over
//! gRPC; bob's host reaches it through alice's gateway.

use cocon_tests::sharing::*;
use cocon_tests::{Cocon, NatsServer, make_mesh_key, make_mesh_tls};
use serde_json::json;

use super::split::{endpoints, mesh_process};

/// Alice's host split into three processes over a real NATS.
struct SplitHost {
    nats: NatsServer,
    dir: tempfile::TempDir,
    key: String,
    tls: String,
    port: u16,
    data: Cocon,
    sharing: Option<Cocon>,
}

impl SplitHost {
    /// The host, and its edge (gateway and auth) that the tests call.
    async fn start() -> (SplitHost, Cocon) {
        let nats = NatsServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = make_mesh_key(dir.path()).unwrap().to_str().unwrap().to_string();
        let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
        // The edge and the sharing service each call the other: the sharing service's port first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sharing_endpoint = format!("http://127.0.0.1:{port}");
        let data = mesh_process(
            &dir.path().join("data"),
            "documents,files,jobs,notifications",
            &nats,
            &key,
            &tls,
            Vec::<(&str, String)>::new(),
        )
        .start()
        .await
        .unwrap();
        let data_endpoint = data.grpc.clone().unwrap();
        let edge = mesh_process(
            &dir.path().join("edge"),
            "gateway,auth",
            &nats,
            &key,
            &tls,
            endpoints(&["DOCUMENTS", "FILES", "JOBS", "NOTIFICATIONS"], &data_endpoint)
                .into_iter()
                .chain([("COCON_ENDPOINTS__SHARING".into(), sharing_endpoint)]),
        )
        .start()
        .await
        .unwrap();
        let mut host = SplitHost {
            nats,
            dir,
            key,
            tls,
            port,
            data,
            sharing: None,
        };
        host.sharing = Some(host.start_sharing(&edge).await);
        (host, edge)
    }

    /// The sharing service on its own (again, on the same port and data directory).
    async fn start_sharing(&self, edge: &Cocon) -> Cocon {
        let data_endpoint = self.data.grpc.clone().unwrap();
        let sharing = mesh_process(
            &self.dir.path().join("sharing"),
            "sharing",
            &self.nats,
            &self.key,
            &self.tls,
            endpoints(&["DOCUMENTS", "FILES", "NOTIFICATIONS"], &data_endpoint)
                .into_iter()
                .chain(endpoints(&["AUTH"], edge.grpc.as_deref().unwrap())),
        )
        .arg("--grpc-addr")
        .arg(format!("127.0.0.1:{}", self.port))
        .start()
        .await
        .unwrap();
        let ready = reqwest::get(format!("{}/ready", sharing.admin)).await.unwrap();
        assert_eq!(ready.status(), 200, "the sharing process serves");
        sharing
    }
}

/// Alice on a split host, bob on a plain one that alice's host reaches through a proxy the
/// test controls.
async fn split_alice_and_bob_behind_proxy() -> (SplitHost, Hosts, cocon_tests::Proxy) {
    let (alice, edge) = SplitHost::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_host = Cocon::start(&dir.path().join("bob-host")).await.unwrap();
    let proxy = cocon_tests::Proxy::start(([127, 0, 0, 1], port(&bob_host)).into())
        .await
        .unwrap();
    let h = hosts_on(dir, edge, bob_host, proxy.port).await;
    (alice, h, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_split_host_shares_with_another_host_both_ways() {
    let (_alice, edge) = SplitHost::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut h = hosts_with(dir, edge).await;
    let (id, bob_note) = accepted(&mut h).await;
    let alice_path = format!("/data/io.cozy.notes/{NOTE}");
    let bob_path = format!("/data/io.cozy.notes/{bob_note}");
    let copy = eventually(&h.bob, &bob_path, |d| d["title"] == "Holiday plans").await;

    // Alice's edit reaches bob (the sharing process woken by the documents event on NATS)...
    let edit = h
        .alice
        .put(
            &alice_path,
            &json!({"_rev": copy["_rev"], "title": "from the split host"}),
        )
        .await;
    assert_eq!(edit.status, 200, "{}", edit.text);
    let rev = edit.get("rev").as_str().unwrap().to_string();
    eventually(&h.bob, &bob_path, |d| d["_rev"] == rev.as_str()).await;
    // ...and bob's comes back through alice's gateway to the sharing process, then documents.
    let back = h
        .bob
        .put(&bob_path, &json!({"_rev": rev, "title": "from bob's host"}))
        .await;
    assert_eq!(back.status, 200, "{}", back.text);
    let bob_rev = back.get("rev").as_str().unwrap().to_string();
    let on_alice = eventually(&h.alice, &alice_path, |d| d["_rev"] == bob_rev.as_str()).await;
    assert_eq!(on_alice["title"], "from bob's host");
    let state = eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["sync"]["sent"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(
        state["data"]["attributes"]["members"][1]["sync"].get("last_error"),
        None,
        "{state}"
    );
}

/// kill -9 of the owner's sharing process in the middle of a file (the network to bob's host
/// stalls once 8 MB of a 24 MB file went through, so the kill lands mid-transfer): restarted, it
/// resumes from its checkpoint, and bob's copy ends with the file whole and once, nothing
/// half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_sharing_process_killed_mid_file_resumes_without_loss_or_double() {
    use cocon_tests::drive::{md5_b64, new_file};

    let (mut alice, mut h, proxy) = split_alice_and_bob_behind_proxy().await;
    let (_, holiday) = shared_holiday(&mut h).await;

    proxy.hold_after(8 << 20);
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    new_file(&h.alice, &holiday, "video.mp4", &big).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.is_held() {
        assert!(std::time::Instant::now() < deadline, "the file never reached the proxy");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    alice.sharing.as_mut().unwrap().kill9();
    proxy.release();
    let half = h
        .bob
        .get("/files/metadata?Path=/Shared%20with%20me/Holiday/video.mp4")
        .await;
    assert_eq!(half.status, 404, "nothing half-written: {}", half.text);
    let restarted = alice.start_sharing(&h.alice_host).await;
    alice.sharing = Some(restarted);

    let video = md5_b64(&big);
    let tree = converged(&h, "/Holiday", "/Shared with me/Holiday", |t| {
        t.iter().any(|(_, m)| *m == video)
    })
    .await;
    assert_eq!(
        tree,
        [
            ("/plan.txt".to_string(), md5_b64(b"v1")),
            ("/video.mp4".to_string(), video)
        ]
    );
}

/// kill -9 of the owner's sharing process in the middle of a batch of documents (the network to
/// bob's host stalls 150 kB into the replication of 3,000 notes): restarted, it resumes from
/// its checkpoint, and bob's host ends with every note once, at alice's revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_sharing_process_killed_mid_batch_resumes_without_loss_or_double() {
    let (mut alice, mut h, proxy) = split_alice_and_bob_behind_proxy().await;
    let rule = json!({"title": "Notes", "doctype": "io.cozy.notes", "selector": "tags", "values": ["bulk"],
                      "add": "push", "update": "push", "remove": "push"});
    let id = share_with(&h, "Notes", rule).await;
    accept_request(&mut h, &id).await;
    eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["status"] == "ready"
    })
    .await;

    const NOTES: usize = 3000;
    proxy.hold_after(150 << 10);
    bulk_notes(&h.alice, "bulk", 0..NOTES, "bulk").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.is_held() {
        assert!(
            std::time::Instant::now() < deadline,
            "the notes never reached the proxy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    alice.sharing.as_mut().unwrap().kill9();
    proxy.release();
    let restarted = alice.start_sharing(&h.alice_host).await;
    alice.sharing = Some(restarted);

    // Every note once on bob's host (his ids are his own: matched by `n`), at alice's revision.
    let revs = |api: cocon_tests::Api| async move {
        let all = api.get("/data/io.cozy.notes/_all_docs?include_docs=true").await;
        let mut out: Vec<(u64, String)> = all.body["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["doc"]["n"].as_u64().unwrap_or(u64::MAX),
                    r["value"]["rev"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let on_alice = revs(h.alice.clone()).await;
    assert_eq!(on_alice.len(), NOTES);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let on_bob = revs(h.bob.clone()).await;
        if on_bob == on_alice {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob's host holds {} notes of {NOTES}",
            on_bob.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
