//! SIGTERM drains: in-flight requests finish, realtime sockets are closed as going away (their
//! clients reconnect elsewhere), then the outbox is flushed, then the process exits 0.

use std::time::Duration;

use cocon_tests::{Cocon, NatsServer, Read, Socket, StreamReader};
use serde_json::json;

#[tokio::test]
async fn test_sigterm_finishes_in_flight_requests_and_flushes_events() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::builder(dir.path())
        .arg("--nats")
        .arg(nats.url())
        .start()
        .await
        .unwrap();
    let api = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    let instance = cocon.instance_id("alice.test").await.unwrap();
    for i in 0..100 {
        assert_eq!(
            api.put(&format!("/data/io.cozy.notes/d{i}"), &json!({"i": i}))
                .await
                .status,
            200
        );
    }
    let mut socket = Socket::authed(&cocon.http, "alice.test", api.token().unwrap())
        .await
        .unwrap();
    assert_eq!(socket.subscribe("io.cozy.notes", None).await.unwrap(), None);
    // A long poll is in flight when the signal comes: it must get its answer, not a reset.
    let poll = {
        let api = api.clone();
        tokio::spawn(async move {
            api.get("/data/io.cozy.notes/_changes?feed=longpoll&since=now&timeout=1500")
                .await
        })
    };
    // Wait until the server has the request (its in-flight gauge says so) before the signal.
    loop {
        let (_, metrics) = cocon.admin(reqwest::Method::GET, "/metrics", &[]).await.unwrap();
        let text = metrics.as_str().unwrap_or_default().to_string();
        if text
            .lines()
            .any(|l| l.starts_with("cocon_http_requests_in_flight ") && !l.ends_with(" 0"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cocon.stop().await.expect("cocon exits cleanly on SIGTERM");
    match socket.read(Duration::from_secs(10)).await {
        Some(Read::Closed(Some(close))) => assert_eq!(u16::from(close.code), 1001, "{close:?}"),
        other => panic!("the socket was not closed as going away: {other:?}"),
    }
    let answered = poll.await.unwrap();
    assert_eq!(
        answered.status, 200,
        "the in-flight long poll was answered: {}",
        answered.text
    );

    // Every acknowledged write's event is on NATS.
    let filter = format!("cocon.documents.{instance}.>");
    let mut reader = StreamReader::open(&nats.url(), "COCON_DOCUMENTS", "after-shutdown", &filter)
        .await
        .unwrap();
    for _ in 0..100 {
        reader.next(Duration::from_secs(10)).await.expect("event published");
    }
}
