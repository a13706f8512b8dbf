//! Sharing a folder between two hosts: it appears on the recipient under "Shared with me" with
//! its subfolders and the files' contents byte for byte; renames, new contents, moves out and
//! the trash reach the other side, and the recipient's own additions come back.

use cocon_tests::drive::{ROOT, download, md5_b64, new_dir, new_file};
use cocon_tests::sharing::*;
use cocon_tests::{Api, Reply};
use reqwest::Method;
use serde_json::{Value, json};

const INBOX: &str = "io.cozy.files.shared-with-me-dir";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_shared_folder_replicates_both_ways_with_its_contents() {
    let mut h = two_hosts().await;
    let holiday = new_dir(&h.alice, ROOT, "Holiday").await;
    let photos = new_dir(&h.alice, &holiday, "Photos").await;
    let plan = new_file(&h.alice, &holiday, "plan.txt", b"Day 1: the beach").await;
    let beach: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    new_file(&h.alice, &photos, "beach.jpg", &beach).await;
    let private = new_file(&h.alice, ROOT, "private.txt", b"not shared").await;

    let rule = json!({"title": "Holiday", "doctype": "io.cozy.files", "values": [holiday],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let id = share_with(&h, "Holiday", rule).await;
    accept_request(&mut h, &id).await;

    // On bob's host: "Shared with me/Holiday" with its tree and the contents, byte for byte.
    let inbox = eventually(&h.bob, &format!("/files/{INBOX}"), |n| n["data"]["id"] == INBOX).await;
    let inbox_path = attr(&inbox["data"], "path").as_str().unwrap().to_string();
    assert_eq!(inbox_path, "/Shared with me");
    let copy = node_at(&h.bob, "/Shared with me/Holiday/Photos/beach.jpg", |_| true).await;
    assert_eq!(attr(&copy, "md5sum"), md5_b64(&beach).as_str());
    assert_eq!(download(&h.bob, copy["id"].as_str().unwrap()).await, beach);
    let bob_plan = node_at(&h.bob, "/Shared with me/Holiday/plan.txt", |_| true).await;
    assert_ne!(bob_plan["id"], plan.as_str(), "bob's ids are his own");
    assert_eq!(
        download(&h.bob, bob_plan["id"].as_str().unwrap()).await,
        b"Day 1: the beach"
    );
    let bob_root = h.bob.get(&format!("/files/{ROOT}")).await;
    assert!(!bob_root.text.contains("private.txt"), "only the folder is shared");

    // Alice renames and rewrites plan.txt: bob's copy follows.
    let renamed = patch(&h.alice, &plan, json!({"name": "plans.txt"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    let rewritten = Api::reply(
        h.alice
            .request(Method::PUT, &format!("/files/{plan}"))
            .body(b"Day 1: the beach. Day 2: the hills".to_vec()),
    )
    .await;
    assert_eq!(rewritten.status, 200, "{}", rewritten.text);
    let followed = node_at(&h.bob, "/Shared with me/Holiday/plans.txt", |n| {
        attr(n, "size") == "34" || attr(n, "size") == 34
    })
    .await;
    assert_eq!(followed["id"], bob_plan["id"], "the same file, renamed");
    assert_eq!(
        download(&h.bob, followed["id"].as_str().unwrap()).await,
        b"Day 1: the beach. Day 2: the hills"
    );

    // Bob adds a file and a folder in his copy: they reach alice's folder.
    let bob_holiday = node_at(&h.bob, "/Shared with me/Holiday", |_| true).await;
    let bob_dir = new_dir(&h.bob, bob_holiday["id"].as_str().unwrap(), "From Bob").await;
    new_file(&h.bob, &bob_dir, "tickets.pdf", b"%PDF tickets").await;
    let tickets = node_at(&h.alice, "/Holiday/From Bob/tickets.pdf", |_| true).await;
    assert_eq!(
        download(&h.alice, tickets["id"].as_str().unwrap()).await,
        b"%PDF tickets"
    );

    // Alice moves a file out of the folder and trashes Photos: both leave bob's copy.
    let moved = patch(&h.alice, &plan, json!({"dir_id": ROOT})).await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    let trashed = h.alice.delete(&format!("/files/{photos}")).await;
    assert_eq!(trashed.status, 200, "{}", trashed.text);
    gone(&h.bob, "/Shared with me/Holiday/plans.txt").await;
    gone(&h.bob, "/Shared with me/Holiday/Photos").await;
    // Nothing else moved: bob's folder and alice's private file stay where they are.
    node_at(&h.bob, "/Shared with me/Holiday/From Bob/tickets.pdf", |_| true).await;
    assert_eq!(h.alice.get(&format!("/files/{private}")).await.status, 200);

    // Both copies hold the same tree, node by node.
    let tree = converged(&h, "/Holiday", "/Shared with me/Holiday", |t| t.len() == 2).await;
    assert_eq!(
        tree,
        [
            ("/From Bob".to_string(), "dir".to_string()),
            ("/From Bob/tickets.pdf".to_string(), md5_b64(b"%PDF tickets")),
        ]
    );
    // Alice's sender counts what it sent once its round is recorded, and ends without error.
    eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        let sync = &s["data"]["attributes"]["members"][1]["sync"];
        sync["sent"].as_u64() >= Some(5) && sync.get("last_error").is_none()
    })
    .await;
}

/// A member's calls reach only the shared folder: a node elsewhere on the owner's host cannot
/// be rewritten, trashed, nor pulled in, and what a member sends lands only inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_member_that_lies_reaches_nothing_outside_the_shared_folder() {
    let mut h = two_hosts().await;
    let holiday = new_dir(&h.alice, ROOT, "Holiday").await;
    let private = new_file(&h.alice, ROOT, "private.txt", b"mine").await;
    let elsewhere = new_dir(&h.alice, ROOT, "Elsewhere").await;
    let rule = json!({"title": "Holiday", "doctype": "io.cozy.files", "values": [holiday],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let id = share_with(&h, "Holiday plans", rule).await;
    let member = answer_in_bobs_place(&mut h, &id).await;
    let put_metadata = |target: String, doc: Value| {
        let member = member.clone();
        let id = id.clone();
        async move {
            Api::reply(
                member
                    .request(Method::PUT, &format!("/sharings/{id}/io.cozy.files/{target}/metadata"))
                    .header("Content-Type", "application/json")
                    .body(doc.to_string()),
            )
            .await
        }
    };

    // Rewriting a file outside the folder, or moving it in: refused.
    let takeover = json!({"_id": private, "_rev": "9-ffff", "type": "file", "name": "stolen.txt",
                          "md5sum": md5_b64(b"x"), "size": "1"});
    let refused = put_metadata(private.clone(), takeover).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    // A new file whose parent is outside the folder: refused.
    let outside = json!({"_id": "5f1e2d3c4b5a69788796a5b4c3d2e1f0", "_rev": "1-aaaa", "type": "file",
                         "name": "planted.txt", "dir_id": elsewhere, "md5sum": md5_b64(b"x"), "size": "1"});
    let refused = put_metadata("5f1e2d3c4b5a69788796a5b4c3d2e1f0".into(), outside).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    // Trashing it through _bulk_docs: nothing happens to it.
    let bulk = member
        .post(
            &format!("/sharings/{id}/_bulk_docs"),
            &json!({"io.cozy.files": [{"_id": private, "_rev": "9-ffff", "_deleted": true}]}),
        )
        .await;
    assert!(bulk.status < 300, "{}", bulk.text);
    // A key never given, or a body whose id is not the route's: refused.
    let no_key = Api::reply(
        member
            .request(Method::PUT, &format!("/sharings/{id}/io.cozy.files/not-a-key"))
            .body(b"x".to_vec()),
    )
    .await;
    assert_eq!(no_key.status, 404, "{}", no_key.text);
    let kept = h.alice.get(&format!("/files/{private}")).await;
    assert_eq!(kept.status, 200);
    assert_eq!(attr(&kept.body["data"], "name"), "private.txt");
    assert_eq!(attr(&kept.body["data"], "dir_id"), ROOT);
    assert_eq!(attr(&kept.body["data"], "trashed"), false);

    // What it sends inside the folder lands there, its content checked against its MD5.
    let new_id = "6f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let doc = json!({"_id": new_id, "_rev": "1-bbbb", "type": "file", "name": "note.txt",
                     "md5sum": md5_b64(b"hello"), "size": "5", "mime": "text/plain"});
    let asked = put_metadata(new_id.into(), doc).await;
    assert_eq!(asked.status, 200, "{}", asked.text);
    let key = asked.get("key").as_str().unwrap().to_string();
    let wrong = Api::reply(
        member
            .request(Method::PUT, &format!("/sharings/{id}/io.cozy.files/{key}"))
            .body(b"HELLO".to_vec()),
    )
    .await;
    assert_eq!(
        wrong.status, 412,
        "a content that is not the announced one: {}",
        wrong.text
    );
    assert_eq!(h.alice.get("/files/metadata?Path=/Holiday/note.txt").await.status, 404);
    // A key serves once, even when its content failed.
    let again = Api::reply(
        member
            .request(Method::PUT, &format!("/sharings/{id}/io.cozy.files/{key}"))
            .body(b"hello".to_vec()),
    )
    .await;
    assert_eq!(again.status, 404, "{}", again.text);
    let asked = put_metadata(
        new_id.into(),
        json!({"_id": new_id, "_rev": "1-bbbb", "type": "file", "name": "note.txt",
               "md5sum": md5_b64(b"hello"), "size": "5", "mime": "text/plain"}),
    )
    .await;
    let key = asked.get("key").as_str().unwrap().to_string();
    let stored = Api::reply(
        member
            .request(Method::PUT, &format!("/sharings/{id}/io.cozy.files/{key}"))
            .body(b"hello".to_vec()),
    )
    .await;
    assert_eq!(stored.status, 204, "{}", stored.text);
    let note = h.alice.get("/files/metadata?Path=/Holiday/note.txt").await;
    assert_eq!(note.status, 200, "{}", note.text);
    assert_eq!(download(&h.alice, new_id).await, b"hello");
}

/// Both sides rewrite the same file while the other is down: once both are back, both hold
/// the same winner under the file's name and the losing content as a copy beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_contents_written_on_both_sides_apart_converge_and_the_loser_is_kept() {
    let mut h = two_hosts().await;
    let _ = shared_holiday(&mut h).await;
    let plan = node_at(&h.alice, "/Holiday/plan.txt", |_| true).await;
    let plan = plan["id"].as_str().unwrap().to_string();
    let bob_plan = node_at(&h.bob, "/Shared with me/Holiday/plan.txt", |_| true).await;
    let bob_plan = bob_plan["id"].as_str().unwrap().to_string();

    h.bob_host.stop().await.unwrap();
    rewrite(&h.alice, &plan, b"alice's v2").await;
    h.alice_host.stop().await.unwrap();
    h.bob_host = restart(&h.bob_host).await;
    rewrite(&h.bob, &bob_plan, b"bob's v2").await;
    h.alice_host = restart(&h.alice_host).await;

    let mut both = vec![md5_b64(b"alice's v2"), md5_b64(b"bob's v2")];
    both.sort();
    let tree = converged(&h, "/Holiday", "/Shared with me/Holiday", |t| {
        let mut sums: Vec<String> = t.iter().map(|(_, m)| m.clone()).collect();
        sums.sort();
        sums == both
    })
    .await;
    let names: Vec<&str> = tree.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["/plan (conflict).txt", "/plan.txt"], "{tree:?}");
}

