//! Acknowledged writes survive a crash, and projections rebuilt from the event log answer
//! exactly as before.

use cocon_tests::{Api, Cocon, cocon_bin};
use serde_json::{Value, json};

#[tokio::test]
async fn test_acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    // Concurrent writers: their commits share fsyncs, each is acknowledged only once durable.
    let writes = (0..200).map(|i| {
        let api = api.clone();
        async move { api.put(&format!("/data/io.cozy.notes/n{i:03}"), &json!({"i": i})).await }
    });
    let replies = futures::future::join_all(writes).await;
    let revs: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.get("rev").as_str().unwrap().to_string()
        })
        .collect();
    cocon.kill9();

    let cocon = Cocon::start(dir.path()).await.unwrap();
    let token = cocon.token("alice.test", "io.cozy.notes").await.unwrap();
    let api = cocon.api("alice.test", Some(&token));
    for (i, rev) in revs.iter().enumerate() {
        let doc = api.get(&format!("/data/io.cozy.notes/n{i:03}")).await;
        assert_eq!(doc.status, 200, "n{i:03} lost after kill -9");
        assert_eq!(doc.get("_rev").as_str().unwrap(), rev);
    }
    assert_eq!(api.get("/data/io.cozy.notes/_all_docs").await.get("total_rows"), 200);
    // Sequences continue after the crash: the next write gets the next one.
    let changes = api.get("/data/io.cozy.notes/_changes?descending=true&limit=1").await;
    assert_eq!(changes.get("last_seq"), "200");
    api.put("/data/io.cozy.notes/after", &json!({})).await;
    let changes = api.get("/data/io.cozy.notes/_changes?descending=true&limit=1").await;
    assert_eq!(changes.get("last_seq"), "201");
}

/// Everything a client can read, for comparing before and after a rebuild.
async fn snapshot(api: &Api, wide: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    for doctype in ["io.cozy.notes", "io.cozy.contacts"] {
        for path in [
            format!("/data/{doctype}/_all_docs?include_docs=true"),
            format!("/data/{doctype}/_changes?include_docs=true"),
            format!("/data/{doctype}/_normal_docs?limit=1000"),
            format!("/data/{doctype}/_design_docs"),
            format!("/data/{doctype}/x0"),
            format!("/data/{doctype}/x1"),
        ] {
            let r = api.get(&path).await;
            out.push(json!({"path": path, "status": r.status, "body": r.body}));
        }
        let q = json!({"selector": {"n": {"$gte": 3}}, "sort": ["n"], "use_index": "by-n", "execution_stats": false});
        let r = api.post(&format!("/data/{doctype}/_find"), &q).await;
        out.push(json!({"find": doctype, "status": r.status, "body": r.body}));
    }
    out.push(wide.get("/data/_all_doctypes").await.body);
    out
}

