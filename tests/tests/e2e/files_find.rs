//! `POST /files/_find` end to end: Mango queries on the drive as apps send them (images not in
//! the trash, newest first; files with a tag; files an album references), sorted, paged by
//! bookmark, trimmed to fields; bad queries get 400.

use cocon_tests::drive::{ROOT, new_dir as mkdir};
use cocon_tests::{Api, Cocon, Reply};
use reqwest::Method;
use serde_json::{Value, json};

async fn upload(api: &Api, parent: &str, name: &str, extra: &str) -> String {
    let reply = Api::reply(
        api.request(Method::POST, &format!("/files/{parent}?Type=file&Name={name}{extra}"))
            .body(name.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["data"]["id"].as_str().unwrap().to_string()
}

async fn find(api: &Api, query: Value) -> Reply {
    api.post("/files/_find", &query).await
}

fn names(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["attributes"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn test_find_answers_mango_queries_on_the_drive() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let photos = mkdir(&api, ROOT, "Photos").await;
    let beach = upload(&api, &photos, "beach.jpg", "&CreatedAt=2024-07-01T10:00:00Z").await;
    upload(&api, &photos, "city.png", "&CreatedAt=2024-05-01T10:00:00Z").await;
    upload(&api, &photos, "mountain.jpg", "&CreatedAt=2024-09-01T10:00:00Z").await;
    let old = upload(&api, &photos, "old.jpg", "").await;
    assert_eq!(api.delete(&format!("/files/{old}")).await.status, 200);
    let docs = mkdir(&api, ROOT, "Docs").await;
    upload(&api, &docs, "plan.txt", "&Tags=work,2024").await;
    upload(&api, &docs, "list.txt", "&Tags=home").await;

    // Images not in the trash, newest first.
    let images = find(
        &api,
        json!({"selector": {"class": "image", "trashed": false}, "sort": [{"created_at": "desc"}]}),
    )
    .await;
    assert_eq!(names(&images), ["mountain.jpg", "beach.jpg", "city.png"]);
    assert_eq!(images.body["meta"]["count"], 3);
    assert_eq!(images.body["next"], false);
    let first = &images.body["data"][0];
    assert_eq!(first["type"], "io.cozy.files");
    assert_eq!(first["attributes"]["path"], "/Photos/mountain.jpg");
    assert!(
        first["links"]["small"].is_string(),
        "thumbnail links as in other answers"
    );

    // By tag, by path, by a trashed flag.
    let work = find(&api, json!({"selector": {"tags": {"$all": ["work"]}}})).await;
    assert_eq!(names(&work), ["plan.txt"]);
    let in_docs = find(
        &api,
        json!({"selector": {"type": "file", "path": {"$regex": "^/Docs/"}}, "sort": ["name"]}),
    )
    .await;
    assert_eq!(names(&in_docs), ["list.txt", "plan.txt"]);
    let trashed = find(&api, json!({"selector": {"type": "file", "trashed": true}})).await;
    assert_eq!(names(&trashed), ["old.jpg"]);

    // Files an album references.
    let referenced = Api::reply(
        api.request(Method::POST, &format!("/files/{beach}/relationships/referenced_by"))
            .body(json!({"data": [{"type": "io.cozy.photos.albums", "id": "summer"}]}).to_string()),
    )
    .await;
    assert_eq!(referenced.status, 200, "{}", referenced.text);
    let album = find(
        &api,
        json!({"selector": {"referenced_by": {"$elemMatch": {"type": "io.cozy.photos.albums", "id": "summer"}}}}),
    )
    .await;
    assert_eq!(names(&album), ["beach.jpg"]);

    // Pages: a bookmark leads on until the last.
    let query = json!({"selector": {"class": "image", "trashed": false}, "sort": ["name"], "limit": 2});
    let page1 = find(&api, query.clone()).await;
    assert_eq!(names(&page1), ["beach.jpg", "city.png"]);
    assert_eq!(page1.body["next"], true);
    let mut next = query;
    next["bookmark"] = page1.body["bookmark"].clone();
    let page2 = find(&api, next).await;
    assert_eq!(names(&page2), ["mountain.jpg"]);
    assert_eq!(page2.body["next"], false);

    // Fields: only those (and what identifies each).
    let trimmed = find(
        &api,
        json!({"selector": {"name": "plan.txt"}, "fields": ["name", "size"]}),
    )
    .await;
    let attrs = trimmed.body["data"][0]["attributes"].as_object().unwrap();
    let mut keys: Vec<&str> = attrs.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["name", "size", "type"]);

    // Bad queries, and a token without the whole doctype.
    assert_eq!(find(&api, json!({"sort": ["name"]})).await.status, 400);
    let unknown = find(&api, json!({"selector": {"name": {"$near": 1}}})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert_eq!(api.raw(Method::POST, "/files/_find", b"{nope").await.status, 400);
    let folder_only = cocon.api(
        "alice.test",
        Some(
            &cocon
                .token("alice.test", &format!("io.cozy.files:GET:{photos}"))
                .await
                .unwrap(),
        ),
    );
    assert_eq!(find(&folder_only, json!({"selector": {}})).await.status, 403);
}

#[tokio::test]
async fn test_a_document_lists_adds_and_removes_the_files_it_references() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon
        .instance("alice.test", "io.cozy.files io.cozy.photos.albums")
        .await
        .unwrap();
    let album = api
        .post("/data/io.cozy.photos.albums/", &json!({"name": "Summer"}))
        .await;
    assert_eq!(album.status, 201, "{}", album.text);
    let album = album.body["id"].as_str().unwrap().to_string();
    let mut photos = Vec::new();
    for name in ["a.jpg", "b.jpg", "c.jpg"] {
        photos.push(upload(&api, ROOT, name, "").await);
    }
    let refs = format!("/data/io.cozy.photos.albums/{album}/relationships/references");
    let body = |ids: &[&String]| {
        json!({"data": ids.iter().map(|id| json!({"type": "io.cozy.files", "id": id})).collect::<Vec<_>>()})
            .to_string()
            .into_bytes()
    };
    let added = api
        .send(Method::POST, &refs, Some(body(&photos.iter().collect::<Vec<_>>())))
        .await;
    assert_eq!(added.status, 204, "{}", added.text);

    let listed = api.get(&format!("{refs}?include=files")).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["meta"]["count"], 3);
    let mut expected = photos.clone();
    expected.sort();
    let ids: Vec<&str> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(listed.body["included"][0]["type"], "io.cozy.files");
    // The file says it too.
    let file = api.get(&format!("/files/{}", photos[0])).await;
    assert_eq!(
        file.body["data"]["relationships"]["referenced_by"]["data"][0]["id"],
        album.as_str()
    );

    // Pages follow links.next.
    let page = api.get(&format!("{refs}?page[limit]=2")).await;
    assert_eq!(page.body["data"].as_array().unwrap().len(), 2);
    let next = page.body["links"]["next"].as_str().unwrap().to_string();
    let rest = api.get(&next).await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 1);
    assert!(rest.body["links"]["next"].is_null());

    // Removed; and a file deleted for good leaves the list.
    let removed = api.send(Method::DELETE, &refs, Some(body(&[&photos[0]]))).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    api.delete(&format!("/files/{}", photos[1])).await;
    assert_eq!(api.delete(&format!("/files/trash/{}", photos[1])).await.status, 204);
    let left = api.get(&refs).await;
    assert_eq!(left.body["meta"]["count"], 1, "{}", left.text);
    assert_eq!(left.body["data"][0]["id"], photos[2].as_str());

    // Bad input and missing rights.
    assert_eq!(
        api.send(Method::POST, &refs, Some(b"{\"data\": 3}".to_vec()))
            .await
            .status,
        400
    );
    let wrong_type = json!({"data": [{"type": "io.cozy.notes", "id": "x"}]})
        .to_string()
        .into_bytes();
    assert_eq!(api.send(Method::POST, &refs, Some(wrong_type)).await.status, 400);
    let no_file = json!({"data": [{"type": "io.cozy.files", "id": "nope"}]})
        .to_string()
        .into_bytes();
    assert_eq!(api.send(Method::POST, &refs, Some(no_file)).await.status, 404);
    let files_only = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.files").await.unwrap()),
    );
    // As in cozy-stack, the whole drive lists any document's files (a konnector finds the
    // folders that reference it so), but changing a document's references needs the document.
    let seen = files_only.get(&refs).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert_eq!(seen.body["meta"]["count"], 1, "{}", seen.text);
    let refused = files_only.send(Method::POST, &refs, Some(body(&[&photos[0]]))).await;
    assert_eq!(refused.status, 403, "the album's rights are needed to change it");
    let albums_only = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.photos.albums").await.unwrap()),
    );
    assert_eq!(
        albums_only.get(&refs).await.status,
        403,
        "the files' rights are needed too"
    );
}

