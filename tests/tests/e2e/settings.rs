//! The settings Cozy apps read as they start, with cozy-stack's shapes and permissions: the
//! instance's settings (read, and changed against their revision), its capabilities and its
//! context.

use cocon_tests::sharing::{person, restart};
use cocon_tests::{Api, Cocon};
use reqwest::Method;
use serde_json::{Value, json};

fn body(rev: &str, attributes: Value) -> Value {
    json!({"data": {"type": "io.cozy.settings", "id": "io.cozy.settings.instance",
                    "meta": {"rev": rev}, "attributes": attributes}})
}

async fn put(api: &Api, body: &Value) -> cocon_tests::Reply {
    Api::reply(
        api.request(Method::PUT, "/settings/instance")
            .header("Content-Type", "application/vnd.api+json")
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn test_the_instance_settings_are_read_and_changed_against_their_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::start(dir.path()).await.unwrap();
    let mut alice = person(&cocon, "alice.test").await;
    let token = cocon.token("alice.test", "io.cozy.settings").await.unwrap();
    let app = cocon.api("alice.test", Some(&token));

    let got = app.get("/settings/instance").await;
    assert_eq!(got.status, 200, "{}", got.text);
    let data = &got.body["data"];
    assert_eq!(data["id"], "io.cozy.settings.instance");
    assert_eq!(data["attributes"]["locale"], "en");
    assert_eq!(data["attributes"]["password_defined"], true);
    assert_eq!(data["attributes"]["default_redirection"], "home/");
    let rev = data["meta"]["rev"].as_str().unwrap().to_string();
    assert!(rev.starts_with("1-"), "{rev}");

    // An app changes the name, language and time zone against the revision it read.
    let changed = put(
        &app,
        &body(
            &rev,
            json!({"public_name": "Alice Martin", "locale": "fr", "timezone": "Europe/Paris"}),
        ),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let attributes = &changed.body["data"]["attributes"];
    assert_eq!(
        (
            &attributes["public_name"],
            &attributes["locale"],
            &attributes["timezone"]
        ),
        (&json!("Alice Martin"), &json!("fr"), &json!("Europe/Paris"))
    );
    let rev2 = changed.body["data"]["meta"]["rev"].as_str().unwrap().to_string();
    assert!(rev2.starts_with("2-"), "{rev2}");

    // The old revision is stale: refused, nothing changes. Bad values are refused too.
    let stale = put(&app, &body(&rev, json!({"public_name": "Someone else"}))).await;
    assert_eq!(stale.status, 409, "{}", stale.text);
    for bad in [
        json!({"locale": "klingon"}),
        json!({"timezone": "Paris, France"}),
        json!({"public_name": 42}),
        json!({"default_redirection": "https://elsewhere.example/"}),
    ] {
        let refused = put(&app, &body(&rev2, bad.clone())).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text);
    }
    let garbage = Api::reply(app.request(Method::PUT, "/settings/instance").body("{not json")).await;
    assert_eq!(garbage.status, 400, "{}", garbage.text);

    // The e-mail address (where a passphrase reset goes) changes with the person's session only.
    let by_app = put(&app, &body(&rev2, json!({"email": "mallory@example.org"}))).await;
    assert_eq!(by_app.status, 403, "{}", by_app.text);
    let by_person = alice
        .send(
            Method::PUT,
            "/settings/instance",
            &[],
            None,
            Some(&body("", json!({"email": "alice@example.org"}))),
        )
        .await;
    assert_eq!(by_person.status, 200, "{}", by_person.text);
    // At the end of the onboarding the person goes home; a stranger signs in first.
    let home = alice.get("/settings/onboarded").await;
    assert_eq!(home.status, 303);
    assert_eq!(home.headers["location"], "/");
    let stranger = cocon_tests::Browser::new(&cocon.http, "alice.test")
        .get("/settings/onboarded")
        .await;
    assert_eq!(stranger.status, 303);
    assert!(
        stranger.headers["location"]
            .to_str()
            .unwrap()
            .starts_with("/auth/login"),
        "{:?}",
        stranger.headers
    );

    // Other tokens: without io.cozy.settings, 403; none, 401.
    let notes = cocon.token("alice.test", "io.cozy.notes").await.unwrap();
    let other = cocon.api("alice.test", Some(&notes));
    assert_eq!(other.get("/settings/instance").await.status, 403);
    assert_eq!(put(&other, &body("", json!({"locale": "en"}))).await.status, 403);
    assert_eq!(
        cocon.api("alice.test", None).get("/settings/instance").await.status,
        401
    );

    // What was set survives a restart (it is in the event log), and any app reads the
    // capabilities and the context.
    cocon.stop().await.unwrap();
    let cocon = restart(&cocon).await;
    let app = cocon.api("alice.test", Some(&token));
    let after = app.get("/settings/instance").await;
    let attributes = &after.body["data"]["attributes"];
    assert_eq!(attributes["public_name"], "Alice Martin");
    assert_eq!(attributes["email"], "alice@example.org");
    assert!(after.body["data"]["meta"]["rev"].as_str().unwrap().starts_with("3-"));
    let other = cocon.api("alice.test", Some(&notes));
    let capabilities = other.get("/settings/capabilities").await;
    assert_eq!(capabilities.status, 200, "{}", capabilities.text);
    assert_eq!(capabilities.body["data"]["attributes"]["file_versioning"], true);
    let context = other.get("/settings/context").await;
    assert_eq!(context.status, 200, "{}", context.text);
    assert_eq!(context.body["data"]["attributes"]["default_redirection"], "home/");
    let flags = other.get("/settings/flags").await;
    assert_eq!(flags.status, 200, "{}", flags.text);
    assert_eq!(flags.body["data"]["attributes"], json!({}));
    assert_eq!(cocon.api("alice.test", None).get("/settings/context").await.status, 401);
}

/// `GET /public/avatar`, as anyone: status, content type, ETag, body.
async fn public_avatar(cocon: &Cocon, query: &str, etag: Option<&str>) -> (u16, String, String, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .get(format!("{}/public/avatar{query}", cocon.http))
        .header("Host", "alice.test");
    if let Some(etag) = etag {
        req = req.header("If-None-Match", etag);
    }
    let res = req.send().await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, etag) = (header("content-type"), header("etag"));
    let status = res.status().as_u16();
    (status, content_type, etag, res.bytes().await.unwrap().to_vec())
}

