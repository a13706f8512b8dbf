//! CouchDB's replication protocol on `/data`: revision trees with their history, conflicts
//! replicated in and resolved, `_revs_diff`, `_bulk_get`, `open_revs`, `_changes` with
//! `style=all_docs`, `_local/` checkpoints, and all of it kept by a rebuild of the projections.

use cocon_tests::drive::setup;
use cocon_tests::{Api, Cocon, cocon_bin};
use serde_json::{Value, json};

const NOTES: &str = "/data/io.cozy.notes";

fn hash(rev: &str) -> &str {
    rev.split_once('-').unwrap().1
}

/// A document on two branches: ours (2-…, written here) and theirs (2-fff…, replicated in from a
/// peer that edited the same 1-… revision), theirs winning by its greater hash.
async fn conflicted(api: &Api, id: &str) -> (String, String, String) {
    let created = api.put(&format!("{NOTES}/{id}"), &json!({"v": "one"})).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let rev1 = created.get("rev").as_str().unwrap().to_string();
    let ours = api
        .put(&format!("{NOTES}/{id}"), &json!({"_rev": rev1, "v": "ours"}))
        .await;
    let ours = ours.get("rev").as_str().unwrap().to_string();
    let theirs = format!("2-{}", "f".repeat(32));
    let replicated = api
        .post(
            &format!("{NOTES}/_bulk_docs"),
            &json!({"new_edits": false, "docs": [{
                "_id": id, "_rev": theirs, "v": "theirs",
                "_revisions": {"start": 2, "ids": ["f".repeat(32), hash(&rev1)]},
            }]}),
        )
        .await;
    assert_eq!(replicated.status, 201, "{}", replicated.text);
    assert_eq!(replicated.body, json!([]), "new_edits=false answers only errors");
    (rev1, ours, theirs)
}

