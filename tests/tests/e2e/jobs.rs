//! Jobs and triggers end to end, against the real binary: cozy's `/jobs` API, every trigger
//! type, retries and time limits, mail received by a real SMTP server, jobs that survive a
//! kill -9, and the projection rebuilt from the log.

use std::time::Duration;

use cocon_tests::{Api, Cocon, Reply, SmtpServer, cocon_bin};
use reqwest::Method;
use serde_json::{Value, json};

pub(super) const JOBS_SCOPE: &str = "io.cozy.jobs io.cozy.triggers";

pub(super) fn attr<'a>(reply: &'a Reply, key: &str) -> &'a Value {
    &reply.body["data"]["attributes"][key]
}

pub(super) fn id(reply: &Reply) -> String {
    reply.body["data"]["id"].as_str().expect("an id").to_string()
}

pub(super) async fn push(api: &Api, worker: &str, attributes: Value) -> Reply {
    api.post(
        &format!("/jobs/queue/{worker}"),
        &json!({"data": {"attributes": attributes}}),
    )
    .await
}

pub(super) async fn trigger(api: &Api, attributes: Value) -> Reply {
    api.post("/jobs/triggers", &json!({"data": {"attributes": attributes}}))
        .await
}

/// Polls the job as a client would until it ends (30 s at most), and answers it.
async fn ended(api: &Api, job: &str) -> Reply {
    ended_within(api, job, Duration::from_secs(30)).await
}

