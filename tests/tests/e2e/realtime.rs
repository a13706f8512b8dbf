//! Cozy's `/realtime/` websocket end to end, with a real websocket client: AUTH, SUBSCRIBE to
//! a doctype and to one document, the errors cozy-stack sends, events from `/data`, `/files`,
//! WebDAV and jobs, `POST /realtime/…`, instances kept apart, and a slow client closed without
//! holding anyone back.

use std::time::Duration;

use cocon_tests::{Cocon, Read, Socket, onboard};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

async fn event(socket: &mut Socket) -> Value {
    let frame = socket.json(WAIT).await.unwrap();
    assert_ne!(frame["event"], "error", "{frame}");
    frame
}

#[tokio::test]
async fn test_events_from_data_files_webdav_and_jobs_reach_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path()).start().await.unwrap();
    let api = cocon
        .instance(
            "alice.test",
            "io.cozy.notes io.cozy.files io.cozy.jobs io.cozy.triggers",
        )
        .await
        .unwrap();
    let token = api.token().unwrap().to_string();
    let mut socket = Socket::authed(&cocon.http, "alice.test", &token).await.unwrap();
    assert_eq!(socket.subscribe("io.cozy.notes", None).await.unwrap(), None);
    assert_eq!(socket.subscribe("io.cozy.files", None).await.unwrap(), None);

    // Documents: created, updated, deleted, each with the document as stored.
    let put = api.put("/data/io.cozy.notes/n1", &json!({"title": "first"})).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let created = event(&mut socket).await;
    assert_eq!(created["event"], "CREATED");
    assert_eq!(created["payload"]["type"], "io.cozy.notes");
    assert_eq!(created["payload"]["id"], "n1");
    assert_eq!(created["payload"]["doc"]["title"], "first");
    assert_eq!(created["payload"]["doc"]["_rev"], put.body["rev"]);
    let rev = put.body["rev"].as_str().unwrap();
    let updated = api
        .put("/data/io.cozy.notes/n1", &json!({"_rev": rev, "title": "second"}))
        .await;
    let frame = event(&mut socket).await;
    assert_eq!(frame["event"], "UPDATED");
    assert_eq!(frame["payload"]["doc"]["title"], "second");
    let rev = updated.body["rev"].as_str().unwrap();
    assert_eq!(
        api.delete(&format!("/data/io.cozy.notes/n1?rev={rev}")).await.status,
        200
    );
    let frame = event(&mut socket).await;
    assert_eq!(frame["event"], "DELETED");
    assert_eq!(frame["payload"]["id"], "n1");

    // Files through /files, then through WebDAV: the person's drive app sees both.
    let dir_reply = api
        .request(Method::POST, "/files/io.cozy.files.root-dir?Type=directory&Name=Photos")
        .send()
        .await
        .unwrap();
    assert_eq!(dir_reply.status(), 201);
    let mut frame = event(&mut socket).await;
    // The root and the trash are made with the first directory; the person's comes next.
    while frame["payload"]["id"].as_str().unwrap().starts_with("io.cozy.files.") {
        assert_eq!(frame["event"], "CREATED");
        frame = event(&mut socket).await;
    }
    assert_eq!(frame["event"], "CREATED");
    assert_eq!(frame["payload"]["type"], "io.cozy.files");
    assert_eq!(frame["payload"]["doc"]["name"], "Photos");
    assert_eq!(frame["payload"]["doc"]["type"], "directory");
    assert!(
        frame["payload"]["doc"].get("blob").is_none(),
        "no internal field leaks: {frame}"
    );
    let dav = api
        .request(Method::PUT, "/dav/files/Photos/hello.txt")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert!(dav.status().is_success(), "{}", dav.status());
    let frame = event(&mut socket).await;
    assert_eq!(frame["event"], "CREATED");
    assert_eq!(frame["payload"]["doc"]["name"], "hello.txt");
    assert_eq!(frame["payload"]["doc"]["trashed"], false);
    assert_eq!(frame["payload"]["doc"]["size"], "5");

    // Jobs: a client watching io.cozy.jobs sees a job queued, run and finished (Harvest does).
    assert_eq!(socket.subscribe("io.cozy.jobs", None).await.unwrap(), None);
    let queued = api
        .post("/jobs/queue/log", &json!({"data": {"attributes": {"arguments": {}}}}))
        .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let job = queued.body["data"]["id"].as_str().unwrap().to_string();
    let mut states = Vec::new();
    while !states.iter().any(|s| s == "done" || s == "errored") {
        let frame = event(&mut socket).await;
        assert_eq!(frame["payload"]["type"], "io.cozy.jobs", "{frame}");
        assert_eq!(frame["payload"]["id"], job.as_str());
        if states.is_empty() {
            assert_eq!(frame["event"], "CREATED");
        }
        states.push(frame["payload"]["doc"]["state"].as_str().unwrap().to_string());
    }
    assert_eq!(states[0], "queued", "{states:?}");

    // Unsubscribed: nothing more about notes comes; what is still watched does.
    socket
        .send(&json!({"method": "unsubscribe", "payload": {"type": "io.cozy.notes"}}))
        .await
        .unwrap();
    assert_eq!(socket.sync().await.unwrap(), None);
    assert_eq!(api.put("/data/io.cozy.notes/n2", &json!({})).await.status, 200);
    let mkdir = api
        .request(Method::POST, "/files/io.cozy.files.root-dir?Type=directory&Name=After")
        .send()
        .await
        .unwrap();
    assert_eq!(mkdir.status(), 201);
    let frame = event(&mut socket).await;
    assert_eq!(
        frame["payload"]["doc"]["name"], "After",
        "the note was not sent: {frame}"
    );
}

