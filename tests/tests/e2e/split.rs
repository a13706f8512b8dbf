//! Split mode for real: a `nats-server -js`, the documents and files services in one `cocon`
//! process, the gateway and auth in another; the `/data` and `/files` APIs work through them
//! (uploads and downloads streaming over gRPC), the events are on NATS, and a NATS outage loses
//! no event and blocks no write.

use std::collections::HashMap;
use std::time::Duration;

use cocon_common::ticket::MeshKey;
use cocon_proto::documents::v1 as pb;
use cocon_tests::{
    Browser, Cocon, NatsServer, StreamReader, cocon_bin, header, hidden_field, make_mesh_key, make_mesh_tls, onboard,
};
use serde_json::json;

/// A call that failed in the transport (TLS), not with an answer of the service (which would
/// refuse a call without a ticket with one of its own codes).
fn refused_before_the_service<T>(answer: Result<T, tonic::Status>) -> bool {
    use tonic::Code;
    match answer {
        Ok(_) => false,
        Err(status) => {
            let service_answered = matches!(
                status.code(),
                Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument | Code::NotFound
            ) && status
                .metadata()
                .get(cocon_common::error::ERROR_CODE_METADATA)
                .is_some();
            !service_answered
        }
    }
}

async fn split(nats: &NatsServer) -> (tempfile::TempDir, Cocon, Cocon) {
    split_with(nats, &[]).await
}

