//! Split mode for real: a `nats-server -js`, the documents service in one `cocon` process, the
//! gateway and auth in another; the `/data` API works through them, the events are on NATS,
//! and a NATS outage loses no event and blocks no write.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use cocon_tests::{Cocon, NatsServer};
use futures::StreamExt;
use serde_json::json;

async fn split(nats: &NatsServer) -> (tempfile::TempDir, Cocon, Cocon) {
    let dir = tempfile::tempdir().unwrap();
    let documents = Cocon::builder(&dir.path().join("documents"))
        .arg("--services")
        .arg("documents")
        .arg("--nats")
        .arg(nats.url())
        .start()
        .await
        .unwrap();
    let endpoint = documents.grpc.clone().expect("the documents process serves gRPC");
    let edge = Cocon::builder(&dir.path().join("edge"))
        .arg("--services")
        .arg("gateway,auth")
        .arg("--nats")
        .arg(nats.url())
        .env("COCON_ENDPOINTS__DOCUMENTS", endpoint)
        .start()
        .await
        .unwrap();
    (dir, documents, edge)
}

#[tokio::test]
async fn test_split_services_over_real_nats() {
    let mut nats = NatsServer::start().await.unwrap();
    let (_dir, documents, edge) = split(&nats).await;
    assert!(edge.grpc.is_some(), "auth serves gRPC in split mode");

    let api = edge.instance("alice.test", "io.cozy.notes").await.unwrap();
    let instance = edge
        .admin(reqwest::Method::GET, "/instances/alice.test", &[])
        .await
        .unwrap()
        .1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let created = api
        .post("/data/io.cozy.notes/", &json!({"title": "over the wire"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.get("id").as_str().unwrap().to_string();
    assert_eq!(
        api.get(&format!("/data/io.cozy.notes/{id}")).await.get("title"),
        "over the wire"
    );
    let stale = api
        .put(&format!("/data/io.cozy.notes/{id}"), &json!({"_rev": "1-0", "x": 1}))
        .await;
    assert_eq!(
        stale.status, 409,
        "errors keep their status across gRPC: {}",
        stale.text
    );
    let bad = api.raw(reqwest::Method::PUT, "/data/io.cozy.notes/x", b"{oops").await;
    assert_eq!(bad.status, 400);
    api.post(
        "/data/io.cozy.notes/_index",
        &json!({"index": {"fields": ["title"]}, "ddoc": "t"}),
    )
    .await;
    let found = api
        .post(
            "/data/io.cozy.notes/_find",
            &json!({"selector": {"title": "over the wire"}, "use_index": "t"}),
        )
        .await;
    assert_eq!(found.get("docs").as_array().unwrap().len(), 1, "{}", found.text);

    // The events are on NATS, on per-instance, per-doctype subjects.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream("COCON_DOCUMENTS").await.unwrap();
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .create_consumer(pull::Config {
            durable_name: Some("test-reader".into()),
            filter_subject: format!("cocon.documents.{instance}.>"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut subjects = Vec::new();
    while subjects.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        subjects.push(m.subject.to_string());
        m.ack().await.unwrap();
    }
    assert_eq!(subjects[0], format!("cocon.documents.{instance}.io:cozy:notes.created"));

    // NATS dies while writes go on: they still succeed, and every event arrives once it is back.
    nats.kill();
    let mut ids = Vec::new();
    for i in 0..50 {
        let r = api
            .put(&format!("/data/io.cozy.notes/outage-{i}"), &json!({"i": i}))
            .await;
        assert_eq!(r.status, 200, "writes do not need the bus: {}", r.text);
        ids.push(format!("outage-{i}"));
    }
    nats.restart().await.unwrap();
    let client = loop {
        match async_nats::connect(nats.url()).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // Read the whole stream of this instance with a new consumer: each event is in it exactly once
    // (re-publishes after failures carry the same Nats-Msg-Id and are dropped by JetStream).
    let js = jetstream::new(client);
    let audit: jetstream::consumer::Consumer<pull::Config> = js
        .get_stream("COCON_DOCUMENTS")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("audit".into()),
            filter_subject: format!("cocon.documents.{instance}.>"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = audit.messages().await.unwrap();
    let expected = subjects.len() + ids.len();
    let mut seen = HashMap::<String, u32>::new();
    while seen.values().sum::<u32>() < expected as u32 {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("every event written during the outage arrives")
            .unwrap()
            .unwrap();
        let msg_id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap();
        *seen.entry(msg_id).or_default() += 1;
        m.ack().await.unwrap();
    }
    assert_eq!(seen.len(), expected, "every event is on the stream");
    assert!(seen.values().all(|&n| n == 1), "no event twice: {seen:?}");
    let extra = tokio::time::timeout(Duration::from_millis(500), messages.next()).await;
    assert!(extra.is_err(), "nothing beyond the expected events");
    drop(documents);
}