#[tokio::test]
async fn test_queries_on_ids_references_and_directories_answer_as_a_full_scan_does() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let photos = mkdir(&api, ROOT, "Photos").await;
    let trips = mkdir(&api, &photos, "Trips").await;
    let beach = upload(&api, &photos, "beach.jpg", "").await;
    upload(&api, &photos, "city.png", "").await;
    let far = upload(&api, &trips, "far.jpg", "").await;
    let docs = mkdir(&api, ROOT, "Docs").await;
    let plan = upload(&api, &docs, "plan.txt", "").await;
    let old = upload(&api, &docs, "old.txt", "").await;
    assert_eq!(api.delete(&format!("/files/{old}")).await.status, 200);
    for file in [&beach, &far] {
        let added = Api::reply(
            api.request(Method::POST, &format!("/files/{file}/relationships/referenced_by"))
                .body(json!({"data": [{"type": "io.cozy.photos.albums", "id": "summer"}]}).to_string()),
        )
        .await;
        assert_eq!(added.status, 200, "{}", added.text);
    }

    let album = json!({"$elemMatch": {"type": "io.cozy.photos.albums", "id": "summer"}});
    let queries = [
        (json!({"dir_id": photos}), 3),
        (json!({"dir_id": {"$in": [photos, docs]}, "type": "file"}), 3),
        (json!({"dir_id": trips}), 1),
        (json!({"dir_id": "io.cozy.files.trash-dir"}), 1),
        (json!({"dir_id": ROOT, "type": "directory"}), 3),
        (json!({"_id": beach}), 1),
        (json!({"_id": {"$in": [beach, plan, far, beach, "missing"]}}), 3),
        (json!({"_id": plan, "name": "other.txt"}), 0),
        (json!({"referenced_by": album, "class": "image"}), 2),
        (json!({"dir_id": photos, "referenced_by": album}), 1),
    ];
    for (selector, count) in queries {
        for sort in [json!(["name"]), json!([{"path": "desc"}])] {
            let narrow = find(&api, json!({"selector": selector, "sort": sort})).await;
            // Under `$or`, no condition is required of every match: the nodes are scanned.
            let scanned = find(&api, json!({"selector": {"$or": [selector]}, "sort": sort})).await;
            assert_eq!(narrow.status, 200, "{}", narrow.text);
            assert_eq!(narrow.body["data"], scanned.body["data"], "{selector}");
            assert_eq!(narrow.body["meta"]["count"], count, "{selector}: {}", narrow.text);
        }
    }
    // Paths and the trashed flag come from the ancestors read for them.
    let trashed = find(&api, json!({"selector": {"dir_id": "io.cozy.files.trash-dir"}})).await;
    assert_eq!(trashed.body["data"][0]["attributes"]["path"], "/.cozy_trash/old.txt");
    assert_eq!(trashed.body["data"][0]["attributes"]["trashed"], true);
    let deep = find(&api, json!({"selector": {"_id": far}})).await;
    assert_eq!(deep.body["data"][0]["attributes"]["path"], "/Photos/Trips/far.jpg");

    // Pages of a directory's files.
    let query = json!({"selector": {"dir_id": photos, "type": "file"}, "sort": ["name"], "limit": 1});
    let page1 = find(&api, query.clone()).await;
    assert_eq!(names(&page1), ["beach.jpg"]);
    let mut next = query;
    next["bookmark"] = page1.body["bookmark"].clone();
    assert_eq!(names(&find(&api, next).await), ["city.png"]);
}

