//! Real PouchDB (npm `pouchdb-core` with its HTTP adapter and replication, run with Node.js)
//! replicates a doctype with Cocon both ways: it pulls what Cocon holds, pushes its own
//! documents, and after a conflict made on each side both end identical, winners and conflicts
//! included (`tests/pouchdb/replicate.js` checks every document of both sides).

use cocon_tests::drive::setup;
use serde_json::{Value, json};

/// `tests/pouchdb` with its dependencies (`npm ci`, from the npm registry), in `into`.
fn install(into: &std::path::Path) {
    let files = ["package.json", "package-lock.json", ".npmrc", "replicate.js"];
    cocon_tests::npm_ci("pouchdb", &files, into, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pouchdb_replicates_both_ways_and_converges_after_conflicts() {
    let code = tempfile::tempdir().unwrap();
    let npm = std::thread::spawn({
        let into = code.path().to_path_buf();
        move || install(&into)
    });
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let mut docs: Vec<Value> = (0..50).map(|i| json!({"_id": format!("n{i:02}"), "i": i})).collect();
    docs.push(json!({"_id": "c1", "side": "none"}));
    docs.push(json!({"_id": "c2", "side": "none"}));
    let bulk = api.post("/data/io.cozy.notes/_bulk_docs", &json!({"docs": docs})).await;
    assert_eq!(bulk.status, 201, "{}", bulk.text);
    let n49 = api.get("/data/io.cozy.notes/n49").await;
    let gone = api
        .delete(&format!(
            "/data/io.cozy.notes/n49?rev={}",
            n49.get("_rev").as_str().unwrap()
        ))
        .await;
    assert_eq!(gone.status, 200);
    npm.join().expect("PouchDB is installed");

    let mut node = std::process::Command::new("node");
    node.arg("replicate.js")
        .args([api.base(), api.domain(), api.token().unwrap(), "io.cozy.notes"])
        .current_dir(code.path());
    let out = tokio::task::spawn_blocking(move || node.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim()).expect("the script prints its summary");
    assert_eq!(summary["pulled"], 52, "51 live documents and a deletion: {summary}");
    assert_eq!(summary["pushed"], 10);
    assert_eq!(summary["documents"], 61, "{summary}");

    // Seen from Cocon's own API: PouchDB's documents, c1 resolved, c2 on two leaves.
    assert_eq!(api.get("/data/io.cozy.notes/pouch-3").await.get("from"), "pouchdb");
    let c1 = api.get("/data/io.cozy.notes/c1?conflicts=true").await;
    assert!(c1.body.get("_conflicts").is_none(), "{}", c1.text);
    assert_eq!(c1.get("_rev"), &summary["c1"]["winner"]);
    let c2 = api.get("/data/io.cozy.notes/c2?open_revs=all").await;
    assert_eq!(c2.body.as_array().unwrap().len(), 2, "{}", c2.text);
    assert_eq!(c2.get("_rev"), &Value::Null);
    let c2 = api.get("/data/io.cozy.notes/c2").await;
    assert_eq!(c2.get("side"), "cocon", "a live leaf wins over a deletion");
}
