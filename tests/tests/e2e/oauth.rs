//! OAuth 2 for clients, end to end: registration and its management (RFC 7591/7592), consent
//! (login first, CSRF, refusal), codes with PKCE (single use, bound to client, redirect URI and
//! verifier), refresh-token rotation and reuse detection, scopes enforced on `/data`,
//! revocation, other instances; and the same flow driven by a real third-party OAuth library
//! (Python's authlib).

use base64::Engine;
use cocon_tests::{Browser, Cocon, hidden_field, onboard};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;

const PASS: &str = "correct horse battery staple";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

async fn register(b: &mut Browser, metadata: Value) -> (u16, Value) {
    let page = b.request(Method::POST, "/auth/register", None, Some(&metadata)).await;
    (page.status, page.json())
}

fn app(public: bool) -> Value {
    json!({
        "redirect_uris": [REDIRECT],
        "client_name": "Notes on the go",
        "software_id": "github.com/example/notes",
        "client_uri": "https://notes.example",
        "token_endpoint_auth_method": if public { "none" } else { "client_secret_basic" },
    })
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), urlencoding_decode(v)))
        .collect()
}

fn urlencoding_decode(v: &str) -> String {
    let wrapped = format!("v={v}");
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://x/?{wrapped}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs[0].1.clone()
}

/// The authorize URL's path and query.
fn authorize_path(client_id: &str, scope: &str, state: &str, verifier: Option<&str>) -> String {
    let mut url = reqwest::Url::parse("http://x/auth/authorize").unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", scope)
        .append_pair("state", state);
    if let Some(v) = verifier {
        url.query_pairs_mut()
            .append_pair("code_challenge", &challenge(v))
            .append_pair("code_challenge_method", "S256");
    }
    format!("{}?{}", url.path(), url.query().unwrap())
}

/// Consents on the page and returns where the browser is sent (the client's redirect URI).
async fn consent(person: &mut Browser, path: &str, approve: bool) -> String {
    let page = person.get(path).await;
    assert_eq!(page.status, 200, "{page:?}");
    let mut fields: Vec<(String, String)> = [
        "csrf_token",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .map(|k| (k.to_string(), hidden_field(&page.text, k).unwrap_or_default()))
    .collect();
    fields.push((if approve { "approve" } else { "deny" }.into(), "1".into()));
    let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let answer = person.post_form("/auth/authorize", &form).await;
    assert_eq!(answer.status, 302, "{answer:?}");
    answer.header("location").unwrap().to_string()
}

async fn token(b: &mut Browser, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
    let auth = basic.map(|(id, secret)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    });
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("authorization", a)).into_iter().collect();
    let page = b
        .send(Method::POST, "/auth/access_token", &headers, Some(form), None)
        .await;
    assert_eq!(page.header("cache-control"), Some("no-store"));
    (page.status, page.json())
}