#[tokio::test]
async fn test_auth_and_subscriptions_are_checked_as_cozy_does() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path()).start().await.unwrap();
    let alice = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    let bob = cocon.instance("bob.test", "io.cozy.notes").await.unwrap();

    // A bad token: a 401 error frame, then the socket closes.
    let mut socket = Socket::authed(&cocon.http, "alice.test", "forged.token.here")
        .await
        .unwrap();
    let frame = socket.json(WAIT).await.unwrap();
    assert_eq!(frame["event"], "error");
    assert_eq!(frame["payload"]["status"], "401 Unauthorized");
    assert!(matches!(socket.read(WAIT).await, Some(Read::Closed(_))));
    // Another instance's token does not open this one.
    let mut socket = Socket::authed(&cocon.http, "alice.test", bob.token().unwrap())
        .await
        .unwrap();
    assert_eq!(
        socket.json(WAIT).await.unwrap()["payload"]["status"],
        "401 Unauthorized"
    );
    // Unknown hosts are refused before the upgrade.
    assert!(Socket::open(&cocon.http, "nobody.test", None).await.is_err());

    let mut socket = Socket::authed(&cocon.http, "alice.test", alice.token().unwrap())
        .await
        .unwrap();
    let refused = socket
        .subscribe("io.cozy.contacts", None)
        .await
        .unwrap()
        .expect("an error");
    assert_eq!(refused["payload"]["status"], "403 Forbidden");
    assert_eq!(refused["payload"]["code"], "forbidden");
    assert_eq!(
        refused["payload"]["title"],
        "The application can't subscribe to io.cozy.contacts"
    );
    assert_eq!(refused["payload"]["source"]["payload"]["type"], "io.cozy.contacts");
    socket
        .send(&json!({"method": "SUBSCRIBE", "payload": {}}))
        .await
        .unwrap();
    let missing = socket.sync().await.unwrap().expect("an error");
    assert_eq!(missing["payload"]["status"], "404 Not Found");
    socket
        .send(&json!({"method": "PUBLISH", "payload": {"type": "io.cozy.notes"}}))
        .await
        .unwrap();
    let unknown = socket.sync().await.unwrap().expect("an error");
    assert_eq!(unknown["payload"]["status"], "405 Method Not Allowed");
    // Commands are case-insensitive, as in cozy-stack.
    socket
        .send(&json!({"method": "subscribe", "payload": {"type": "io.cozy.notes"}}))
        .await
        .unwrap();
    assert_eq!(socket.sync().await.unwrap(), None);

    // Instances are apart: bob's write never reaches alice's socket, alice's next one does.
    assert_eq!(
        bob.put("/data/io.cozy.notes/secret", &json!({"bob": true}))
            .await
            .status,
        200
    );
    assert_eq!(alice.put("/data/io.cozy.notes/mine", &json!({})).await.status, 200);
    let frame = event(&mut socket).await;
    assert_eq!(frame["payload"]["id"], "mine");

    // A token naming one document watches it, and nothing else of the doctype.
    let one = cocon.token("alice.test", "io.cozy.notes:GET:watched").await.unwrap();
    let mut narrow = Socket::authed(&cocon.http, "alice.test", &one).await.unwrap();
    let whole = narrow
        .subscribe("io.cozy.notes", None)
        .await
        .unwrap()
        .expect("an error");
    assert_eq!(whole["payload"]["status"], "403 Forbidden");
    let other = narrow
        .subscribe("io.cozy.notes", Some("other"))
        .await
        .unwrap()
        .expect("an error");
    assert_eq!(other["payload"]["status"], "403 Forbidden");
    assert_eq!(narrow.subscribe("io.cozy.notes", Some("watched")).await.unwrap(), None);
    assert_eq!(alice.put("/data/io.cozy.notes/other", &json!({})).await.status, 200);
    assert_eq!(
        alice.put("/data/io.cozy.notes/watched", &json!({"n": 1})).await.status,
        200
    );
    let frame = event(&mut narrow).await;
    assert_eq!(frame["payload"]["id"], "watched");
    assert_eq!(frame["payload"]["doc"]["n"], 1);

    // POST /realtime/:doctype/:id: a NOTIFIED event, not stored; it needs POST on the document.
    let notified = alice
        .request(Method::POST, "/realtime/io.cozy.notes/watched")
        .json(&json!({"cursor": 42}))
        .send()
        .await
        .unwrap();
    assert_eq!(notified.status(), 204);
    let frame = event(&mut narrow).await;
    assert_eq!(frame["event"], "NOTIFIED");
    assert_eq!(frame["payload"]["doc"], json!({"cursor": 42}));
    for id in ["other", "watched", "watched"] {
        let frame = event(&mut socket).await;
        assert_eq!(frame["payload"]["id"], id, "{frame}");
        if frame["event"] == "NOTIFIED" {
            assert_eq!(frame["payload"]["doc"], json!({"cursor": 42}));
        }
    }
    assert_eq!(
        alice.get("/data/io.cozy.notes/watched").await.body["n"],
        1,
        "nothing stored"
    );
    let reader = cocon.api("alice.test", Some(&one));
    let refused = reader
        .request(Method::POST, "/realtime/io.cozy.notes/watched")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "GET on the document is not POST");

    // Incoming frames are capped at 1 KiB: a bigger one closes the socket.
    socket.send_raw(Message::text("x".repeat(4096))).await.unwrap();
    assert!(matches!(socket.read(WAIT).await, Some(Read::Closed(_))));
}