/// The recipient puts the shared folder in the trash: they leave the sharing (the owner's
/// host learns it), and the owner's folder is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_trashing_the_shared_folder_leaves_the_sharing() {
    let mut h = two_hosts().await;
    let (id, _) = shared_holiday(&mut h).await;
    let folder = node_at(&h.bob, "/Shared with me/Holiday", |_| true).await;
    let trashed = h
        .bob
        .delete(&format!("/files/{}", folder["id"].as_str().unwrap()))
        .await;
    assert_eq!(trashed.status, 200, "{}", trashed.text);

    let state = eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["status"] == "revoked"
    })
    .await;
    assert_eq!(state["data"]["attributes"]["active"], Value::Null, "{state}");
    // Bob's host ends it on its side once the owner's host was told.
    let on_bob = eventually(&h.bob, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"].get("active").is_none()
    })
    .await;
    assert_eq!(
        on_bob["data"]["attributes"]["members"][1]["status"], "revoked",
        "{on_bob}"
    );
    let kept = h.alice.get("/files/metadata?Path=/Holiday/plan.txt").await;
    assert_eq!(kept.status, 200, "the owner's folder stays: {}", kept.text);
}

/// While the owner's files first come in, the recipient's apps see their count on the realtime
/// feed (`io.cozy.sharings.initial_sync` `UPDATED {_id, count}`), then the end (`DELETED`), as
/// cozy-stack publishes them; the sharing says `initial_sync` and the number of files to come
/// meanwhile, and not after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_initial_sync_shows_its_progress_then_its_end_on_the_recipients_realtime_feed() {
    const FILES: usize = 40;
    let mut h = two_hosts().await;
    let holiday = new_dir(&h.alice, ROOT, "Holiday").await;
    for n in 0..FILES {
        new_file(
            &h.alice,
            &holiday,
            &format!("photo-{n:02}.jpg"),
            format!("photo {n}").as_bytes(),
        )
        .await;
    }
    let rule = json!({"title": "Holiday", "doctype": "io.cozy.files", "values": [holiday],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let id = share_with(&h, "Holiday", rule).await;
    let token = h.bob.token().expect("bob's token").to_string();
    let mut socket = cocon_tests::Socket::authed(&h.bob_host.http, h.bob.domain(), &token)
        .await
        .unwrap();
    let refused = socket.subscribe("io.cozy.sharings.initial_sync", None).await.unwrap();
    assert_eq!(refused, None, "anyone may follow an initial sync");
    // The request says how many files will come, as cozy-stack's does.
    let request = eventually(&h.bob, &format!("/sharings/{id}"), |s| s["data"]["id"] == id.as_str()).await;
    let attributes = &request["data"]["attributes"];
    assert_eq!(attributes["initial_number_of_files_to_sync"], FILES, "{request}");
    accept_request(&mut h, &id).await;

    let mut counts = Vec::new();
    loop {
        let frame = socket.json(std::time::Duration::from_secs(60)).await.unwrap();
        assert_eq!(frame["payload"]["type"], "io.cozy.sharings.initial_sync", "{frame}");
        assert_eq!(frame["payload"]["id"], id.as_str(), "{frame}");
        assert_eq!(frame["payload"]["doc"]["_id"], id.as_str(), "{frame}");
        match frame["event"].as_str() {
            Some("UPDATED") => counts.push(frame["payload"]["doc"]["count"].as_u64().expect("a count")),
            Some("DELETED") => break,
            other => panic!("an unexpected event {other:?}: {frame}"),
        }
    }
    assert!(!counts.is_empty(), "the progress shows before the end");
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "the count grows: {counts:?}");
    assert!(counts[0] >= 1 && *counts.last().unwrap() <= FILES as u64, "{counts:?}");
    // The end comes once every file is on bob's host.
    let copy = node_at(&h.bob, "/Shared with me/Holiday", |_| true).await;
    let listed = h
        .bob
        .get(&format!("/files/{}?page[limit]=1", copy["id"].as_str().unwrap()))
        .await;
    assert_eq!(listed.body["meta"]["count"], FILES, "{}", listed.text);
    let sharing = h.bob.get(&format!("/sharings/{id}")).await;
    let attributes = &sharing.body["data"]["attributes"];
    assert_eq!(attributes.get("initial_sync"), None, "{}", sharing.text);
    assert_eq!(
        attributes.get("initial_number_of_files_to_sync"),
        None,
        "{}",
        sharing.text
    );
}

