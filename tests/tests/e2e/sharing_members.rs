//! Members added after a sharing is made: the owner adds a recipient (`POST
//! /sharings/:id/recipients`), or a read-write recipient does when the sharing is open, through
//! the owner's host; the newcomer gets the request and the documents, and every member's list
//! of members follows (`PUT /sharings/:id/recipients` from the owner's host).

use cocon_tests::sharing::*;
use cocon_tests::{Api, Browser};
use serde_json::{Value, json};

/// Carol, a third person, on bob's host: her API, her signed-in browser, her Cozy's address.
async fn carol(h: &Hosts) -> (Api, Browser, String) {
    let domain = format!("carol.localhost:{}", port(&h.bob_host));
    let person = person(&h.bob_host, &domain).await;
    let token = h
        .bob_host
        .token(&domain, "io.cozy.notes io.cozy.notifications")
        .await
        .unwrap();
    (
        h.bob_host.api(&domain, Some(&token)),
        person,
        format!("http://{domain}"),
    )
}

/// Bob's app, allowed to share his notes and to read his contacts.
async fn bob_app(h: &Hosts) -> Api {
    let token = h
        .bob_host
        .token(h.bob_person_domain(), "io.cozy.notes io.cozy.contacts")
        .await
        .unwrap();
    h.bob_host.api(h.bob_person_domain(), Some(&token))
}

/// A contact for carol in `api`'s instance: its id.
async fn carol_contact(api: &Api, origin: &str) -> String {
    let contact = api
        .post(
            "/data/io.cozy.contacts/",
            &json!({"fullname": "Carol", "email": [{"address": "carol@example.org", "primary": true}],
                    "cozy": [{"url": origin, "primary": true}]}),
        )
        .await;
    assert_eq!(contact.status, 201, "{}", contact.text);
    contact.get("id").as_str().unwrap().to_string()
}

fn add_body(id: &str, contact: &str) -> Value {
    json!({"data": {"type": "io.cozy.sharings", "id": id,
                    "relationships": {"recipients": {"data": [{"id": contact, "type": "io.cozy.contacts"}]}}}})
}