#[tokio::test]
async fn test_revision_trees_conflicts_and_their_resolution() {
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let (rev1, ours, theirs) = conflicted(&api, "a").await;

    // The winner is the same on every host: the greater hash of the longest branch.
    let doc = api.get(&format!("{NOTES}/a?conflicts=true&revs=true")).await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    assert_eq!(doc.get("v"), "theirs");
    assert_eq!(doc.get("_rev"), theirs.as_str());
    assert_eq!(doc.get("_conflicts"), &json!([ours]));
    assert_eq!(
        doc.get("_revisions"),
        &json!({"start": 2, "ids": ["f".repeat(32), hash(&rev1)]})
    );
    let plain = api.get(&format!("{NOTES}/a")).await;
    assert!(plain.body.get("_conflicts").is_none() && plain.body.get("_revisions").is_none());
    // The losing leaf is still readable by its revision; an inner revision is not kept.
    assert_eq!(api.get(&format!("{NOTES}/a?rev={ours}")).await.get("v"), "ours");
    assert_eq!(api.get(&format!("{NOTES}/a?rev={rev1}")).await.status, 404);

    // open_revs: every leaf, or those asked (an inner revision with latest: its leaves).
    let all = api.get(&format!("{NOTES}/a?open_revs=all&revs=true")).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let values: Vec<&Value> = all.body.as_array().unwrap().iter().map(|r| &r["ok"]["v"]).collect();
    assert_eq!(values, [&json!("theirs"), &json!("ours")]);
    let asked = api.get(&format!("{NOTES}/a?open_revs=[\"{ours}\",\"9-nope\"]")).await;
    assert_eq!(
        asked.body,
        json!([{"ok": {"_id": "a", "_rev": ours, "v": "ours"}}, {"missing": "9-nope"}])
    );
    let latest = api.get(&format!("{NOTES}/a?open_revs=[\"{rev1}\"]&latest=true")).await;
    assert_eq!(latest.body.as_array().unwrap().len(), 2, "{}", latest.text);

    // _changes lists every leaf with style=all_docs, the winner first; the winner alone without.
    let changes = api.get(&format!("{NOTES}/_changes?style=all_docs")).await;
    assert_eq!(changes.status, 200, "{}", changes.text);
    assert_eq!(
        changes.get("results")[0]["changes"],
        json!([{"rev": theirs}, {"rev": ours}])
    );
    let changes = api.get(&format!("{NOTES}/_changes")).await;
    assert_eq!(changes.get("results")[0]["changes"], json!([{"rev": theirs}]));

    // _revs_diff: what this host lacks.
    let diff = api
        .post(
            &format!("{NOTES}/_revs_diff"),
            &json!({"a": [ours, theirs, rev1, "3-abc"], "b": ["1-x"]}),
        )
        .await;
    assert_eq!(diff.status, 200, "{}", diff.text);
    assert_eq!(
        diff.body,
        json!({"a": {"missing": ["3-abc"]}, "b": {"missing": ["1-x"]}})
    );

    // _bulk_get with latest leaves and their history; an unknown document is an error row.
    let got = api
        .post(
            &format!("{NOTES}/_bulk_get?revs=true"),
            &json!({"docs": [{"id": "a", "rev": rev1}, {"id": "a", "rev": ours}, {"id": "nope", "rev": "1-x"}]}),
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    let results = got.get("results").as_array().unwrap();
    assert_eq!(results[0]["docs"].as_array().unwrap().len(), 2);
    assert_eq!(results[1]["docs"][0]["ok"]["v"], "ours");
    assert_eq!(results[1]["docs"][0]["ok"]["_revisions"]["start"], 2);
    assert_eq!(results[2]["docs"][0]["error"]["error"], "not_found");

    // Replaying a known revision changes nothing.
    let again = api
        .post(
            &format!("{NOTES}/_bulk_docs"),
            &json!({"new_edits": false, "docs": [{"_id": "a", "_rev": theirs, "v": "other"}]}),
        )
        .await;
    assert_eq!(again.body, json!([]));
    assert_eq!(api.get(&format!("{NOTES}/a")).await.get("v"), "theirs");

    // An edit of the losing branch extends it; an edit of an inner revision is a conflict.
    let stale = api.put(&format!("{NOTES}/a"), &json!({"_rev": rev1, "v": "x"})).await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    let extended = api
        .put(&format!("{NOTES}/a"), &json!({"_rev": ours, "v": "ours again"}))
        .await;
    assert_eq!(extended.status, 200, "{}", extended.text);
    let ours3 = extended.get("rev").as_str().unwrap().to_string();
    assert!(ours3.starts_with("3-"));
    let doc = api.get(&format!("{NOTES}/a?conflicts=true")).await;
    assert_eq!(doc.get("v"), "ours again", "the longer branch wins now");
    assert_eq!(doc.get("_conflicts"), &json!([theirs]));

    // Resolving: deleting the losing leaf leaves one live branch.
    let resolved = api.delete(&format!("{NOTES}/a?rev={theirs}")).await;
    assert_eq!(resolved.status, 200, "{}", resolved.text);
    let doc = api.get(&format!("{NOTES}/a?conflicts=true")).await;
    assert_eq!(doc.get("v"), "ours again");
    assert!(doc.body.get("_conflicts").is_none(), "{}", doc.text);

    // Deleting the winner of a conflicted document uncovers the other branch, as CouchDB does.
    conflicted(&api, "b").await;
    let winner = api.get(&format!("{NOTES}/b")).await;
    let gone = api
        .delete(&format!("{NOTES}/b?rev={}", winner.get("_rev").as_str().unwrap()))
        .await;
    assert_eq!(gone.status, 200, "{}", gone.text);
    let doc = api.get(&format!("{NOTES}/b")).await;
    assert_eq!(doc.status, 200, "{}", doc.text);
    assert_eq!(doc.get("v"), "ours");
    let all = api.get(&format!("{NOTES}/_all_docs")).await;
    assert_eq!(all.get("total_rows"), 2, "both documents are alive: {}", all.text);
}

#[tokio::test]
async fn test_replicated_revisions_are_checked() {
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let bulk = |docs: Value| {
        let api = api.clone();
        async move {
            api.post(
                &format!("{NOTES}/_bulk_docs"),
                &json!({"new_edits": false, "docs": docs}),
            )
            .await
        }
    };
    let wrong = [
        json!({"_id": "x", "_rev": "2-b", "_revisions": {"start": 3, "ids": ["b", "a"]}}),
        json!({"_id": "x", "_rev": "2-b", "_revisions": {"start": 2, "ids": ["c", "a"]}}),
        json!({"_id": "x", "_rev": "2-b", "_revisions": {"start": 2, "ids": ["b", "a", "z"]}}),
        json!({"_id": "x", "_rev": "nope"}),
        json!({"_id": "x", "_rev": "1-a", "_secret": 1}),
        json!({"_id": "_local/x", "_rev": "1-a"}),
    ];
    for doc in wrong {
        let res = bulk(json!([doc.clone()])).await;
        assert_eq!(res.status, 201, "{}", res.text);
        assert_eq!(res.body[0]["error"], "bad_request", "{doc}: {}", res.text);
    }
    assert_eq!(api.get(&format!("{NOTES}/x")).await.status, 404, "nothing was stored");

    for (path, body) in [
        ("_revs_diff", json!(["not", "an", "object"])),
        ("_revs_diff", json!({"a": "1-x"})),
        ("_bulk_get", json!({"docs": "a"})),
    ] {
        let res = api.post(&format!("{NOTES}/{path}"), &body).await;
        assert_eq!(res.status, 400, "{path} {body}: {}", res.text);
    }
    api.put(&format!("{NOTES}/y"), &json!({})).await;
    let res = api.get(&format!("{NOTES}/y?open_revs=[1")).await;
    assert_eq!(res.status, 400, "{}", res.text);
    let res = api.get(&format!("{NOTES}/_changes?style=weird")).await;
    assert_eq!(res.status, 400, "{}", res.text);

    // A doctype other services own is not written through replication either.
    let res = api
        .post(
            "/data/io.cozy.files/_bulk_docs",
            &json!({"new_edits": false, "docs": [{"_id": "f", "_rev": "1-a"}]}),
        )
        .await;
    assert!(matches!(res.status, 403 | 400), "{}", res.text);
}

#[tokio::test]
async fn test_local_documents_are_checkpoints_outside_the_feed() {
    let (_dir, cocon, api) = setup("io.cozy.notes").await;
    let path = format!("{NOTES}/_local/repl%2Fone");
    let put = api.put(&path, &json!({"last_seq": "3"})).await;
    assert_eq!(put.status, 201, "{}", put.text);
    assert_eq!(put.body, json!({"ok": true, "id": "_local/repl/one", "rev": "0-1"}));
    let got = api.get(&path).await;
    assert_eq!(
        got.body,
        json!({"_id": "_local/repl/one", "_rev": "0-1", "last_seq": "3"})
    );
    // CouchDB's revision check.
    assert_eq!(api.put(&path, &json!({"last_seq": "4"})).await.status, 409);
    let put = api.put(&path, &json!({"_rev": "0-1", "last_seq": "4"})).await;
    assert_eq!(put.get("rev"), "0-2", "{}", put.text);

    // Not a document of the doctype: not in the feed, the listing or the count.
    let changes = api.get(&format!("{NOTES}/_changes")).await;
    assert_eq!(changes.get("results"), &json!([]));
    let all = api.get(&format!("{NOTES}/_all_docs")).await;
    assert_eq!(all.get("total_rows"), 0);
    assert_eq!(api.get(&format!("{NOTES}/")).await.get("doc_count"), 0);

    // A token for another doctype cannot read or write it.
    let token = cocon.token("alice.test", "io.cozy.contacts").await.unwrap();
    let other = cocon.api("alice.test", Some(&token));
    assert_eq!(other.get(&path).await.status, 403);
    assert_eq!(other.put(&path, &json!({"last_seq": "9"})).await.status, 403);

    assert_eq!(api.delete(&format!("{path}?rev=0-1")).await.status, 409);
    let gone = api.delete(&format!("{path}?rev=0-2")).await;
    assert_eq!(gone.status, 200, "{}", gone.text);
    assert_eq!(api.get(&path).await.status, 404);

    // The doctype's summary and the commit PouchDB asks for.
    api.put(&format!("{NOTES}/n"), &json!({})).await;
    let info = api.get(&format!("{NOTES}/")).await;
    assert_eq!(info.status, 200, "{}", info.text);
    assert_eq!(info.get("db_name"), "io.cozy.notes");
    assert_eq!(info.get("doc_count"), 1);
    let commit = api.post(&format!("{NOTES}/_ensure_full_commit"), &json!({})).await;
    assert_eq!(commit.get("ok"), true);
}

/// What a replicating client reads of a document, for comparing before and after a rebuild.
async fn replication_view(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        format!("{NOTES}/a?conflicts=true&revs=true"),
        format!("{NOTES}/a?open_revs=all&revs=true"),
        format!("{NOTES}/b?open_revs=all&revs=true"),
        format!("{NOTES}/_changes?style=all_docs"),
        format!("{NOTES}/_local/cp"),
    ] {
        let r = api.get(&path).await;
        out.push(json!({"path": path, "status": r.status, "body": r.body}));
    }
    out
}

#[tokio::test]
async fn test_rebuilt_projections_keep_the_trees() {
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    let (_, ours, _) = conflicted(&api, "a").await;
    api.put(&format!("{NOTES}/a"), &json!({"_rev": ours, "v": "3"})).await;
    conflicted(&api, "b").await;
    let winner = api.get(&format!("{NOTES}/b")).await;
    api.delete(&format!("{NOTES}/b?rev={}", winner.get("_rev").as_str().unwrap()))
        .await;
    api.put(&format!("{NOTES}/_local/cp"), &json!({"last_seq": "7"})).await;
    let before = replication_view(&api).await;
    cocon.stop().await.unwrap();

    let out = std::process::Command::new(cocon_bin())
        .args(["rebuild-projections", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let token = cocon.token("alice.test", "io.cozy.notes").await.unwrap();
    let api = cocon.api("alice.test", Some(&token));
    assert_eq!(replication_view(&api).await, before);
}