/// The network between the hosts breaks in the middle of a file (a proxy cuts it once 8 MB of a
/// 24 MB file went through), and both sides rewrite the same file while it is down: nothing
/// half-sent shows on the recipient, and once the network is back both copies hold the same
/// tree, the large file whole and once, both rewrites kept (the winner and the loser's copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_partition_mid_file_converges_with_nothing_lost_or_doubled() {
    let (mut h, proxy) = two_hosts_behind_proxy().await;
    let (id, holiday) = shared_holiday(&mut h).await;
    let plan = node_at(&h.alice, "/Holiday/plan.txt", |_| true).await;
    let plan = plan["id"].as_str().unwrap().to_string();
    let bob_plan = node_at(&h.bob, "/Shared with me/Holiday/plan.txt", |_| true).await;
    let bob_plan = bob_plan["id"].as_str().unwrap().to_string();

    proxy.cut_after(8 << 20);
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 253) as u8).collect();
    new_file(&h.alice, &holiday, "video.mp4", &big).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy.is_cut() {
        assert!(
            std::time::Instant::now() < deadline,
            "the file never went through the proxy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["sync"]["last_error"].is_string()
    })
    .await;
    let half = h
        .bob
        .get("/files/metadata?Path=/Shared%20with%20me/Holiday/video.mp4")
        .await;
    assert_eq!(half.status, 404, "nothing half-sent shows: {}", half.text);

    // Both rewrite plan.txt while alice's host cannot reach bob's.
    rewrite(&h.alice, &plan, b"alice, cut off").await;
    rewrite(&h.bob, &bob_plan, b"bob, cut off").await;
    proxy.restore();

    let mut rewrites = vec![md5_b64(b"alice, cut off"), md5_b64(b"bob, cut off")];
    rewrites.sort();
    let video = md5_b64(&big);
    let tree = converged(&h, "/Holiday", "/Shared with me/Holiday", |t| {
        let mut plans: Vec<String> = t
            .iter()
            .filter(|(n, _)| n.starts_with("/plan"))
            .map(|(_, m)| m.clone())
            .collect();
        plans.sort();
        plans == rewrites && t.iter().any(|(_, m)| *m == video)
    })
    .await;
    let names: Vec<&str> = tree.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["/plan (conflict).txt", "/plan.txt", "/video.mp4"], "{tree:?}");
}