/// Paging deep into a drive goes by bookmarks (the last node's sort key), which cost nothing to
/// skip; an explicit `skip` is capped, and one that would overflow is refused, not wrapped.
#[tokio::test]
async fn test_deep_pages_follow_bookmarks_and_skip_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let photos = mkdir(&api, ROOT, "Photos").await;
    for i in 0..25 {
        // Pairs of photos share a date, so the id breaks the ties.
        let day = 10 + i / 2;
        upload(
            &api,
            &photos,
            &format!("p{i:02}.jpg"),
            &format!("&CreatedAt=2024-07-{day}T10:00:00Z"),
        )
        .await;
    }
    let mut query = json!({"selector": {"class": "image"}, "sort": [{"created_at": "desc"}], "limit": 10});
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = find(&api, query.clone()).await;
        seen.extend(names(&page));
        pages += 1;
        match page.body["bookmark"].as_str() {
            Some(b) if !b.is_empty() && page.body["next"] != false => query["bookmark"] = json!(b),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (25, 25), "each photo once: {seen:?}");
    assert!(
        seen[0] == "p24.jpg" && seen[24].starts_with("p0"),
        "newest first: {seen:?}"
    );

    for skip in [json!(10_001), json!(18_446_744_073_709_551_615u64)] {
        let refused = find(&api, json!({"selector": {"class": "image"}, "skip": skip})).await;
        assert_eq!(refused.status, 400, "skip {skip}: {}", refused.text);
        assert!(refused.text.contains("bookmark"), "says what to do: {}", refused.text);
    }
    let shallow = find(&api, json!({"selector": {"class": "image"}, "skip": 20})).await;
    assert_eq!(names(&shallow).len(), 5);
}