async fn put_avatar(api: &Api, content_type: &str, data: Vec<u8>) -> cocon_tests::Reply {
    Api::reply(
        api.request(Method::PUT, "/settings/avatar")
            .header("Content-Type", content_type)
            .body(data),
    )
    .await
}

#[tokio::test]
async fn test_the_avatar_is_set_shown_to_anyone_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::start(dir.path()).await.unwrap();
    person(&cocon, "alice.test").await;
    let token = cocon.token("alice.test", "io.cozy.settings").await.unwrap();
    let app = cocon.api("alice.test", Some(&token));

    // None set: the initials of the name (the domain's first word until a name is given).
    let (status, content_type, _, body) = public_avatar(&cocon, "", None).await;
    assert_eq!((status, content_type.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8_lossy(&body).contains(">A</text>"));

    // A PNG, then anyone sees it, byte for byte, and a browser that has it is told so (304).
    let png: Vec<u8> = b"\x89PNG\r\n\x1a\n"
        .iter()
        .copied()
        .chain((0..5000u32).map(|i| (i % 251) as u8))
        .collect();
    let set = put_avatar(&app, "image/png", png.clone()).await;
    assert_eq!(set.status, 204, "{}", set.text);
    let (status, content_type, etag, body) = public_avatar(&cocon, "", None).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(body, png);
    assert!(!etag.is_empty());
    assert_eq!(public_avatar(&cocon, "", Some(&etag)).await.0, 304);

    // Not an image, an image that is not what it says, too large, or without the right: refused,
    // and the avatar stays.
    assert_eq!(put_avatar(&app, "text/html", b"<html>".to_vec()).await.status, 400);
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>".to_vec();
    assert_eq!(put_avatar(&app, "image/png", svg).await.status, 400);
    let huge = [b"\x89PNG\r\n\x1a\n".to_vec(), vec![0; 1024 * 1024]].concat();
    assert_eq!(put_avatar(&app, "image/png", huge).await.status, 413);
    let notes = cocon.token("alice.test", "io.cozy.notes").await.unwrap();
    let other = cocon.api("alice.test", Some(&notes));
    assert_eq!(put_avatar(&other, "image/png", png.clone()).await.status, 403);
    assert_eq!(
        put_avatar(&cocon.api("alice.test", None), "image/png", png.clone())
            .await
            .status,
        401
    );

    // It survives a restart (an event of the files service, its image a blob).
    cocon.stop().await.unwrap();
    let cocon = restart(&cocon).await;
    let app = cocon.api("alice.test", Some(&token));
    assert_eq!(public_avatar(&cocon, "", None).await.3, png);

    // Removed: the fallbacks, as asked.
    let removed = Api::reply(app.request(Method::DELETE, "/settings/avatar")).await;
    assert_eq!(removed.status, 204, "{}", removed.text);
    assert_eq!(public_avatar(&cocon, "?fallback=404", None).await.0, 404);
    let (status, _, _, body) = public_avatar(&cocon, "?fallback=anonymous", None).await;
    assert_eq!(status, 200);
    assert!(!String::from_utf8_lossy(&body).contains("</text>"), "no initials");
    let named = put(&app, &body_of_name("Alice Martin")).await;
    assert_eq!(named.status, 200, "{}", named.text);
    let (_, _, _, body) = public_avatar(&cocon, "?fallback=initials", None).await;
    assert!(String::from_utf8_lossy(&body).contains(">AM</text>"));
}

