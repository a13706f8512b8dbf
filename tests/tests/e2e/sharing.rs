//! Cozy-to-cozy sharing between two hosts: two `cocon serve` processes, each with its own data
//! directory and port, alice on one (`alice.localhost:PORT`) and bob on the other. Alice's app
//! shares a note with her contact Bob, whose Cozy it knows: bob's host gets the request and tells
//! him; he accepts on his consent page; both hosts then hold credentials for each other, scoped
//! to the sharing, and show it ready.

use cocon_tests::sharing::*;
use cocon_tests::{Api, Browser, SmtpServer, hidden_field, text_of};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_two_hosts_set_a_sharing_up_with_consent() {
    let mut h = two_hosts().await;
    let sharing = share_note(&h).await;
    let id = sharing["id"].as_str().unwrap().to_string();
    let attrs = &sharing["attributes"];
    assert_eq!(attrs["owner"], true);
    assert_eq!(attrs["members"][0]["status"], "owner");
    assert_eq!(attrs["members"][0]["instance"], h.alice_origin.as_str());
    assert_eq!(
        attrs["members"][1]["status"], "pending",
        "bob's host got the request: {sharing}"
    );
    assert!(sharing.get("credentials").is_none() && attrs.get("credentials").is_none());

    // Bob's host kept the request, not active, with the note's id turned into his.
    let link = request_link(&h).await;
    let consent_path = path_of(&link, &h.bob_origin);
    assert!(consent_path.starts_with(&format!("/auth/authorize/sharing?sharing_id={id}&state=")));

    // Signed out, the consent page sends him to sign in first.
    let mut stranger = Browser::new(&h.bob_host.http, h.bob_person_domain());
    let page = stranger.get(&consent_path).await;
    assert_eq!(page.status, 303);
    assert!(page.header("location").unwrap().starts_with("/auth/login?redirect="));

    let page = h.bob_person.get(&consent_path).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("Holiday plans") && page.text.contains("Alice"),
        "{}",
        page.text
    );
    let csrf = hidden_field(&page.text, "csrf_token").unwrap();
    let state = hidden_field(&page.text, "state").unwrap();

    // A forged form (no CSRF token) changes nothing.
    let forged = h
        .bob_person
        .post_form(
            "/auth/authorize/sharing",
            &[("sharing_id", &id), ("state", &state), ("approve", "1")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text);

    let accepted = accept(&mut h.bob_person, &csrf, &id, &state).await;
    assert_eq!(accepted.status, 303, "{}", accepted.text);
    assert_eq!(
        accepted.header("location").unwrap(),
        format!("{}/?sharing={id}", h.bob_origin)
    );

    // Both sides show it ready.
    let on_alice = h.alice.get(&format!("/sharings/{id}")).await;
    assert_eq!(on_alice.status, 200, "{}", on_alice.text);
    assert_eq!(on_alice.body["data"]["attributes"]["members"][1]["status"], "ready");
    assert_eq!(on_alice.body["data"]["attributes"]["members"][1]["public_name"], "Bob");
    assert_eq!(on_alice.body["data"]["attributes"]["active"], true);
    let on_bob = h.bob.get(&format!("/sharings/{id}")).await;
    assert_eq!(on_bob.status, 200, "{}", on_bob.text);
    let bob_attrs = &on_bob.body["data"]["attributes"];
    assert_eq!(bob_attrs["active"], true);
    assert!(bob_attrs.get("owner").is_none(), "{bob_attrs}");
    assert_eq!(bob_attrs["members"][0]["instance"], h.alice_origin.as_str());
    let bob_note_id = bob_attrs["rules"][0]["values"][0].as_str().unwrap();
    assert_eq!(bob_note_id.len(), NOTE.len());
    assert_ne!(bob_note_id, NOTE, "ids are turned into the recipient's");
    assert!(!on_bob.text.contains("access_token") && !on_bob.text.contains(&state));

    // Each host made an OAuth client for the other, scoped to this sharing.
    let clients = h.bob_person.get("/settings/clients").await;
    assert_eq!(clients.status, 200, "{}", clients.text);
    assert!(clients.text.contains("Sharing Alice"), "{}", clients.text);

    // The listing by doctype, for an app reading notes.
    let listed = h.alice.get("/sharings/doctype/io.cozy.notes").await;
    assert_eq!(listed.get("meta")["count"], 1, "{}", listed.text);

    // The request cannot be played again, nor the answer.
    let again = accept(&mut h.bob_person, &csrf, &id, &state).await;
    assert_eq!(again.status, 303, "accepting twice only sends the person on");
    let replayed = h
        .alice
        .with_token(None)
        .post(
            &format!("/sharings/{id}/answer"),
            &json!({"data": {"type": "io.cozy.sharings.answer", "id": id, "attributes": {
                "state": state, "client": {"client_id": "x"}, "access_token": {"access_token": "y"}}}}),
        )
        .await;
    assert_eq!(replayed.status, 409, "{}", replayed.text);
    let forged = h
        .alice
        .with_token(None)
        .post(
            &format!("/sharings/{id}/answer"),
            &json!({"data": {"attributes": {"state": "forged", "client": {}, "access_token": {}}}}),
        )
        .await;
    assert_eq!(forged.status, 404, "{}", forged.text);
    let _ = &h.alice_host;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sharing_routes_check_their_callers_and_input() {
    let h = two_hosts().await;
    // Creating needs every verb on what is shared: a token for contacts only cannot share notes.
    let contacts_only = h.alice_host.token(h.alice.domain(), "io.cozy.contacts").await.unwrap();
    let body = json!({"data": {"type": "io.cozy.sharings", "attributes": {
        "rules": [{"title": "x", "doctype": "io.cozy.notes", "values": [NOTE]}]},
        "relationships": {"recipients": {"data": []}}}});
    let denied = h.alice.with_token(Some(&contacts_only)).post("/sharings/", &body).await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    // Bad rules and no recipients are refused.
    for bad in [
        json!({"data": {"attributes": {"rules": []}}}),
        json!({"data": {"attributes": {"rules": [{"title": "x", "doctype": "io.cozy.notes", "values": [NOTE]}]}}}),
        json!({"data": {"attributes": {"rules": [{"title": "x", "doctype": "io.cozy.notes", "values": ["a", "b"]}]},
               "relationships": {"recipients": {"data": [{"id": "nope", "type": "io.cozy.contacts"}]}}}}),
    ] {
        let res = h.alice.post("/sharings/", &bad).await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
    }
    assert_eq!(h.alice.raw(Method::POST, "/sharings/", b"{not json").await.status, 400);

    // A stranger's request must look like a sharing from its owner.
    let put = h
        .bob
        .with_token(None)
        .send(
            Method::PUT,
            "/sharings/abc",
            Some(br#"{"data": {"attributes": {"rules": []}}}"#.to_vec()),
        )
        .await;
    assert_eq!(put.status, 400, "{}", put.text);
    // Unknown sharings are 404, for readers and on the consent page.
    assert_eq!(h.alice.get("/sharings/nope").await.status, 404);
    assert_eq!(
        h.bob.get("/sharings/doctype/io.cozy.notes").await.get("meta")["count"],
        0
    );
    let _ = (&h.bob_origin, &h.alice_origin, &h.bob_host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_recipient_the_owner_does_not_know_gives_their_address_from_the_mailed_link() {
    let smtp = SmtpServer::start().await.unwrap();
    let mut h = two_hosts_with(Some(smtp.port)).await;
    let created = share_by_mail(&h, "read_only_recipients").await;
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    let member = &created.body["data"]["attributes"]["members"][1];
    assert_eq!(member["status"], "pending", "the invitation is mailed: {member}");
    assert_eq!(member["read_only"], true);

    // The mail names the sharing and links to the discovery page on alice's host.
    let mails = smtp.wait_for(1).await;
    assert!(mails[0].contains("To: Bob <bob@example.org>"), "{}", mails[0]);
    let (subject, text) = text_of(&mails[0]);
    assert!(subject.contains("Holiday plans"), "{subject}");
    let discovery = path_of(&link_in(&text, &h.alice_origin), &h.alice_origin);

    let mut visitor = Browser::new(&h.alice_host.http, h.alice.domain());
    let page = visitor.get(&discovery).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("name=\"url\""), "{}", page.text);
    let state = hidden_field(&page.text, "state").unwrap();
    let form_path = format!("/sharings/{id}/discovery");
    // An e-mail address instead of a Cozy's: the form again, saying why.
    let wrong = visitor
        .post_form(&form_path, &[("state", &state), ("url", "bob@example.org")])
        .await;
    assert_eq!(wrong.status, 412, "{}", wrong.text);
    assert!(wrong.text.contains("not an e-mail address"), "{}", wrong.text);
    let stale = visitor
        .post_form(&form_path, &[("state", "forged"), ("url", &h.bob_origin)])
        .await;
    assert_eq!(stale.status, 412, "a forged state registers nothing: {}", stale.text);

    // His address: the request goes to his host, and he goes to his consent page.
    let sent = visitor
        .post_form(&form_path, &[("state", &state), ("url", &h.bob_origin)])
        .await;
    assert_eq!(sent.status, 303, "{}", sent.text);
    let consent = path_of(sent.header("location").unwrap(), &h.bob_origin);
    let page = h.bob_person.get(&consent).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("only they change it"),
        "read-only rules: {}",
        page.text
    );
    let csrf = hidden_field(&page.text, "csrf_token").unwrap();
    let accepted = accept(&mut h.bob_person, &csrf, &id, &state).await;
    assert_eq!(accepted.status, 303, "{}", accepted.text);
    let on_alice = h.alice.get(&format!("/sharings/{id}")).await;
    let member = &on_alice.body["data"]["attributes"]["members"][1];
    assert_eq!(member["status"], "ready", "{}", on_alice.text);
    assert_eq!(member["instance"], h.bob_origin.as_str());

    // cozy's JSON flavour of the discovery form, once the member is known.
    let json = visitor
        .send(
            Method::POST,
            &form_path,
            &[("Accept", "application/json")],
            Some(&[("state", state.as_str())]),
            None,
        )
        .await;
    assert_eq!(json.status, 200, "{}", json.text);
    assert_eq!(json.json()["email"], "bob@example.org");
    assert!(json.json()["redirect"].as_str().unwrap().starts_with(&h.bob_origin));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_shared_documents_replicate_both_ways_under_their_own_ids() {
    let mut h = two_hosts().await;
    let (id, bob_note) = accepted(&mut h).await;
    let alice_path = format!("/data/io.cozy.notes/{NOTE}");
    let bob_path = format!("/data/io.cozy.notes/{bob_note}");

    // The owner's note reaches bob under bob's id, with its revision and history.
    let original = h.alice.get(&alice_path).await.body;
    let on_bob = eventually(&h.bob, &bob_path, |d| d["title"] == "Holiday plans").await;
    assert_eq!(on_bob["_rev"], original["_rev"]);

    // The owner edits: bob follows.
    let edited = h
        .alice
        .put(
            &alice_path,
            &json!({"_rev": original["_rev"], "title": "Holiday plans, v2"}),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.text);
    let rev2 = edited.get("rev").as_str().unwrap().to_string();
    eventually(&h.bob, &bob_path, |d| d["_rev"] == rev2.as_str()).await;

    // Bob edits (the rules sync): alice follows.
    let bob_edit = h
        .bob
        .put(
            &bob_path,
            &json!({"_rev": rev2, "title": "Holiday plans, bob's", "days": 12}),
        )
        .await;
    assert_eq!(bob_edit.status, 200, "{}", bob_edit.text);
    let rev3 = bob_edit.get("rev").as_str().unwrap().to_string();
    let back = eventually(&h.alice, &alice_path, |d| d["_rev"] == rev3.as_str()).await;
    assert_eq!(back["days"], 12);
    assert_eq!(back["title"], "Holiday plans, bob's");

    // A document no rule shares stays home.
    h.alice
        .put("/data/io.cozy.notes/private", &json!({"secret": true}))
        .await;
    let status = eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        !s["data"]["attributes"]["members"][1]["sync"]["last_success"].is_null()
    })
    .await;
    assert_eq!(
        status["data"]["attributes"]["members"][1]["sync"]["last_error"],
        Value::Null,
        "{status}"
    );
    let notes = h.bob.get("/data/io.cozy.notes/_all_docs").await;
    assert_eq!(notes.get("total_rows"), 1, "{}", notes.text);

    // The replicator's routes take only the sharing's own token: not an app's, not a stranger's.
    let forged = json!({"io.cozy.notes": [{"_id": bob_note, "_rev": "9-f", "title": "forged"}]});
    let app = h.bob.post(&format!("/sharings/{id}/_bulk_docs"), &forged).await;
    assert_eq!(app.status, 403, "{}", app.text);
    let nobody = h
        .bob
        .with_token(None)
        .post(&format!("/sharings/{id}/_bulk_docs"), &forged)
        .await;
    assert_eq!(nobody.status, 401, "{}", nobody.text);
    assert_eq!(h.bob.get(&bob_path).await.get("title"), "Holiday plans, bob's");
}

/// What both sides must agree on for one document: the winner, its body, the conflicts and
/// every leaf.
async fn converged_view(api: &Api, path: &str) -> Value {
    let winner = api.get(&format!("{path}?conflicts=true")).await.body;
    let mut leaves: Vec<Value> = api
        .get(&format!("{path}?open_revs=all"))
        .await
        .body
        .as_array()
        .cloned()
        .unwrap_or_default();
    leaves.sort_by_key(|l| l["ok"]["_rev"].as_str().unwrap_or_default().to_string());
    let mut body = winner.clone();
    body.as_object_mut().map(|m| m.remove("_id"));
    for leaf in &mut leaves {
        leaf["ok"].as_object_mut().map(|m| m.remove("_id"));
    }
    json!({"winner": body, "leaves": leaves})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_edits_made_while_the_other_host_is_down_converge_to_one_winner() {
    let mut h = two_hosts().await;
    let (_, bob_note) = accepted(&mut h).await;
    let alice_path = format!("/data/io.cozy.notes/{NOTE}");
    let bob_path = format!("/data/io.cozy.notes/{bob_note}");
    let base = eventually(&h.bob, &bob_path, |d| d["title"] == "Holiday plans").await;
    let rev1 = base["_rev"].as_str().unwrap().to_string();

    // Bob's host is down while alice edits; then alice's is down while bob edits the same
    // revision: a conflict, made on each side without the other knowing.
    h.bob_host.stop().await.unwrap();
    let alice_edit = h
        .alice
        .put(&alice_path, &json!({"_rev": rev1, "title": "alice's plan"}))
        .await;
    assert_eq!(alice_edit.status, 200, "{}", alice_edit.text);
    // Her host's metrics show a member it cannot reach, with a change waiting for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while super::jobs::metric(&h.alice_host, "cocon_sharing_failing_members", "").await != 1 {
        assert!(std::time::Instant::now() < deadline, "no failing member in the metrics");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(super::jobs::metric(&h.alice_host, "cocon_sharing_pending_changes", "").await >= 1);
    h.alice_host.stop().await.unwrap();
    h.bob_host = restart(&h.bob_host).await;
    let bob_edit = h
        .bob
        .put(&bob_path, &json!({"_rev": rev1, "title": "bob's plan"}))
        .await;
    assert_eq!(bob_edit.status, 200, "{}", bob_edit.text);
    h.alice_host = restart(&h.alice_host).await;

    // Both come back: each gets the other's branch, and both pick the same winner.
    let both = |d: &Value| d["_conflicts"].as_array().is_some_and(|c| c.len() == 1);
    eventually(&h.alice, &format!("{alice_path}?conflicts=true"), both).await;
    eventually(&h.bob, &format!("{bob_path}?conflicts=true"), both).await;
    let on_alice = converged_view(&h.alice, &alice_path).await;
    let on_bob = converged_view(&h.bob, &bob_path).await;
    assert_eq!(on_alice, on_bob, "both hosts hold the same revisions and winner");
    let winner = on_alice["winner"]["title"].as_str().unwrap();
    assert!(winner == "alice's plan" || winner == "bob's plan", "{on_alice}");

    // Resolving on one side (deleting the losing branch) resolves it on the other.
    let loser = on_alice["winner"]["_conflicts"][0].as_str().unwrap().to_string();
    let resolved = h.alice.delete(&format!("{alice_path}?rev={loser}")).await;
    assert_eq!(resolved.status, 200, "{}", resolved.text);
    let single = |d: &Value| d.get("_conflicts").is_none();
    eventually(&h.bob, &format!("{bob_path}?conflicts=true"), single).await;
    assert_eq!(
        converged_view(&h.alice, &alice_path).await,
        converged_view(&h.bob, &bob_path).await
    );
}

/// A partition both ways between the hosts (alice's calls to bob's are dropped, bob's to
/// alice's black-holed: the connection stays open, nothing answers) while both edit the same
/// notes, one deletes what the other edits, and bob adds one: once the network is back, both
/// hold every note with the same winner and the same leaves, nothing lost and nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_partition_both_ways_while_both_edit_converges_with_nothing_lost() {
    let (mut h, to_bob, to_alice) = two_hosts_partitioned_by_proxies().await;
    let ids = [
        "0a00000000000000000000000000000a",
        "0b00000000000000000000000000000b",
        "0c00000000000000000000000000000c",
    ];
    for (n, id) in ids.iter().enumerate() {
        let put = h
            .alice
            .put(
                &format!("/data/io.cozy.notes/{id}"),
                &json!({"tags": ["plans"], "n": n}),
            )
            .await;
        assert_eq!(put.status, 200, "{}", put.text);
    }
    let rule = json!({"title": "Plans", "doctype": "io.cozy.notes", "selector": "tags", "values": ["plans"],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let id = share_with(&h, "Plans", rule).await;
    accept_request(&mut h, &id).await;
    // Bob's ids are his own: his copies are found by their `n`.
    let docs = |api: &Api| {
        let api = api.clone();
        async move {
            let all = api.get("/data/io.cozy.notes/_all_docs?include_docs=true").await;
            all.body["rows"].as_array().cloned().unwrap_or_default()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut copies = loop {
        let rows = docs(&h.bob).await;
        if rows.len() == 3 {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob never got the notes: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    copies.sort_by_key(|r| r["doc"]["n"].as_u64());
    let bob_ids: Vec<String> = copies.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    let revs: Vec<String> = copies
        .iter()
        .map(|r| r["doc"]["_rev"].as_str().unwrap().to_string())
        .collect();

    to_bob.cut();
    to_alice.hold_after(0);
    let write = |api: &Api, note: &str, rev: &str, who: &str| {
        let (api, path) = (api.clone(), format!("/data/io.cozy.notes/{note}"));
        let body = json!({"_rev": rev, "tags": ["plans"], "by": who});
        let who = who.to_string();
        async move {
            let put = api.put(&path, &body).await;
            assert_eq!(put.status, 200, "{who} writes while cut off: {}", put.text);
            put.get("rev").as_str().unwrap().to_string()
        }
    };
    // Note a: alice twice, bob once (alice's branch is longer). Note b: the other way round.
    let a = write(&h.alice, ids[0], &revs[0], "alice").await;
    write(&h.alice, ids[0], &a, "alice again").await;
    write(&h.bob, &bob_ids[0], &revs[0], "bob").await;
    write(&h.alice, ids[1], &revs[1], "alice").await;
    let b = write(&h.bob, &bob_ids[1], &revs[1], "bob").await;
    write(&h.bob, &bob_ids[1], &b, "bob again").await;
    // Note c: alice edits it, bob deletes it. And bob adds a note of his own.
    write(&h.alice, ids[2], &revs[2], "alice").await;
    let deleted = h
        .bob
        .delete(&format!("/data/io.cozy.notes/{}?rev={}", bob_ids[2], revs[2]))
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let added = h
        .bob
        .post(
            "/data/io.cozy.notes/",
            &json!({"tags": ["plans"], "by": "bob", "new": true}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text);
    let bob_new = added.get("id").as_str().unwrap().to_string();
    // Alice's sender tried and failed: nothing got through either way.
    eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["sync"]["last_error"].is_string()
    })
    .await;
    assert_eq!(
        docs(&h.alice).await.len(),
        3,
        "bob's new note is not on alice's host yet"
    );

    to_bob.restore();
    to_alice.release();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let alice_new = loop {
        let rows = docs(&h.alice).await;
        if let Some(row) = rows.iter().find(|r| r["doc"]["new"] == true) {
            break row["id"].as_str().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob's note never reached alice: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let pairs = [
        (ids[0], bob_ids[0].as_str(), 2),
        (ids[1], bob_ids[1].as_str(), 2),
        (ids[2], bob_ids[2].as_str(), 2),
        (alice_new.as_str(), bob_new.as_str(), 1),
    ];
    // Each note ends with the same winner and the same leaves on both (the branches made apart
    // both kept, bob's note once).
    for (on_alice_id, on_bob_id, leaves) in pairs {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let on_alice = converged_view(&h.alice, &format!("/data/io.cozy.notes/{on_alice_id}")).await;
            let on_bob = converged_view(&h.bob, &format!("/data/io.cozy.notes/{on_bob_id}")).await;
            if on_alice == on_bob && on_alice["leaves"].as_array().map_or(0, Vec::len) == leaves {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{on_alice_id} did not converge:\n{on_alice}\n{on_bob}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    // The longer branch wins on both; an edit wins over a deletion.
    let by = |note: &str| {
        let (api, path) = (h.bob.clone(), format!("/data/io.cozy.notes/{note}"));
        async move { api.get(&path).await.body["by"].clone() }
    };
    assert_eq!(by(&bob_ids[0]).await, "alice again");
    assert_eq!(by(&bob_ids[1]).await, "bob again");
    assert_eq!(by(&bob_ids[2]).await, "alice");
    assert_eq!(by(&bob_new).await, "bob");
    assert_eq!(docs(&h.alice).await.len(), 4, "nothing twice");
    assert_eq!(docs(&h.bob).await.len(), 4, "nothing twice");
}