#[tokio::test]
async fn test_rebuilt_projections_answer_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::start(dir.path()).await.unwrap();
    let scope = "io.cozy.notes io.cozy.contacts io.cozy.doctypes io.cozy.settings";
    let api = cocon.instance("alice.test", scope).await.unwrap();
    let bob = cocon.instance("bob.test", scope).await.unwrap();
    for doctype in ["io.cozy.notes", "io.cozy.contacts"] {
        api.post(
            &format!("/data/{doctype}/_index"),
            &json!({"index": {"fields": ["n"]}, "ddoc": "by-n"}),
        )
        .await;
        for i in 0..20 {
            api.put(&format!("/data/{doctype}/x{i}"), &json!({"n": i, "tags": ["t"]}))
                .await;
        }
        // Updates, deletions and a re-creation, so the log holds more than the final state.
        for i in 0..5 {
            let cur = api.get(&format!("/data/{doctype}/x{i}")).await;
            api.put(
                &format!("/data/{doctype}/x{i}"),
                &json!({"_rev": cur.get("_rev"), "n": i * 10}),
            )
            .await;
        }
        let cur = api.get(&format!("/data/{doctype}/x1")).await;
        api.delete(&format!("/data/{doctype}/x1?rev={}", cur.get("_rev").as_str().unwrap()))
            .await;
        api.put(&format!("/data/{doctype}/x1"), &json!({"n": 99})).await;
        let cur = api.get(&format!("/data/{doctype}/x2")).await;
        api.delete(&format!("/data/{doctype}/x2?rev={}", cur.get("_rev").as_str().unwrap()))
            .await;
    }
    bob.put("/data/io.cozy.notes/x0", &json!({"n": 1000})).await;
    // A second index added after the documents: it must be built from them on replay too.
    api.post(
        "/data/io.cozy.notes/_index",
        &json!({"index": {"fields": ["tags"]}, "ddoc": "by-tags"}),
    )
    .await;

    // The settings and the avatar: alice's replaced once, bob's removed.
    let settings = json!({"data": {"attributes": {"public_name": "Alice", "timezone": "Europe/Paris"}}});
    assert_eq!(api.put("/settings/instance", &settings).await.status, 200);
    for (who, image) in [
        (&api, &b"GIF89a first"[..]),
        (&api, b"GIF89a second"),
        (&bob, b"GIF89a bob"),
    ] {
        let set = who
            .request(reqwest::Method::PUT, "/settings/avatar")
            .header("Content-Type", "image/gif")
            .body(image.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(set.status(), 204);
    }
    let removed = bob
        .request(reqwest::Method::DELETE, "/settings/avatar")
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let avatar = |cocon: &Cocon, host: &str| {
        let (url, host) = (format!("{}/public/avatar?fallback=404", cocon.http), host.to_string());
        async move {
            let res = reqwest::Client::new()
                .get(url)
                .header("Host", host)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
        }
    };
    let settings_before = api.get("/settings/instance").await.body["data"].clone();

    let before = snapshot(&api, &api).await;
    let before_bob = snapshot(&bob, &bob).await;
    cocon.stop().await.unwrap();

    let out = std::process::Command::new(cocon_bin())
        .args(["rebuild-projections", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("documents: replayed"), "{report}");

    let cocon = Cocon::start(dir.path()).await.unwrap();
    let token = cocon.token("alice.test", scope).await.unwrap();
    let api = cocon.api("alice.test", Some(&token));
    let bob_token = cocon.token("bob.test", scope).await.unwrap();
    let bob = cocon.api("bob.test", Some(&bob_token));
    assert_eq!(snapshot(&api, &api).await, before);
    assert_eq!(snapshot(&bob, &bob).await, before_bob);
    assert_eq!(api.get("/settings/instance").await.body["data"], settings_before);
    assert_eq!(avatar(&cocon, "alice.test").await, (200, b"GIF89a second".to_vec()));
    assert_eq!(avatar(&cocon, "bob.test").await.0, 404);
    let tagged = api
        .post(
            "/data/io.cozy.notes/_find",
            &json!({"selector": {"tags": ["t"]}, "use_index": "by-tags", "execution_stats": true}),
        )
        .await;
    assert_eq!(tagged.get("docs").as_array().unwrap().len(), 15, "{}", tagged.text);
}

#[tokio::test]
async fn test_rebuild_refuses_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let _cocon = Cocon::start(dir.path()).await.unwrap();
    let out = std::process::Command::new(cocon_bin())
        .args(["rebuild-projections", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop `cocon serve` first"));
}

/// Something else fills the disk to the last byte, faster than the watermark sees (here: no
/// watermark): the store's next checkpoint fails for want of space. Writes are then refused
/// with 507 and a reason that says what to do, never a 500 or a lost write; once space is
/// freed they resume without a restart, and after a crash every acknowledged write is there.
#[tokio::test]
async fn test_a_disk_filled_under_the_store_loses_no_acknowledged_write() {
    let disk = SmallDisk::mount(64);
    let data = disk.path().join("data");
    let cocon = Cocon::builder(&data)
        .env("COCON_STORE__MIN_FREE", "0")
        .start()
        .await
        .unwrap();
    let api = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    let filler = disk.path().join("filler");
    disk.fill(&filler);

    let text = "a".repeat(3000);
    let mut acknowledged = 0;
    let refused = loop {
        let r = api
            .put(
                &format!("/data/io.cozy.notes/n{acknowledged}"),
                &json!({ "text": text }),
            )
            .await;
        if r.status != 200 {
            break r;
        }
        acknowledged += 1;
        assert!(acknowledged < 50_000, "a full disk never refused a write");
    };
    assert_eq!(refused.status, 507, "{}", refused.text);
    assert_eq!(refused.get("error"), "insufficient_storage");
    let reason = refused.get("reason").as_str().unwrap().to_string();
    assert!(
        reason.contains("disk filled up") && reason.contains("once space is freed"),
        "{reason}"
    );
    let again = api.put("/data/io.cozy.notes/later", &json!({"x": 1})).await;
    assert_eq!(again.status, 507, "{}", again.text);

    // Space returns: the store reopens and replays its log by itself (it tries every second).
    // Meanwhile no read answers without an acknowledged write: the last one reads back, or the
    // store says to try again (507 while full, 503 while it reopens), never 404.
    let last_path = format!("/data/io.cozy.notes/n{}", acknowledged - 1);
    let reader = api.clone();
    let resumed_flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = resumed_flag.clone();
    let reads = tokio::spawn(async move {
        let mut statuses = Vec::new();
        loop {
            let finished = done.load(std::sync::atomic::Ordering::Acquire);
            statuses.push(reader.get(&last_path).await.status);
            if finished {
                return statuses;
            }
        }
    });
    std::fs::remove_file(&filler).unwrap();
    let resumed = put_once_space_returns(&api, "/data/io.cozy.notes/later", 10).await;
    resumed_flag.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    let statuses = reads.await.unwrap();
    assert_eq!(
        statuses.last(),
        Some(&200),
        "the last write reads back once writes resume"
    );
    assert!(
        statuses.iter().all(|s| [200, 503, 507].contains(s)),
        "a read answered without an acknowledged write: {statuses:?}"
    );
    let all = api.get("/data/io.cozy.notes/_all_docs?limit=1").await;
    assert_eq!(all.get("total_rows"), acknowledged + 1, "{}", all.text);
    acknowledged += 1;

    let (_cocon, api) = crash_and_restart(cocon, &data, "0").await;
    let all = api.get("/data/io.cozy.notes/_all_docs?limit=1").await;
    assert_eq!(all.get("total_rows"), acknowledged, "{}", all.text);
    let last = api.get(&format!("/data/io.cozy.notes/n{}", acknowledged - 2)).await;
    assert_eq!(last.get("text"), text.as_str(), "{}", last.text);
    assert_eq!(api.get("/data/io.cozy.notes/later").await.get("x"), 1);
}

/// A tmpfs of its own, so a test can fill a disk; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = as_root(
            &["mount", "-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "this test fills a disk of its own: it mounts a tmpfs, as root or with sudo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes `file` until the disk has not one byte left. The server runs meanwhile and may
    /// free blocks of its own (seen once in CI: 40 KiB free just after the filling): what it
    /// frees is filled again, until the disk is full.
    fn fill(&self, file: &std::path::Path) {
        use std::io::Write;
        let mut out = std::fs::File::create(file).unwrap();
        let chunk = vec![0u8; 64 << 10];
        for _ in 0..100 {
            loop {
                match out.write(&chunk) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
            // What a partial block leaves.
            while let Ok(n) = out.write(&[0u8; 512]) {
                if n == 0 {
                    break;
                }
            }
            if self.free() == 0 {
                break;
            }
        }
        assert_eq!(self.free(), 0, "the disk is full");
    }

    fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        as_root(&["umount", "-l"], self.dir.path());
    }
}

/// Runs `args` and `path` as root: directly when the tests run as root, else with `sudo -n`.
fn as_root(args: &[&str], path: &std::path::Path) -> std::process::Output {
    let direct = std::process::Command::new(args[0]).args(&args[1..]).arg(path).output();
    match direct {
        Ok(out) if out.status.success() => out,
        _ => std::process::Command::new("sudo")
            .arg("-n")
            .args(args)
            .arg(path)
            .output()
            .expect("sudo runs"),
    }
}

/// Below the free-space watermark, writes get 507 with a clear reason, reads go on, nothing
/// acknowledged is lost, and once space returns writes resume without a restart. New instances
/// get the operator's default quota.
#[tokio::test]
async fn test_a_full_disk_refuses_writes_until_space_returns() {
    let disk = SmallDisk::mount(96);
    let data = disk.path().join("data");
    let cocon = Cocon::builder(&data)
        .env("COCON_STORE__MIN_FREE", "24MiB")
        .env("COCON_AUTH__DEFAULT_DISK_QUOTA", "1MB")
        .start()
        .await
        .unwrap();
    let api = cocon
        .instance("alice.test", "io.cozy.notes io.cozy.files")
        .await
        .unwrap();
    let (_, shown) = cocon
        .admin(reqwest::Method::GET, "/instances/alice.test", &[])
        .await
        .unwrap();
    assert_eq!(shown["disk_quota"], 1_000_000, "the default quota: {shown}");
    for i in 0..20 {
        assert_eq!(
            api.put(&format!("/data/io.cozy.notes/n{i}"), &json!({"i": i}))
                .await
                .status,
            200
        );
    }

    // Something else fills the disk to just under the watermark. The store reads the free space
    // at most every 100 ms: writes are refused from its next reading on.
    let filler = disk.path().join("filler");
    let room = disk.free().saturating_sub(16 << 20);
    std::fs::write(&filler, vec![0u8; room as usize]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut before_the_reading = 0;
    loop {
        let r = api
            .put(&format!("/data/io.cozy.notes/p{before_the_reading}"), &json!({"x": 1}))
            .await;
        if r.status != 200 || std::time::Instant::now() > deadline {
            assert_eq!(r.status, 507, "{}", r.text);
            break;
        }
        before_the_reading += 1;
    }
    let refused = api.put("/data/io.cozy.notes/full", &json!({"x": 1})).await;
    assert_eq!(refused.status, 507, "{}", refused.text);
    assert_eq!(refused.get("error"), "insufficient_storage");
    assert!(
        refused.get("reason").as_str().unwrap().contains("disk is nearly full"),
        "{}",
        refused.text
    );
    let upload = Api::reply(
        api.request(reqwest::Method::POST, "/files/?Type=file&Name=a.txt")
            .body(b"hello".to_vec()),
    )
    .await;
    assert_eq!(upload.status, 507, "{}", upload.text);
    // Reads go on.
    assert_eq!(api.get("/data/io.cozy.notes/n3").await.get("i"), 3);
    assert_eq!(
        api.get("/data/io.cozy.notes/full").await.status,
        404,
        "nothing half-written"
    );

    // Space returns: writes resume, no restart.
    std::fs::remove_file(&filler).unwrap();
    let resumed = put_once_space_returns(&api, "/data/io.cozy.notes/full", 5).await;
    assert_eq!(resumed.status, 200, "{}", resumed.text);
    let upload = Api::reply(
        api.request(reqwest::Method::POST, "/files/?Type=file&Name=a.txt")
            .body(b"hello".to_vec()),
    )
    .await;
    assert_eq!(upload.status, 201, "{}", upload.text);

    // Every acknowledged write survives a crash.
    let (_cocon, api) = crash_and_restart(cocon, &data, "24MiB").await;
    let all = api.get("/data/io.cozy.notes/_all_docs").await;
    assert_eq!(all.get("total_rows"), 21 + before_the_reading, "{}", all.text);
}

/// PUTs `{"x": 1}` at `path` until it is no longer refused for want of space (the store sees
/// freed space within its next reading), for at most `secs`: the last answer.
async fn put_once_space_returns(api: &Api, path: &str, secs: u64) -> cocon_tests::Reply {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let r = api.put(path, &json!({"x": 1})).await;
        // 507 while the disk is full, 503 for the moment the store reopens: both say again.
        if ![503, 507].contains(&r.status) || std::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Kills `cocon` with SIGKILL and starts it again on `data`: alice's notes through a new token.
async fn crash_and_restart(mut cocon: Cocon, data: &std::path::Path, min_free: &str) -> (Cocon, Api) {
    cocon.kill9();
    let cocon = Cocon::builder(data)
        .env("COCON_STORE__MIN_FREE", min_free)
        .start()
        .await
        .unwrap();
    let token = cocon.token("alice.test", "io.cozy.notes").await.unwrap();
    let api = cocon.api("alice.test", Some(&token));
    (cocon, api)
}

/// What a person sees of the fixture's instance: documents, an index query, the feeds, files
/// with their old version and references, a sharing code, and the quota.
async fn fixture_view(cocon: &Cocon, fixture: &Value) -> Value {
    let domain = fixture["domain"].as_str().unwrap();
    let token = cocon
        .token(domain, "io.cozy.notes io.cozy.files io.cozy.settings")
        .await
        .unwrap();
    let api = cocon.api(domain, Some(&token));
    let note = |name: &str| fixture["notes"][name].as_str().unwrap().to_string();
    let file = fixture["file"].as_str().unwrap();
    let taxes = api.get(&format!("/data/io.cozy.notes/{}", note("taxes"))).await;
    let holidays = api.get(&format!("/data/io.cozy.notes/{}", note("holidays"))).await;
    let found = api
        .post(
            "/data/io.cozy.notes/_find",
            &json!({"selector": {"title": {"$gt": ""}}, "sort": [{"title": "asc"}]}),
        )
        .await;
    let changes = api.get("/data/io.cozy.notes/_changes").await;
    let node = api.get(&format!("/files/{file}")).await;
    let content = Api::reply(api.request(reqwest::Method::GET, &format!("/files/download/{file}"))).await;
    let listing = api.get(&format!("/files/{}", fixture["dir"].as_str().unwrap())).await;
    let references = api
        .get(&format!(
            "/data/io.cozy.notes/{}/relationships/references",
            note("groceries")
        ))
        .await;
    let file_changes = api.get("/files/_changes").await;
    let usage = api.get("/settings/disk-usage").await;
    let shared = api
        .with_token(fixture["code"].as_str())
        .get(&format!("/data/io.cozy.notes/{}", note("groceries")))
        .await;
    json!({
        "taxes": [taxes.status, taxes.body["title"], taxes.body["_rev"]],
        "holidays": holidays.status,
        "found": found.body["docs"].as_array().unwrap().iter().map(|d| d["title"].clone()).collect::<Vec<_>>(),
        "changes": [changes.body["results"].as_array().unwrap().len(), changes.body["last_seq"]],
        "node": [node.status, node.body["data"]["attributes"]["name"], node.body["data"]["attributes"]["dir_id"],
                 node.body["data"]["relationships"]["old_versions"]["data"].as_array().map(Vec::len)],
        "content": content.text,
        "listing": listing.body["included"].as_array().map(|a| a.iter().map(|i| i["id"].clone()).collect::<Vec<_>>()),
        "references": references.body["data"].as_array().map(|a| a.iter().map(|r| r["id"].clone()).collect::<Vec<_>>()),
        "file_changes": file_changes.body["results"].as_array().map(Vec::len),
        "usage": [usage.body["data"]["attributes"]["used"].clone(), usage.body["data"]["attributes"]["quota"].clone()],
        "shared": [shared.status, shared.body["title"]],
    })
}

/// A data directory written before rows carried a schema version (by the `cocon` of
/// 7fd5a69, with `tests/src/bin/make_fixture.rs`) opens with today's binary: the person signs
/// in with the passphrase of then, and every document, index, feed, file, old version,
/// reference, sharing code and quota reads back; new writes mix with the old rows, and a
/// rebuild of the projections from the old events gives the same answers.
#[tokio::test]
async fn test_a_data_directory_of_the_unversioned_format_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/data-v0.tar.gz");
    let untar = std::process::Command::new("tar")
        .args(["xzf", fixture, "-C"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(untar.status.success(), "{}", String::from_utf8_lossy(&untar.stderr));
    let manifest: Value = serde_json::from_slice(&std::fs::read(data.join("fixture.json")).unwrap()).unwrap();
    let domain = manifest["domain"].as_str().unwrap();

    let mut cocon = Cocon::start(&data).await.unwrap();
    let mut browser = cocon_tests::Browser::new(&cocon.http, domain);
    let signed_in = browser.login(manifest["passphrase"].as_str().unwrap()).await;
    assert_eq!(signed_in.status, 303, "the passphrase of then still opens the instance");
    let view = fixture_view(&cocon, &manifest).await;
    assert_eq!(view["taxes"][0], 200);
    assert_eq!(view["taxes"][1], "taxes 2026");
    assert!(view["taxes"][2].as_str().unwrap().starts_with("2-"), "{view}");
    assert_eq!(view["holidays"], 404);
    assert_eq!(view["found"], json!(["groceries", "taxes 2026"]));
    assert_eq!(view["changes"][0], 4, "three notes and the design document: {view}");
    assert_eq!(view["node"][0], 200);
    assert_eq!(view["node"][1], "letter.txt");
    assert_eq!(view["node"][2], manifest["dir"]);
    assert_eq!(view["node"][3], 1, "the first draft is kept as a version");
    assert_eq!(view["content"], "final letter");
    assert_eq!(view["listing"], json!([manifest["file"]]));
    assert_eq!(view["references"], json!([manifest["file"]]));
    assert_eq!(view["usage"][0], "23", "the letter and its first draft: {view}");
    assert_eq!(view["usage"][1], "1000000");
    assert_eq!(view["shared"], json!([200, "groceries"]));

    // New rows beside the old ones.
    let token = cocon.token(domain, "io.cozy.notes").await.unwrap();
    let api = cocon.api(domain, Some(&token));
    let groceries = manifest["notes"]["groceries"].as_str().unwrap();
    let current = api.get(&format!("/data/io.cozy.notes/{groceries}")).await;
    let updated = api
        .put(
            &format!("/data/io.cozy.notes/{groceries}"),
            &json!({"_rev": current.body["_rev"], "title": "groceries"}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let after = fixture_view(&cocon, &manifest).await;
    cocon.stop().await.unwrap();

    let out = std::process::Command::new(cocon_bin())
        .args(["rebuild-projections", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cocon = Cocon::start(&data).await.unwrap();
    assert_eq!(fixture_view(&cocon, &manifest).await, after);
}
