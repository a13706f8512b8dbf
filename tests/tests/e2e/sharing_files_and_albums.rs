//! Sharing one file, and sharing an album, between two hosts: a file shared on its own lands in
//! bob's "Shared with me" and its changes go both ways wherever each person files it; an
//! album's photos land in a folder named after it, bob's album references them, and photos
//! added to or taken out of the album on either side follow.

use cocon_tests::drive::{ROOT, download, md5_b64, new_dir, new_file};
use cocon_tests::sharing::*;
use cocon_tests::{Api, Reply};
use reqwest::Method;
use serde_json::{Value, json};

const ALBUMS: &str = "io.cozy.photos.albums";

async fn add_to_album(api: &Api, file: &str, album: &str) {
    let r = api
        .post(
            &format!("/files/{file}/relationships/referenced_by"),
            &json!({"data": [{"type": ALBUMS, "id": album}]}),
        )
        .await;
    assert!(r.status < 300, "{}", r.text);
}

async fn take_out_of_album(api: &Api, file: &str, album: &str) {
    let r = Api::reply(
        api.request(Method::DELETE, &format!("/files/{file}/relationships/referenced_by"))
            .header("Content-Type", "application/vnd.api+json")
            .body(json!({"data": [{"type": ALBUMS, "id": album}]}).to_string()),
    )
    .await;
    assert!(r.status < 300, "{}", r.text);
}

