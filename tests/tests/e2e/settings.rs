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
