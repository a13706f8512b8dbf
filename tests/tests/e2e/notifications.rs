//! `POST /notifications` end to end: a konnector notifies within the categories its manifest
//! declares; notifications are stored in `io.cozy.notifications` (the center: `/data` and the
//! realtime socket), dropped as stateful and `min_interval` categories say, mailed to the
//! instance's address through a real SMTP server, or scheduled at their `at` time.

use std::time::Duration;

use cocon_tests::{Cocon, SmtpServer, Socket};
use reqwest::Method;
use serde_json::{Value, json};

use super::jobs::{cli, write_probe};

const MANIFEST: &str = r#"{"slug": "probe", "name": "Probe", "version": "1.0.0", "type": "konnector",
 "permissions": {"results": {"type": "io.cozy.konnector.results"}},
 "notifications": {
   "new-bill": {"description": "A bill arrived", "default_priority": "high"},
   "balance-lower": {"description": "The balance is low", "stateful": true},
   "digest": {"description": "What happened", "min_interval": "1h"}
 }}"#;

/// alice.test, with an address: its onboarding link is the first mail.
async fn owner_with_mail(cocon: &Cocon, smtp: &SmtpServer) {
    let (status, body) = cocon
        .admin(
            Method::POST,
            "/instances",
            &[("Domain", "alice.test"), ("Email", "alice@example.org")],
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(smtp.wait_for(1).await.len(), 1, "the onboarding link");
}

async fn notify(api: &cocon_tests::Api, attributes: Value) -> cocon_tests::Reply {
    api.post(
        "/notifications",
        &json!({"data": {"type": "io.cozy.notifications", "attributes": attributes}}),
    )
    .await
}

#[tokio::test]
async fn test_a_konnector_notifies_within_its_categories_by_the_center_and_mail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let smtp = SmtpServer::start().await.unwrap();
    let cocon = Cocon::builder(&data).smtp(smtp.port).start().await.unwrap();
    owner_with_mail(&cocon, &smtp).await;
    let code = dir.path().join("probe");
    write_probe(&code, MANIFEST);
    let (ok, _, err) = cli(
        &cocon,
        &data,
        &["konnectors", "install", "probe", code.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    // A konnector run's token, as the jobs service mints it (its audience and slug).
    let (status, minted) = cocon
        .admin(
            Method::POST,
            "/instances/token",
            &[
                ("Domain", "alice.test"),
                ("Scope", "io.cozy.konnector.results"),
                ("Audience", "konnector"),
                ("Slug", "probe"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{minted}");
    let konnector = cocon.api("alice.test", minted["token"].as_str());
    let center = cocon.api(
        "alice.test",
        Some(
            &cocon
                .token("alice.test", "io.cozy.notifications io.cozy.triggers")
                .await
                .unwrap(),
        ),
    );
    let mut socket = Socket::authed(&cocon.http, "alice.test", center.token().unwrap())
        .await
        .unwrap();
    assert_eq!(socket.subscribe("io.cozy.notifications", None).await.unwrap(), None);

    // A declared category: stored, shown live in the center, mailed.
    let sent = notify(
        &konnector,
        json!({"category": "new-bill", "title": "A new bill", "message": "From your energy provider",
               "content_html": "<p>A new bill from <b>your energy provider</b></p>", "data": {"amount": 42}}),
    )
    .await;
    assert_eq!(sent.status, 201, "{}", sent.text);
    let a = &sent.body["data"]["attributes"];
    assert_eq!(a["source_id"], "cozy/konnector/probe/new-bill");
    assert_eq!(a["originator"], "konnector");
    assert_eq!(a["slug"], "probe");
    assert_eq!(a["priority"], "high", "the category's default priority");
    assert_eq!(a["data"]["amount"], 42);
    let id = sent.body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(sent.body["data"]["meta"]["channels"], json!(["mail"]));
    let live = socket.json(Duration::from_secs(10)).await.unwrap();
    assert_eq!(live["event"], "CREATED", "{live}");
    assert_eq!(live["payload"]["type"], "io.cozy.notifications");
    assert_eq!(live["payload"]["id"], id.as_str());
    let stored = center.get(&format!("/data/io.cozy.notifications/{id}")).await;
    assert_eq!(stored.status, 200, "{}", stored.text);
    assert_eq!(stored.body["title"], "A new bill");
    let mails = smtp.wait_for(2).await;
    let mail = mails
        .iter()
        .find(|m| m.contains("Subject: A new bill"))
        .expect("the notification's mail");
    assert!(mail.contains("To: alice@example.org"), "{mail}");
    assert!(mail.contains("your energy provider"), "{mail}");

    // What is not declared, or not whole, is refused with a reason; nothing is stored.
    let unknown = notify(&konnector, json!({"category": "spam", "title": "Buy"})).await;
    assert_eq!(unknown.status, 403, "{}", unknown.text);
    assert!(
        unknown.text.contains("new-bill"),
        "the declared ones are named: {}",
        unknown.text
    );
    let untitled = notify(&konnector, json!({"category": "new-bill"})).await;
    assert_eq!(untitled.status, 400, "{}", untitled.text);
    let malformed = konnector.raw(Method::POST, "/notifications", b"{not json").await;
    assert_eq!(malformed.status, 400);

    // Stateful: the same state again is dropped; another state is stored.
    let low = json!({"category": "balance-lower", "title": "Low balance", "state": "low"});
    let first = notify(&konnector, low.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(first.body["data"]["meta"].get("dropped").is_none());
    let again = notify(&konnector, low).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["data"]["meta"]["dropped"], "same_state");
    let ok = notify(
        &konnector,
        json!({"category": "balance-lower", "title": "Balance ok", "state": "ok"}),
    )
    .await;
    assert!(ok.body["data"]["meta"].get("dropped").is_none(), "{}", ok.text);
    // min_interval: a second digest within the hour is dropped.
    let digest = json!({"category": "digest", "title": "Your week"});
    assert!(
        notify(&konnector, digest.clone()).await.body["data"]["meta"]
            .get("dropped")
            .is_none()
    );
    assert_eq!(
        notify(&konnector, digest).await.body["data"]["meta"]["dropped"],
        "min_interval"
    );

    // Scheduled: `at` makes an @at trigger that sends the mail then.
    let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3600)).to_string();
    let later = notify(
        &konnector,
        json!({"category": "new-bill", "title": "Later", "content_html": "<p>later</p>", "at": at}),
    )
    .await;
    assert_eq!(later.status, 201, "{}", later.text);
    let triggers = center.get("/jobs/triggers?Worker=sendmail").await;
    assert_eq!(triggers.status, 200, "{}", triggers.text);
    let scheduled: Vec<&Value> = triggers.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["attributes"]["type"] == "@at")
        .collect();
    assert_eq!(scheduled.len(), 1, "{}", triggers.text);
    assert_eq!(scheduled[0]["attributes"]["message"]["subject"], "Later");

    // The center lists every stored notification; it is written by the notifications service
    // only, never through /data, whatever the token.
    let listed = center
        .get("/data/io.cozy.notifications/_all_docs?include_docs=true")
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let titles: Vec<&str> = listed.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["doc"]["title"].as_str())
        .collect();
    assert_eq!(titles.len(), 5, "{titles:?}");
    let forged = center
        .post("/data/io.cozy.notifications/", &json!({"title": "forged"}))
        .await;
    assert!(forged.status == 403 || forged.status == 405, "{}", forged.text);

    // The person's preferences: a category muted by mail stays in the center only.
    let settings = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.settings").await.unwrap()),
    );
    let muted = settings
        .put(
            "/data/io.cozy.settings/io.cozy.notifications",
            &json!({"mail": {"new-bill": false}}),
        )
        .await;
    assert_eq!(muted.status, 200, "{}", muted.text);
    let before = smtp.received().len();
    let quiet = notify(
        &konnector,
        json!({"category": "new-bill", "title": "Muted bill", "content_html": "<p>muted</p>"}),
    )
    .await;
    assert_eq!(quiet.status, 201, "{}", quiet.text);
    assert!(quiet.body["data"]["meta"].get("channels").is_none(), "{}", quiet.text);
    let loud = notify(
        &konnector,
        json!({"category": "balance-lower", "title": "Balance critical", "state": "critical",
               "content_html": "<p>critical</p>"}),
    )
    .await;
    assert_eq!(loud.body["data"]["meta"]["channels"], json!(["mail"]), "{}", loud.text);
    let mails = smtp.wait_for(before + 1).await;
    assert!(
        mails.iter().any(|m| m.contains("Subject: Balance critical")),
        "{mails:?}"
    );
    assert!(
        !mails.iter().any(|m| m.contains("Subject: Muted bill")),
        "the muted one was not mailed"
    );

    // A CLI token notifies as the command line; a sharing-link code cannot.
    let admin_cli = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.files").await.unwrap()),
    );
    let from_cli = notify(
        &admin_cli,
        json!({"category": "maintenance", "title": "Maintenance tonight"}),
    )
    .await;
    assert_eq!(from_cli.status, 201, "{}", from_cli.text);
    assert_eq!(from_cli.body["data"]["attributes"]["originator"], "cli");
}

