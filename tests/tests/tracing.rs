//! Trace context travels from an HTTP request through the gateway, over gRPC to the documents
//! service in another process, and into the event's NATS headers.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use cocon_tests::{Cocon, NatsServer};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn test_traceparent_reaches_the_nats_event_across_processes() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Export is on (to a port where nothing listens: spans are made and propagated, then dropped).
    let otlp = "http://127.0.0.1:9";
    let documents = Cocon::builder(&dir.path().join("documents"))
        .args(["--services", "documents", "--nats", &nats.url()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .start()
        .await
        .unwrap();
    let edge = Cocon::builder(&dir.path().join("edge"))
        .args(["--services", "gateway,auth", "--nats", &nats.url()])
        .env("COCON_ENDPOINTS__DOCUMENTS", documents.grpc.clone().unwrap())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .start()
        .await
        .unwrap();
    let api = edge.instance("alice.test", "io.cozy.notes").await.unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let res = reqwest::Client::new()
        .put(format!("{}/data/io.cozy.notes/traced", edge.http))
        .header("Host", "alice.test")
        .bearer_auth(api_token(&edge).await)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"v": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(api);

    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let consumer: jetstream::consumer::Consumer<pull::Config> = js
        .get_stream("COCON_DOCUMENTS")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("trace-reader".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the event arrives")
        .unwrap()
        .unwrap();
    let tp = m
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.to_string())
        .expect("the event carries a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "W3C traceparent: {tp}");
    assert_eq!(parts[1], trace_id, "the event belongs to the caller's trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "with a span of its own");
}

async fn api_token(cocon: &Cocon) -> String {
    cocon.token("alice.test", "io.cozy.notes").await.unwrap()
}
