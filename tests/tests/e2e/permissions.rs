//! Permission sets and sharing-link codes, end to end: a code grants exactly its rules on every
//! route, never more than its creator holds, stops at once when changed or deleted, may need a
//! password or expire; escalation and bad input change nothing; code creation is rate limited.

use cocon_tests::{Api, Cocon};
use reqwest::Method;
use serde_json::{Value, json};

fn set_body(rules: Value) -> Value {
    json!({"data": {"type": "io.cozy.permissions", "attributes": {"permissions": rules}}})
}

fn notes_rule(values: &[&str]) -> Value {
    json!({"note": {"type": "io.cozy.notes", "verbs": ["GET"], "values": values}})
}

async fn patch(api: &Api, id: &str, body: Value) -> cocon_tests::Reply {
    api.send(
        Method::PATCH,
        &format!("/permissions/{id}"),
        Some(body.to_string().into_bytes()),
    )
    .await
}

async fn links(api: &Api) -> usize {
    let listed = api.get("/permissions/doctype/io.cozy.notes/shared-by-link").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    listed.get("data").as_array().unwrap().len()
}

#[tokio::test]
async fn test_sharing_link_codes_grant_exactly_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let alice = cocon
        .instance("alice.test", "io.cozy.notes io.cozy.contacts:GET")
        .await
        .unwrap();
    for id in ["n1", "n2"] {
        assert_eq!(
            alice
                .put(&format!("/data/io.cozy.notes/{id}"), &json!({"v": id}))
                .await
                .status,
            200
        );
    }

    // Alice shares n1 read-only with two people, for a day.
    let created = alice
        .post("/permissions?codes=bob,jane&ttl=1D", &set_body(notes_rule(&["n1"])))
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let data = created.get("data");
    let id = data["id"].as_str().unwrap().to_string();
    let attrs = &data["attributes"];
    assert_eq!(attrs["type"], "share");
    assert!(
        attrs["source_id"].as_str().unwrap().starts_with("cli/"),
        "the set names the very token that made it: {}",
        attrs["source_id"]
    );
    assert_eq!(attrs["permissions"]["note"]["values"], json!(["n1"]));
    let expires = unix_of_rfc3339(attrs["expires_at"].as_str().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - 86_400).abs() < 120, "ttl=1D: {expires} vs {now}");
    let code = |name: &str| attrs["codes"][name].as_str().unwrap().to_string();
    let (bob, jane) = (code("bob"), code("jane"));
    let short = attrs["shortcodes"]["bob"].as_str().unwrap().to_string();
    assert_eq!((bob.len(), short.len()), (32, 12));
    assert_ne!(bob, jane);

    // The code reads n1 and nothing else, on any route.
    let as_bob = alice.with_token(Some(&bob));
    assert_eq!(as_bob.get("/data/io.cozy.notes/n1").await.get("v"), "n1");
    assert_eq!(
        alice
            .with_token(Some(&short))
            .get("/data/io.cozy.notes/n1")
            .await
            .status,
        200
    );
    for (method, path) in [
        (Method::GET, "/data/io.cozy.notes/n2"),
        (Method::PUT, "/data/io.cozy.notes/n1"),
        (Method::DELETE, "/data/io.cozy.notes/n1?rev=1-x"),
        (Method::GET, "/data/io.cozy.notes/_all_docs"),
        (Method::GET, "/data/io.cozy.notes/_changes"),
        (Method::POST, "/data/io.cozy.notes/"),
        (Method::GET, "/data/io.cozy.contacts/c1"),
        (Method::GET, "/data/_all_doctypes"),
        (Method::GET, "/settings/sessions"),
        (Method::GET, &format!("/permissions/{id}")),
        (Method::POST, "/permissions?codes=x"),
    ] {
        let reply = as_bob.send(method.clone(), path, Some(b"{}".to_vec())).await;
        assert_eq!(reply.status, 403, "{method} {path} with a read-n1 code: {}", reply.text);
    }
    // What the code is, as cozy-stack shows it.
    let me = as_bob.get("/permissions/self").await;
    assert_eq!(me.get("data")["id"], id.as_str());
    assert_eq!(me.get("data")["attributes"]["type"], "share");
    assert_eq!(
        me.get("data")["attributes"]["permissions"]["rule0"]["values"],
        json!(["n1"])
    );
    // The code means nothing on another instance.
    cocon.add_instance("mallory.test").await.unwrap();
    let elsewhere = cocon
        .api("mallory.test", Some(&bob))
        .get("/data/io.cozy.notes/n1")
        .await;
    assert_eq!(elsewhere.status, 401, "{}", elsewhere.text);

    // The owner reads the set back with its codes.
    let shown = alice.get(&format!("/permissions/{id}")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.get("data")["attributes"]["codes"]["jane"], jane.as_str());
    assert_eq!(links(&alice).await, 1);

    // Jane's code goes and Carol's comes; the set now reads n2 too.
    let patched = patch(
        &alice,
        &id,
        json!({"data": {"type": "io.cozy.permissions", "attributes": {"codes": {"bob": "", "carol": ""}},
               "permissions": {"more": {"type": "io.cozy.notes", "verbs": ["GET"], "values": ["n2"]}}}}),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let codes = &patched.get("data")["attributes"]["codes"];
    assert_eq!(codes["bob"], bob.as_str(), "kept names keep their code");
    assert!(codes["jane"].is_null());
    let carol = codes["carol"].as_str().unwrap().to_string();
    assert_eq!(
        alice.with_token(Some(&jane)).get("/data/io.cozy.notes/n1").await.status,
        401
    );
    assert_eq!(
        alice
            .with_token(Some(&carol))
            .get("/data/io.cozy.notes/n2")
            .await
            .status,
        200
    );
    assert_eq!(as_bob.get("/data/io.cozy.notes/n2").await.status, 200);

    // Expiring the set now closes it.
    let expired = patch(
        &alice,
        &id,
        json!({"data": {"attributes": {"expires_at": "2020-01-01T00:00:00Z"}}}),
    )
    .await;
    assert_eq!(expired.status, 200, "{}", expired.text);
    let late = as_bob.get("/data/io.cozy.notes/n1").await;
    assert_eq!(late.status, 401, "{}", late.text);
    assert!(late.text.contains("expired"), "{}", late.text);
    patch(&alice, &id, json!({"data": {"attributes": {"expires_at": null}}})).await;
    assert_eq!(as_bob.get("/data/io.cozy.notes/n1").await.status, 200);

    // Deleting it ends every code at once.
    assert_eq!(alice.delete(&format!("/permissions/{id}")).await.status, 204);
    assert_eq!(as_bob.get("/data/io.cozy.notes/n1").await.status, 401);
    assert_eq!(alice.get(&format!("/permissions/{id}")).await.status, 404);
    assert_eq!(links(&alice).await, 0);
}