/// Carol's copy of alice's note, once it reached her: its title.
async fn carols_note(api: &Api, id: &str) -> String {
    let sharing = eventually(api, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["active"] == true
    })
    .await;
    let note = sharing["data"]["attributes"]["rules"][0]["values"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(note, NOTE, "carol's ids are her own");
    eventually(api, &format!("/data/io.cozy.notes/{note}"), |n| n["title"].is_string()).await["title"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_owner_adds_a_recipient_and_every_member_sees_the_members() {
    let mut h = two_hosts().await;
    let id = share_note(&h).await["id"].as_str().unwrap().to_string();
    accept_request(&mut h, &id).await;
    let (carol_api, mut carol_person, carol_origin) = carol(&h).await;
    let contact = carol_contact(&h.alice, &carol_origin).await;

    let added = h
        .alice
        .post(&format!("/sharings/{id}/recipients"), &add_body(&id, &contact))
        .await;
    assert_eq!(added.status, 200, "{}", added.text);
    let members = added.body["data"]["attributes"]["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 3);
    assert_eq!(members[2]["email"], "carol@example.org");
    assert_eq!(members[2]["status"], "pending", "her Cozy got the request");

    // Carol accepts and receives the note.
    accept_as(&carol_api, &mut carol_person, &carol_origin, &id).await;
    assert_eq!(carols_note(&carol_api, &id).await, "Holiday plans");

    // Bob's host learns of her from alice's: her address and state, not her Cozy.
    let on_bob = eventually(&h.bob, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][2]["status"] == "ready"
    })
    .await;
    let carol_on_bob = &on_bob["data"]["attributes"]["members"][2];
    assert_eq!(carol_on_bob["email"], "carol@example.org");
    assert!(carol_on_bob.get("instance").is_none(), "{carol_on_bob}");
    assert_eq!(
        on_bob["data"]["attributes"]["members"][1]["instance"], h.bob_origin,
        "bob's host keeps its own address"
    );

    // Adding someone already in adds no one; a recipient of a sharing that is not open adds
    // no one either.
    let again = h
        .alice
        .post(&format!("/sharings/{id}/recipients"), &add_body(&id, &contact))
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["data"]["attributes"]["members"].as_array().unwrap().len(), 3);
    let bob_app = bob_app(&h).await;
    let his = carol_contact(&bob_app, "http://dave.localhost:1").await;
    let refused = bob_app
        .post(&format!("/sharings/{id}/recipients"), &add_body(&id, &his))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let unknown = h
        .alice
        .post("/sharings/nope/recipients", &add_body("nope", &contact))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    let empty = h
        .alice
        .post(
            &format!("/sharings/{id}/recipients"),
            &json!({"data": {"type": "io.cozy.sharings"}}),
        )
        .await;
    assert_eq!(empty.status, 400, "{}", empty.text);

    // Alice revokes bob: carol's host sees him revoked.
    let revoked = h.alice.delete(&format!("/sharings/{id}/recipients/1")).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    eventually(&carol_api, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["status"] == "revoked"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_read_write_recipient_of_an_open_sharing_invites_through_the_owner() {
    let mut h = two_hosts().await;
    let bob_contact = bob_contact(&h).await;
    let created = share_note_to(
        &h,
        json!({"open_sharing": true}),
        json!([{"id": bob_contact, "type": "io.cozy.contacts"}]),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    accept_request(&mut h, &id).await;

    // Bob's app invites carol, a contact of his: alice's host adds her and sends the request.
    let (carol_api, mut carol_person, carol_origin) = carol(&h).await;
    let bob_app = bob_app(&h).await;
    let contact = carol_contact(&bob_app, &carol_origin).await;
    let invited = bob_app
        .post(&format!("/sharings/{id}/recipients"), &add_body(&id, &contact))
        .await;
    assert_eq!(invited.status, 200, "{}", invited.text);
    let on_alice = eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][2]["email"] == "carol@example.org"
    })
    .await;
    assert_eq!(
        on_alice["data"]["attributes"]["members"][2]["instance"],
        carol_origin.as_str()
    );

    accept_as(&carol_api, &mut carol_person, &carol_origin, &id).await;
    assert_eq!(carols_note(&carol_api, &id).await, "Holiday plans");
    eventually(&h.bob, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][2]["status"] == "ready"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_contact_groups_members_follow_its_contacts_until_it_is_revoked() {
    let mut h = two_hosts().await;
    let token = h
        .alice_host
        .token(h.alice.domain(), "io.cozy.contacts io.cozy.contacts.groups")
        .await
        .unwrap();
    let contacts = h.alice_host.api(h.alice.domain(), Some(&token));
    let family = contacts
        .post("/data/io.cozy.contacts.groups/", &json!({"name": "Family"}))
        .await;
    assert_eq!(family.status, 201, "{}", family.text);
    let family = family.get("id").as_str().unwrap().to_string();
    let in_family = json!({"groups": {"data": [{"_id": family, "_type": "io.cozy.contacts.groups"}]}});
    let bob = json!({"fullname": "Bob", "email": [{"address": "bob@example.org", "primary": true}],
                     "cozy": [{"url": h.bob_origin, "primary": true}], "relationships": in_family});
    let mut ids = Vec::new();
    for contact in [
        bob.clone(),
        json!({"fullname": "Nobody", "email": [{"address": "nobody@example.org"}]}),
        json!({"fullname": "No address", "relationships": in_family}),
    ] {
        let made = contacts.post("/data/io.cozy.contacts/", &contact).await;
        assert_eq!(made.status, 201, "{}", made.text);
        ids.push(made.get("id").as_str().unwrap().to_string());
    }
    let recipients = json!([{"id": family, "type": "io.cozy.contacts.groups"}]);
    let created = share_note_to(&h, json!({}), recipients).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let attrs = &created.body["data"]["attributes"];
    assert_eq!(attrs["groups"][0]["name"], "Family");
    let members = attrs["members"].as_array().unwrap();
    assert_eq!(
        members.len(),
        2,
        "the group's one contact that can be invited: {members:?}"
    );
    assert_eq!(members[1]["email"], "bob@example.org");
    assert_eq!(members[1]["only_in_groups"], true);
    assert_eq!(members[1]["groups"], json!([0]));
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    accept_request(&mut h, &id).await;
    let on_bob = eventually(&h.bob, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["active"] == true
    })
    .await;
    assert_eq!(on_bob["data"]["attributes"]["groups"][0]["name"], "Family");

    // Carol joins the group: she becomes a member of it (invited by mail, her Cozy unknown).
    let carol = json!({"fullname": "Carol", "email": [{"address": "carol@example.org"}], "relationships": in_family});
    let made = contacts.post("/data/io.cozy.contacts/", &carol).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let on_alice = eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][2]["email"] == "carol@example.org"
    })
    .await;
    let carol_member = &on_alice["data"]["attributes"]["members"][2];
    assert_eq!(carol_member["groups"], json!([0]));
    assert_eq!(carol_member["only_in_groups"], true);

    // Bob leaves the group: he is in the sharing through it only, so he is revoked, on both hosts.
    let bob_contact = contacts.get(&format!("/data/io.cozy.contacts/{}", ids[0])).await;
    let mut left = bob.clone();
    left["relationships"] = json!({"groups": {"data": []}});
    left["_rev"] = bob_contact.get("_rev").clone();
    let updated = contacts.put(&format!("/data/io.cozy.contacts/{}", ids[0]), &left).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    eventually(&h.alice, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["members"][1]["status"] == "revoked"
    })
    .await;
    eventually(&h.bob, &format!("/sharings/{id}"), |s| {
        s["data"]["attributes"]["active"] != true
    })
    .await;

    // Bad indexes are refused; revoking the group ends carol's membership.
    let bad = h.alice.delete(&format!("/sharings/{id}/groups/first")).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let missing = h.alice.delete(&format!("/sharings/{id}/groups/5")).await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    let revoked = h.alice.delete(&format!("/sharings/{id}/groups/0")).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let on_alice = h.alice.get(&format!("/sharings/{id}")).await;
    let attrs = &on_alice.body["data"]["attributes"];
    assert_eq!(attrs["groups"][0]["revoked"], true);
    assert_eq!(attrs["members"][2]["status"], "revoked");
}