/// A folder shared read-only: the recipient cannot change what it holds on his own host, by
/// any route (the files API, WebDAV, a move into it), so his copy never drifts from the owner's
/// unseen; the owner's changes still reach him, and his own files stay his to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_read_only_folder_refuses_the_recipients_changes() {
    use cocon_tests::drive::{mkdir, upload};
    let mut h = two_hosts().await;
    let holiday = new_dir(&h.alice, ROOT, "Holiday").await;
    let plan = new_file(&h.alice, &holiday, "plan.txt", b"v1").await;
    // The owner's changes go out; nothing syncs back: every recipient is read-only.
    let rule = json!({"title": "Holiday", "doctype": "io.cozy.files", "values": [holiday],
                      "add": "push", "update": "push", "remove": "push"});
    let id = share_with(&h, "Holiday", rule).await;
    accept_request(&mut h, &id).await;
    converged(&h, "/Holiday", "/Shared with me/Holiday", |t| t.len() == 1).await;
    let folder = node_at(&h.bob, "/Shared with me/Holiday", |_| true).await;
    let folder_id = folder["id"].as_str().unwrap().to_string();
    let bob_plan = node_at(&h.bob, "/Shared with me/Holiday/plan.txt", |_| true).await;
    let bob_plan_id = bob_plan["id"].as_str().unwrap().to_string();

    let refused = |what: &str, r: &Reply| {
        assert_eq!(r.status, 403, "{what}: {}", r.text);
        assert!(r.text.contains("read-only"), "{what} says why: {}", r.text);
    };
    refused("an upload into it", &upload(&h.bob, &folder_id, "mine.txt", b"x").await);
    refused("a new folder in it", &mkdir(&h.bob, &folder_id, "Mine").await);
    let new_content = Api::reply(
        h.bob
            .request(Method::PUT, &format!("/files/{bob_plan_id}"))
            .body(b"bob's plan".to_vec()),
    )
    .await;
    refused("new content", &new_content);
    refused(
        "a rename",
        &patch(&h.bob, &bob_plan_id, json!({"name": "mine.txt"})).await,
    );
    refused("the trash", &h.bob.delete(&format!("/files/{bob_plan_id}")).await);
    let own = new_file(&h.bob, ROOT, "own.txt", b"bob's own").await;
    refused(
        "a move into it",
        &patch(&h.bob, &own, json!({"dir_id": folder_id})).await,
    );
    let dav = Api::reply(
        h.bob
            .request(Method::PUT, "/dav/files/Shared%20with%20me/Holiday/dav.txt")
            .body(b"through WebDAV".to_vec()),
    )
    .await;
    assert_eq!(dav.status, 403, "a WebDAV upload into it: {}", dav.text);

    // His own files are his: changed at will; the shared folder itself he may rename.
    let renamed = patch(&h.bob, &own, json!({"name": "own2.txt"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    let folder_renamed = patch(&h.bob, &folder_id, json!({"name": "Holiday (Alice)"})).await;
    assert_eq!(folder_renamed.status, 200, "{}", folder_renamed.text);

    // The owner's changes still reach him, and both copies hold the same tree.
    rewrite(&h.alice, &plan, b"v2, from alice").await;
    let tree = converged(&h, "/Holiday", "/Shared with me/Holiday (Alice)", |t| {
        t.iter().any(|(_, md5)| md5 == &md5_b64(b"v2, from alice"))
    })
    .await;
    assert_eq!(tree.len(), 1, "nothing of bob's got in: {tree:?}");
    assert_eq!(download(&h.bob, &bob_plan_id).await, b"v2, from alice");

    // Read-only or not, putting the folder in the trash leaves the sharing.
    let trashed = h.bob.delete(&format!("/files/{folder_id}")).await;
    assert_eq!(trashed.status, 200, "{}", trashed.text);
    eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["status"] == "revoked"
    })
    .await;
}