/// `2026-11-22T12:00:00Z` → Unix seconds.
fn unix_of_rfc3339(text: &str) -> i64 {
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn test_codes_never_exceed_their_creator_and_bad_input_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let alice = cocon
        .instance("alice.test", "io.cozy.notes:GET io.cozy.contacts:GET:c1")
        .await
        .unwrap();
    for (rules, what) in [
        (json!({"r": {"type": "io.cozy.files"}}), "another doctype"),
        (
            json!({"r": {"type": "io.cozy.notes", "verbs": ["PUT"]}}),
            "another verb",
        ),
        (json!({"r": {"type": "io.cozy.notes"}}), "every verb"),
        (
            json!({"r": {"type": "io.cozy.contacts", "verbs": ["GET"]}}),
            "a whole doctype from some documents",
        ),
        (
            json!({"r": {"type": "io.cozy.contacts", "verbs": ["GET"], "values": ["c2"]}}),
            "another document",
        ),
        (
            json!({"r": {"type": "io.cozy.notes.*", "verbs": ["GET"]}}),
            "a wildcard",
        ),
    ] {
        let reply = alice.post("/permissions?codes=x", &set_body(rules)).await;
        assert_eq!(reply.status, 403, "{what}: {}", reply.text);
        assert!(reply.text.contains("grants more"), "{what}: {}", reply.text);
    }
    for (body, what) in [
        (json!({"data": {"attributes": {}}}), "no rules"),
        (
            json!({"data": {"attributes": {"permissions": {"r": {"type": "Not A Doctype"}}}}}),
            "bad doctype",
        ),
        (
            json!({"data": {"attributes": {"permissions": {"r": {"type": "io.cozy.notes", "verbs": ["FETCH"]}}}}}),
            "bad verb",
        ),
        (
            json!({"data": {"type": "io.cozy.files", "attributes": {"permissions": notes_rule(&["n1"])}}}),
            "wrong type",
        ),
        (json!([1, 2]), "not an object"),
    ] {
        let reply = alice.post("/permissions?codes=x", &body).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.text);
        assert!(
            reply.get("reason").as_str().is_some_and(|r| !r.is_empty()),
            "{what}: {}",
            reply.text
        );
    }
    let malformed = alice.raw(Method::POST, "/permissions?codes=x", b"{not json").await;
    assert_eq!(malformed.status, 400);
    let bad_ttl = alice
        .post("/permissions?codes=x&ttl=1X", &set_body(notes_rule(&["n1"])))
        .await;
    assert_eq!(bad_ttl.status, 400, "{}", bad_ttl.text);
    assert_eq!(links(&alice).await, 0, "nothing was stored");
    // Within its rights, the same token may share.
    let ok = alice
        .post(
            "/permissions?codes=x",
            &set_body(json!({"r": {"type": "io.cozy.contacts", "verbs": ["GET"], "values": ["c1"]}})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // Listing a doctype's links needs GET on all of it.
    let contacts = alice.get("/permissions/doctype/io.cozy.contacts/shared-by-link").await;
    assert_eq!(contacts.status, 403, "{}", contacts.text);
    // Another instance's token cannot see or touch the set.
    let bob = cocon.instance("bob.test", "io.cozy.contacts").await.unwrap();
    let id = ok.get("data")["id"].as_str().unwrap();
    assert_eq!(bob.get(&format!("/permissions/{id}")).await.status, 404);
    assert_eq!(bob.delete(&format!("/permissions/{id}")).await.status, 404);
    assert_eq!(alice.get(&format!("/permissions/{id}")).await.status, 200);
}

#[tokio::test]
async fn test_a_password_protected_link_opens_with_its_password_only() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let alice = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    alice.put("/data/io.cozy.notes/n1", &json!({"v": 1})).await;
    let mut body = set_body(notes_rule(&["n1"]));
    body["data"]["attributes"]["password"] = json!("hunter22");
    let created = alice.post("/permissions?codes=bob", &body).await;
    assert_eq!(created.status, 200, "{}", created.text);
    assert_eq!(created.get("data")["attributes"]["password"], true);
    assert!(!created.text.contains("hunter22"));
    let code = created.get("data")["attributes"]["codes"]["bob"]
        .as_str()
        .unwrap()
        .to_string();

    let locked = alice.with_token(Some(&code)).get("/data/io.cozy.notes/n1").await;
    assert_eq!(locked.status, 403, "{}", locked.text);
    assert!(locked.text.contains("password"), "{}", locked.text);

    let client = reqwest::Client::new();
    let unlock = |password: &'static str| {
        client
            .post(format!("{}/auth/share-by-link/password", cocon.http))
            .header("Host", "alice.test")
            .form(&[("code", code.as_str()), ("password", password)])
            .send()
    };
    assert_eq!(unlock("wrong one").await.unwrap().status(), 401);
    let opened = unlock("hunter22").await.unwrap();
    assert_eq!(opened.status(), 200);
    let cookie = opened
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_string();
    assert!(
        cookie.starts_with("sharepass_") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let read = |cookie: String| {
        client
            .get(format!("{}/data/io.cozy.notes/n1", cocon.http))
            .header("Host", "alice.test")
            .bearer_auth(&code)
            .header("Cookie", cookie)
            .send()
    };
    assert_eq!(read(pair.clone()).await.unwrap().status(), 200);
    let (name, value) = pair.split_once('=').unwrap();
    let forged = format!("{name}={}x", value);
    assert_eq!(read(forged).await.unwrap().status(), 403, "a forged proof");
    let body: Value = read(pair.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(body["v"], 1);

    // A new password: the proof of the old one opens nothing any more (on every gateway, as it
    // is checked against the set itself), the new one opens.
    let id = created.get("data")["id"].as_str().unwrap().to_string();
    let changed = patch(
        &alice,
        &id,
        json!({"data": {"attributes": {"password": "correct horse"}}}),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let stale = read(pair.clone()).await.unwrap();
    assert_eq!(
        stale.status(),
        403,
        "an earlier unlock does not survive a password change"
    );
    assert_eq!(unlock("hunter22").await.unwrap().status(), 401);
    let reopened = unlock("correct horse").await.unwrap();
    assert_eq!(reopened.status(), 200);
    let fresh = reopened.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(read(fresh).await.unwrap().status(), 200);
}

#[tokio::test]
async fn test_creating_codes_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_GATEWAY__LIMITS__CODES_PER_IP_PER_MINUTE", "2")
        .start()
        .await
        .unwrap();
    let alice = cocon.instance("alice.test", "io.cozy.notes").await.unwrap();
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let reply = alice.post("/permissions?codes=x", &set_body(notes_rule(&["n1"]))).await;
        statuses.push(reply.status);
    }
    // Two a minute: the third, well within that minute, waits.
    if started.elapsed().as_secs() < 25 {
        assert_eq!(statuses, [200, 200, 429]);
    }
    let limited = reqwest::Client::new()
        .post(format!("{}/permissions?codes=y", cocon.http))
        .header("Host", "alice.test")
        .bearer_auth(cocon.token("alice.test", "io.cozy.notes").await.unwrap())
        .json(&set_body(notes_rule(&["n1"])))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(links(&alice).await, 2, "the refused ones stored nothing");
}

