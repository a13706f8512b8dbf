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
    let scope = "io.cozy.notes io.cozy.contacts io.cozy.doctypes";
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
