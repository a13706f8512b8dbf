//! The `/data` API end to end, against the real binary on its embedded default.

use cocon_tests::Cocon;
use cocon_tests::drive::setup;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn test_create_read_update_delete() {
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let created = api
        .post("/data/io.cozy.notes/", &json!({"title": "first", "n": 1}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.get("ok"), true);
    assert_eq!(created.get("type"), "io.cozy.notes");
    let id = created.get("id").as_str().unwrap().to_string();
    let rev1 = created.get("rev").as_str().unwrap().to_string();
    assert!(
        rev1.starts_with("1-") && rev1.len() == 34,
        "revision format N-hash: {rev1}"
    );
    assert_eq!(id.len(), 32);

    let got = api.get(&format!("/data/io.cozy.notes/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, json!({"_id": id, "_rev": rev1, "title": "first", "n": 1}));

    // Update with the current revision.
    let updated = api
        .put(
            &format!("/data/io.cozy.notes/{id}"),
            &json!({"_rev": rev1, "title": "second", "n": 2}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let rev2 = updated.get("rev").as_str().unwrap().to_string();
    assert!(rev2.starts_with("2-"));
    assert_eq!(updated.body["data"]["title"], "second");
    let stored = api.get(&format!("/data/io.cozy.notes/{id}")).await;
    assert!(
        stored.text.ends_with(r#""title":"second","n":2}"#) && stored.text.starts_with(r#"{"_id":"#),
        "fields keep their order, _id and _rev first: {}",
        stored.text
    );

    // A stale revision is a conflict and changes nothing.
    let stale = api
        .put(
            &format!("/data/io.cozy.notes/{id}"),
            &json!({"_rev": rev1, "title": "lost"}),
        )
        .await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.get("error"), "conflict");
    let no_rev = api
        .put(&format!("/data/io.cozy.notes/{id}"), &json!({"title": "lost"}))
        .await;
    assert_eq!(no_rev.status, 409, "updating without _rev is a conflict");
    assert_eq!(
        api.get(&format!("/data/io.cozy.notes/{id}")).await.body["title"],
        "second"
    );

    // Create with a chosen id.
    let put_new = api.put("/data/io.cozy.notes/chosen-id", &json!({"x": 1})).await;
    assert_eq!(put_new.status, 200);
    assert_eq!(put_new.get("id"), "chosen-id");

    // Delete needs the current revision.
    let wrong = api.delete(&format!("/data/io.cozy.notes/{id}?rev={rev1}")).await;
    assert_eq!(wrong.status, 409);
    let missing_rev = api.delete(&format!("/data/io.cozy.notes/{id}")).await;
    assert_eq!(missing_rev.status, 400);
    let deleted = api.delete(&format!("/data/io.cozy.notes/{id}?rev={rev2}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.get("deleted"), true);
    assert!(deleted.get("rev").as_str().unwrap().starts_with("3-"));
    let gone = api.get(&format!("/data/io.cozy.notes/{id}")).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.get("reason"), "deleted");
    let never = api.get("/data/io.cozy.notes/never-was").await;
    assert_eq!(never.status, 404);
    assert_eq!(never.get("reason"), "missing");
}

#[tokio::test]
async fn test_bad_input_gets_clear_errors_and_changes_nothing() {
    let (_dir, _cocon, api) = setup("io.cozy.notes io.cozy.files").await;
    let kept = api.put("/data/io.cozy.notes/kept", &json!({"v": 1})).await;
    assert_eq!(kept.status, 200);

    let cases: Vec<(Method, &str, Vec<u8>, u16)> = vec![
        (Method::PUT, "/data/io.cozy.notes/kept", b"{not json".to_vec(), 400),
        (Method::PUT, "/data/io.cozy.notes/kept", b"[1,2]".to_vec(), 400),
        (Method::PUT, "/data/io.cozy.notes/kept", b"\"text\"".to_vec(), 400),
        (
            Method::PUT,
            "/data/io.cozy.notes/kept",
            br#"{"_attachments":{}}"#.to_vec(),
            400,
        ),
        (Method::POST, "/data/io.cozy.notes/", br#"{"_secret":1}"#.to_vec(), 400),
        (
            Method::PUT,
            "/data/io.cozy.notes/other",
            br#"{"_id":"kept"}"#.to_vec(),
            400,
        ),
        (
            Method::POST,
            "/data/io.cozy.notes/_find",
            br#"{"selector":{"a":{"$near":[1,2]}}}"#.to_vec(),
            400,
        ),
        (Method::POST, "/data/io.cozy.notes/_find", b"{}".to_vec(), 400),
        (
            Method::POST,
            "/data/io.cozy.notes/_index",
            br#"{"index":{}}"#.to_vec(),
            400,
        ),
        (
            Method::POST,
            "/data/io.cozy.notes/_bulk_docs",
            br#"{"docs":5}"#.to_vec(),
            400,
        ),
    ];
    for (method, path, body, status) in cases {
        let reply = api.raw(method.clone(), path, &body).await;
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {}: {}",
            String::from_utf8_lossy(&body),
            reply.text
        );
        assert!(
            reply.body["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "an error explains itself: {}",
            reply.text
        );
        assert_eq!(reply.body["status"], status);
    }
    let op = api
        .raw(
            Method::POST,
            "/data/io.cozy.notes/_find",
            br#"{"selector":{"a":{"$near":[1,2]}}}"#,
        )
        .await;
    assert!(
        op.text.contains("$near"),
        "the unsupported operator is named: {}",
        op.text
    );

    // Invalid doctypes.
    let bad = api.get("/data/Bad.Doctype/x").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    // Read-only doctypes of other services.
    let files = api.put("/data/io.cozy.files/x", &json!({"a": 1})).await;
    assert_eq!(files.status, 403, "{}", files.text);

    // A body over 8 MiB is refused with 413 before it is stored.
    let huge = format!("{{\"blob\":\"{}\"}}", "x".repeat(8 * 1024 * 1024 + 10));
    let too_big = api.raw(Method::PUT, "/data/io.cozy.notes/kept", huge.as_bytes()).await;
    assert_eq!(too_big.status, 413, "{}", &too_big.text[..too_big.text.len().min(200)]);
    assert!(too_big.body["reason"].as_str().unwrap().contains("limit"));

    let still = api.get("/data/io.cozy.notes/kept").await;
    assert_eq!(still.body["v"], 1, "nothing stored was touched");
    assert!(still.body["_rev"].as_str().unwrap().starts_with("1-"));
}

#[tokio::test]
async fn test_listings_bulk_and_design_docs() {
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let docs: Vec<_> = (0..10).map(|i| json!({"_id": format!("d{i:02}"), "i": i})).collect();
    let bulk = api.post("/data/io.cozy.notes/_bulk_docs", &json!({"docs": docs})).await;
    assert_eq!(bulk.status, 201, "{}", bulk.text);
    let results = bulk.body.as_array().unwrap();
    assert_eq!(results.len(), 10);
    assert!(
        results
            .iter()
            .all(|r| r["ok"] == true && r["rev"].as_str().unwrap().starts_with("1-"))
    );

    // One conflict in a bulk does not stop the others.
    let rev0 = results[0]["rev"].as_str().unwrap();
    let mixed = api
        .post(
            "/data/io.cozy.notes/_bulk_docs",
            &json!({"docs": [{"_id": "d00", "_rev": rev0, "i": 100}, {"_id": "d01", "i": 101}, {"_id": "new", "i": 1}, 7]}),
        )
        .await;
    let r = mixed.body.as_array().unwrap();
    assert_eq!(r[0]["ok"], true);
    assert_eq!(r[1]["error"], "conflict");
    assert_eq!(r[2]["ok"], true);
    assert_eq!(r[3]["error"], "bad_request");

    let all = api.get("/data/io.cozy.notes/_all_docs?limit=3&skip=2").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.get("total_rows"), 11);
    assert_eq!(all.get("offset"), 2);
    let ids: Vec<_> = all
        .get("rows")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d02", "d03", "d04"]);
    assert!(all.get("rows")[0].get("doc").is_none(), "no docs unless include_docs");

    let keyed = api
        .post(
            "/data/io.cozy.notes/_all_docs?include_docs=true",
            &json!({"keys": ["d05", "nope"]}),
        )
        .await;
    let rows = keyed.get("rows").as_array().unwrap();
    assert_eq!(rows[0]["doc"]["i"], 5);
    assert_eq!(rows[1]["error"], "not_found");

    let ranged = api
        .get("/data/io.cozy.notes/_all_docs?startkey=%22d08%22&endkey=%22d09%22")
        .await;
    assert_eq!(ranged.get("rows").as_array().unwrap().len(), 2);

    // _normal_docs pages with a bookmark and skips design documents.
    api.post(
        "/data/io.cozy.notes/_index",
        &json!({"index": {"fields": ["i"]}, "ddoc": "by-i"}),
    )
    .await;
    let page1 = api.get("/data/io.cozy.notes/_normal_docs?limit=6").await;
    assert_eq!(page1.status, 200, "{}", page1.text);
    assert_eq!(page1.get("total_rows"), 11);
    assert_eq!(page1.get("rows").as_array().unwrap().len(), 6);
    let bookmark = page1.get("bookmark").as_str().unwrap();
    let page2 = api
        .get(&format!("/data/io.cozy.notes/_normal_docs?limit=6&bookmark={bookmark}"))
        .await;
    let rows2 = page2.get("rows").as_array().unwrap();
    assert_eq!(rows2.len(), 5);
    assert!(rows2.iter().all(|d| !d["_id"].as_str().unwrap().starts_with("_design")));

    // A design document can also be written directly, as in CouchDB.
    let direct = api
        .put(
            "/data/io.cozy.notes/_design/manual",
            &json!({"language": "query", "views": {}}),
        )
        .await;
    assert_eq!(direct.status, 200, "{}", direct.text);
    let rev = direct.get("rev").as_str().unwrap().to_string();
    api.delete(&format!("/data/io.cozy.notes/_design/manual?rev={rev}"))
        .await;
    // A verb a route does not take gets a JSON 405.
    let patch = api
        .send(Method::PATCH, "/data/io.cozy.notes/d00", Some(b"{}".to_vec()))
        .await;
    assert_eq!(patch.status, 405);
    assert_eq!(patch.get("error"), "method_not_allowed");
    let nowhere = api.get("/nowhere").await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.get("error"), "not_found");

    let designs = api.get("/data/io.cozy.notes/_design_docs").await;
    assert_eq!(designs.get("rows")[0]["id"], "_design/by-i");
    let ddoc = api.get("/data/io.cozy.notes/_design/by-i").await;
    assert_eq!(ddoc.status, 200);
    assert_eq!(ddoc.get("language"), "query");
    let rev = ddoc.get("_rev").as_str().unwrap();
    let removed = api.delete(&format!("/data/io.cozy.notes/_design/by-i?rev={rev}")).await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(
        api.get("/data/io.cozy.notes/_design_docs")
            .await
            .get("rows")
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let q = api
        .post(
            "/data/io.cozy.notes/_find",
            &json!({"selector": {"i": 3}, "use_index": "by-i"}),
        )
        .await;
    assert_eq!(q.status, 400, "a deleted index is gone: {}", q.text);
}

#[tokio::test]
async fn test_all_doctypes() {
    let (_dir, cocon, api) = setup("io.cozy.notes").await;
    api.put("/data/io.cozy.notes/a", &json!({})).await;
    let token = cocon
        .token("alice.test", "io.cozy.notes io.cozy.contacts io.cozy.doctypes:GET")
        .await
        .unwrap();
    let wide = api.with_token(Some(&token));
    wide.put("/data/io.cozy.contacts/b", &json!({})).await;
    let doctypes = wide.get("/data/_all_doctypes").await;
    assert_eq!(doctypes.status, 200, "{}", doctypes.text);
    assert_eq!(doctypes.body, json!(["io.cozy.contacts", "io.cozy.notes"]));
    assert_eq!(api.get("/data/_all_doctypes").await.status, 403);
}

#[tokio::test]
async fn test_changes_feed() {
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let empty = api.get("/data/io.cozy.notes/_changes").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body, json!({"results": [], "last_seq": "0", "pending": 0}));

    let a = api.put("/data/io.cozy.notes/a", &json!({"v": 1})).await;
    api.put("/data/io.cozy.notes/b", &json!({"v": 1})).await;
    let a2 = api
        .put("/data/io.cozy.notes/a", &json!({"_rev": a.get("rev"), "v": 2}))
        .await;
    let b = api.get("/data/io.cozy.notes/b").await;
    api.delete(&format!(
        "/data/io.cozy.notes/b?rev={}",
        b.get("_rev").as_str().unwrap()
    ))
    .await;

    let all = api.get("/data/io.cozy.notes/_changes?include_docs=true").await;
    let results = all.get("results").as_array().unwrap();
    assert_eq!(
        results.len(),
        2,
        "one row per document, its latest change: {}",
        all.text
    );
    assert_eq!(results[0]["id"], "a");
    assert_eq!(results[0]["changes"][0]["rev"], a2.get("rev").clone());
    assert_eq!(results[0]["doc"]["v"], 2);
    assert_eq!(results[1]["id"], "b");
    assert_eq!(results[1]["deleted"], true);
    let last = all.get("last_seq").as_str().unwrap().to_string();

    let limited = api.get("/data/io.cozy.notes/_changes?limit=1").await;
    assert_eq!(limited.get("results").as_array().unwrap().len(), 1);
    assert_eq!(limited.get("pending"), 1);
    let since = limited.get("last_seq").as_str().unwrap();
    let rest = api.get(&format!("/data/io.cozy.notes/_changes?since={since}")).await;
    assert_eq!(rest.get("results")[0]["id"], "b");

    let desc = api.get("/data/io.cozy.notes/_changes?descending=true&limit=1").await;
    assert_eq!(desc.get("results")[0]["id"], "b");
    assert_eq!(desc.get("last_seq").as_str().unwrap(), last);

    let nothing = api.get(&format!("/data/io.cozy.notes/_changes?since={last}")).await;
    assert_eq!(nothing.get("results").as_array().unwrap().len(), 0);
    assert_eq!(nothing.get("last_seq").as_str().unwrap(), last);
    let bad = api.get("/data/io.cozy.notes/_changes?since=abc").await;
    assert_eq!(bad.status, 400);
    let bad_feed = api.get("/data/io.cozy.notes/_changes?feed=continuous").await;
    assert_eq!(bad_feed.status, 400);

    // A long poll answers as soon as a write lands.
    let waiter = {
        let api = api.clone();
        let last = last.clone();
        tokio::spawn(async move {
            api.get(&format!(
                "/data/io.cozy.notes/_changes?feed=longpoll&since={last}&timeout=30000"
            ))
            .await
        })
    };
    // The long poll is waiting (it would time out after 30 s); this write must wake it.
    let started = std::time::Instant::now();
    let c = api.put("/data/io.cozy.notes/c", &json!({"v": 1})).await;
    assert_eq!(c.status, 200);
    let woke = waiter.await.unwrap();
    assert_eq!(woke.status, 200);
    assert_eq!(woke.get("results")[0]["id"], "c", "{}", woke.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // With nothing new, a long poll ends at its timeout with no result.
    let timed_out = api
        .get("/data/io.cozy.notes/_changes?feed=longpoll&since=now&timeout=200")
        .await;
    assert_eq!(timed_out.get("results").as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn test_mango_find() {
    let (_dir, _cocon, api) = setup("io.cozy.contacts").await;
    let people = [
        ("ann", "Ann", 31, "Paris", json!(["a", "b"])),
        ("bob", "Bob", 25, "Lyon", json!(["b"])),
        ("cid", "Cid", 42, "Paris", json!([])),
        ("dan", "Dan", 25, "Nice", json!(["a"])),
        ("eve", "Eve", 19, "Lyon", json!(["c", "a"])),
    ];
    let docs: Vec<_> = people
        .iter()
        .map(|(id, name, age, city, tags)| json!({"_id": id, "name": name, "age": age, "address": {"city": city}, "tags": tags}))
        .collect();
    api.post("/data/io.cozy.contacts/_bulk_docs", &json!({"docs": docs}))
        .await;
    let find = |q: serde_json::Value| {
        let api = api.clone();
        async move { api.post("/data/io.cozy.contacts/_find", &q).await }
    };
    let ids = |r: &cocon_tests::Reply| -> Vec<String> {
        let docs = r
            .get("docs")
            .as_array()
            .unwrap_or_else(|| panic!("no docs in {}", r.text));
        docs.iter().map(|d| d["_id"].as_str().unwrap().to_string()).collect()
    };

    // Sorting needs an index: the error names it, as CouchDB, so clients create it on demand.
    let no_index = find(json!({"selector": {"age": {"$gt": 20}}, "sort": ["age"]})).await;
    assert_eq!(no_index.status, 400);
    assert_eq!(no_index.get("error"), "no_usable_index");
    let missing = find(json!({"selector": {"age": {"$gt": 20}}, "use_index": "by-age"})).await;
    assert_eq!(missing.status, 400);
    assert!(missing.get("error").as_str().unwrap().contains("no_index"));

    let created = api
        .post(
            "/data/io.cozy.contacts/_index",
            &json!({"index": {"fields": ["age", "name"]}, "ddoc": "by-age", "name": "age-name"}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert_eq!(
        created.body,
        json!({"result": "created", "id": "_design/by-age", "name": "age-name"})
    );
    let again = api
        .post(
            "/data/io.cozy.contacts/_index",
            &json!({"index": {"fields": ["age", "name"]}, "ddoc": "by-age", "name": "age-name"}),
        )
        .await;
    assert_eq!(again.get("result"), "exists");

    let sorted =
        find(json!({"selector": {"age": {"$gte": 25}}, "sort": [{"age": "asc"}], "use_index": "by-age"})).await;
    assert_eq!(sorted.status, 200, "{}", sorted.text);
    assert_eq!(ids(&sorted), ["bob", "dan", "ann", "cid"]);
    let desc = find(json!({"selector": {"age": {"$gte": 25}}, "sort": [{"age": "desc"}, {"name": "desc"}]})).await;
    assert_eq!(ids(&desc), ["cid", "ann", "dan", "bob"]);

    // An index is used only when the query needs all of its fields, as in CouchDB.
    let unusable = find(json!({"selector": {"age": {"$gt": 0}}, "sort": ["age"]})).await;
    assert_eq!(unusable.get("error"), "no_usable_index", "{}", unusable.text);
    api.post(
        "/data/io.cozy.contacts/_index",
        &json!({"index": {"fields": ["age"]}, "ddoc": "by-age-only"}),
    )
    .await;
    let paged =
        find(json!({"selector": {"age": {"$gt": 0}}, "sort": ["age"], "limit": 2, "execution_stats": true})).await;
    assert_eq!(ids(&paged), ["eve", "bob"]);
    assert_eq!(paged.get("next"), true);
    let bookmark = paged.get("bookmark").as_str().unwrap();
    let page2 = find(json!({"selector": {"age": {"$gt": 0}}, "sort": ["age"], "limit": 2, "bookmark": bookmark})).await;
    assert_eq!(ids(&page2), ["dan", "ann"]);
    let skipped = find(json!({"selector": {"age": {"$gt": 0}}, "sort": ["age"], "skip": 4})).await;
    assert_eq!(ids(&skipped), ["cid"]);
    assert_eq!(skipped.get("next"), false);

    let fields = find(json!({"selector": {"age": 42}, "fields": ["name", "address.city"]})).await;
    assert_eq!(
        fields.get("docs")[0],
        json!({"name": "Cid", "address": {"city": "Paris"}})
    );

    let cases = [
        (json!({"address.city": "Paris"}), vec!["ann", "cid"]),
        (json!({"address": {"city": "Lyon"}}), vec!["bob", "eve"]),
        (json!({"age": {"$in": [19, 42]}}), vec!["cid", "eve"]),
        (json!({"age": {"$nin": [19, 42, 25]}}), vec!["ann"]),
        (
            json!({"name": {"$ne": "Ann"}, "age": {"$lt": 26}}),
            vec!["bob", "dan", "eve"],
        ),
        (json!({"tags": {"$all": ["a", "b"]}}), vec!["ann"]),
        (json!({"tags": {"$size": 0}}), vec!["cid"]),
        (json!({"tags": {"$elemMatch": {"$eq": "c"}}}), vec!["eve"]),
        (json!({"name": {"$regex": "^[AB]"}}), vec!["ann", "bob"]),
        (json!({"$or": [{"age": 19}, {"name": "Cid"}]}), vec!["cid", "eve"]),
        (json!({"$nor": [{"age": 25}, {"address.city": "Paris"}]}), vec!["eve"]),
        (json!({"$and": [{"age": 25}, {"address.city": "Nice"}]}), vec!["dan"]),
        (json!({"age": {"$not": {"$gt": 20}}}), vec!["eve"]),
        (json!({"missing": {"$exists": false}, "age": {"$lte": 19}}), vec!["eve"]),
        (json!({"age": {"$exists": true, "$gte": 42}}), vec!["cid"]),
    ];
    for (selector, expected) in cases {
        let r = find(json!({"selector": selector.clone()})).await;
        assert_eq!(r.status, 200, "{selector}: {}", r.text);
        let mut got = ids(&r);
        got.sort();
        assert_eq!(got, expected, "selector {selector}");
    }
    let limit = find(json!({"selector": {}, "limit": 5000})).await;
    assert_eq!(limit.get("limit"), 1000, "limit is capped at 1000");
}

#[tokio::test]
async fn test_indexed_find_examines_only_matching_documents() {
    let (_dir, _cocon, api) = setup("io.cozy.bank.operations").await;
    api.post(
        "/data/io.cozy.bank.operations/_index",
        &json!({"index": {"fields": ["account", "amount"]}, "ddoc": "by-account"}),
    )
    .await;
    const N: usize = 100_000;
    const BATCH: usize = 5_000;
    for start in (0..N).step_by(BATCH) {
        let docs: Vec<_> = (start..start + BATCH)
            .map(|i| json!({"account": format!("acc{}", i % 1000), "amount": (i % 97) as i64 - 48, "label": "groceries"}))
            .collect();
        let r = api
            .post("/data/io.cozy.bank.operations/_bulk_docs", &json!({"docs": docs}))
            .await;
        assert_eq!(r.status, 201);
    }
    let r = api
        .post(
            "/data/io.cozy.bank.operations/_find",
            &json!({"selector": {"account": "acc7", "amount": {"$gt": 0}}, "execution_stats": true, "limit": 1000}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let docs = r.get("docs").as_array().unwrap();
    let expected = (0..N).filter(|i| i % 1000 == 7 && (i % 97) as i64 - 48 > 0).count();
    assert_eq!(docs.len(), expected);
    let stats = r.get("execution_stats");
    assert_eq!(
        stats["total_docs_examined"], expected as u64,
        "only the matching documents are read: {stats}"
    );
    assert_eq!(
        stats["index"],
        format!(
            "_design/by-account/{}",
            stats["index"].as_str().unwrap().rsplit('/').next().unwrap()
        )
    );
    assert!(r.get("warning").is_null());
}

/// cozy-client normalises every document with `_type` and sends it back on updates; cozy-stack
/// drops it. Every write path takes it and never stores it; other `_` fields stay refused.
#[tokio::test]
async fn test_cozy_clients_type_field_is_accepted_and_dropped() {
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let created = api
        .post("/data/io.cozy.notes/", &json!({"_type": "io.cozy.notes", "title": "a"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.get("id").as_str().unwrap().to_string();
    let rev1 = created.get("rev").as_str().unwrap().to_string();
    let path = format!("/data/io.cozy.notes/{id}");

    // What cozy-client sends on an update: the document as it read it, plus `_type`.
    let mut doc = api.get(&path).await.body;
    doc["_type"] = json!("io.cozy.notes");
    doc["title"] = json!("b");
    let updated = api.put(&path, &doc).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let stored = api.get(&path).await;
    assert_eq!(stored.get("title"), "b");
    assert!(!stored.text.contains("_type"), "{}", stored.text);

    // A stale update with `_type` is a conflict, as without it.
    let stale = api
        .put(
            &path,
            &json!({"_id": id, "_rev": rev1, "_type": "io.cozy.notes", "title": "lost"}),
        )
        .await;
    assert_eq!(stale.status, 409, "{}", stale.text);

    // Bulk writes, replication-style bulk writes and design documents take it too.
    let bulk = api
        .post(
            "/data/io.cozy.notes/_bulk_docs",
            &json!({"docs": [{"_id": "b1", "_type": "io.cozy.notes", "v": 1}]}),
        )
        .await;
    assert_eq!(bulk.body[0]["ok"], true, "{}", bulk.text);
    let replicated = api
        .post(
            "/data/io.cozy.notes/_bulk_docs",
            &json!({"new_edits": false, "docs": [{"_id": "r1", "_rev": "3-abc", "_type": "io.cozy.notes", "v": 3}]}),
        )
        .await;
    assert_eq!(replicated.status, 201, "{}", replicated.text);
    let design = api
        .put(
            "/data/io.cozy.notes/_design/d",
            &json!({"_type": "io.cozy.notes", "language": "query", "views": {}}),
        )
        .await;
    assert_eq!(design.status, 200, "{}", design.text);
    for id in ["b1", "r1", "_design/d"] {
        let got = api.get(&format!("/data/io.cozy.notes/{id}")).await;
        assert_eq!(got.status, 200, "{id}: {}", got.text);
        assert!(!got.text.contains("_type"), "{id}: {}", got.text);
    }

    // Other reserved fields are still refused, and refusing them changes nothing.
    let reserved = api.put(&path, &json!({"_rev": updated.get("rev"), "_foo": 1})).await;
    assert_eq!(reserved.status, 400, "{}", reserved.text);
    assert_eq!(api.get(&path).await.get("title"), "b");
}

/// However a query is written, one answer holds a bounded number of rows and bytes: past
/// 10,000 rows or 32 MiB a client is given what fits and asks again (`pending`, `skip`,
/// `bookmark`), and huge `skip`s neither overflow nor fill memory.
#[tokio::test]
async fn test_listings_and_queries_are_bounded() {
    let (_dir, _cocon, api) = setup("io.cozy.notes").await;
    let docs: Vec<_> = (0..10_001)
        .map(|i| json!({"_id": format!("d{i:05}"), "i": i}))
        .collect();
    let bulk = api.post("/data/io.cozy.notes/_bulk_docs", &json!({"docs": docs})).await;
    assert_eq!(bulk.status, 201, "{}", &bulk.text[..bulk.text.len().min(300)]);

    let changes = api.get("/data/io.cozy.notes/_changes").await;
    assert_eq!(changes.status, 200);
    assert_eq!(changes.get("results").as_array().unwrap().len(), 10_000);
    assert_eq!(changes.get("pending"), 1);
    let last = changes.get("last_seq").as_str().unwrap().to_string();
    let rest = api.get(&format!("/data/io.cozy.notes/_changes?since={last}")).await;
    assert_eq!(rest.get("results").as_array().unwrap().len(), 1);
    assert_eq!(rest.get("results")[0]["id"], "d10000");
    assert_eq!(rest.get("pending"), 0);

    let all = api.get("/data/io.cozy.notes/_all_docs").await;
    assert_eq!(all.get("total_rows"), 10_001);
    assert_eq!(all.get("rows").as_array().unwrap().len(), 10_000);
    let asked = api.get("/data/io.cozy.notes/_all_docs?limit=50000&skip=10000").await;
    assert_eq!(asked.get("rows").as_array().unwrap().len(), 1, "{}", asked.text);
    let keys: Vec<String> = (0..10_001).map(|i| format!("d{i:05}")).collect();
    let too_many = api.post("/data/io.cozy.notes/_all_docs", &json!({"keys": keys})).await;
    assert_eq!(
        too_many.status,
        400,
        "{}",
        &too_many.text[..too_many.text.len().min(300)]
    );

    // A skip past anything, even one that would overflow, is an empty page.
    for skip in ["9999", "18446744073709551615"] {
        let found = api
            .raw(
                Method::POST,
                "/data/io.cozy.notes/_find",
                format!(r#"{{"selector": {{"i": {{"$gte": 0}}}}, "skip": {skip}, "limit": 5}}"#).as_bytes(),
            )
            .await;
        assert_eq!(found.status, 200, "skip {skip}: {}", found.text);
        let n = found.get("docs").as_array().unwrap().len();
        assert_eq!(n, if skip == "9999" { 2 } else { 0 }, "skip {skip}");
        assert_eq!(found.get("next"), false);
    }

    // Large documents: an answer stops near 32 MiB and the rest follows.
    let big = "x".repeat(1 << 20);
    for i in 0..40 {
        let put = api
            .put(&format!("/data/io.cozy.notes/big{i:02}"), &json!({"blob": big}))
            .await;
        assert_eq!(put.status, 200);
    }
    let mut since = last;
    let mut seen = 0;
    let mut answers = 0;
    loop {
        let page = api
            .get(&format!("/data/io.cozy.notes/_changes?include_docs=true&since={since}"))
            .await;
        assert_eq!(page.status, 200);
        assert!(page.text.len() < (33 << 20), "an answer of {} bytes", page.text.len());
        seen += page.get("results").as_array().unwrap().len();
        answers += 1;
        since = page.get("last_seq").as_str().unwrap().to_string();
        if page.get("pending") == 0 {
            break;
        }
    }
    assert_eq!(seen, 41, "d10000 and the 40 large ones, each once");
    assert!(answers >= 2, "40 MiB of documents take more than one answer");
    let mut bookmark = String::new();
    let mut found = 0;
    loop {
        let q = json!({"selector": {"blob": {"$exists": true}}, "limit": 1000, "bookmark": bookmark});
        let page = api.post("/data/io.cozy.notes/_find", &q).await;
        assert_eq!(page.status, 200, "{}", &page.text[..page.text.len().min(300)]);
        assert!(page.text.len() < (34 << 20));
        found += page.get("docs").as_array().unwrap().len();
        if page.get("next") == false {
            break;
        }
        bookmark = page.get("bookmark").as_str().unwrap().to_string();
    }
    assert_eq!(found, 40);
}

/// The value of a metric line `name{labels} value` on the admin port, 0 when absent.
async fn metric(cocon: &Cocon, name: &str, label: &str) -> f64 {
    let (_, metrics) = cocon.admin(Method::GET, "/metrics", &[]).await.unwrap();
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A commit wakes only the long polls of its instance and doctype; how many long polls wait is
/// capped per instance and per process, past which the answer is 503 with `Retry-After`.
#[tokio::test]
async fn test_long_polls_wake_only_their_own_and_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_DOCUMENTS__MAX_LONGPOLLS_PER_INSTANCE", "3")
        .env("COCON_DOCUMENTS__MAX_LONGPOLLS", "5")
        .start()
        .await
        .unwrap();
    let alice = cocon
        .instance("alice.test", "io.cozy.notes io.cozy.contacts")
        .await
        .unwrap();
    let bob = cocon.instance("bob.test", "io.cozy.notes").await.unwrap();
    let carol = cocon.instance("carol.test", "io.cozy.notes").await.unwrap();
    let poll = "/data/io.cozy.notes/_changes?feed=longpoll&since=now&timeout=60000";
    let label = "service=\"documents\"";
    let waiting = |n: f64| {
        let cocon = &cocon;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while metric(cocon, "cocon_longpolls_waiting", label).await != n {
                assert!(std::time::Instant::now() < deadline, "never {n} long polls waiting");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let mut alices: Vec<_> = (0..3)
        .map(|_| {
            let alice = alice.clone();
            tokio::spawn(async move { alice.get(poll).await })
        })
        .collect();
    waiting(3.0).await;

    // A fourth of alice's is refused; bob is not held back by alice.
    let refused = alice.request(Method::GET, poll).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "too_many_long_polls", "{body}");
    let bobs: Vec<_> = (0..2)
        .map(|_| {
            let bob = bob.clone();
            tokio::spawn(async move { bob.get(poll).await })
        })
        .collect();
    waiting(5.0).await;
    // The process holds five: carol is refused too.
    assert_eq!(carol.get(poll).await.status, 503);

    // Writes elsewhere (bob's notes, alice's contacts) wake none of alice's long polls.
    let woken = metric(&cocon, "cocon_longpoll_wakeups_total", label).await;
    for i in 0..20 {
        alice
            .put(&format!("/data/io.cozy.contacts/c{i}"), &json!({"i": i}))
            .await;
    }
    assert_eq!(metric(&cocon, "cocon_longpoll_wakeups_total", label).await, woken);
    assert!(alices.iter().all(|t| !t.is_finished()), "alice's polls wait on");
    bob.put("/data/io.cozy.notes/b", &json!({})).await;
    for t in bobs {
        let answer = t.await.unwrap();
        assert_eq!(answer.get("results")[0]["id"], "b", "{}", answer.text);
    }
    assert_eq!(metric(&cocon, "cocon_longpoll_wakeups_total", label).await, woken + 2.0);
    assert!(
        alices.iter().all(|t| !t.is_finished()),
        "bob's note woke bob's polls only"
    );

    // Alice's note wakes hers; their slots come back.
    alice.put("/data/io.cozy.notes/a", &json!({})).await;
    for t in alices.drain(..) {
        assert_eq!(t.await.unwrap().get("results")[0]["id"], "a");
    }
    waiting(0.0).await;
    let again = alice
        .get("/data/io.cozy.notes/_changes?feed=longpoll&since=now&timeout=100")
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
}
