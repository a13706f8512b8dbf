//! `POST /files/_find` end to end: Mango queries on the drive as apps send them (images not in
//! the trash, newest first; files with a tag; files an album references), sorted, paged by
//! bookmark, trimmed to fields; bad queries get 400.

use cocon_tests::{Api, Cocon, Reply};
use reqwest::Method;
use serde_json::{Value, json};

const ROOT: &str = "io.cozy.files.root-dir";

async fn mkdir(api: &Api, parent: &str, name: &str) -> String {
    let reply = Api::reply(api.request(Method::POST, &format!("/files/{parent}?Type=directory&Name={name}"))).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["data"]["id"].as_str().unwrap().to_string()
}

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