fn body_of_name(name: &str) -> Value {
    body("", json!({"public_name": name}))
}

/// The session cookie is the person on the instance's own pages only: a page of an app's
/// sub-domain, whose requests the browser sends the cookie with too, cannot use it to change the
/// e-mail address (where a passphrase reset goes) or to list the sessions: it has its token,
/// which holds what its manifest grants.
#[tokio::test]
async fn test_an_apps_origin_does_not_act_as_the_person_with_the_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut alice = person(&cocon, "alice.test").await;
    let app = [("Origin", "http://drive.alice.test")];
    let own = [("Origin", "http://alice.test")];

    let read = alice.send(Method::GET, "/settings/instance", &own, None, None).await;
    assert_eq!(read.status, 200, "{}", read.text);
    let rev = read.json()["data"]["meta"]["rev"].as_str().unwrap().to_string();
    let change = body(&rev, json!({"email": "mallory@evil.example"}));

    let refused = alice
        .send(Method::PUT, "/settings/instance", &app, None, Some(&change))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let sessions = alice.send(Method::GET, "/settings/sessions", &app, None, None).await;
    assert_eq!(sessions.status, 401, "{}", sessions.text);
    let unchanged = alice.send(Method::GET, "/settings/instance", &[], None, None).await;
    assert_eq!(unchanged.json()["data"]["attributes"]["email"], "");

    // The instance's own pages still act as the person.
    let changed = alice
        .send(
            Method::PUT,
            "/settings/instance",
            &own,
            None,
            Some(&body(&rev, json!({"email": "alice@example.org"}))),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    assert_eq!(changed.json()["data"]["attributes"]["email"], "alice@example.org");
}

/// `DELETE /settings/sessions/:id`: the person signs out another device; an unknown session is
/// 404; a CLI token, even one that reads the sessions, ends none.
#[tokio::test]
async fn test_the_person_signs_out_another_device() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut first = person(&cocon, "alice.test").await;
    let mut second = cocon_tests::Browser::new(&cocon.http, "alice.test");
    assert_eq!(second.login(cocon_tests::sharing::PASSPHRASE).await.status, 303);

    let listed = first.get("/settings/sessions").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let others: Vec<String> = listed.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["attributes"]["current"] == false)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(others.len(), 1, "{}", listed.text);

    let token = cocon.token("alice.test", "io.cozy.sessions").await.unwrap();
    let cli = cocon.api("alice.test", Some(&token));
    assert_eq!(
        cli.delete(&format!("/settings/sessions/{}", others[0])).await.status,
        403
    );
    assert_eq!(second.get("/").await.status, 200, "still signed in");

    assert_eq!(first.delete("/settings/sessions/no-such-session").await.status, 404);
    assert_eq!(
        first.delete(&format!("/settings/sessions/{}", others[0])).await.status,
        204
    );
    assert_eq!(second.get("/").await.header("location"), Some("/auth/login"));
    assert_eq!(first.get("/").await.status, 200, "this device stays signed in");
}

/// The account page's e-mail form: the person, signed in on the instance's own page, changes
/// the address passphrase resets go to; what is not an address is refused and changes nothing.
#[tokio::test]
async fn test_the_person_changes_the_email_address_on_the_account_page() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut alice = person(&cocon, "alice.test").await;
    let page = alice.get("/").await;
    assert!(page.text.contains("action=\"/auth/email\""), "{}", page.text);
    let csrf = alice.csrf();

    let refused = alice
        .post_form("/auth/email", &[("csrf_token", &csrf), ("email", "not an address")])
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("is not an e-mail address"), "{}", refused.text);
    let forged = alice
        .post_form(
            "/auth/email",
            &[("csrf_token", "forged"), ("email", "mallory@evil.example")],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text);

    let changed = alice
        .post_form("/auth/email", &[("csrf_token", &csrf), ("email", "alice@example.org")])
        .await;
    assert_eq!(changed.status, 303, "{}", changed.text);
    assert_eq!(changed.header("location"), Some("/?email=1"));
    let read = alice.get("/settings/instance").await;
    assert_eq!(read.json()["data"]["attributes"]["email"], "alice@example.org");
    assert!(
        alice
            .get("/?email=1")
            .await
            .text
            .contains("value=\"alice@example.org\"")
    );
}