/// The server's own notifications: an upload refused for the quota (once a day, however many
/// are refused) and a newly connected app land in the center and in the owner's mailbox.
#[tokio::test]
async fn test_the_server_notifies_a_full_disk_and_a_new_app() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await.unwrap();
    let cocon = Cocon::builder(dir.path()).smtp(smtp.port).start().await.unwrap();
    owner_with_mail(&cocon, &smtp).await;
    let (status, _) = cocon
        .admin(Method::PATCH, "/instances/alice.test", &[("DiskQuota", "100")])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let center = cocon.api(
        "alice.test",
        Some(
            &cocon
                .token("alice.test", "io.cozy.notifications io.cozy.files")
                .await
                .unwrap(),
        ),
    );
    // The quota reaches the files service through an event: refused uploads follow.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    while refused < 2 {
        let upload = center
            .request(Method::POST, "/files/io.cozy.files.root-dir?Type=file&Name=big.bin")
            .body(vec![0u8; 500])
            .send()
            .await
            .unwrap();
        if upload.status() == 413 {
            refused += 1;
        } else {
            assert!(tokio::time::Instant::now() < deadline, "the quota never applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut browser = cocon_tests::Browser::new(&cocon.http, "alice.test");
    let registered = browser
        .request(
            Method::POST,
            "/auth/register",
            None,
            Some(
                &json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": "Notes on the go",
                        "software_id": "github.com/example/notes"}),
            ),
        )
        .await;
    assert_eq!(registered.status, 201, "{}", registered.text);

    let mails = smtp.wait_for(3).await;
    assert!(
        mails.iter().any(|m| m.contains("Subject: Your Cocon is full")),
        "{mails:?}"
    );
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: Notes on the go is connected to your Cocon")),
        "{mails:?}"
    );
    let listed = center
        .get("/data/io.cozy.notifications/_all_docs?include_docs=true")
        .await;
    let docs: Vec<&Value> = listed.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["doc"])
        .collect();
    let full: Vec<&&Value> = docs.iter().filter(|d| d["category"] == "disk-quota").collect();
    assert_eq!(full.len(), 1, "two refusals, one notification a day: {docs:?}");
    assert_eq!(full[0]["originator"], "stack");
    assert_eq!(full[0]["source_id"], "cozy/stack//disk-quota");
    assert!(docs.iter().any(|d| d["category"] == "oauth-clients"), "{docs:?}");
}
