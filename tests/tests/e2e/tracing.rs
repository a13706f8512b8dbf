//! Trace context travels from an HTTP request through the gateway, over gRPC to the documents
//! service in another process, and into the event's NATS headers.

use std::time::Duration;

use cocon_tests::{Cocon, NatsServer, StreamReader, header, make_mesh_key, make_mesh_tls};
use serde_json::json;

#[tokio::test]
async fn test_traceparent_reaches_the_nats_event_across_processes() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Export is on (to a port where nothing listens: spans are made and propagated, then dropped).
    let otlp = "http://127.0.0.1:9";
    let key = make_mesh_key(dir.path()).unwrap().to_str().unwrap().to_string();
    let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
    let documents = Cocon::builder(&dir.path().join("documents"))
        .args(["--services", "documents", "--nats", &nats.url()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("COCON_MESH_KEY_FILE", key.clone())
        .env("COCON_MESH_TLS__DIR", tls.clone())
        .start()
        .await
        .unwrap();
    let edge = Cocon::builder(&dir.path().join("edge"))
        .args(["--services", "gateway,auth", "--nats", &nats.url()])
        .env("COCON_ENDPOINTS__DOCUMENTS", documents.grpc.clone().unwrap())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("COCON_MESH_KEY_FILE", key.clone())
        .env("COCON_MESH_TLS__DIR", tls.clone())
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

    let mut reader = StreamReader::open(&nats.url(), "COCON_DOCUMENTS", "trace-reader", "")
        .await
        .unwrap();
    let m = reader.next(Duration::from_secs(10)).await.expect("the event arrives");
    let tp = header(&m, "traceparent").expect("the event carries a traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "W3C traceparent: {tp}");
    assert_eq!(parts[1], trace_id, "the event belongs to the caller's trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "with a span of its own");
}

async fn api_token(cocon: &Cocon) -> String {
    cocon.token("alice.test", "io.cozy.notes").await.unwrap()
}