/// The person consents to a confidential `client` (no PKCE); its access token.
async fn access_token(person: &mut Browser, anyone: &mut Browser, client: &Value) -> String {
    let id = client["client_id"].as_str().unwrap();
    let secret = client["client_secret"].as_str().unwrap();
    let location = consent(person, &authorize_path(id, "io.cozy.notes", "s", None), true).await;
    let code = query_of(&location)["code"].clone();
    let (status, tokens) = token(
        anyone,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
        Some((id, secret)),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

async fn with_bearer(b: &mut Browser, method: Method, path: &str, token: &str, body: Option<&Value>) -> u16 {
    let auth = format!("Bearer {token}");
    b.send(method, path, &[("authorization", &auth)], None, body)
        .await
        .status
}

#[tokio::test]
async fn test_registration_and_its_management() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut person = onboard(&cocon, "alice.test", PASS).await;
    let mut anyone = Browser::new(&cocon.http, "alice.test");

    for (bad, error) in [
        (json!({"client_name": "x", "software_id": "x"}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["http://evil.example/cb"], "client_name": "x", "software_id": "x"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["javascript:alert(1)"], "client_name": "x", "software_id": "x"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "software_id": "x"}),
            "invalid_client_metadata",
        ),
        (json!([1, 2]), "invalid_client_metadata"),
    ] {
        let (status, body) = register(&mut anyone, bad.clone()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{bad}");
    }
    let page = anyone.send(Method::POST, "/auth/register", &[], None, None).await;
    assert_eq!(page.status, 400);

    let (status, client) = register(&mut anyone, app(false)).await;
    assert_eq!(status, 201, "{client}");
    let id = client["client_id"].as_str().unwrap().to_string();
    let reg = client["registration_access_token"].as_str().unwrap().to_string();
    assert!(client["client_secret"].as_str().is_some_and(|s| s.len() >= 43));
    assert_eq!(client["client_name"], "Notes on the go");
    assert_eq!(client["grant_types"], json!(["authorization_code", "refresh_token"]));

    // RFC 7592, with the registration token only.
    let path = format!("/auth/register/{id}");
    let auth = format!("Bearer {reg}");
    let read = anyone
        .send(Method::GET, &path, &[("authorization", &auth)], None, None)
        .await;
    assert_eq!(read.status, 200);
    assert!(read.json()["client_secret"].is_null(), "the secret is shown once");
    let wrong = anyone
        .send(Method::GET, &path, &[("authorization", "Bearer nope")], None, None)
        .await;
    assert_eq!(
        (wrong.status, wrong.json()["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let mut renamed = app(false);
    renamed["client_name"] = json!("Notes, renamed");
    let put = anyone
        .send(Method::PUT, &path, &[("authorization", &auth)], None, Some(&renamed))
        .await;
    assert_eq!(
        (put.status, put.json()["client_name"].as_str()),
        (200, Some("Notes, renamed"))
    );

    // The person sees it, and the client can unregister itself.
    let list = person.get("/settings/clients").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["data"][0]["attributes"]["client_name"], "Notes, renamed");
    assert_eq!(anyone.get("/settings/clients").await.status, 401);
    assert_eq!(
        anyone
            .send(Method::DELETE, &path, &[("authorization", &auth)], None, None)
            .await
            .status,
        204
    );
    assert_eq!(
        anyone
            .send(Method::GET, &path, &[("authorization", &auth)], None, None)
            .await
            .status,
        401
    );
    assert_eq!(person.get("/settings/clients").await.json()["data"], json!([]));
}

#[tokio::test]
async fn test_code_flow_with_pkce_refresh_rotation_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut person = onboard(&cocon, "alice.test", PASS).await;
    let mut anyone = Browser::new(&cocon.http, "alice.test");
    let (_, client) = register(&mut anyone, app(false)).await;
    let id = client["client_id"].as_str().unwrap().to_string();
    let secret = client["client_secret"].as_str().unwrap().to_string();
    let (_, public) = register(&mut anyone, app(true)).await;
    let public_id = public["client_id"].as_str().unwrap().to_string();
    let scope = "io.cozy.notes io.cozy.contacts:GET";
    let verifier = "a-verifier-of-more-than-43-characters-abcdefghijklmnop";

    // Not signed in: to the login page, and back here after.
    let path = authorize_path(&id, scope, "st1", Some(verifier));
    let mut stranger = Browser::new(&cocon.http, "alice.test");
    let page = stranger.get(&path).await;
    assert_eq!(page.status, 303);
    assert!(
        page.header("location")
            .unwrap()
            .starts_with("/auth/login?redirect=%2Fauth%2Fauthorize")
    );

    // Requests that cannot go back to the client get a page, never a redirect.
    let mut bad_redirect = path.replace("127.0.0.1%3A9", "evil.example");
    assert_ne!(bad_redirect, path);
    let page = person.get(&bad_redirect).await;
    assert_eq!(page.status, 400);
    assert!(page.header("location").is_none());
    bad_redirect = path.replace(&id, "unknown-client");
    assert_eq!(person.get(&bad_redirect).await.status, 400);
    assert_eq!(
        person.get(&path.replace("&state=st1", "")).await.status,
        400,
        "state is mandatory"
    );
    // A public client must use PKCE: the error goes back to the client.
    let page = person.get(&authorize_path(&public_id, scope, "st2", None)).await;
    let back = query_of(page.header("location").unwrap());
    assert_eq!(
        (back["error"].as_str(), back["state"].as_str()),
        ("invalid_request", "st2")
    );

    // The consent page lists the scopes in plain words; refusing sends access_denied back.
    let page = person.get(&path).await;
    assert!(page.text.contains("Notes on the go") && page.text.contains("see your contacts"));
    let denied = query_of(&consent(&mut person, &path, false).await);
    assert_eq!(
        (denied["error"].as_str(), denied["state"].as_str()),
        ("access_denied", "st1")
    );
    // CSRF: a form without the person's token is refused.
    let forged = person
        .post_form(
            "/auth/authorize",
            &[
                ("client_id", &id),
                ("redirect_uri", REDIRECT),
                ("state", "x"),
                ("scope", scope),
                ("approve", "1"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);

    // Approve: a code, exchanged once, with the right client, redirect URI and verifier.
    let location = consent(&mut person, &path, true).await;
    assert!(location.starts_with(REDIRECT));
    let back = query_of(&location);
    assert_eq!(back["state"], "st1");
    let code = back["code"].clone();
    let exchange = |verifier: &'static str, redirect: &'static str| {
        let code = code.clone();
        move || {
            vec![
                ("grant_type".to_string(), "authorization_code".to_string()),
                ("code".into(), code.clone()),
                ("redirect_uri".into(), redirect.to_string()),
                ("code_verifier".into(), verifier.to_string()),
            ]
        }
    };
    let as_form = |v: &Vec<(String, String)>| -> Vec<(String, String)> { v.clone() };
    for (form, creds, error, status) in [
        (
            exchange("wrong-verifier", REDIRECT)(),
            Some((id.as_str(), secret.as_str())),
            "invalid_grant",
            400,
        ),
        (
            exchange(verifier, "http://127.0.0.1:9/other")(),
            Some((id.as_str(), secret.as_str())),
            "invalid_grant",
            400,
        ),
        (
            exchange(verifier, REDIRECT)(),
            Some((id.as_str(), "wrong secret")),
            "invalid_client",
            401,
        ),
        (
            exchange(verifier, REDIRECT)(),
            Some((public_id.as_str(), "")),
            "invalid_grant",
            400,
        ),
    ] {
        let form = as_form(&form);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (s, body) = token(&mut anyone, &pairs, creds).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (status, Some(error)),
            "{pairs:?} {creds:?}"
        );
    }
    let good = exchange(verifier, REDIRECT)();
    let pairs: Vec<(&str, &str)> = good.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (s, tokens) = token(&mut anyone, &pairs, Some((&id, &secret))).await;
    assert_eq!(s, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["scope"], scope);
    let (s, replay) = token(&mut anyone, &pairs, Some((&id, &secret))).await;
    assert_eq!(
        (s, replay["error"].as_str()),
        (400, Some("invalid_grant")),
        "a code works once"
    );

    // The access token is limited to its scope on every route.
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let note = json!({"title": "from the app"});
    assert_eq!(
        with_bearer(&mut anyone, Method::POST, "/data/io.cozy.notes/", &access, Some(&note)).await,
        201
    );
    assert_eq!(
        with_bearer(
            &mut anyone,
            Method::GET,
            "/data/io.cozy.contacts/_all_docs",
            &access,
            None
        )
        .await,
        200
    );
    assert_eq!(
        with_bearer(
            &mut anyone,
            Method::POST,
            "/data/io.cozy.contacts/",
            &access,
            Some(&note)
        )
        .await,
        403
    );
    assert_eq!(
        with_bearer(&mut anyone, Method::GET, "/data/io.cozy.files/_all_docs", &access, None).await,
        403
    );
    assert_eq!(
        with_bearer(&mut anyone, Method::GET, "/settings/clients", &access, None).await,
        403
    );
    // The token says what it may do, as cozy-stack's /permissions/self.
    let auth = format!("Bearer {access}");
    let me = anyone
        .send(
            Method::GET,
            "/permissions/self",
            &[("authorization", &auth)],
            None,
            None,
        )
        .await;
    assert_eq!(me.status, 200);
    let me = me.json();
    assert_eq!(me["data"]["attributes"]["type"], "oauth");
    assert_eq!(
        me["data"]["attributes"]["source_id"],
        format!("io.cozy.oauth.clients/{id}")
    );
    assert_eq!(
        me["data"]["attributes"]["permissions"]["rule1"],
        json!({"type": "io.cozy.contacts", "verbs": ["GET"]})
    );
    assert_eq!(anyone.get("/permissions/self").await.status, 401);
    // Another instance does not know it.
    let _bob = onboard(&cocon, "bob.test", PASS).await;
    let mut at_bob = Browser::new(&cocon.http, "bob.test");
    assert_eq!(
        with_bearer(&mut at_bob, Method::GET, "/data/io.cozy.notes/_all_docs", &access, None).await,
        401
    );
    let (s, body) = token(
        &mut at_bob,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_client")));

    // Refresh rotates; reusing the old refresh token revokes the whole grant.
    let first = tokens["refresh_token"].as_str().unwrap().to_string();
    let (s, second) = token(
        &mut anyone,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first);
    let second_access = second["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        with_bearer(
            &mut anyone,
            Method::GET,
            "/data/io.cozy.notes/_all_docs",
            &second_access,
            None
        )
        .await,
        200
    );
    let (s, body) = token(
        &mut anyone,
        &[("grant_type", "refresh_token"), ("refresh_token", &first)],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = token(
        &mut anyone,
        &[("grant_type", "refresh_token"), ("refresh_token", &second_refresh)],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(s, 400, "the family is revoked");
    assert_eq!(
        with_bearer(
            &mut anyone,
            Method::GET,
            "/data/io.cozy.notes/_all_docs",
            &second_access,
            None
        )
        .await,
        401
    );
    let (s, body) = token(
        &mut anyone,
        &[("grant_type", "password"), ("username", "x")],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("unsupported_grant_type")));

    // A new grant, then the person revokes the client: its tokens stop at once.
    let location = consent(&mut person, &authorize_path(&id, scope, "st3", Some(verifier)), true).await;
    let code = query_of(&location)["code"].clone();
    let (_, tokens) = token(
        &mut anyone,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        Some((&id, &secret)),
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        with_bearer(&mut anyone, Method::GET, "/data/io.cozy.notes/_all_docs", &access, None).await,
        200
    );
    assert_eq!(person.delete(&format!("/settings/clients/{id}")).await.status, 204);
    assert_eq!(
        with_bearer(&mut anyone, Method::GET, "/data/io.cozy.notes/_all_docs", &access, None).await,
        401
    );
    let (s, _) = token(
        &mut anyone,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(s, 401, "the client is gone");
    assert_eq!(person.delete(&format!("/settings/clients/{id}")).await.status, 404);
}

#[tokio::test]
async fn test_a_third_party_oauth_library_completes_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let person = onboard(&cocon, "alice.test", PASS).await;
    let session = person.cookies["cozysessid"].clone();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/oauth/authlib_client.py");
    let args = [script.to_string(), cocon.http.clone(), "alice.test".into(), session];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args(&args)
            .output()
            .expect("python3 runs (the test command installs python3-authlib)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "authlib flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(report["created_status"], 201);
    assert_eq!(report["refreshed"], true);
    assert_eq!(report["reuse_error"], "invalid_grant");
}

/// Registrations that never led to a token are removed once past their time (at the next
/// registration): anyone may register, so they must not pile up. Clients in use stay.
#[tokio::test]
async fn test_unused_registrations_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        // (Times have one-second resolution: 2 seconds leave at least a whole one before the
        // unused registration is past its time.)
        .env("COCON_AUTH__UNUSED_CLIENT_TTL_SECS", "2")
        .start()
        .await
        .unwrap();
    let mut person = onboard(&cocon, "alice.test", PASS).await;
    let mut anyone = Browser::new(&cocon.http, "alice.test");
    let (_, unused) = register(&mut anyone, app(false)).await;
    let (_, used) = register(&mut anyone, app(false)).await;
    let access = access_token(&mut person, &mut anyone, &used).await;
    let read = |client: &Value| {
        let path = format!("/auth/register/{}", client["client_id"].as_str().unwrap());
        let auth = format!("Bearer {}", client["registration_access_token"].as_str().unwrap());
        (path, auth)
    };
    let (path, auth) = read(&unused);
    assert_eq!(
        anyone
            .send(Method::GET, &path, &[("authorization", &auth)], None, None)
            .await
            .status,
        200
    );

    // Past its time, the next registration takes the unused one away.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (status, _) = register(&mut anyone, app(true)).await;
    assert_eq!(status, 201);
    assert_eq!(
        anyone
            .send(Method::GET, &path, &[("authorization", &auth)], None, None)
            .await
            .status,
        401
    );
    let (path, auth) = read(&used);
    assert_eq!(
        anyone
            .send(Method::GET, &path, &[("authorization", &auth)], None, None)
            .await
            .status,
        200
    );
    assert_eq!(
        with_bearer(&mut anyone, Method::GET, "/data/io.cozy.notes/_all_docs", &access, None).await,
        200
    );
    let names: Vec<Value> = person.get("/settings/clients").await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(names.len(), 2, "the used one and the new one: {names:?}");
}

/// An OAuth client sends the notification categories of its registration (`notifications`),
/// with their properties; one that declares none sends any category (cozy-stack's quirk, which
/// its clients rely on).
#[tokio::test]
async fn test_an_oauth_client_notifies_within_what_it_declared() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut person = onboard(&cocon, "alice.test", PASS).await;
    let mut anyone = Browser::new(&cocon.http, "alice.test");
    let mut declaring = app(false);
    declaring["notifications"] = json!({"balance-lower": {"description": "Low balance", "stateful": true}});
    let mut access_of = Vec::new();
    for metadata in [declaring, app(false)] {
        let (status, client) = register(&mut anyone, metadata).await;
        assert_eq!(status, 201, "{client}");
        let id = client["client_id"].as_str().unwrap().to_string();
        let access = access_token(&mut person, &mut anyone, &client).await;
        access_of.push((id, access));
    }
    let notify = |token: &str, attributes: Value| {
        let api = cocon.api("alice.test", Some(token));
        async move {
            api.post("/notifications", &json!({"data": {"attributes": attributes}}))
                .await
        }
    };
    let (declaring_id, declaring) = &access_of[0];
    let low = json!({"category": "balance-lower", "title": "Low balance", "state": "low"});
    let sent = notify(declaring, low.clone()).await;
    assert_eq!(sent.status, 201, "{}", sent.text);
    let a = &sent.body["data"]["attributes"];
    assert_eq!(a["originator"], "oauth");
    assert_eq!(a["source_id"], format!("cozy/oauth/{declaring_id}/balance-lower"));
    assert_eq!(
        notify(declaring, low).await.body["data"]["meta"]["dropped"],
        "same_state"
    );
    let undeclared = notify(declaring, json!({"category": "news", "title": "Hi"})).await;
    assert_eq!(undeclared.status, 403, "{}", undeclared.text);
    let (_, quiet) = &access_of[1];
    let any = notify(quiet, json!({"category": "news", "title": "Hi"})).await;
    assert_eq!(any.status, 201, "{}", any.text);
}