/// The album's photos as (name, MD5), sorted, once `done` holds for them.
async fn album_photos(api: &Api, album: &str, done: impl Fn(&[(String, String)]) -> bool) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listed = api
            .get(&format!("/data/{ALBUMS}/{album}/relationships/references"))
            .await;
        let mut photos = Vec::new();
        for r in listed.body["data"].as_array().into_iter().flatten() {
            let file = api
                .get(&format!("/files/{}", r["id"].as_str().unwrap_or_default()))
                .await;
            let a = &file.body["data"]["attributes"];
            if a["trashed"] != true {
                photos.push((
                    a["name"].as_str().unwrap_or_default().to_string(),
                    a["md5sum"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        photos.sort();
        if listed.status == 200 && done(&photos) {
            return photos;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the album holds {photos:?} ({})",
            listed.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The rules of alice's album sharing: the album document and the files it references.
fn album_rules(album: &str, behaviour: &str) -> Value {
    json!([
        {"title": "Holidays", "doctype": ALBUMS, "values": [album],
         "add": behaviour, "update": behaviour, "remove": behaviour},
        {"title": "Holidays", "doctype": "io.cozy.files", "selector": "referenced_by",
         "values": [format!("{ALBUMS}/{album}")], "add": behaviour, "update": behaviour, "remove": behaviour}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_file_shared_on_its_own_follows_both_ways_wherever_each_side_files_it() {
    let mut h = two_hosts().await;
    let docs = new_dir(&h.alice, ROOT, "Docs").await;
    let plan = new_file(&h.alice, &docs, "plan.txt", b"v1").await;
    new_file(&h.alice, &docs, "other.txt", b"not shared").await;
    let rule = json!({"title": "plan.txt", "doctype": "io.cozy.files", "values": [plan],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let sharing = share(&h, "The plan", rule).await;
    assert_eq!(
        sharing["attributes"]["rules"][0]["mime"], "text/plain",
        "a rule on a file carries its type"
    );
    let id = sharing["id"].as_str().unwrap().to_string();
    accept_request(&mut h, &id).await;

    // On bob's host: the file itself in "Shared with me", his own id, nothing else of alice's.
    let copy = node_at(&h.bob, "/Shared with me/plan.txt", |_| true).await;
    let copy_id = copy["id"].as_str().unwrap().to_string();
    assert_ne!(copy_id, plan);
    assert_eq!(download(&h.bob, &copy_id).await, b"v1");
    assert_eq!(
        folder_tree(&h.bob, "/Shared with me").await,
        [("/plan.txt".to_string(), md5_b64(b"v1"))]
    );

    // Alice rewrites it, then files it elsewhere under another name: bob's copy takes the
    // content and the name, and stays where it is.
    rewrite(&h.alice, &plan, b"v2").await;
    let moved = patch(&h.alice, &plan, json!({"dir_id": ROOT, "name": "plan-2026.txt"})).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let renamed = node_at(&h.bob, "/Shared with me/plan-2026.txt", |n| {
        attr(n, "name") == "plan-2026.txt" && attr(n, "md5sum") == md5_b64(b"v2").as_str()
    })
    .await;
    assert_eq!(renamed["id"], copy_id.as_str());
    assert_eq!(download(&h.bob, &copy_id).await, b"v2");

    // Bob files his copy in a folder of his own and rewrites it: alice's takes the content and
    // stays where she put it.
    let mine = new_dir(&h.bob, ROOT, "Mine").await;
    let filed = patch(&h.bob, &copy_id, json!({"dir_id": mine})).await;
    assert_eq!(filed.status, 200, "{}", filed.text);
    rewrite(&h.bob, &copy_id, b"v3 from bob").await;
    node_at(&h.alice, "/plan-2026.txt", |n| {
        attr(n, "md5sum") == md5_b64(b"v3 from bob").as_str()
    })
    .await;
    assert_eq!(download(&h.alice, &plan).await, b"v3 from bob");
    assert_eq!(
        h.alice.get("/files/metadata?Path=%2FShared%20with%20me").await.status,
        404,
        "the owner's file stays where she filed it"
    );
    let on_bob = h.bob.get(&format!("/files/{copy_id}")).await;
    assert_eq!(attr(&on_bob.body["data"], "path"), "/Mine/plan-2026.txt");

    // Alice trashes it: bob's copy goes to his trash.
    assert_eq!(h.alice.delete(&format!("/files/{plan}")).await.status, 200);
    eventually(&h.bob, &format!("/files/{copy_id}"), |n| {
        attr(&n["data"], "trashed") == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_file_shared_read_only_refuses_the_recipients_new_content() {
    let mut h = two_hosts().await;
    let plan = new_file(&h.alice, ROOT, "plan.txt", b"v1").await;
    let rule = json!({"title": "plan.txt", "doctype": "io.cozy.files", "values": [plan],
                      "add": "push", "update": "push", "remove": "push"});
    let id = share_with(&h, "The plan", rule).await;
    accept_request(&mut h, &id).await;
    let copy = node_at(&h.bob, "/Shared with me/plan.txt", |_| true).await;
    let copy_id = copy["id"].as_str().unwrap().to_string();

    let refused = Api::reply(
        h.bob
            .request(Method::PUT, &format!("/files/{copy_id}"))
            .body(b"bob's version".to_vec()),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("read-only"), "{}", refused.text);
    // Alice's changes still reach him.
    rewrite(&h.alice, &plan, b"v2").await;
    node_at(&h.bob, "/Shared with me/plan.txt", |n| {
        attr(n, "md5sum") == md5_b64(b"v2").as_str()
    })
    .await;
    assert_eq!(download(&h.bob, &copy_id).await, b"v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_an_albums_photos_follow_as_either_side_adds_or_takes_them_out() {
    let mut h = two_hosts().await;
    let album = h
        .alice
        .post(&format!("/data/{ALBUMS}/"), &json!({"name": "Holidays"}))
        .await;
    assert_eq!(album.status, 201, "{}", album.text);
    let album = album.get("id").as_str().unwrap().to_string();
    let photos = new_dir(&h.alice, ROOT, "Photos").await;
    let beach = new_file(&h.alice, &photos, "beach.jpg", b"beach pixels").await;
    let hills = new_file(&h.alice, &photos, "hills.jpg", b"hills pixels").await;
    new_file(&h.alice, &photos, "private.jpg", b"not in the album").await;
    add_to_album(&h.alice, &beach, &album).await;
    add_to_album(&h.alice, &hills, &album).await;

    let sharing = share_rules(&h, "Holidays", album_rules(&album, "sync")).await;
    let id = sharing["id"].as_str().unwrap().to_string();
    accept_request(&mut h, &id).await;

    // Bob's album (his own id) references his copies, which sit in a folder named after it.
    let on_bob = eventually(&h.bob, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["active"] == true
    })
    .await;
    let bob_album = on_bob["data"]["attributes"]["rules"][0]["values"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(bob_album, album);
    eventually(&h.bob, &format!("/data/{ALBUMS}/{bob_album}"), |a| {
        a["name"] == "Holidays"
    })
    .await;
    let both = |p: &[(String, String)]| p.len() == 2;
    let expected = vec![
        ("beach.jpg".to_string(), md5_b64(b"beach pixels")),
        ("hills.jpg".to_string(), md5_b64(b"hills pixels")),
    ];
    assert_eq!(album_photos(&h.bob, &bob_album, both).await, expected);
    let bob_beach = node_at(&h.bob, "/Shared with me/Holidays/beach.jpg", |_| true).await;
    assert_eq!(
        download(&h.bob, bob_beach["id"].as_str().unwrap()).await,
        b"beach pixels"
    );
    assert_eq!(
        folder_tree(&h.bob, "/Shared with me/Holidays").await.len(),
        2,
        "the photo out of the album stays alice's"
    );

    // Alice adds a photo; bob adds one of his own to his album: each reaches the other.
    let sunset = new_file(&h.alice, &photos, "sunset.jpg", b"sunset pixels").await;
    add_to_album(&h.alice, &sunset, &album).await;
    let his = new_file(&h.bob, ROOT, "from-bob.jpg", b"bob's pixels").await;
    add_to_album(&h.bob, &his, &bob_album).await;
    let four = |p: &[(String, String)]| p.len() == 4;
    let on_alice = album_photos(&h.alice, &album, four).await;
    assert_eq!(album_photos(&h.bob, &bob_album, four).await, on_alice);
    assert!(on_alice.contains(&("from-bob.jpg".to_string(), md5_b64(b"bob's pixels"))));
    // Bob's photo lands in the album's folder on alice's side too; his stays where he put it.
    node_at(&h.alice, "/Shared with me/Holidays/from-bob.jpg", |_| true).await;
    let his_own = h.bob.get(&format!("/files/{his}")).await;
    assert_eq!(attr(&his_own.body["data"], "path"), "/from-bob.jpg");

    // Alice takes hills out of the album: bob's copy leaves it (and his folder). Bob trashes
    // his copy of beach: it leaves alice's album, but her photo stays in her folder.
    take_out_of_album(&h.alice, &hills, &album).await;
    gone(&h.bob, "/Shared with me/Holidays/hills.jpg").await;
    let bob_beach_id = bob_beach["id"].as_str().unwrap();
    assert_eq!(h.bob.delete(&format!("/files/{bob_beach_id}")).await.status, 200);
    let two = |p: &[(String, String)]| p.len() == 2;
    let on_alice = album_photos(&h.alice, &album, two).await;
    assert_eq!(album_photos(&h.bob, &bob_album, two).await, on_alice);
    assert_eq!(
        on_alice,
        [
            ("from-bob.jpg".to_string(), md5_b64(b"bob's pixels")),
            ("sunset.jpg".to_string(), md5_b64(b"sunset pixels")),
        ]
    );
    let kept = h.alice.get(&format!("/files/{beach}")).await;
    assert_eq!(attr(&kept.body["data"], "path"), "/Photos/beach.jpg");
    assert_eq!(attr(&kept.body["data"], "trashed"), false);
}

/// A member of an album sharing reaches only the album's photos: naming the album on a file of
/// the owner's that is not in it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_member_that_lies_reaches_no_photo_out_of_the_album() {
    let mut h = two_hosts().await;
    let album = h
        .alice
        .post(&format!("/data/{ALBUMS}/"), &json!({"name": "Holidays"}))
        .await;
    let album = album.get("id").as_str().unwrap().to_string();
    let private = new_file(&h.alice, ROOT, "private.jpg", b"mine").await;
    let id = share_rules(&h, "Holiday plans", album_rules(&album, "sync")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let member = answer_in_bobs_place(&mut h, &id).await;
    let takeover = json!({"_id": private, "_rev": "9-ffff", "type": "file", "name": "stolen.jpg",
                          "md5sum": md5_b64(b"x"), "size": "1",
                          "referenced_by": [{"type": ALBUMS, "id": album}]});
    let refused: Reply = Api::reply(
        member
            .request(Method::PUT, &format!("/sharings/{id}/io.cozy.files/{private}/metadata"))
            .header("Content-Type", "application/json")
            .body(takeover.to_string()),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let removal = member
        .post(
            &format!("/sharings/{id}/_bulk_docs"),
            &json!({"io.cozy.files": [{"_id": private, "_rev": "9-ffff", "_deleted": true}]}),
        )
        .await;
    assert!(removal.status < 300, "{}", removal.text);
    let kept = h.alice.get(&format!("/files/{private}")).await;
    assert_eq!(attr(&kept.body["data"], "name"), "private.jpg");
    assert_eq!(attr(&kept.body["data"], "trashed"), false);
    assert_eq!(download(&h.alice, &private).await, b"mine");
}