/// Polls the job until it ends (`limit` at most), and answers it.
pub(super) async fn ended_within(api: &Api, job: &str, limit: Duration) -> Reply {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let reply = api.get(&format!("/jobs/{job}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let state = attr(&reply, "state").as_str().unwrap_or_default().to_string();
        if state == "done" || state == "errored" || tokio::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The error a queued job ended with, once it ended errored.
async fn error_of(api: &Api, queued: &Reply) -> String {
    let errored = ended(api, &id(queued)).await;
    assert_eq!(attr(&errored, "state"), "errored", "{}", errored.text);
    attr(&errored, "error").as_str().unwrap_or_default().to_string()
}

/// Polls until `check` holds on the answer to GET `path` (30 s at most).
pub(super) async fn until(api: &Api, path: &str, check: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = api.get(path).await;
        if check(&reply) || tokio::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn count(reply: &Reply) -> usize {
    reply.body["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn test_jobs_are_queued_run_and_read_as_cozy_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", JOBS_SCOPE).await.unwrap();

    let queued = push(&api, "log", json!({"arguments": {"hello": "world"}})).await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    assert_eq!(queued.body["data"]["type"], "io.cozy.jobs");
    assert_eq!(attr(&queued, "worker"), "log");
    assert_eq!(attr(&queued, "domain"), "alice.test");
    assert_eq!(attr(&queued, "message"), &json!({"hello": "world"}));
    let job = id(&queued);
    assert_eq!(queued.body["data"]["links"]["self"], format!("/jobs/log/{job}"));
    let done = ended(&api, &job).await;
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    for key in ["queued_at", "started_at", "finished_at"] {
        assert!(
            attr(&done, key).as_str().unwrap().starts_with("20"),
            "{key}: {}",
            done.text
        );
    }
    // Nothing left queued for the worker.
    let queue = api.get("/jobs/queue/log").await;
    assert_eq!(queue.status, 200, "{}", queue.text);
    assert_eq!(count(&queue), 0);

    // What cozy-stack refuses, Cocon refuses with the same statuses and a reason.
    let unknown = push(&api, "konnectorz", json!({})).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(unknown.body["reason"].as_str().unwrap().contains("konnectorz"));
    let bad = api.raw(Method::POST, "/jobs/queue/log", b"{not json").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let missing = api.get("/jobs/0123456789abcdef0123456789abcdef").await;
    assert_eq!(missing.status, 404);

    // A rule naming the worker with the `worker` selector opens it, and only it.
    let named = cocon
        .token("alice.test", "io.cozy.jobs:POST,GET:log:worker")
        .await
        .unwrap();
    let app = cocon.api("alice.test", Some(&named));
    let ok = push(&app, "log", json!({})).await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    assert_eq!(push(&app, "sendmail", json!({})).await.status, 403);
    let other = cocon.token("alice.test", "io.cozy.notes").await.unwrap();
    let stranger = cocon.api("alice.test", Some(&other));
    assert_eq!(push(&stranger, "log", json!({})).await.status, 403);
    assert_eq!(stranger.get(&format!("/jobs/{job}")).await.status, 403);
    // Another instance does not see the job at all.
    cocon.add_instance("bob.test").await.unwrap();
    let bob = cocon.api("bob.test", Some(&cocon.token("bob.test", JOBS_SCOPE).await.unwrap()));
    assert_eq!(bob.get(&format!("/jobs/{job}")).await.status, 404);

    // A client job runs in the client, which ends it.
    let client = push(&api, "client", json!({"arguments": {"slug": "x"}})).await;
    assert_eq!(client.status, 202, "{}", client.text);
    assert_eq!(attr(&client, "state"), "running");
    let patched = api
        .send(
            Method::PATCH,
            &format!("/jobs/{}", id(&client)),
            Some(br#"{"data":{"attributes":{"state":"errored","error":"LOGIN_FAILED"}}}"#.to_vec()),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(attr(&patched, "error"), "LOGIN_FAILED");
    let again = api
        .send(
            Method::PATCH,
            &format!("/jobs/{}", id(&client)),
            Some(br#"{"attributes":{"state":"done"}}"#.to_vec()),
        )
        .await;
    assert_eq!(again.status, 409, "an ended job stays ended: {}", again.text);
    let server_job = api
        .send(
            Method::PATCH,
            &format!("/jobs/{job}"),
            Some(br#"{"attributes":{"state":"done"}}"#.to_vec()),
        )
        .await;
    assert_eq!(server_job.status, 403, "{}", server_job.text);

    // Purge keeps each worker's last job of each state; clean finds nothing stuck.
    for _ in 0..3 {
        let j = push(&api, "log", json!({})).await;
        ended(&api, &id(&j)).await;
    }
    let purged = api
        .send(Method::DELETE, "/jobs/purge?duration=0s&workers=log", None)
        .await;
    assert_eq!(purged.status, 400, "0s is not a duration: {}", purged.text);
    // Jobs that finished more than a second ago, once a second passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let purged = api
        .send(Method::DELETE, "/jobs/purge?duration=1s&workers=log", None)
        .await;
    assert_eq!(purged.status, 200, "{}", purged.text);
    assert_eq!(
        purged.body["deleted"], 4,
        "five done log jobs, the last kept: {}",
        purged.text
    );
    assert_eq!(api.get(&format!("/jobs/{job}")).await.status, 404);
    let cleaned = api.send(Method::POST, "/jobs/clean", None).await;
    assert_eq!(cleaned.body["deleted"], 0, "{}", cleaned.text);
    assert_eq!(app.send(Method::POST, "/jobs/clean", None).await.status, 403);
}

#[tokio::test]
async fn test_scheduled_triggers_fire_on_time_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", JOBS_SCOPE).await.unwrap();

    // @in: one-shot, gone once it fired.
    let at = trigger(
        &api,
        json!({"type": "@in", "arguments": "1s", "worker": "log", "message": {"n": 1}}),
    )
    .await;
    assert_eq!(at.status, 201, "{}", at.text);
    assert_eq!(at.body["data"]["type"], "io.cozy.triggers");
    let in_id = id(&at);
    let gone = until(&api, &format!("/jobs/triggers/{in_id}"), |r| r.status == 404).await;
    assert_eq!(
        gone.status, 404,
        "the one-shot trigger is deleted after firing: {}",
        gone.text
    );

    // @every 1s and a six-field @cron every second fire again and again, each job once.
    let every = trigger(&api, json!({"type": "@every", "arguments": "1s", "worker": "log"})).await;
    assert_eq!(every.status, 201, "{}", every.text);
    let cron = trigger(
        &api,
        json!({"type": "@cron", "arguments": "* * * * * *", "worker": "log"}),
    )
    .await;
    assert_eq!(cron.status, 201, "{}", cron.text);
    for t in [id(&every), id(&cron)] {
        let jobs = until(&api, &format!("/jobs/triggers/{t}/jobs"), |r| count(r) >= 2).await;
        assert!(count(&jobs) >= 2, "{}", jobs.text);
        let data = jobs.body["data"].as_array().unwrap();
        let times: Vec<&str> = data
            .iter()
            .map(|j| j["attributes"]["queued_at"].as_str().unwrap())
            .collect();
        assert!(times[0] > times[1], "newest first, each time once: {times:?}");
        let state = api.get(&format!("/jobs/triggers/{t}/state")).await;
        assert_eq!(state.status, 200, "{}", state.text);
        assert_eq!(state.body["data"]["attributes"]["trigger_id"], t.as_str());
        assert!(state.body["data"]["attributes"]["last_execution"].is_string());
    }
    // Listing filters by worker and type, with each trigger's state.
    let listed = api.get("/jobs/triggers?Worker=log&Type=@every").await;
    assert_eq!(count(&listed), 1, "{}", listed.text);
    assert!(listed.body["data"][0]["attributes"]["current_state"].is_object());

    // A cron's arguments change; the periodic types draw a slot within their constraints.
    let patched = api
        .send(
            Method::PATCH,
            &format!("/jobs/triggers/{}", id(&cron)),
            Some(br#"{"data":{"attributes":{"arguments":"0 0 5 * * *"}}}"#.to_vec()),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(attr(&patched, "arguments"), "0 0 5 * * *");
    let weekly = trigger(
        &api,
        json!({"type": "@weekly", "arguments": "on monday between 8am and 6pm", "worker": "log"}),
    )
    .await;
    assert_eq!(weekly.status, 201, "{}", weekly.text);
    let descriptor = trigger(&api, json!({"type": "@cron", "arguments": "@monthly", "worker": "log"})).await;
    assert_eq!(descriptor.status, 201, "{}", descriptor.text);
    for (kind, args) in [
        ("@cron", "61 * * * *"),
        ("@every", "soon"),
        ("@at", "tomorrow"),
        ("@weekly", "on blursday"),
        ("@sometimes", ""),
        ("@event", "Not A Doctype"),
    ] {
        let bad = trigger(&api, json!({"type": kind, "arguments": args, "worker": "log"})).await;
        assert_eq!(bad.status, 400, "{kind} {args}: {}", bad.text);
    }
    let unknown_worker = trigger(&api, json!({"type": "@in", "arguments": "1h", "worker": "nope"})).await;
    assert_eq!(unknown_worker.status, 404);

    // Deleted: it stops, and reads 404.
    let deleted = api.delete(&format!("/jobs/triggers/{}", id(&every))).await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(api.get(&format!("/jobs/triggers/{}", id(&every))).await.status, 404);
    // Launched by hand: a manual job now.
    let launched = api
        .send(Method::POST, &format!("/jobs/triggers/{}/launch", id(&weekly)), None)
        .await;
    assert_eq!(launched.status, 201, "{}", launched.text);
    assert_eq!(attr(&launched, "manual_execution"), true);
    let state = until(&api, &format!("/jobs/triggers/{}/state", id(&weekly)), |r| {
        r.body["data"]["attributes"]["last_manual_job_id"].is_string()
            && r.body["data"]["attributes"]["status"] == "done"
    })
    .await;
    assert_eq!(
        state.body["data"]["attributes"]["last_manual_job_id"],
        id(&launched).as_str()
    );

    // The command line lists them too.
    let data_dir = dir.path().to_str().unwrap();
    let out = std::process::Command::new(cocon_bin())
        .args(["triggers", "ls", "--domain", "alice.test", "--url", &cocon.http])
        .args(["--admin", &cocon.admin, "--data-dir", data_dir])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        listing.contains(&id(&weekly)) && listing.contains("@weekly"),
        "{listing}"
    );
    assert!(!listing.contains(&id(&every)), "{listing}");
}

#[tokio::test]
async fn test_event_and_webhook_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_JOBS__WEBHOOK_CALLS_PER_MINUTE", "5")
        .start()
        .await
        .unwrap();
    let api = cocon
        .instance(
            "alice.test",
            "io.cozy.jobs io.cozy.triggers io.cozy.notes io.cozy.files",
        )
        .await
        .unwrap();

    let notes = trigger(
        &api,
        json!({"type": "@event", "arguments": "io.cozy.notes:CREATED,DELETED", "worker": "log"}),
    )
    .await;
    assert_eq!(notes.status, 201, "{}", notes.text);
    let content = trigger(
        &api,
        json!({"type": "@event", "arguments": "io.cozy.files:UPDATED:!=:md5sum", "worker": "log"}),
    )
    .await;
    assert_eq!(content.status, 201, "{}", content.text);
    // A directory named by id: anything created under it, at any depth.
    let photos = cocon_tests::drive::new_dir(&api, cocon_tests::drive::ROOT, "Photos").await;
    let trip = cocon_tests::drive::new_dir(&api, &photos, "Trip").await;
    let subtree = trigger(
        &api,
        json!({"type": "@event", "arguments": format!("io.cozy.files:CREATED:{photos}"), "worker": "log"}),
    )
    .await;
    assert_eq!(subtree.status, 201, "{}", subtree.text);
    // Fires on one file only: once its job is there, every files event before it was seen.
    let sentinel = trigger(
        &api,
        json!({"type": "@event", "arguments": "io.cozy.files:CREATED:sentinel.txt:name", "worker": "log"}),
    )
    .await;
    assert_eq!(sentinel.status, 201, "{}", sentinel.text);

    // A note created fires the first; its update does not; each job holds the event.
    let note = api.post("/data/io.cozy.notes/", &json!({"title": "groceries"})).await;
    assert_eq!(note.status, 201, "{}", note.text);
    let path = format!("/jobs/triggers/{}/jobs", id(&notes));
    let jobs = until(&api, &path, |r| count(r) == 1).await;
    assert_eq!(count(&jobs), 1, "{}", jobs.text);
    let event = &jobs.body["data"][0]["attributes"]["event"];
    assert_eq!(event["verb"], "CREATED");
    assert_eq!(event["domain"], "alice.test");
    assert_eq!(event["doc"]["title"], "groceries");
    let note_id = note.body["id"].as_str().unwrap();
    let note_rev = note.body["rev"].as_str().unwrap();
    let updated = api
        .put(
            &format!("/data/io.cozy.notes/{note_id}"),
            &json!({"_rev": note_rev, "title": "groceries!"}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let rev = updated.body["rev"].as_str().unwrap();
    let deleted = api.delete(&format!("/data/io.cozy.notes/{note_id}?rev={rev}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let jobs = until(&api, &path, |r| count(r) == 2).await;
    assert_eq!(count(&jobs), 2, "the update matched nothing: {}", jobs.text);
    assert_eq!(jobs.body["data"][0]["attributes"]["event"]["verb"], "DELETED");

    // `!=`: a file's new content fires; a change of its tags does not.
    let file = cocon_tests::drive::new_file(&api, cocon_tests::drive::ROOT, "a.txt", b"one").await;
    let tagged = api
        .send(
            Method::PATCH,
            &format!("/files/{file}"),
            Some(br#"{"data":{"attributes":{"tags":["x"]}}}"#.to_vec()),
        )
        .await;
    assert_eq!(tagged.status, 200, "{}", tagged.text);
    let rewritten = api.raw(Method::PUT, &format!("/files/{file}"), b"two").await;
    assert_eq!(rewritten.status, 200, "{}", rewritten.text);
    let deep = cocon_tests::drive::new_file(&api, &trip, "beach.jpg", b"jpeg?").await;
    cocon_tests::drive::new_file(&api, cocon_tests::drive::ROOT, "elsewhere.txt", b"x").await;
    cocon_tests::drive::new_file(&api, cocon_tests::drive::ROOT, "sentinel.txt", b"s").await;
    let seen = until(&api, &format!("/jobs/triggers/{}/jobs", id(&sentinel)), |r| {
        count(r) == 1
    })
    .await;
    assert_eq!(count(&seen), 1, "{}", seen.text);
    let jobs = api.get(&format!("/jobs/triggers/{}/jobs", id(&content))).await;
    assert_eq!(
        count(&jobs),
        1,
        "the new content fired, the tags did not: {}",
        jobs.text
    );
    let under = api.get(&format!("/jobs/triggers/{}/jobs", id(&subtree))).await;
    assert_eq!(count(&under), 1, "only the file under Photos: {}", under.text);
    assert_eq!(
        under.body["data"][0]["attributes"]["event"]["doc"]["_id"],
        deep.as_str()
    );
    let doc = &jobs.body["data"][0]["attributes"]["event"]["doc"];
    assert_eq!(doc["_id"], file.as_str());
    assert!(doc.get("blob").is_none(), "the server's own fields stay in: {doc}");

    // Moved out of Photos: an update under it still, seen by the directory it left.
    let moved_out = trigger(
        &api,
        json!({"type": "@event", "arguments": format!("io.cozy.files:UPDATED:{photos}"), "worker": "log"}),
    )
    .await;
    assert_eq!(moved_out.status, 201, "{}", moved_out.text);
    let to_root = json!({"data": {"attributes": {"dir_id": cocon_tests::drive::ROOT}}});
    let moved = api
        .send(
            Method::PATCH,
            &format!("/files/{deep}"),
            Some(to_root.to_string().into_bytes()),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let fired_for = |r: &cocon_tests::Reply| {
        r.body["data"].as_array().is_some_and(|jobs| {
            jobs.iter()
                .any(|j| j["attributes"]["event"]["doc"]["_id"] == deep.as_str())
        })
    };
    let jobs = until(&api, &format!("/jobs/triggers/{}/jobs", id(&moved_out)), fired_for).await;
    assert!(fired_for(&jobs), "the move out of Photos fired: {}", jobs.text);

    // A webhook: no token; its calls in the debounce window make one job with every payload.
    let hook = trigger(&api, json!({"type": "@webhook", "worker": "log", "debounce": "1s"})).await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    let url = hook.body["data"]["links"]["webhook"].as_str().unwrap().to_string();
    assert!(url.ends_with(&format!("/jobs/webhooks/{}", id(&hook))), "{url}");
    let anonymous = cocon.api("alice.test", None);
    for n in 1..=3 {
        let call = anonymous
            .post(&format!("/jobs/webhooks/{}", id(&hook)), &json!({"n": n}))
            .await;
        assert_eq!(call.status, 204, "{}", call.text);
    }
    let path = format!("/jobs/triggers/{}/jobs", id(&hook));
    let jobs = until(&api, &path, |r| count(r) == 1).await;
    let job = &jobs.body["data"][0]["attributes"];
    assert_eq!(
        job["payload"],
        json!({"payloads": [{"n": 1}, {"n": 2}, {"n": 3}]}),
        "{}",
        jobs.text
    );
    assert_eq!(job["debounced"], true);
    let unknown = anonymous.post("/jobs/webhooks/nope", &json!({})).await;
    assert_eq!(unknown.status, 404);
    // A trigger that is not a webhook is not one.
    let not_hook = anonymous
        .post(&format!("/jobs/webhooks/{}", id(&notes)), &json!({}))
        .await;
    assert_eq!(not_hook.status, 404);
    // Past its calls per minute (5 here, 2 left), a webhook says so.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            anonymous
                .post(&format!("/jobs/webhooks/{}", id(&hook)), &json!({}))
                .await
                .status,
        );
    }
    assert_eq!(statuses, [204, 204, 429]);
}

#[tokio::test]
async fn test_sendmail_reaches_a_real_smtp_server() {
    let smtp = SmtpServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .smtp(smtp.port)
        .env("COCON_JOBS__SMTP__NOREPLY_ADDRESS", "noreply@cocon.test")
        .start()
        .await
        .unwrap();
    let api = cocon.instance("alice.test", JOBS_SCOPE).await.unwrap();
    // Base64 with line breaks, as Ruby's Base64.encode64 writes it.
    let mail = json!({
        "mode": "noreply",
        "to": [{"name": "Bob", "email": "bob@example.org"}],
        "subject": "Your bill",
        "parts": [{"type": "text/plain", "body": "Here it is."}, {"type": "text/html", "body": "<p>Here it is.</p>"}],
        "attachments": [{"filename": "bill.txt", "content": "VGhlIGJpbGwg\naXMgNDIu\n"}],
    });
    let queued = push(&api, "sendmail", json!({"arguments": mail})).await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let done = ended(&api, &id(&queued)).await;
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    let received = smtp.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert!(message.contains("Subject: Your bill"), "{message}");
    assert!(message.contains("To: Bob <bob@example.org>"), "{message}");
    assert!(message.contains("From: Cocon <noreply@cocon.test>"), "{message}");
    assert!(message.contains("filename=\"bill.txt\""), "{message}");
    assert!(message.contains("The bill is 42."), "the attachment decoded: {message}");
    assert!(message.contains("<p>Here it is.</p>"), "{message}");

    // A mail that cannot be right errors at once, with the reason, and is not retried.
    let bad = push(
        &api,
        "sendmail",
        json!({"arguments": {"mode": "noreply", "subject": "x"}}),
    )
    .await;
    let error = error_of(&api, &bad).await;
    assert!(error.contains("recipient"), "{error}");
    assert_eq!(smtp.received().len(), 1);

    // Cocon's own mails: a template, in the recipient's language, as text and HTML.
    let link = "https://alice.test/auth/passphrase_renew?token=t0k3n&x=1";
    let templated = push(
        &api,
        "sendmail",
        json!({"arguments": {"mode": "noreply", "to": [{"email": "alice@example.org"}], "locale": "fr",
            "template_name": "passphrase_reset",
            "template_values": {"domain": "alice.test", "link": link, "hours": 24}}}),
    )
    .await;
    assert_eq!(templated.status, 202, "{}", templated.text);
    let done = ended(&api, &id(&templated)).await;
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    let received = smtp.wait_for(2).await;
    let raw = received
        .iter()
        .find(|m| !m.contains("Subject: Your bill"))
        .unwrap_or_else(|| panic!("the template mail arrived: {received:?}"));
    let mail = mailparse::parse_mail(raw.as_bytes()).unwrap();
    use mailparse::MailHeaderMap;
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("Nouvelle phrase de passe pour alice.test")
    );
    let body = |kind: &str| {
        let part = mail
            .subparts
            .iter()
            .find(|p| p.ctype.mimetype == kind)
            .unwrap_or_else(|| panic!("a {kind} part: {raw}"));
        part.get_body().unwrap()
    };
    let text = body("text/plain");
    assert!(
        text.contains("a demandé à réinitialiser") && text.contains(link),
        "{text}"
    );
    let html = body("text/html");
    assert!(
        html.contains("token=t0k3n&amp;x=1") && html.contains("<html lang=\"fr\">"),
        "{html}"
    );
    // A template that needs a value the mail does not give errors, saying which.
    let incomplete = push(
        &api,
        "sendmail",
        json!({"arguments": {"mode": "noreply", "to": [{"email": "alice@example.org"}],
            "template_name": "onboarding", "template_values": {"domain": "alice.test"}}}),
    )
    .await;
    let error = error_of(&api, &incomplete).await;
    assert!(error.contains("link, days"), "{error}");
}

/// A TCP server that accepts connections and never answers: an SMTP server that hangs.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn test_retries_time_limits_and_a_job_that_survives_kill_9() {
    // A server that refuses connections: each run fails, is retried, then the job errors.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::builder(dir.path()).smtp(closed).start().await.unwrap();
    let api = cocon.instance("alice.test", JOBS_SCOPE).await.unwrap();
    let mail = json!({"mode": "noreply", "to": [{"email": "bob@example.org"}], "subject": "s",
                      "parts": [{"type": "text/plain", "body": "b"}]});
    let queued = push(
        &api,
        "sendmail",
        json!({"arguments": mail, "options": {"max_exec_count": 2}}),
    )
    .await;
    let errored = ended(&api, &id(&queued)).await;
    assert_eq!(attr(&errored, "state"), "errored", "{}", errored.text);
    assert!(
        attr(&errored, "error").as_str().unwrap().contains("cannot send"),
        "{}",
        errored.text
    );
    assert_eq!(attr(&errored, "options")["max_exec_count"], 2);
    cocon.stop().await.unwrap();

    // A server that hangs: the run is stopped at the job's time limit.
    let (silent, _server) = silent_server().await;
    let mut cocon = Cocon::builder(dir.path()).smtp(silent).start().await.unwrap();
    let api = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", JOBS_SCOPE).await.unwrap()),
    );
    let limited = push(
        &api,
        "sendmail",
        json!({"arguments": mail, "options": {"max_exec_count": 1, "timeout": 1}}),
    )
    .await;
    let stopped = ended(&api, &id(&limited)).await;
    assert_eq!(attr(&stopped, "state"), "errored", "{}", stopped.text);
    assert!(
        attr(&stopped, "error").as_str().unwrap().contains("time limit"),
        "{}",
        stopped.text
    );

    // Killed while a job runs: the next start runs it again, to its end.
    let hanging = push(&api, "sendmail", json!({"arguments": mail})).await;
    let running = until(&api, &format!("/jobs/{}", id(&hanging)), |r| {
        attr(r, "state") == "running"
    })
    .await;
    assert_eq!(attr(&running, "state"), "running", "{}", running.text);
    cocon.kill9();
    let smtp = SmtpServer::start().await.unwrap();
    let cocon = Cocon::builder(dir.path()).smtp(smtp.port).start().await.unwrap();
    let api = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", JOBS_SCOPE).await.unwrap()),
    );
    let done = ended(&api, &id(&hanging)).await;
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    assert_eq!(smtp.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn test_jobs_and_triggers_read_the_same_after_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", JOBS_SCOPE).await.unwrap();
    let job = push(&api, "log", json!({"arguments": {"k": "v"}})).await;
    ended(&api, &id(&job)).await;
    let daily = trigger(
        &api,
        json!({"type": "@daily", "arguments": "before 5am", "worker": "log"}),
    )
    .await;
    let hook = trigger(&api, json!({"type": "@webhook", "worker": "log", "debounce": "1h"})).await;
    let call = cocon
        .api("alice.test", None)
        .post(&format!("/jobs/webhooks/{}", id(&hook)), &json!({"held": true}))
        .await;
    assert_eq!(call.status, 204);
    let launched = api
        .send(Method::POST, &format!("/jobs/triggers/{}/launch", id(&daily)), None)
        .await;
    ended(&api, &id(&launched)).await;
    let paths = [
        format!("/jobs/{}", id(&job)),
        format!("/jobs/triggers/{}", id(&daily)),
        format!("/jobs/triggers/{}/jobs", id(&daily)),
        "/jobs/triggers".to_string(),
        "/jobs/queue/log".to_string(),
    ];
    let before = reads(&api, &paths, &cocon.http).await;
    cocon.stop().await.unwrap();
    let out = std::process::Command::new(cocon_bin())
        .args(["rebuild-projections", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", JOBS_SCOPE).await.unwrap()),
    );
    let after = reads(&api, &paths, &cocon.http).await;
    assert_eq!(before, after);
}

/// The answers to GET `paths`, the server's port (it changes at each start) masked.
async fn reads(api: &Api, paths: &[String], http: &str) -> Vec<(String, String)> {
    let port = http.rsplit(':').next().unwrap();
    let mut out = Vec::new();
    for path in paths {
        let r = api.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        out.push((path.clone(), r.text.replace(&format!(":{port}/"), ":PORT/")));
    }
    out
}

/// A konnector written as Cozy's are: stdout JSON lines, the API at COZY_URL with the token in
/// COZY_CREDENTIALS. It reports what it can see of the server's disk in a document.
pub(super) const PROBE_MANIFEST: &str = r#"{"slug": "probe", "name": "Probe", "version": "1.0.0", "type": "konnector",
 "on_delete_account": "delete.js",
 "permissions": {"results": {"type": "io.cozy.konnector.results"}}}"#;
/// Its `on_delete_account` script: it records the account it was asked to clean up after.
const PROBE_DELETE_JS: &str = r#"
const fields = JSON.parse(process.env.COZY_FIELDS)
fetch(process.env.COZY_URL + 'data/io.cozy.konnector.results/', {
  method: 'POST',
  headers: {'Authorization': 'Bearer ' + process.env.COZY_CREDENTIALS, 'Content-Type': 'application/json'},
  body: JSON.stringify({mode: 'deleted', account: fields.account, deleted: fields.account_deleted})
}).then(res => process.exit(res.ok ? 0 : 1))
"#;
const PROBE_JS: &str = r#"
const fs = require('fs')
const fields = JSON.parse(process.env.COZY_FIELDS)
const log = (type, message) => console.log(JSON.stringify({type, message}))
const sees = p => { try { fs.readdirSync(p); return true } catch (e) { return false } }
async function save (doc) {
  const res = await fetch(process.env.COZY_URL + 'data/io.cozy.konnector.results/', {
    method: 'POST',
    headers: {'Authorization': 'Bearer ' + process.env.COZY_CREDENTIALS, 'Content-Type': 'application/json'},
    body: JSON.stringify(doc)
  })
  if (!res.ok) throw new Error('cannot save: ' + res.status)
}
async function main () {
  log('info', 'starting')
  if (fields.mode === 'sleep') { await new Promise(r => setTimeout(r, 600000)) }
  if (fields.mode === 'hold') {
    // Held until the test writes the job's release document: a run killed meanwhile saves nothing.
    const url = process.env.COZY_URL + 'data/io.cozy.konnector.results/release-' + process.env.COZY_JOB_ID
    const headers = {'Authorization': 'Bearer ' + process.env.COZY_CREDENTIALS}
    while (!(await fetch(url, {headers})).ok) await new Promise(r => setTimeout(r, 100))
    await save({mode: 'pause', job: process.env.COZY_JOB_ID})
    return
  }
  if (fields.mode === 'pause') {
    await new Promise(r => setTimeout(r, fields.pause_ms))
    await save({mode: 'pause', job: process.env.COZY_JOB_ID})
    return
  }
  if (fields.mode === 'account') {
    // As cozy-konnector-libs does: read the account, then write it back with a new session.
    const url = process.env.COZY_URL + 'data/io.cozy.accounts/' + fields.account
    const headers = {'Authorization': 'Bearer ' + process.env.COZY_CREDENTIALS, 'Content-Type': 'application/json'}
    const read = await (await fetch(url, {headers})).json()
    read.auth.session = 'session-from-konnector'
    const put = await fetch(url, {method: 'PUT', headers, body: JSON.stringify(read)})
    const written = await put.json()
    // An app's rights, not an operator's: a whole-doctype rule on jobs names no worker.
    const queue = await fetch(process.env.COZY_URL + 'jobs/queue/log', {method: 'POST', headers, body: JSON.stringify({data: {attributes: {arguments: {}}}})})
    await save({mode: 'account', read: read.auth, status: put.status, written: written.data && written.data.auth, queue_status: queue.status})
    return
  }
  if (fields.mode === 'net') {
    let reached = false
    try { reached = (await fetch(fields.vendor_url, {signal: AbortSignal.timeout(5000)})).ok } catch (e) {}
    await save({mode: 'net', job: process.env.COZY_JOB_ID, vendor_reached: reached})
    return
  }
  if (fields.mode === 'login_failed') {
    await save({mode: 'login_failed'})
    log('critical', 'LOGIN_FAILED')
    process.exit(1)
  }
  await save({
    mode: 'probe',
    job: process.env.COZY_JOB_ID,
    sees_data_dir: sees(fields.data_dir),
    sees_blobs: sees(fields.data_dir + '/blobs'),
    cwd: process.cwd(),
    url: process.env.COZY_URL,
  })
  log('info', 'saved')
}
main().catch(e => { log('error', e.message); process.exit(1) })
"#;

/// Writes the probe konnector's code, with `manifest`, into `code`.
pub(super) fn write_probe(code: &std::path::Path, manifest: &str) {
    std::fs::create_dir_all(code).unwrap();
    std::fs::write(code.join("manifest.konnector"), manifest).unwrap();
    std::fs::write(code.join("index.js"), PROBE_JS).unwrap();
    std::fs::write(code.join("delete.js"), PROBE_DELETE_JS).unwrap();
}

/// Writes the probe konnector into `code` and installs it for alice.test with the command line.
fn install_probe(cocon: &Cocon, data: &std::path::Path, code: &std::path::Path, manifest: &str) {
    write_probe(code, manifest);
    let (ok, _, err) = cli(cocon, data, &["konnectors", "install", "probe", code.to_str().unwrap()]);
    assert!(ok, "{err}");
}

pub(super) fn cli(cocon: &Cocon, dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(cocon_bin())
        .args(args)
        .args(["--domain", "alice.test", "--url", &cocon.http, "--admin", &cocon.admin])
        .args(["--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The processes whose environment names `job`.
pub(super) fn processes_of(job: &str) -> usize {
    let needle = format!("COZY_JOB_ID={job}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn test_konnectors_run_sandboxed_with_their_own_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cocon = Cocon::start(&data).await.unwrap();
    let api = cocon
        .instance(
            "alice.test",
            "io.cozy.jobs io.cozy.konnector.results io.cozy.konnectors",
        )
        .await
        .unwrap();
    let code = dir.path().join("probe");
    write_probe(&code, PROBE_MANIFEST);

    // Installed from a directory by the command line; an app may not install from the disk.
    let (ok, out, err) = cli(
        &cocon,
        &data,
        &["konnectors", "install", "probe", code.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"slug\": \"probe\""), "{out}");
    let (ok, out, _) = cli(&cocon, &data, &["konnectors", "ls"]);
    assert!(ok && out.contains("probe\t1.0.0\tProbe"), "{out}");
    let app = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.konnectors:POST:x").await.unwrap()),
    );
    let refused = app
        .send(
            Method::POST,
            &format!("/konnectors/probe?Source=file://{}", code.display()),
            None,
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);

    // A run: its token saves a document; it sees neither the data directory nor the blobs.
    let tokens_before = cocon
        .admin(Method::GET, "/instances/alice.test/tokens", &[])
        .await
        .unwrap()
        .1
        .as_array()
        .map_or(0, Vec::len);
    let data_dir = data.to_str().unwrap();
    // Its log lines come live on the realtime socket, as Harvest reads them.
    let mut socket = cocon_tests::Socket::authed(&cocon.http, "alice.test", api.token().unwrap())
        .await
        .unwrap();
    assert_eq!(socket.subscribe("io.cozy.jobs.events", None).await.unwrap(), None);
    let queued = push(
        &api,
        "konnector",
        json!({"arguments": {"konnector": "probe", "data_dir": data_dir}}),
    )
    .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let done = ended(&api, &id(&queued)).await;
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    let logged = loop {
        let frame = socket.json(Duration::from_secs(10)).await.unwrap();
        assert_eq!(frame["payload"]["type"], "io.cozy.jobs.events", "{frame}");
        if frame["payload"]["doc"]["message"] == "saved" {
            break frame;
        }
    };
    assert_eq!(logged["event"], "CREATED");
    assert_eq!(logged["payload"]["doc"]["job_id"], id(&queued).as_str());
    assert_eq!(logged["payload"]["doc"]["type"], "info");
    let docs = api
        .get("/data/io.cozy.konnector.results/_all_docs?include_docs=true")
        .await;
    let doc = &docs.body["rows"][0]["doc"];
    assert_eq!(doc["job"], id(&queued).as_str(), "{}", docs.text);
    assert!(std::path::Path::new(data_dir).join("blobs").is_dir());
    assert_eq!(
        doc["sees_data_dir"], false,
        "the server's data directory is out of sight: {doc}"
    );
    assert_eq!(doc["sees_blobs"], false, "{doc}");
    assert_eq!(doc["cwd"], "/work");
    assert!(doc["url"].as_str().unwrap().starts_with("http://alice.test:"), "{doc}");
    let tokens_after = cocon
        .admin(Method::GET, "/instances/alice.test/tokens", &[])
        .await
        .unwrap()
        .1
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(tokens_before, tokens_after, "the run's token is revoked when it ends");

    // LOGIN_FAILED: errored at once, never run again (the site would lock the account).
    let failed = push(
        &api,
        "konnector",
        json!({"arguments": {"konnector": "probe", "mode": "login_failed"}}),
    )
    .await;
    let errored = ended(&api, &id(&failed)).await;
    assert_eq!(attr(&errored, "state"), "errored", "{}", errored.text);
    assert_eq!(attr(&errored, "error"), "LOGIN_FAILED");
    let docs = api
        .get("/data/io.cozy.konnector.results/_all_docs?include_docs=true")
        .await;
    let attempts = docs.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["doc"]["mode"] == "login_failed")
        .count();
    assert_eq!(attempts, 1, "{}", docs.text);

    // Past its time limit it is killed, with everything it started.
    let sleeper = push(
        &api,
        "konnector",
        json!({"arguments": {"konnector": "probe", "mode": "sleep"}, "options": {"timeout": 2, "max_exec_count": 1}}),
    )
    .await;
    let running = until(&api, &format!("/jobs/{}", id(&sleeper)), |r| {
        attr(r, "state") == "running"
    })
    .await;
    assert_eq!(attr(&running, "state"), "running");
    let stopped = ended(&api, &id(&sleeper)).await;
    assert_eq!(attr(&stopped, "state"), "errored", "{}", stopped.text);
    assert!(
        attr(&stopped, "error").as_str().unwrap().contains("time limit"),
        "{}",
        stopped.text
    );
    assert_eq!(processes_of(&id(&sleeper)), 0, "no process of the run is left");

    // Installed again from a tarball; uninstalled, it no longer runs.
    let tarball = dir.path().join("probe.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .arg("probe")
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, _, err) = cli(
        &cocon,
        &data,
        &["konnectors", "install", "probe", tarball.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&cocon, &data, &["konnectors", "run", "probe"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"state\": \"done\""), "{out}");
    let (ok, _, err) = cli(&cocon, &data, &["konnectors", "uninstall", "probe"]);
    assert!(ok, "{err}");
    let gone = push(&api, "konnector", json!({"arguments": {"konnector": "probe"}})).await;
    let errored = ended(&api, &id(&gone)).await;
    assert!(
        attr(&errored, "error").as_str().unwrap().contains("not installed"),
        "{}",
        errored.text
    );
    let bad = cli(
        &cocon,
        &data,
        &[
            "konnectors",
            "install",
            "other",
            dir.path().join("nowhere").to_str().unwrap(),
        ],
    );
    assert!(!bad.0 && bad.2.contains("cannot find"), "{}", bad.2);
}

/// A counter of the server's metrics (summed over its labels matching `labels`), 0 if absent.
pub(super) async fn metric(cocon: &Cocon, name: &str, labels: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", cocon.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn test_a_konnector_whose_login_failed_waits_for_its_account() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cocon = Cocon::start(&data).await.unwrap();
    let api = cocon
        .instance(
            "alice.test",
            "io.cozy.jobs io.cozy.triggers io.cozy.accounts io.cozy.konnector.results",
        )
        .await
        .unwrap();
    install_probe(&cocon, &data, &dir.path().join("probe"), PROBE_MANIFEST);
    let account = api
        .put(
            "/data/io.cozy.accounts/acc1",
            &json!({"account_type": "probe", "auth": {"login": "alice"}}),
        )
        .await;
    assert_eq!(account.status, 200, "{}", account.text);

    let t = trigger(
        &api,
        json!({"type": "@every", "arguments": "1s", "worker": "konnector",
               "message": {"konnector": "probe", "account": "acc1", "mode": "login_failed"}}),
    )
    .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let state_path = format!("/jobs/triggers/{}/state", id(&t));
    let held = until(&api, &state_path, |r| {
        r.body["data"]["attributes"]["held"] == "login_failed"
    })
    .await;
    let state = &held.body["data"]["attributes"];
    assert_eq!(state["held"], "login_failed", "{}", held.text);
    assert_eq!(state["last_error_kind"], "login_failed");
    assert_eq!(state["status"], "errored");
    assert!(
        state.get("next_try").is_none(),
        "no next try until the account changes: {state}"
    );

    // The trigger keeps firing and each time is held: no run after the failed one. (On a slow
    // machine the trigger may have queued a second run while the first still ran: it is
    // counted here already, and fails the same way.)
    let jobs_path = format!("/jobs/triggers/{}/jobs", id(&t));
    let before = count(&api.get(&jobs_path).await);
    let held_before = metric(&cocon, "cocon_konnector_runs_held_total", "login_failed").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metric(&cocon, "cocon_konnector_runs_held_total", "login_failed").await < held_before + 2 {
        assert!(tokio::time::Instant::now() < deadline, "the trigger fires and is held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(before >= 1, "the failed run is listed");
    assert_eq!(count(&api.get(&jobs_path).await), before, "no run while held");
    assert!(metric(&cocon, "cocon_konnector_failures_total", "login_failed").await >= 1);

    // The person fixes the password: the next time runs it again.
    let rev = account.body["rev"].as_str().unwrap();
    let fixed = api
        .put(
            "/data/io.cozy.accounts/acc1",
            &json!({"_rev": rev, "account_type": "probe", "auth": {"login": "alice", "password": "new"}}),
        )
        .await;
    assert_eq!(fixed.status, 200, "{}", fixed.text);
    let again = until(&api, &jobs_path, |r| count(r) > before).await;
    assert!(count(&again) > before, "{}", again.text);
    // A manual run is never held.
    let launched = api
        .send(Method::POST, &format!("/jobs/triggers/{}/launch", id(&t)), None)
        .await;
    assert_eq!(launched.status, 201, "{}", launched.text);
    let manual = ended(&api, &id(&launched)).await;
    assert_eq!(attr(&manual, "error"), "LOGIN_FAILED", "{}", manual.text);

    // The account deleted: its trigger goes, and the konnector's on_delete_account runs.
    let rev = fixed.body["rev"].as_str().unwrap();
    let deleted = api.delete(&format!("/data/io.cozy.accounts/acc1?rev={rev}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let gone = until(&api, &format!("/jobs/triggers/{}", id(&t)), |r| r.status == 404).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
    let cleaned = until(
        &api,
        "/data/io.cozy.konnector.results/_all_docs?include_docs=true",
        |r| {
            r.body["rows"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|row| row["doc"]["mode"] == "deleted"))
        },
    )
    .await;
    let row = cleaned.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["doc"]["mode"] == "deleted")
        .unwrap_or_else(|| panic!("the hook ran: {}", cleaned.text));
    assert_eq!(row["doc"]["account"], "acc1");
    assert_eq!(row["doc"]["deleted"], true);
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_account_credentials_are_sealed_at_rest_and_open_for_its_konnector_only() {
    const PASSWORD: &str = "pw-5e4a1c-hunter2";
    const SECRET: &str = "otp-seed-91f3d2";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cocon = Cocon::start(&data).await.unwrap();
    let api = cocon
        .instance("alice.test", "io.cozy.jobs io.cozy.accounts io.cozy.konnector.results")
        .await
        .unwrap();
    let manifest = PROBE_MANIFEST.replace(
        r#""results": {"#,
        r#""accounts": {"type": "io.cozy.accounts", "verbs": ["GET", "PUT"]}, "jobs": {"type": "io.cozy.jobs"}, "results": {"#,
    );
    install_probe(&cocon, &data, &dir.path().join("probe"), &manifest);

    // Written by the person's app: sealed before it is stored, the login left readable.
    let put = api
        .put(
            "/data/io.cozy.accounts/acc1",
            &json!({"account_type": "probe", "auth": {"login": "alice", "password": PASSWORD, "secret": SECRET}}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert!(
        !put.text.contains(PASSWORD) && !put.text.contains(SECRET),
        "{}",
        put.text
    );
    let got = api.get("/data/io.cozy.accounts/acc1").await;
    let auth = &got.body["auth"];
    assert_eq!(auth["login"], "alice", "{}", got.text);
    assert!(
        auth.get("password").is_none() && auth.get("secret").is_none(),
        "{}",
        got.text
    );
    assert!(
        auth["credentials_encrypted"]
            .as_str()
            .is_some_and(|c| c.starts_with("v1:")),
        "{}",
        got.text
    );
    assert!(auth["secret_encrypted"].is_string(), "{}", got.text);
    // Bulk writes and replication seal them too.
    let bulk = api
        .post(
            "/data/io.cozy.accounts/_bulk_docs",
            &json!({"docs": [{"_id": "acc2", "auth": {"login": "bob", "password": PASSWORD}}]}),
        )
        .await;
    assert_eq!(bulk.status, 201, "{}", bulk.text);
    let replicated = api
        .post(
            "/data/io.cozy.accounts/_bulk_docs",
            &json!({"new_edits": false, "docs": [{"_id": "acc3", "_rev": "1-abc", "auth": {"secret": SECRET}}]}),
        )
        .await;
    assert_eq!(replicated.status, 201, "{}", replicated.text);
    let listed = api.get("/data/io.cozy.accounts/_all_docs?include_docs=true").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["rows"].as_array().map_or(0, Vec::len), 3, "{}", listed.text);
    assert!(
        !listed.text.contains(PASSWORD) && !listed.text.contains(SECRET),
        "{}",
        listed.text
    );
    assert!(listed.text.contains("secret_encrypted"), "{}", listed.text);

    // Nowhere on disk in the clear (the log, the tables, the bus), while a document written in
    // the clear is found by the same scan.
    let marker = "clear-marker-7d1e0b";
    let note = api
        .post("/data/io.cozy.konnector.results/", &json!({"note": marker}))
        .await;
    assert_eq!(note.status, 201, "{}", note.text);
    assert!(
        !files_holding(&data, marker.as_bytes()).is_empty(),
        "the scan reads the store"
    );
    assert_eq!(
        files_holding(&data, PASSWORD.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_holding(&data, SECRET.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );

    // The konnector's own token reads them opened, and what it writes back is sealed again.
    let queued = push(
        &api,
        "konnector",
        json!({"arguments": {"konnector": "probe", "account": "acc1", "mode": "account"}}),
    )
    .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let done = ended(&api, &id(&queued)).await;
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    let results = api
        .get("/data/io.cozy.konnector.results/_all_docs?include_docs=true")
        .await;
    let seen = results.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["doc"])
        .find(|d| d["mode"] == "account")
        .unwrap_or_else(|| panic!("the konnector saved what it read: {}", results.text));
    assert_eq!(seen["read"]["login"], "alice", "{seen}");
    assert_eq!(seen["read"]["password"], PASSWORD, "{seen}");
    assert_eq!(seen["read"]["secret"], SECRET, "{seen}");
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["written"]["session"], "session-from-konnector", "{seen}");
    assert_eq!(seen["written"]["password"], PASSWORD, "{seen}");
    assert_eq!(
        seen["queue_status"], 403,
        "a konnector's token is an app's, not a CLI token's: {seen}"
    );
    let after = api.get("/data/io.cozy.accounts/acc1").await;
    let auth = &after.body["auth"];
    assert!(auth["session_encrypted"].is_string(), "{}", after.text);
    assert!(
        auth.get("session").is_none() && auth.get("password").is_none(),
        "{}",
        after.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_konnector_without_network_reaches_the_api_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cocon = Cocon::start(&data).await.unwrap();
    let api = cocon
        .instance("alice.test", "io.cozy.jobs io.cozy.konnector.results")
        .await
        .unwrap();
    let vendor = super::konnector_libs::vendor();
    let code = dir.path().join("probe");
    let run = || async {
        let queued = push(
            &api,
            "konnector",
            json!({"arguments": {"konnector": "probe", "mode": "net", "vendor_url": vendor}}),
        )
        .await;
        assert_eq!(queued.status, 202, "{}", queued.text);
        let done = ended(&api, &id(&queued)).await;
        assert_eq!(attr(&done, "state"), "done", "{}", done.text);
        let saved = api
            .get("/data/io.cozy.konnector.results/_all_docs?include_docs=true")
            .await;
        saved.body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["doc"].clone())
            .find(|d| d["job"] == id(&queued).as_str())
            .unwrap_or_else(|| panic!("the run saved through the API: {}", saved.text))
    };

    // By default a konnector reaches its vendor's site.
    install_probe(&cocon, &data, &code, PROBE_MANIFEST);
    let online = run().await;
    assert_eq!(online["vendor_reached"], true, "{online}");

    // `"network": false`: the API still answers it (it saved), the vendor no longer does.
    let manifest = PROBE_MANIFEST.replace(r#""type": "konnector","#, r#""type": "konnector", "network": false,"#);
    assert_ne!(manifest, PROBE_MANIFEST);
    install_probe(&cocon, &data, &code, &manifest);
    let offline = run().await;
    assert_eq!(offline["vendor_reached"], false, "{offline}");
}

/// A web app's service, in node as Cozy's are: its change of a to-do and what it may read.
const SERVICE_JS: &str = r#"
const base = process.env.COZY_URL
const auth = { Authorization: `Bearer ${process.env.COZY_CREDENTIALS}`, 'Content-Type': 'application/json' }
async function main () {
  const contacts = await fetch(`${base}data/io.cozy.contacts/_all_docs`, { headers: auth })
  const seen = { fields: JSON.parse(process.env.COZY_FIELDS), job: process.env.COZY_JOB_ID, contacts: contacts.status }
  const changed = process.env.COZY_COUCH_DOC ? JSON.parse(process.env.COZY_COUCH_DOC) : null
  const doc = changed ? { ...changed, marked: seen } : { manual: seen }
  const id = changed ? changed._id : 'by-hand'
  const res = await fetch(`${base}data/io.cozy.todos/${id}`, { method: 'PUT', headers: auth, body: JSON.stringify(doc) })
  if (!res.ok) throw new Error(`PUT ${res.status} ${await res.text()}`)
  console.log(JSON.stringify({ type: 'info', message: 'marked' }))
}
main().catch(err => { console.log(JSON.stringify({ type: 'critical', message: String(err) })); process.exit(1) })
"#;

pub(super) fn write_todo_app(dir: &std::path::Path, services: Value) {
    std::fs::create_dir_all(dir.join("services")).unwrap();
    let manifest = json!({
        "name": "To-do", "slug": "todo", "version": "1.0.0",
        "permissions": {"todos": {"type": "io.cozy.todos"}},
        "services": services,
    });
    std::fs::write(dir.join("manifest.webapp"), manifest.to_string()).unwrap();
    std::fs::write(dir.join("index.html"), "<!DOCTYPE html><title>To-do</title>").unwrap();
    std::fs::write(dir.join("services/mark.js"), SERVICE_JS).unwrap();
}

/// A web app's services run as cozy-stack runs them: their triggers made from the manifest at
/// installation and removed with the app, each run sandboxed in node with the app's rights (and
/// no more), the changed document in `COZY_COUCH_DOC`; one without a trigger runs when queued.
#[tokio::test]
async fn test_a_web_apps_services_run_with_the_apps_rights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cocon = Cocon::start(&data).await.unwrap();
    let api = cocon
        .instance("alice.test", "io.cozy.jobs io.cozy.triggers io.cozy.todos")
        .await
        .unwrap();
    let code = dir.path().join("todo");

    // A service whose file is not in the app, or whose trigger does not read: refused.
    write_todo_app(
        &code,
        json!({"mark": {"type": "node", "file": "/services/gone.js", "trigger": "@event io.cozy.todos:CREATED"}}),
    );
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "todo", code.to_str().unwrap()]);
    assert!(!ok && err.contains("services/gone.js"), "{err}");
    write_todo_app(
        &code,
        json!({"mark": {"type": "node", "file": "/services/mark.js", "trigger": "@every nope"}}),
    );
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "todo", code.to_str().unwrap()]);
    assert!(!ok && err.contains("@every nope"), "{err}");

    write_todo_app(
        &code,
        json!({
            "mark": {"type": "node", "file": "/services/mark.js", "trigger": "@event io.cozy.todos:CREATED"},
            "byHand": {"type": "node", "file": "services/mark.js"},
        }),
    );
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "todo", code.to_str().unwrap()]);
    assert!(ok, "{err}");
    let triggers = api.get("/jobs/triggers?Worker=service").await;
    assert_eq!(count(&triggers), 1, "{}", triggers.text);
    let made = &triggers.body["data"][0]["attributes"];
    assert_eq!(made["type"], "@event");
    assert_eq!(made["arguments"], "io.cozy.todos:CREATED");
    assert_eq!(made["message"], json!({"slug": "todo", "name": "mark"}));

    // A new to-do sets the service off; it changes the to-do with the app's token.
    let created = api.post("/data/io.cozy.todos/", &json!({"title": "buy bread"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let todo = created.body["id"].as_str().unwrap().to_string();
    let marked = until(&api, &format!("/data/io.cozy.todos/{todo}"), |r| {
        r.body.get("marked").is_some()
    })
    .await;
    let seen = &marked.body["marked"];
    assert_eq!(
        seen["fields"],
        json!({"slug": "todo", "name": "mark"}),
        "{}",
        marked.text
    );
    assert_eq!(marked.body["title"], "buy bread", "the changed document came whole");
    assert!(!seen["job"].as_str().unwrap_or_default().is_empty(), "{seen}");
    assert_eq!(seen["contacts"], 403, "no more than the app's rights: {seen}");

    // One without a trigger runs when a job names it.
    let queued = push(
        &api,
        "service",
        json!({"arguments": {"slug": "todo", "name": "byHand"}}),
    )
    .await;
    assert_eq!(queued.status, 202, "{}", queued.text);
    let done = ended(&api, &id(&queued)).await;
    assert_eq!(attr(&done, "state"), "done", "{}", done.text);
    let by_hand = api.get("/data/io.cozy.todos/by-hand").await;
    assert_eq!(by_hand.body["manual"]["fields"]["name"], "byHand", "{}", by_hand.text);
    let unknown = push(
        &api,
        "service",
        json!({"arguments": {"slug": "todo", "name": "nothing"}}),
    )
    .await;
    assert!(error_of(&api, &unknown).await.contains("no service nothing"));

    // Removed with the app, its triggers go; a job for it says the app is gone.
    let (ok, _, err) = cli(&cocon, &data, &["apps", "uninstall", "todo"]);
    assert!(ok, "{err}");
    assert_eq!(count(&api.get("/jobs/triggers?Worker=service").await), 0);
    let orphan = push(
        &api,
        "service",
        json!({"arguments": {"slug": "todo", "name": "byHand"}}),
    )
    .await;
    assert!(error_of(&api, &orphan).await.contains("not installed"));
}
