//! Ending a sharing between two hosts, and the read-only switch: the owner revokes, a recipient
//! leaves (even while the owner's host is down), a member is made read-only and read-write
//! again, and a member that lies reaches nothing the sharing does not share, and nothing at all
//! once revoked.

use cocon_tests::sharing::*;
use serde_json::{Value, json};

/// The sharing's attributes as `api` sees them.
async fn attributes(api: &cocon_tests::Api, id: &str) -> Value {
    let got = api.get(&format!("/sharings/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    got.body["data"]["attributes"].clone()
}

/// A second sharing of another note, accepted by bob, whose note has reached him: what was sent
/// before it had every chance to arrive too.
async fn second_sharing_arrives(h: &mut Hosts) {
    let other = "1f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let put = h
        .alice
        .put(&format!("/data/io.cozy.notes/{other}"), &json!({"title": "barrier"}))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    let rule =
        json!({"title": "Other", "doctype": "io.cozy.notes", "values": [other], "add": "push", "update": "push"});
    let id = share_with(h, "Other", rule).await;
    accept_request(h, &id).await;
    let bob_id = attributes(&h.bob, &id).await["rules"][0]["values"][0]
        .as_str()
        .unwrap()
        .to_string();
    eventually(&h.bob, &format!("/data/io.cozy.notes/{bob_id}"), |d| {
        d["title"] == "barrier"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_owner_revokes_and_both_keep_a_detached_copy() {
    let mut h = two_hosts().await;
    let (id, bob_note) = accepted(&mut h).await;
    let alice_path = format!("/data/io.cozy.notes/{NOTE}");
    let bob_path = format!("/data/io.cozy.notes/{bob_note}");
    let copy = eventually(&h.bob, &bob_path, |d| d["title"] == "Holiday plans").await;

    // Managing a sharing takes what creating it takes: every verb on what it shares.
    let weak_token = h
        .alice_host
        .token(h.alice.domain(), "io.cozy.contacts io.cozy.sharings")
        .await
        .unwrap();
    let weak = h.alice.with_token(Some(&weak_token));
    let refused = weak.delete(&format!("/sharings/{id}/recipients/1")).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let nobody = h
        .alice
        .with_token(None)
        .delete(&format!("/sharings/{id}/recipients"))
        .await;
    assert_eq!(nobody.status, 401, "{}", nobody.text);
    let no_member = h.alice.delete(&format!("/sharings/{id}/recipients/7")).await;
    assert_eq!(no_member.status, 404, "{}", no_member.text);
    let not_an_index = h.alice.delete(&format!("/sharings/{id}/recipients/bob")).await;
    assert_eq!(not_an_index.status, 400, "{}", not_an_index.text);
    // Bob's is a recipient's copy: he leaves it, he does not revoke alice's members.
    let not_owner = h.bob.delete(&format!("/sharings/{id}/recipients/1")).await;
    assert_eq!(not_owner.status, 403, "{}", not_owner.text);
    assert_eq!(attributes(&h.alice, &id).await["members"][1]["status"], "ready");

    let revoked = h.alice.delete(&format!("/sharings/{id}/recipients/1")).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let on_alice = attributes(&h.alice, &id).await;
    assert_eq!(on_alice["members"][1]["status"], "revoked", "{on_alice}");
    assert_eq!(on_alice.get("active"), None, "no member is left: {on_alice}");
    // Bob's host was told at once.
    let on_bob = attributes(&h.bob, &id).await;
    assert_eq!(on_bob.get("active"), None, "{on_bob}");
    assert_eq!(on_bob["members"][1]["status"], "revoked", "{on_bob}");
    let again = h.alice.delete(&format!("/sharings/{id}/recipients/1")).await;
    assert_eq!(again.status, 204, "revoking twice changes nothing: {}", again.text);

    // Both keep their copy and change it on their own; nothing crosses any more.
    let alice_now = h.alice.get(&alice_path).await.body;
    let alice_edit = h
        .alice
        .put(
            &alice_path,
            &json!({"_rev": alice_now["_rev"], "title": "alice's alone"}),
        )
        .await;
    assert_eq!(alice_edit.status, 200, "{}", alice_edit.text);
    let bob_edit = h
        .bob
        .put(&bob_path, &json!({"_rev": copy["_rev"], "title": "bob's alone"}))
        .await;
    assert_eq!(bob_edit.status, 200, "{}", bob_edit.text);
    second_sharing_arrives(&mut h).await;
    assert_eq!(h.bob.get(&bob_path).await.get("title"), "bob's alone");
    assert_eq!(h.alice.get(&alice_path).await.get("title"), "alice's alone");
    assert!(
        h.bob
            .get(&format!("{bob_path}?conflicts=true"))
            .await
            .body
            .get("_conflicts")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_recipient_leaves_while_the_owner_is_down_and_the_owner_learns_it_later() {
    let mut h = two_hosts().await;
    let (id, bob_note) = accepted(&mut h).await;
    let bob_path = format!("/data/io.cozy.notes/{bob_note}");
    eventually(&h.bob, &bob_path, |d| d["title"] == "Holiday plans").await;

    // Bob leaves while alice's host is down: that does not stop him.
    h.alice_host.stop().await.unwrap();
    let left = h.bob.delete(&format!("/sharings/{id}/recipients/self")).await;
    assert_eq!(left.status, 204, "{}", left.text);
    let on_bob = attributes(&h.bob, &id).await;
    assert_eq!(on_bob.get("active"), None, "{on_bob}");
    assert_eq!(
        h.bob.get(&bob_path).await.get("title"),
        "Holiday plans",
        "his copy stays"
    );

    // Alice's host comes back and sends her next edit: bob's host refuses its token and its
    // refresh (the client is gone), so alice's side ends the sharing for bob too.
    h.alice_host = restart(&h.alice_host).await;
    let alice_path = format!("/data/io.cozy.notes/{NOTE}");
    let now = h.alice.get(&alice_path).await.body;
    let edit = h
        .alice
        .put(&alice_path, &json!({"_rev": now["_rev"], "title": "after bob left"}))
        .await;
    assert_eq!(edit.status, 200, "{}", edit.text);
    let on_alice = eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["status"] == "revoked"
    })
    .await;
    assert_eq!(on_alice["data"]["attributes"].get("active"), None, "{on_alice}");
    assert_eq!(h.bob.get(&bob_path).await.get("title"), "Holiday plans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_member_made_read_only_then_read_write_again() {
    let mut h = two_hosts().await;
    let (id, bob_note) = accepted(&mut h).await;
    let alice_path = format!("/data/io.cozy.notes/{NOTE}");
    let bob_path = format!("/data/io.cozy.notes/{bob_note}");
    eventually(&h.bob, &bob_path, |d| d["title"] == "Holiday plans").await;

    let switched = h
        .alice
        .post(&format!("/sharings/{id}/recipients/1/readonly"), &json!({}))
        .await;
    assert_eq!(switched.status, 204, "{}", switched.text);
    assert_eq!(attributes(&h.alice, &id).await["members"][1]["read_only"], true);
    assert_eq!(attributes(&h.bob, &id).await["members"][1]["read_only"], true);
    // Bob's own changes to the shared note are refused on his host, by every write route: they
    // would never reach alice, and his copy would drift from hers unseen.
    let seen = h.bob.get(&bob_path).await.body;
    let put = h
        .bob
        .put(&bob_path, &json!({"_rev": seen["_rev"], "title": "bob's own idea"}))
        .await;
    assert_eq!(put.status, 403, "{}", put.text);
    assert!(put.text.contains("read-only"), "the error says why: {}", put.text);
    let rev = seen["_rev"].as_str().unwrap();
    let deleted = h.bob.delete(&format!("{bob_path}?rev={rev}")).await;
    assert_eq!(deleted.status, 403, "{}", deleted.text);
    let bulk = h
        .bob
        .post(
            "/data/io.cozy.notes/_bulk_docs",
            &json!({"docs": [{"_id": bob_note, "_rev": rev, "title": "in bulk"},
                             {"title": "bob's own note"}]}),
        )
        .await;
    assert_eq!(bulk.status, 201, "{}", bulk.text);
    assert_eq!(bulk.body[0]["error"], "forbidden", "{}", bulk.text);
    assert_eq!(bulk.body[1]["ok"], true, "his other notes are his: {}", bulk.text);
    assert_eq!(
        h.bob.get(&bob_path).await.body["title"],
        "Holiday plans",
        "nothing changed"
    );
    // The owner's changes still reach the read-only member.
    let now = h.alice.get(&alice_path).await.body;
    let edit = h
        .alice
        .put(&alice_path, &json!({"_rev": now["_rev"], "title": "read-only phase"}))
        .await;
    assert_eq!(edit.status, 200, "{}", edit.text);
    let rev = edit.get("rev").as_str().unwrap().to_string();
    eventually(&h.bob, &bob_path, |d| d["_rev"] == rev.as_str()).await;

    // Read-write again: bob's host gets credentials that write, and his edits come back.
    let back = h.alice.delete(&format!("/sharings/{id}/recipients/1/readonly")).await;
    assert_eq!(back.status, 204, "{}", back.text);
    let on_bob = attributes(&h.bob, &id).await;
    assert!(on_bob["members"][1].get("read_only").is_none(), "{on_bob}");
    let bob_edit = h
        .bob
        .put(&bob_path, &json!({"_rev": rev, "title": "bob writes again"}))
        .await;
    assert_eq!(bob_edit.status, 200, "{}", bob_edit.text);
    let bob_rev = bob_edit.get("rev").as_str().unwrap().to_string();
    let on_alice = eventually(&h.alice, &alice_path, |d| d["_rev"] == bob_rev.as_str()).await;
    assert_eq!(on_alice["title"], "bob writes again");
}

/// The state of the request bob's host received, from the link it notified him of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_member_that_lies_reaches_nothing_else_and_nothing_once_revoked() {
    let mut h = two_hosts().await;
    let private = "2f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let path = format!("/data/io.cozy.notes/{private}");
    let put = h.alice.put(&path, &json!({"title": "private", "tags": ["mine"]})).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let rev = put.get("rev").as_str().unwrap().to_string();
    // Alice shares her notes tagged "shared" (none yet) with Bob, both ways.
    let rule = json!({"title": "Plans", "doctype": "io.cozy.notes", "selector": "tags", "values": ["shared"],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let id = share_with(&h, "Holiday plans", rule).await;

    let state = state_of(&request_link(&h).await);
    let member = answer_in_bobs_place(&mut h, &id).await;
    assert_eq!(member.get(&format!("/sharings/{id}")).await.status, 200);

    // Deleting, or rewriting with the shared tag, a note the sharing does not share: refused,
    // and the note is as it was.
    let hash = rev.split_once('-').unwrap().1.to_string();
    let bulk = format!("/sharings/{id}/_bulk_docs");
    let deletion = json!({"io.cozy.notes": [{"_id": private, "_rev": format!("2-{}", "a".repeat(32)), "_deleted": true,
        "_revisions": {"start": 2, "ids": ["a".repeat(32), hash]}}]});
    let refused = member.post(&bulk, &deletion).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let takeover = json!({"io.cozy.notes": [{"_id": private, "_rev": format!("2-{}", "b".repeat(32)),
        "title": "mine now", "tags": ["shared"], "_revisions": {"start": 2, "ids": ["b".repeat(32), hash]}}]});
    let refused = member.post(&bulk, &takeover).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let note = h.alice.get(&format!("{path}?conflicts=true")).await;
    assert_eq!(note.get("title"), "private", "{}", note.text);
    assert_eq!(note.get("_rev"), rev.as_str());
    assert!(note.body.get("_conflicts").is_none(), "{}", note.text);

    // Revoked, its token opens nothing: not the sharing, not the replicator, not the notices.
    let revoked = h.alice.delete(&format!("/sharings/{id}/recipients")).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let diff = json!({format!("io.cozy.notes/{private}"): [rev]});
    let shared_doc = json!({"io.cozy.notes": [{"_id": "3f1e2d3c4b5a69788796a5b4c3d2e1f0", "_rev": format!("1-{}", "c".repeat(32)),
        "tags": ["shared"], "_revisions": {"start": 1, "ids": ["c".repeat(32)]}}]});
    for (what, status) in [
        ("read", member.get(&format!("/sharings/{id}")).await.status),
        (
            "revs_diff",
            member.post(&format!("/sharings/{id}/_revs_diff"), &diff).await.status,
        ),
        ("bulk_docs", member.post(&bulk, &shared_doc).await.status),
        ("leave", member.delete(&format!("/sharings/{id}/answer")).await.status),
        (
            "read-only",
            member
                .post(&format!("/sharings/{id}/recipients/self/readonly"), &json!({}))
                .await
                .status,
        ),
    ] {
        assert!(status == 401 || status == 403, "{what}: {status}");
    }
    let all = h.alice.get("/data/io.cozy.notes/_all_docs").await;
    assert_eq!(all.get("total_rows"), 1, "{}", all.text);
    // The invitation's state is dead too.
    let mut visitor = cocon_tests::Browser::new(&h.alice_host.http, h.alice.domain());
    let page = visitor.get(&format!("/sharings/{id}/discovery?state={state}")).await;
    assert_eq!(page.status, 404, "{}", page.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_news_counts_the_requests_waiting_for_an_answer() {
    let mut h = two_hosts().await;
    let news = |api: &cocon_tests::Api| {
        let api = api.clone();
        async move {
            let got = api.get("/sharings/news").await;
            assert_eq!(got.status, 200, "{}", got.text);
            got.body["meta"]["count"].as_u64().unwrap()
        }
    };
    assert_eq!(news(&h.bob).await, 0);
    let sharing = share_note(&h).await;
    let id = sharing["id"].as_str().unwrap().to_string();
    assert_eq!(news(&h.bob).await, 1, "the request waits");
    assert_eq!(news(&h.alice).await, 0, "the owner's own sharing is no news");
    assert_eq!(h.bob.with_token(None).get("/sharings/news").await.status, 401);
    accept_request(&mut h, &id).await;
    assert_eq!(news(&h.bob).await, 0, "answered");
}