#[tokio::test]
async fn test_selector_rules_grant_the_matching_documents_only() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let owner = cocon.instance("alice.test", "io.cozy.contacts").await.unwrap();
    for (id, tags) in [("c1", json!(["friends"])), ("c2", json!(["work"]))] {
        let put = owner
            .put(&format!("/data/io.cozy.contacts/{id}"), &json!({"tags": tags}))
            .await;
        assert_eq!(put.status, 200, "{}", put.text);
    }
    // An app that may see and edit the contacts tagged "friends", and nothing else.
    let token = cocon
        .token("alice.test", "io.cozy.contacts:GET,POST,PUT,DELETE:friends:tags")
        .await
        .unwrap();
    let friends = owner.with_token(Some(&token));
    assert_eq!(
        friends.get("/data/io.cozy.contacts/c1").await.get("tags"),
        &json!(["friends"])
    );
    for (method, path, body, what) in [
        (Method::GET, "/data/io.cozy.contacts/c2", json!({}), "another tag"),
        (
            Method::GET,
            "/data/io.cozy.contacts/nope",
            json!({}),
            "a missing document",
        ),
        (
            Method::PUT,
            "/data/io.cozy.contacts/c2",
            json!({"tags": ["friends"]}),
            "pulling one in",
        ),
        (
            Method::POST,
            "/data/io.cozy.contacts/",
            json!({"tags": ["work"]}),
            "creating another",
        ),
        (Method::GET, "/data/io.cozy.contacts/_all_docs", json!({}), "a listing"),
    ] {
        let reply = friends
            .send(method.clone(), path, Some(body.to_string().into_bytes()))
            .await;
        assert_eq!(reply.status, 403, "{what}: {method} {path}: {}", reply.text);
    }
    let rev = friends
        .get("/data/io.cozy.contacts/c1")
        .await
        .get("_rev")
        .as_str()
        .unwrap()
        .to_string();
    let escape = friends
        .put("/data/io.cozy.contacts/c1", &json!({"_rev": rev, "tags": ["work"]}))
        .await;
    assert_eq!(escape.status, 403, "moving one out: {}", escape.text);
    let kept = friends
        .put(
            "/data/io.cozy.contacts/c1",
            &json!({"_rev": rev, "tags": ["friends"], "name": "Ann"}),
        )
        .await;
    assert_eq!(kept.status, 200, "{}", kept.text);
    let created = friends
        .post("/data/io.cozy.contacts/", &json!({"tags": ["friends"]}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(
        friends
            .put("/data/io.cozy.contacts/c3", &json!({"tags": ["friends"]}))
            .await
            .status,
        200
    );
    let c2 = owner.get("/data/io.cozy.contacts/c2").await;
    let refused = friends
        .send(
            Method::DELETE,
            &format!("/data/io.cozy.contacts/c2?rev={}", c2.get("_rev").as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    // A creation naming c2's `_id` and `_rev` is an update of c2: the stored c2 must match too,
    // and a key given twice is read as the documents service reads it (the last one).
    let c2_rev = c2.get("_rev").as_str().unwrap();
    for body in [
        format!(r#"{{"_id":"c2","_rev":"{c2_rev}","tags":["friends"]}}"#),
        format!(r#"{{"_id":"c9","_id":"c2","_rev":"{c2_rev}","tags":["friends"]}}"#),
    ] {
        let pulled = friends
            .send(Method::POST, "/data/io.cozy.contacts/", Some(body.clone().into_bytes()))
            .await;
        assert_eq!(pulled.status, 403, "{body}: {}", pulled.text);
    }
    assert_eq!(
        owner.get("/data/io.cozy.contacts/c2").await.get("tags"),
        &json!(["work"]),
        "untouched"
    );
    let named = friends
        .post("/data/io.cozy.contacts/", &json!({"_id": "c4", "tags": ["friends"]}))
        .await;
    assert_eq!(named.status, 201, "a new id within the selection: {}", named.text);
    let c3 = friends.get("/data/io.cozy.contacts/c3").await;
    let deleted = friends
        .send(
            Method::DELETE,
            &format!("/data/io.cozy.contacts/c3?rev={}", c3.get("_rev").as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);

    // A sharing link made from it carries the same selection.
    let link = owner
        .post(
            "/permissions?codes=friend",
            &set_body(
                json!({"r": {"type": "io.cozy.contacts", "verbs": ["GET"], "values": ["friends"], "selector": "tags"}}),
            ),
        )
        .await;
    assert_eq!(link.status, 200, "{}", link.text);
    let code = link.get("data")["attributes"]["codes"]["friend"]
        .as_str()
        .unwrap()
        .to_string();
    let shared = owner.with_token(Some(&code));
    assert_eq!(shared.get("/data/io.cozy.contacts/c1").await.status, 200);
    assert_eq!(shared.get("/data/io.cozy.contacts/c2").await.status, 403);
}

/// A token sees and manages only the sets it made, or whose every rule it holds itself
/// (cozy-stack's rule): a read-only token never learns the code of a wider link, and CLI tokens
/// are principals of their own, not one shared "cli".
#[tokio::test]
async fn test_a_token_sees_and_manages_only_the_links_within_its_rights() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let owner = cocon
        .instance("alice.test", "io.cozy.notes io.cozy.files")
        .await
        .unwrap();
    owner.put("/data/io.cozy.notes/n1", &json!({"v": 1})).await;
    // The owner's app shares notes and the whole drive by one link.
    let wide = owner
        .post(
            "/permissions?codes=friend",
            &set_body(json!({
                "notes": {"type": "io.cozy.notes", "verbs": ["GET"]},
                "drive": {"type": "io.cozy.files"},
            })),
        )
        .await;
    assert_eq!(wide.status, 200, "{}", wide.text);
    let wide_id = wide.get("data")["id"].as_str().unwrap().to_string();
    let wide_code = wide.get("data")["attributes"]["codes"]["friend"]
        .as_str()
        .unwrap()
        .to_string();

    // A token that may only read notes: the listing needs the whole doctype, which it has, but
    // the drive link is beyond it, so it is not shown, its code neither, and it cannot be managed.
    let reader = owner.with_token(Some(&cocon.token("alice.test", "io.cozy.notes:GET").await.unwrap()));
    let listed = reader.get("/permissions/doctype/io.cozy.notes/shared-by-link").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.get("data").as_array().unwrap().len(), 0, "{}", listed.text);
    assert!(!listed.text.contains(&wide_code));
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let body = json!({"data": {"attributes": {"codes": {"friend": "", "mine": ""}}}});
        let reply = reader
            .send(
                method.clone(),
                &format!("/permissions/{wide_id}"),
                Some(body.to_string().into_bytes()),
            )
            .await;
        assert_eq!(reply.status, 403, "{method}: {}", reply.text);
        assert!(!reply.text.contains(&wide_code));
    }
    // Its own link is its own to see.
    let own = reader
        .post("/permissions?codes=pal", &set_body(notes_rule(&["n1"])))
        .await;
    assert_eq!(own.status, 200, "{}", own.text);
    let listed = reader.get("/permissions/doctype/io.cozy.notes/shared-by-link").await;
    let data = listed.get("data").as_array().unwrap();
    assert_eq!(data.len(), 1, "{}", listed.text);
    assert_eq!(data[0]["id"], own.get("data")["id"]);
    // The owner's wider token sees both (it holds every rule of each).
    assert_eq!(links(&owner).await, 2);

    // Two CLI tokens with different documents: neither manages the other's link.
    let token_of = |values: &str| {
        let scope = format!("io.cozy.notes:GET:{values}");
        let cocon = &cocon;
        async move { cocon.token("alice.test", &scope).await.unwrap() }
    };
    let one = owner.with_token(Some(&token_of("n1").await));
    let two = owner.with_token(Some(&token_of("n2").await));
    let ones = one.post("/permissions?codes=x", &set_body(notes_rule(&["n1"]))).await;
    assert_eq!(ones.status, 200, "{}", ones.text);
    let ones_id = ones.get("data")["id"].as_str().unwrap().to_string();
    for method in [Method::GET, Method::PATCH, Method::DELETE] {
        let reply = two
            .send(
                method.clone(),
                &format!("/permissions/{ones_id}"),
                Some(b"{\"data\":{}}".to_vec()),
            )
            .await;
        assert_eq!(reply.status, 403, "another CLI token's set, {method}: {}", reply.text);
    }
    assert_eq!(one.get(&format!("/permissions/{ones_id}")).await.status, 200);
    let me = one.get("/permissions/self").await;
    assert_eq!(me.get("data")["attributes"]["type"], "cli");
    assert_eq!(
        me.get("data")["attributes"]["source_id"],
        ones.get("data")["attributes"]["source_id"],
        "{}",
        me.text
    );
    // The wide link still works: nothing above changed it.
    assert_eq!(
        owner
            .with_token(Some(&wide_code))
            .get("/data/io.cozy.notes/n1")
            .await
            .status,
        200
    );
}