/// The person's session cookie opens the socket with an empty AUTH payload (Cocon's own pages).
#[tokio::test]
async fn test_the_session_cookie_authenticates_an_empty_auth() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path()).start().await.unwrap();
    let browser = onboard(&cocon, "alice.test", "correct horse battery staple").await;
    let cookie: Vec<String> = browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cookie = cookie.join("; ");
    let api = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.todos").await.unwrap()),
    );
    let mut socket = Socket::open(&cocon.http, "alice.test", Some(&cookie)).await.unwrap();
    socket.send(&json!({"method": "AUTH", "payload": ""})).await.unwrap();
    assert_eq!(socket.subscribe("io.cozy.todos", None).await.unwrap(), None);
    assert_eq!(api.put("/data/io.cozy.todos/t", &json!({})).await.status, 200);
    assert_eq!(event(&mut socket).await["payload"]["id"], "t");

    let mut anonymous = Socket::open(&cocon.http, "alice.test", None).await.unwrap();
    anonymous.send(&json!({"method": "AUTH", "payload": ""})).await.unwrap();
    assert_eq!(
        anonymous.json(WAIT).await.unwrap()["payload"]["status"],
        "401 Unauthorized"
    );
}

/// A client that stops reading is closed (1013) once its queue is full; the other sockets get
/// every event and the writer is not held back.
#[tokio::test]
async fn test_a_slow_client_is_closed_without_slowing_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_GATEWAY__REALTIME__SOCKET_BUFFER_BYTES", "2000000")
        .start()
        .await
        .unwrap();
    let api = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    let token = api.token().unwrap().to_string();
    let mut slow = Socket::authed(&cocon.http, "alice.test", &token).await.unwrap();
    assert_eq!(slow.subscribe("io.cozy.notes", None).await.unwrap(), None);
    let mut fast = Socket::authed(&cocon.http, "alice.test", &token).await.unwrap();
    assert_eq!(fast.subscribe("io.cozy.notes", None).await.unwrap(), None);

    // Enough to fill the slow client's TCP buffers and its queue (2 MB): 20,000 events of
    // ~2 KiB, in bursts of 200 that the fast client absorbs.
    const BATCHES: usize = 100;
    const PER_BATCH: usize = 200;
    let filler = "x".repeat(2000);
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < BATCHES * PER_BATCH {
            let frame = fast.json(Duration::from_secs(30)).await.unwrap();
            assert_eq!(frame["event"], "CREATED");
            seen += 1;
        }
        seen
    });
    let writer = tokio::spawn(async move {
        for batch in 0..BATCHES {
            let docs: Vec<Value> = (0..PER_BATCH)
                .map(|i| json!({"_id": format!("d{batch}-{i}"), "filler": filler}))
                .collect();
            let reply = api.post("/data/io.cozy.notes/_bulk_docs", &json!({"docs": docs})).await;
            assert_eq!(reply.status, 201, "{}", reply.text);
        }
    });

    // Once the server has given up on the slow client, it reads at last: it finds the close
    // after what it was sent (the server waits 10 s for a client to take its close).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while slow_closed(&cocon).await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow socket was never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut events = 0;
    let code = loop {
        match slow.read(Duration::from_secs(30)).await {
            Some(Read::Json(_)) => events += 1,
            Some(Read::Closed(frame)) => break frame.map(|f| u16::from(f.code)),
            None => panic!("neither events nor a close"),
        }
    };
    assert_eq!(code, Some(1013), "closed as too slow after {events} events");
    writer.await.unwrap();
    assert_eq!(
        reader.await.unwrap(),
        BATCHES * PER_BATCH,
        "the fast client got every event"
    );
    assert!(events < BATCHES * PER_BATCH, "it lost events, and was told so");
}

async fn slow_closed(cocon: &Cocon) -> f64 {
    let (_, metrics) = cocon.admin(Method::GET, "/metrics", &[]).await.unwrap();
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("cocon_realtime_slow_closed_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