/// The split, with `env` set on both processes.
async fn split_with(nats: &NatsServer, env: &[(&str, &str)]) -> (tempfile::TempDir, Cocon, Cocon) {
    let dir = tempfile::tempdir().unwrap();
    // The mesh key the two processes share, made as an operator would.
    let key = dir.path().join("mesh.key");
    let made = std::process::Command::new(cocon_bin())
        .arg("mesh-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let again = std::process::Command::new(cocon_bin())
        .arg("mesh-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success(), "an existing key is never overwritten");
    let key = key.to_str().unwrap().to_string();
    let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
    let mut documents = Cocon::builder(&dir.path().join("documents"));
    for (key, value) in env {
        documents = documents.env(key, *value);
    }
    let documents = documents
        .arg("--services")
        .arg("documents,files")
        .arg("--nats")
        .arg(nats.url())
        .env("COCON_MESH_KEY_FILE", key.clone())
        .env("COCON_MESH_TLS__DIR", tls.clone())
        .start()
        .await
        .unwrap();
    let endpoint = documents.grpc.clone().expect("the documents process serves gRPC");
    let mut edge = Cocon::builder(&dir.path().join("edge"));
    for (key, value) in env {
        edge = edge.env(key, *value);
    }
    let edge = edge
        .arg("--services")
        .arg("gateway,auth")
        .arg("--nats")
        .arg(nats.url())
        .env("COCON_ENDPOINTS__DOCUMENTS", endpoint.clone())
        .env("COCON_ENDPOINTS__FILES", endpoint)
        .env("COCON_MESH_KEY_FILE", key)
        .env("COCON_MESH_TLS__DIR", tls)
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
    let instance = edge.instance_id("alice.test").await.unwrap();
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

    // Defence in depth: the documents service itself refuses a call without the auth service's
    // ticket for that very instance, whoever makes it.
    let endpoint = documents.grpc.clone().unwrap().replacen("http://", "https://", 1);
    let tls_dir = _dir.path().join("mesh-tls");
    let pem = |f: &str| std::fs::read(tls_dir.join(f)).unwrap();
    let ca = tonic::transport::Certificate::from_pem(pem("ca.pem"));
    let mesh_client = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .identity(tonic::transport::Identity::from_pem(pem("cert.pem"), pem("key.pem")))
        .domain_name("cocon-mesh");
    // Mutual TLS: without a certificate of the mesh, or in the clear, no call goes through.
    let plain = pb::documents_service_client::DocumentsServiceClient::connect(documents.grpc.clone().unwrap()).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut client) => refused_before_the_service(client.get_document(pb::GetDocumentRequest::default()).await),
    };
    assert!(refused, "a plain gRPC call reaches the service");
    let anonymous = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("cocon-mesh"),
        )
        .unwrap();
    let anonymous = match anonymous.connect().await {
        Err(_) => true,
        Ok(channel) => {
            let answer = pb::documents_service_client::DocumentsServiceClient::new(channel)
                .get_document(pb::GetDocumentRequest::default())
                .await;
            refused_before_the_service(answer)
        }
    };
    assert!(anonymous, "a TLS client without a mesh certificate reaches the service");
    let outsider_dir = tempfile::tempdir().unwrap();
    let outsider = make_mesh_tls(outsider_dir.path()).unwrap();
    let opem = |f: &str| std::fs::read(outsider.join(f)).unwrap();
    let foreign = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem("ca.pem")))
                .identity(tonic::transport::Identity::from_pem(opem("cert.pem"), opem("key.pem")))
                .domain_name("cocon-mesh"),
        )
        .unwrap();
    let foreign = match foreign.connect().await {
        Err(_) => true,
        Ok(channel) => refused_before_the_service(
            pb::documents_service_client::DocumentsServiceClient::new(channel)
                .get_document(pb::GetDocumentRequest::default())
                .await,
        ),
    };
    assert!(foreign, "a certificate of another CA reaches the service");
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .tls_config(mesh_client)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = pb::documents_service_client::DocumentsServiceClient::new(channel);
    let key = MeshKey::load(&_dir.path().join("mesh.key"), false).unwrap();
    edge.add_instance("bob.test").await.unwrap();
    let bob = edge.instance_id("bob.test").await.unwrap();
    let soon = cocon_common::time::now_secs() + 60;
    let get = |ticket: String| pb::GetDocumentRequest {
        scope: Some(pb::Scope {
            instance: instance.clone(),
            doctype: "io.cozy.notes".into(),
            ticket,
            read_only: Vec::new(),
        }),
        id: id.clone(),
        rev: String::new(),
        open_credentials: false,
        ..Default::default()
    };
    for (ticket, what, code) in [
        (String::new(), "no ticket", tonic::Code::PermissionDenied),
        (key.issue(&bob, soon), "bob's ticket", tonic::Code::PermissionDenied),
        (
            MeshKey::random().issue(&instance, soon),
            "a ticket from another key",
            tonic::Code::PermissionDenied,
        ),
        // As expired as the token it came with: the caller signs in again.
        (
            key.issue(&instance, soon - 120),
            "an expired ticket",
            tonic::Code::Unauthenticated,
        ),
    ] {
        let refused = grpc.get_document(get(ticket)).await.unwrap_err();
        assert_eq!(refused.code(), code, "{what}: {refused:?}");
    }
    let allowed = grpc.get_document(get(key.issue(&instance, soon))).await.unwrap();
    assert!(String::from_utf8_lossy(&allowed.into_inner().json).contains("over the wire"));

    // The events are on NATS, on per-instance, per-doctype subjects.
    let filter = format!("cocon.documents.{instance}.>");
    let mut reader = StreamReader::open(&nats.url(), "COCON_DOCUMENTS", "test-reader", &filter)
        .await
        .unwrap();
    let mut subjects = Vec::new();
    while subjects.len() < 2 {
        let m = reader.next(Duration::from_secs(10)).await.expect("events arrive");
        subjects.push(m.subject.to_string());
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
    // Read the whole stream of this instance with a new consumer: each event is in it exactly once
    // (re-publishes after failures carry the same Nats-Msg-Id and are dropped by JetStream).
    // The server was just restarted: opening fails until it accepts connections again.
    let mut audit = loop {
        match StreamReader::open(&nats.url(), "COCON_DOCUMENTS", "audit", &filter).await {
            Ok(reader) => break reader,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let expected = subjects.len() + ids.len();
    let mut seen = HashMap::<String, u32>::new();
    while seen.values().sum::<u32>() < expected as u32 {
        let m = audit
            .next(Duration::from_secs(30))
            .await
            .expect("every event written during the outage arrives");
        *seen
            .entry(header(&m, "Nats-Msg-Id").expect("a message id"))
            .or_default() += 1;
    }
    assert_eq!(seen.len(), expected, "every event is on the stream");
    assert!(seen.values().all(|&n| n == 1), "no event twice: {seen:?}");
    assert!(
        audit.next(Duration::from_millis(500)).await.is_none(),
        "nothing beyond the expected events"
    );
    drop(documents);
}

#[tokio::test]
async fn test_split_files_stream_over_grpc() {
    use base64::Engine as _;
    use md5::Digest as _;
    let nats = NatsServer::start().await.unwrap();
    let (_dir, _backend, edge) = split(&nats).await;
    let api = edge.instance("alice.test", "io.cozy.files").await.unwrap();
    let instance = edge.instance_id("alice.test").await.unwrap();
    let filter = format!("cocon.files.{instance}.>");
    let mut reader = StreamReader::open(&nats.url(), "COCON_FILES", "files-reader", &filter)
        .await
        .unwrap();

    // 20 MiB: many gRPC messages each way.
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 253) as u8).collect();
    let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&data));
    let up = cocon_tests::Api::reply(
        api.request(reqwest::Method::POST, "/files/?Type=file&Name=big.bin")
            .header("Content-MD5", &md5)
            .body(data.clone()),
    )
    .await;
    assert_eq!(up.status, 201, "{}", up.text);
    let id = up.body["data"]["id"].as_str().unwrap().to_string();
    let down = api
        .request(reqwest::Method::GET, &format!("/files/download/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), 200);
    assert!(
        down.bytes().await.unwrap() == data,
        "the content comes back byte for byte"
    );
    let part = api
        .request(reqwest::Method::GET, &format!("/files/download/{id}"))
        .header("Range", "bytes=10000000-10000009")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(&part.bytes().await.unwrap()[..], &data[10_000_000..10_000_010]);
    // Errors keep their status across the wire.
    let bad = cocon_tests::Api::reply(
        api.request(reqwest::Method::POST, "/files/?Type=file&Name=bad.bin")
            .header("Content-MD5", &md5)
            .body(b"not it".to_vec()),
    )
    .await;
    assert_eq!(bad.status, 412, "{}", bad.text);

    // The roots, then the file: on NATS, on per-instance subjects.
    let mut subjects = Vec::new();
    while subjects.len() < 3 {
        let m = reader.next(Duration::from_secs(10)).await.expect("file events arrive");
        subjects.push(m.subject.to_string());
    }
    assert_eq!(
        subjects,
        [
            format!("cocon.files.{instance}.created"),
            format!("cocon.files.{instance}.created"),
            format!("cocon.files.{instance}.created"),
        ]
    );
}

/// A CLI token revoked through one gateway stops working on every other gateway within a
/// second (their token caches last `auth_cache_ttl_ms`, 1 s by default).
#[tokio::test]
async fn test_a_revoked_token_stops_on_every_gateway_within_a_second() {
    let nats = NatsServer::start().await.unwrap();
    let (dir, backend, edge) = split(&nats).await;
    let second = another_gateway(dir.path(), &backend, &edge).await;
    let api = edge.instance("alice.test", "io.cozy.notes").await.unwrap();
    assert_eq!(api.put("/data/io.cozy.notes/n", &json!({"v": 1})).await.status, 200);
    let (status, issued) = edge
        .admin(
            reqwest::Method::POST,
            "/instances/token",
            &[("Domain", "alice.test"), ("Scope", "io.cozy.notes:GET")],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{issued}");
    let token = issued["token"].as_str().unwrap();
    let id = issued["id"].as_str().unwrap();
    let elsewhere = second.api("alice.test", Some(token));
    // The second gateway has the token in its cache.
    assert_eq!(elsewhere.get("/data/io.cozy.notes/n").await.status, 200);

    let (status, body) = edge
        .admin(
            reqwest::Method::DELETE,
            &format!("/instances/alice.test/tokens/{id}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 204, "{body}");
    let revoked = std::time::Instant::now();
    assert_eq!(
        edge.api("alice.test", Some(token))
            .get("/data/io.cozy.notes/n")
            .await
            .status,
        401
    );
    loop {
        let status = elsewhere.get("/data/io.cozy.notes/n").await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < Duration::from_millis(1_500),
            "still accepted {:?} after its revocation",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, listed) = edge
        .admin(reqwest::Method::GET, "/instances/alice.test/tokens", &[])
        .await
        .unwrap();
    assert!(listed.as_array().unwrap().iter().all(|t| t["id"] != id), "{listed}");
}

/// A gateway of its own, on the split's auth and data services.
async fn another_gateway(dir: &std::path::Path, backend: &Cocon, edge: &Cocon) -> Cocon {
    gateway_builder(dir, backend, edge).start().await.unwrap()
}

/// A gateway process on the split's auth and data services, to start.
fn gateway_builder(dir: &std::path::Path, backend: &Cocon, edge: &Cocon) -> cocon_tests::CoconBuilder {
    let backend_grpc = backend.grpc.clone().unwrap();
    Cocon::builder(&dir.join(format!("gateway-{}", rand_suffix())))
        .arg("--services")
        .arg("gateway")
        .env("COCON_MESH_TLS__DIR", dir.join("mesh-tls").to_str().unwrap())
        .env("COCON_ENDPOINTS__AUTH", edge.grpc.clone().unwrap())
        .env("COCON_ENDPOINTS__DOCUMENTS", backend_grpc.clone())
        .env("COCON_ENDPOINTS__FILES", backend_grpc)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The second step of a login: the first step's token and a code, through `browser`.
async fn second_step(browser: &mut Browser, token: &str, code: &str) -> cocon_tests::Page {
    if !browser.cookies.contains_key("cocon_csrf") {
        browser.get("/auth/login").await;
    }
    let csrf = browser.csrf();
    browser
        .post_form(
            "/auth/twofactor",
            &[
                ("csrf_token", &csrf),
                ("two_factor_token", token),
                ("two_factor_passcode", code),
            ],
        )
        .await
}

/// Login limits are kept by the auth service: wrong codes sent through two gateways count
/// together, each past a few makes the next wait, and the owner's known device is held back
/// neither by them nor by a passphrase bucket that anyone drained.
#[tokio::test]
async fn test_login_limits_hold_across_gateways_and_spare_known_devices() {
    const PASS: &str = "correct horse battery staple";
    let nats = NatsServer::start().await.unwrap();
    let (dir, backend, edge) = split_with(
        &nats,
        &[
            ("COCON_AUTH__LIMITS__SECOND_FACTOR_FREE_FAILURES", "2"),
            ("COCON_AUTH__LIMITS__PASSPHRASE_PER_INSTANCE_PER_MINUTE", "4"),
            ("COCON_AUTH__LIMITS__PASSPHRASE_PER_IP_PER_MINUTE", "100"),
        ],
    )
    .await;
    let second = another_gateway(dir.path(), &backend, &edge).await;

    // The owner turns two-factor on and signs in from their phone once.
    let mut owner = onboard(&edge, "alice.test", PASS).await;
    let proposal = owner
        .request(reqwest::Method::POST, "/settings/twofactor", None, Some(&json!({})))
        .await;
    let totp = totp_rs::TOTP::from_url(proposal.json()["otpauth_uri"].as_str().unwrap()).unwrap();
    let enabled = owner
        .request(
            reqwest::Method::PUT,
            "/settings/twofactor",
            None,
            Some(&json!({"code": totp.generate_current().unwrap()})),
        )
        .await;
    assert_eq!(enabled.status, 200, "{enabled:?}");
    let recovery: Vec<String> = enabled.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let mut phone = Browser::new(&edge.http, "alice.test");
    let step = phone.login(PASS).await;
    let token = hidden_field(&step.text, "two_factor_token").unwrap();
    let signed_in = second_step(&mut phone, &token, &recovery[0]).await;
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    assert!(
        signed_in.set_cookie("cocon_device").is_some(),
        "the phone is remembered"
    );

    // Someone with the passphrase guesses codes through the second gateway, then the first.
    let mut thief = Browser::new(&second.http, "alice.test");
    let step = thief.login(PASS).await;
    let token = hidden_field(&step.text, "two_factor_token").unwrap();
    for _ in 0..2 {
        assert_eq!(second_step(&mut thief, &token, "000000").await.status, 401);
    }
    let mut thief_elsewhere = Browser::new(&edge.http, "alice.test");
    let held = second_step(&mut thief_elsewhere, &token, "000001").await;
    assert_eq!(
        held.status, 429,
        "the failures through the other gateway count: {held:?}"
    );
    let wait: u64 = held.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1);

    // The thief drains the passphrase bucket of devices never seen (the phone took one try).
    let mut drained = false;
    for _ in 0..5 {
        let mut anyone = Browser::new(&second.http, "alice.test");
        if anyone.login(PASS).await.status == 429 {
            drained = true;
            break;
        }
    }
    assert!(drained, "the shared bucket has a limit");
    let mut stranger = Browser::new(&edge.http, "alice.test");
    assert_eq!(stranger.login(PASS).await.status, 429, "through any gateway");

    // The owner's phone is held back by neither.
    let step = phone.login(PASS).await;
    assert_eq!(step.status, 200, "{step:?}");
    let token = hidden_field(&step.text, "two_factor_token").unwrap();
    let again = second_step(&mut phone, &token, &recovery[1]).await;
    assert_eq!(again.status, 303, "{again:?}");
}

/// Over real NATS that needs credentials: a client without them cannot even connect, and an
/// `instance.destroyed` published by one that has them but not the mesh's key (unsigned, or
/// signed with another key) is dead-lettered by every consumer and erases nothing; the
/// genuine one, signed by auth, still erases.
#[tokio::test]
async fn test_forged_events_erase_nothing() {
    use cocon_proto::events::v1::{Envelope, InstanceDestroyed, envelope::Payload};
    use prost::Message as _;
    const PASSWORD: &str = "a-nats-password";
    let nats = NatsServer::start_with(&["--user", "cocon", "--pass", PASSWORD])
        .await
        .unwrap();
    let (dir, backend, edge) = split_with(
        &nats,
        &[("COCON_NATS__USER", "cocon"), ("COCON_NATS__PASSWORD", PASSWORD)],
    )
    .await;
    let api = edge.instance("alice.test", "io.cozy.notes").await.unwrap();
    assert_eq!(
        api.put("/data/io.cozy.notes/n", &json!({"kept": true})).await.status,
        200
    );
    let instance = edge.instance_id("alice.test").await.unwrap();

    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(nats.url())
        .await;
    assert!(anonymous.is_err(), "the bus refuses a client without credentials");
    let insider = async_nats::ConnectOptions::with_user_and_password("cocon".into(), PASSWORD.into())
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(insider.clone());
    let subject = format!("cocon.auth.{instance}.instance.destroyed");
    let envelope = Envelope {
        id: format!("auth:{instance}:999"),
        r#type: "auth.instance.destroyed".into(),
        schema_version: 1,
        instance: instance.clone(),
        seq: 999,
        subject: subject.clone(),
        payload: Some(Payload::InstanceDestroyed(InstanceDestroyed {
            domain: "alice.test".into(),
        })),
        ..Default::default()
    };
    let payload = bytes::Bytes::from(envelope.encode_to_vec());
    // Unsigned, then signed with a key that is not the mesh's.
    let mut unsigned = async_nats::HeaderMap::new();
    unsigned.insert("Nats-Msg-Id", "forged-1");
    js.publish_with_headers(subject.clone(), unsigned, payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut wrong = cocon_events::Message {
        subject: subject.clone(),
        id: "forged-2".into(),
        headers: Vec::new(),
        payload: payload.clone(),
    };
    cocon_events::EventKeys::new(cocon_common::ticket::MeshKey::random(), &["auth"])
        .sign(&mut wrong)
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "forged-2");
    for (k, v) in &wrong.headers {
        headers.insert(k.as_ref(), v.as_str());
    }
    js.publish_with_headers(subject.clone(), headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();

    // Both are dead-lettered by the documents and the files consumers, never applied.
    let mut dlq = StreamReader::open_with(insider, "COCON_DLQ", "audit", "cocon.dlq.>")
        .await
        .unwrap();
    let mut refused = Vec::new();
    while refused.len() < 4 {
        let m = dlq
            .next(Duration::from_secs(30))
            .await
            .expect("the forged events are dead-lettered");
        assert!(
            header(&m, "Cocon-Error").is_some_and(|e| e.contains("not authentic")),
            "{:?}",
            m.headers
        );
        refused.push(m.subject.to_string());
    }
    refused.sort();
    assert_eq!(
        refused,
        [
            "cocon.dlq.documents-instance-destroyed",
            "cocon.dlq.documents-instance-destroyed",
            "cocon.dlq.files-instance-destroyed",
            "cocon.dlq.files-instance-destroyed",
        ]
    );
    assert_eq!(
        api.get("/data/io.cozy.notes/n").await.get("kept"),
        true,
        "nothing erased"
    );

    // The genuine event, signed by auth, erases the instance's documents.
    let key = MeshKey::load(&dir.path().join("mesh.key"), false).unwrap();
    let ticket = key.issue(&instance, cocon_common::time::now_secs() + 60);
    let (status, _) = edge
        .admin(reqwest::Method::DELETE, "/instances/alice.test", &[])
        .await
        .unwrap();
    assert_eq!(status, 204);
    let tls_dir = dir.path().join("mesh-tls");
    let pem = |f: &str| std::fs::read(tls_dir.join(f)).unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(backend.grpc.clone().unwrap().replacen("http://", "https://", 1))
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem("ca.pem")))
                    .identity(tonic::transport::Identity::from_pem(pem("cert.pem"), pem("key.pem")))
                    .domain_name("cocon-mesh"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = pb::documents_service_client::DocumentsServiceClient::new(channel);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = grpc
            .get_document(pb::GetDocumentRequest {
                scope: Some(pb::Scope {
                    instance: instance.clone(),
                    doctype: "io.cozy.notes".into(),
                    ticket: ticket.clone(),
                    read_only: Vec::new(),
                }),
                id: "n".into(),
                rev: String::new(),
                open_credentials: false,
                ..Default::default()
            })
            .await;
        match got {
            Err(status) if status.code() == tonic::Code::NotFound => break,
            Ok(_) => {}
            Err(other) => panic!("{other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the genuine event never erased the documents"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sharing service in a process of its own is ready and serves its gRPC API (health says
/// SERVING, and only for the services it runs); an unknown service name is refused at start.
#[tokio::test]
async fn test_the_sharing_service_alone_is_ready_and_unknown_services_are_refused() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sharing = Cocon::builder(&dir.path().join("sharing"))
        .arg("--services")
        .arg("sharing")
        .arg("--nats")
        .arg(nats.url())
        .env(
            "COCON_MESH_KEY_FILE",
            make_mesh_key(dir.path()).unwrap().to_str().unwrap(),
        )
        .env("COCON_MESH_TLS__INSECURE", "true")
        .start()
        .await
        .unwrap();
    let ready = reqwest::get(format!("{}/ready", sharing.admin)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let endpoint = sharing.grpc.clone().expect("a process of services serves gRPC health");
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = |service: &str| HealthCheckRequest {
        service: service.to_string(),
    };
    let sharing_status = health.check(status("cocon.sharing.v1.SharingService")).await.unwrap();
    assert_eq!(sharing_status.into_inner().status, ServingStatus::Serving as i32);
    let unknown = health.check(status("cocon.documents.v1.DocumentsService")).await;
    assert_eq!(
        unknown.unwrap_err().code(),
        tonic::Code::NotFound,
        "documents does not run there"
    );
    let unknown = Cocon::builder(&dir.path().join("unknown"))
        .arg("--services")
        .arg("gateway,billing")
        .start()
        .await;
    assert!(unknown.is_err(), "an unknown service name is refused at start");
}

/// The jobs service in a process of its own: the gateway reaches it over gRPC (mutual TLS),
/// and it sees the documents written in another process through their signed events on NATS.
#[tokio::test]
async fn test_jobs_in_their_own_process_over_real_nats() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = make_mesh_key(dir.path()).unwrap().to_str().unwrap().to_string();
    let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
    let start = |name: &str, services: &str, env: Vec<(&str, String)>| {
        mesh_process(&dir.path().join(name), services, &nats, &key, &tls, env).start()
    };
    let documents = start("documents", "documents,files", vec![]).await.unwrap();
    let jobs = start("jobs", "jobs", vec![]).await.unwrap();
    let data_endpoint = documents.grpc.clone().unwrap();
    let edge = start(
        "edge",
        "gateway,auth",
        vec![
            ("COCON_ENDPOINTS__DOCUMENTS", data_endpoint.clone()),
            ("COCON_ENDPOINTS__FILES", data_endpoint),
            ("COCON_ENDPOINTS__JOBS", jobs.grpc.clone().unwrap()),
        ],
    )
    .await
    .unwrap();
    let api = edge
        .instance("alice.test", "io.cozy.jobs io.cozy.triggers io.cozy.notes")
        .await
        .unwrap();

    let queued = api
        .post(
            "/jobs/queue/log",
            &json!({"data": {"attributes": {"arguments": {"x": 1}}}}),
        )
        .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let job = queued.body["data"]["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let reply = api.get(&format!("/jobs/{job}")).await;
        if reply.body["data"]["attributes"]["state"] == "done" || tokio::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(done.body["data"]["attributes"]["state"], "done", "{}", done.text);

    let trigger = api
        .post(
            "/jobs/triggers",
            &json!({"data": {"attributes": {"type": "@event", "arguments": "io.cozy.notes:CREATED", "worker": "log"}}}),
        )
        .await;
    assert_eq!(trigger.status, 201, "{}", trigger.text);
    let trigger = trigger.body["data"]["id"].as_str().unwrap().to_string();
    let note = api
        .post("/data/io.cozy.notes/", &json!({"title": "across processes"}))
        .await;
    assert_eq!(note.status, 201, "{}", note.text);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let jobs_of = loop {
        let reply = api.get(&format!("/jobs/triggers/{trigger}/jobs")).await;
        let state = &reply.body["data"][0]["attributes"]["state"];
        if state == "done" || tokio::time::Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let event = &jobs_of.body["data"][0]["attributes"]["event"];
    assert_eq!(event["doc"]["title"], "across processes", "{}", jobs_of.text);
    drop(jobs);
}

/// The notifications service in a process of its own: the gateway reaches it over gRPC, and it
/// writes the notification center through the documents process with its proof of owning the
/// doctype, which no other caller has.
#[tokio::test]
async fn test_notifications_in_their_own_process() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = make_mesh_key(dir.path()).unwrap().to_str().unwrap().to_string();
    let tls = make_mesh_tls(dir.path()).unwrap().to_str().unwrap().to_string();
    let start = |name: &str, services: &str, env: Vec<(&str, String)>| {
        mesh_process(&dir.path().join(name), services, &nats, &key, &tls, env).start()
    };
    // The edge and notifications each call the other: notifications gets a port chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let notifications_endpoint = format!("http://127.0.0.1:{port}");
    let documents = start("documents", "documents,files,jobs", vec![]).await.unwrap();
    let data_endpoint = documents.grpc.clone().unwrap();
    let edge = start(
        "edge",
        "gateway,auth",
        vec![
            ("COCON_ENDPOINTS__DOCUMENTS", data_endpoint.clone()),
            ("COCON_ENDPOINTS__FILES", data_endpoint.clone()),
            ("COCON_ENDPOINTS__JOBS", data_endpoint.clone()),
            ("COCON_ENDPOINTS__NOTIFICATIONS", notifications_endpoint),
        ],
    )
    .await
    .unwrap();
    let notifications = mesh_process(
        &dir.path().join("notifications"),
        "notifications",
        &nats,
        &key,
        &tls,
        vec![
            ("COCON_ENDPOINTS__DOCUMENTS", data_endpoint.clone()),
            ("COCON_ENDPOINTS__JOBS", data_endpoint),
            ("COCON_ENDPOINTS__AUTH", edge.grpc.clone().unwrap()),
        ],
    )
    .arg("--grpc-addr")
    .arg(format!("127.0.0.1:{port}"))
    .start()
    .await
    .unwrap();
    let ready = reqwest::get(format!("{}/ready", notifications.admin)).await.unwrap();
    assert_eq!(ready.status(), 200, "notifications serves");

    let api = edge.instance("alice.test", "io.cozy.notifications").await.unwrap();
    let sent = api
        .post(
            "/notifications",
            &json!({"data": {"attributes": {"category": "maintenance", "title": "Tonight"}}}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.text);
    let id = sent.body["data"]["id"].as_str().unwrap();
    let stored = api.get(&format!("/data/io.cozy.notifications/{id}")).await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.body["title"], "Tonight");
    assert_eq!(stored.body["originator"], "cli");
    let forged = api
        .put("/data/io.cozy.notifications/forged", &json!({"title": "forged"}))
        .await;
    assert_eq!(forged.status, 403, "/data never writes the center: {}", forged.text);
}

/// A process of a mesh on real NATS: `services` in `data_dir`, with the mesh's key and
/// certificates, and `env`.
pub(super) fn mesh_process<K: AsRef<str>>(
    data_dir: &std::path::Path,
    services: &str,
    nats: &NatsServer,
    key: &str,
    tls: &str,
    env: impl IntoIterator<Item = (K, String)>,
) -> cocon_tests::CoconBuilder {
    let mut builder = Cocon::builder(data_dir)
        .arg("--services")
        .arg(services)
        .arg("--nats")
        .arg(nats.url())
        .env("COCON_MESH_KEY_FILE", key)
        .env("COCON_MESH_TLS__DIR", tls);
    for (k, v) in env {
        builder = builder.env(k.as_ref(), v);
    }
    builder
}

/// `COCON_ENDPOINTS__<SERVICE>` for each of `services`, all at `endpoint`.
pub(super) fn endpoints(services: &[&str], endpoint: &str) -> Vec<(String, String)> {
    services
        .iter()
        .map(|s| (format!("COCON_ENDPOINTS__{s}"), endpoint.to_string()))
        .collect()
}

/// Realtime across gateways over real NATS: a socket on one gateway sees the writes made
/// through another and what `POST /realtime/…` sent there; an event that is not signed with the
/// mesh key (anyone who reaches NATS could publish one) never reaches a socket.
#[tokio::test]
async fn test_realtime_sockets_on_any_gateway_see_every_write() {
    use cocon_proto::events::v1::{DocumentChanged, Envelope, envelope::Payload};
    use cocon_tests::Socket;
    use prost::Message as _;

    let nats = NatsServer::start().await.unwrap();
    let (dir, backend, edge) = split(&nats).await;
    let second = gateway_builder(dir.path(), &backend, &edge)
        .arg("--nats")
        .arg(nats.url())
        .env("COCON_MESH_KEY_FILE", dir.path().join("mesh.key").to_str().unwrap())
        .start()
        .await
        .unwrap();
    let api = edge.instance("alice.test", "io.cozy.notes").await.unwrap();
    let instance = edge.instance_id("alice.test").await.unwrap();
    let mut socket = Socket::authed(&second.http, "alice.test", api.token().unwrap())
        .await
        .unwrap();
    assert_eq!(socket.subscribe("io.cozy.notes", None).await.unwrap(), None);

    // A forged event, straight on NATS: dropped by the gateway, which checks signatures.
    let forged = Envelope {
        id: format!("documents:{instance}:999999"),
        r#type: "documents.doc.created".into(),
        schema_version: 1,
        instance: instance.clone(),
        seq: 999_999,
        subject: format!("cocon.documents.{instance}.io:cozy:notes.created"),
        payload: Some(Payload::DocumentChanged(DocumentChanged {
            doctype: "io.cozy.notes".into(),
            id: "forged".into(),
            rev: "1-f".into(),
            deleted: false,
            body: br#"{"_id":"forged","_rev":"1-f","phishing":true}"#.to_vec().into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let client = async_nats::connect(nats.url()).await.unwrap();
    client
        .publish(forged.subject.clone(), forged.encode_to_vec().into())
        .await
        .unwrap();
    client.flush().await.unwrap();

    let wait = Duration::from_secs(10);
    assert_eq!(api.put("/data/io.cozy.notes/n1", &json!({"v": 1})).await.status, 200);
    let frame = socket.json(wait).await.unwrap();
    assert_eq!(frame["event"], "CREATED", "{frame}");
    assert_eq!(frame["payload"]["id"], "n1", "the forged event never came: {frame}");
    assert_eq!(frame["payload"]["doc"]["v"], 1);

    // What one gateway is told to notify reaches the sockets of the other.
    let notified = api
        .request(reqwest::Method::POST, "/realtime/io.cozy.notes/n1")
        .json(&json!({"typing": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(notified.status(), 204);
    let frame = socket.json(wait).await.unwrap();
    assert_eq!(frame["event"], "NOTIFIED", "{frame}");
    assert_eq!(frame["payload"]["doc"]["typing"], true);
}
