//! Sign-in through an institution's identity provider (cozy-stack's delegated authentication)
//! against a real OpenID provider on loopback: npm `oidc-provider` (OpenID certified), run by
//! Node.js from `tests/oidc/provider.mjs`. In Chromium (`tests/browser/oidc_flow.py`): an
//! instance whose only way in is the provider, an instance created on its first sign-in from
//! the login domain, and a person refused on another's instance. Over HTTP: answers that are
//! forged, replayed, from another provider or for another browser are refused, and nothing
//! of the provider's secret leaks. An app trades the provider's token for Cocon's
//! (`POST /oidc/access_token`) against a stand-in provider that signs what the test asks.

use std::process::{Child, Command, Stdio};

use cocon_tests::{Browser, Cocon, Page};
use serde_json::{Value, json};

use super::browser::run_script;

const SECRET: &str = "the-provider-client-secret";

/// The provider, running until dropped.
struct Provider {
    child: Child,
    _code: tempfile::TempDir,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Installs `tests/oidc` (`npm ci`) and starts the provider on `port`, its one client
/// (`cocon`) sent back to `redirect_uri`.
fn start_provider(port: u16, redirect_uri: &str) -> Provider {
    use std::io::BufRead;
    let code = tempfile::tempdir().unwrap();
    cocon_tests::npm_ci(
        "oidc",
        &["package.json", "package-lock.json", "provider.mjs"],
        code.path(),
        false,
    );
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(code.path())
        .env("PORT", port.to_string())
        .env("REDIRECT_URI", redirect_uri)
        .env("CLIENT_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (the test command installs Node.js)");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().and_then(Result::ok);
    assert_eq!(ready.as_deref(), Some("ready"), "the provider started");
    // Its output is read to the end: a closed pipe would kill it at its next line.
    std::thread::spawn(move || lines.for_each(drop));
    Provider {
        child,
        _code: code,
        issuer: format!("http://127.0.0.1:{port}"),
    }
}

/// Cocon with a `school` context signing in through the provider at `issuer`, and its
/// instance `alice.localhost`. With `full`: the instances are `<school_id>.localhost` (a claim
/// of the provider's UserInfo answer), their only way in is the provider, and `login.localhost`
/// creates them on a first sign-in; else the claim is `sub`.
async fn start_cocon(dir: &std::path::Path, http_port: u16, issuer: &str, full: bool) -> Cocon {
    start_cocon_env(dir, http_port, issuer, full, &[]).await
}

/// [`start_cocon`] with more environment.
async fn start_cocon_env(
    dir: &std::path::Path,
    http_port: u16,
    issuer: &str,
    full: bool,
    env: &[(String, String)],
) -> Cocon {
    let var = |k: &str| format!("COCON_CONTEXTS__SCHOOL__{k}");
    let mut builder = Cocon::builder(dir)
        .args(["--http-addr".to_string(), format!("127.0.0.1:{http_port}")])
        .env(&var("DOMAIN_TEMPLATE"), "{user}.localhost")
        .env(&var("OIDC__ISSUER"), issuer)
        .env(&var("OIDC__CLIENT_ID"), "cocon")
        .env(&var("OIDC__CLIENT_SECRET"), SECRET)
        .env(
            &var("OIDC__REDIRECT_URI"),
            format!("http://callback.localhost:{http_port}/oidc/redirect"),
        );
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    if full {
        builder = builder
            .env(&var("OIDC__USERINFO_INSTANCE_FIELD"), "school_id")
            .env(&var("OIDC__LOGIN_DOMAIN"), "login.localhost")
            .env(&var("OIDC__ALLOW_INSTANCE_CREATION"), "true")
            .env(&var("OIDC__DISABLE_PASSWORD_AUTHENTICATION"), "true");
    }
    let cocon = builder.start().await.unwrap();
    add_school_instance(&cocon, "alice.localhost").await;
    cocon
}

/// The real provider and Cocon signing in through it (`start_cocon`, full), on `http_port`.
async fn school_with_provider(dir: &std::path::Path, http_port: u16) -> (Cocon, Provider) {
    let provider_port = free_port();
    // npm installs the provider while Cocon starts.
    let provider = std::thread::spawn(move || {
        start_provider(
            provider_port,
            &format!("http://callback.localhost:{http_port}/oidc/redirect"),
        )
    });
    let cocon = start_cocon(dir, http_port, &format!("http://127.0.0.1:{provider_port}"), true).await;
    (cocon, provider.join().expect("the provider is installed"))
}

async fn add_school_instance(cocon: &Cocon, domain: &str) {
    let (status, body) = cocon
        .admin(
            reqwest::Method::POST,
            "/instances",
            &[("Domain", domain), ("ContextName", "school")],
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sign_in_through_the_institutions_provider_in_a_real_browser() {
    let http_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (cocon, provider) = school_with_provider(dir.path(), http_port).await;
    let origin = |host: &str| format!("http://{host}.localhost:{http_port}");
    let seen = run_script(
        "oidc_flow.py",
        &[&provider.issuer, &origin("alice"), &origin("login"), &origin("bob")],
    )
    .await;
    for step in [
        "sent_to_provider",
        "wrong_password_refused",
        "alice_signed_in",
        "bob_unknown_before",
        "bob_created_and_signed_in",
        "alice_refused_on_bob",
    ] {
        assert_eq!(seen[step], true, "{step}: {seen}");
    }
    // Bob's instance was created in the school context, with what the provider said of him.
    let (status, bob) = cocon
        .admin(reqwest::Method::GET, "/instances/bob.localhost", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{bob}");
    assert_eq!(bob["context"], "school", "{bob}");
    assert_eq!(bob["email"], "bob@school.test", "{bob}");
    assert_eq!(bob["public_name"], "Bob Durand", "{bob}");
}

/// The provider's answer at `/oidc/redirect`, for a sign-in started at `start` (a browser on an
/// instance or the login domain) as `user`: follows the provider's pages by hand.
async fn sign_in_at_provider(provider: &Provider, start: &mut Browser, user: &str) -> String {
    let started = start.get("/oidc/start").await;
    assert_eq!(started.status, 303, "{started:?}");
    assert!(started.set_cookie("cocon_oidc").is_some_and(|c| c.contains("HttpOnly")));
    let mut at_provider = Browser::new(&provider.issuer, provider.issuer.trim_start_matches("http://"));
    let mut location = started.header("location").unwrap().to_string();
    assert!(location.starts_with(&provider.issuer), "{location}");
    for _ in 0..10 {
        if location.contains("/oidc/redirect") {
            return location;
        }
        let path = location.trim_start_matches(&provider.issuer).to_string();
        let page: Page = at_provider.get(&path).await;
        if page.status == 200 && page.text.contains("School sign-in") {
            let action = page.text.split("action=\"").nth(1).unwrap().split('"').next().unwrap();
            let password = format!("{user}-password");
            let posted = at_provider
                .post_form(action, &[("username", user), ("password", &password)])
                .await;
            assert_eq!(posted.status, 303, "{posted:?}");
            location = posted.header("location").unwrap().to_string();
        } else {
            assert!(matches!(page.status, 302 | 303), "{page:?}");
            location = page.header("location").unwrap().to_string();
        }
        if location.starts_with('/') {
            location = format!("{}{location}", provider.issuer);
        }
    }
    panic!("the provider never sent the browser back: {location}");
}

/// The path and query of `url`.
fn path_of(url: &str) -> String {
    let parsed = url::Url::parse(url).unwrap();
    format!("{}?{}", parsed.path(), parsed.query().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_forged_replayed_and_misdirected_sign_ins_are_refused() {
    let http_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (cocon, provider) = school_with_provider(dir.path(), http_port).await;
    let alice_host = format!("alice.localhost:{http_port}");
    let mut alice = Browser::new(&cocon.http, &alice_host);

    // The passphrase is no way in: its page sends to the provider, its form is refused.
    let page = alice.get("/auth/login?redirect=%2Fsettings").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), Some("/oidc/start?redirect=%2Fsettings"));
    let refused = alice
        .post_form("/auth/login", &[("csrf_token", "x"), ("password", "anything")])
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");

    // The provider's answer, on the callback host, goes back to the host the sign-in began on.
    let answer = sign_in_at_provider(&provider, &mut alice, "alice").await;
    let mut callback = Browser::new(&cocon.http, &format!("callback.localhost:{http_port}"));
    let back = callback.get(&path_of(&answer)).await;
    assert_eq!(back.status, 303, "{back:?}");
    let login = back.header("location").unwrap().to_string();
    assert!(
        login.starts_with(&format!("http://{alice_host}/oidc/login?state=")),
        "{login}"
    );
    let login = path_of(&login);

    // Refused, without spending the sign-in: another browser (no flow cookie), a state
    // tampered with, an answer claiming another provider, a flow cookie of another sign-in.
    let mut stranger = Browser::new(&cocon.http, &alice_host);
    let no_cookie = stranger.get(&login).await;
    assert_eq!(no_cookie.status, 400, "{no_cookie:?}");
    assert!(no_cookie.text.contains("did not start the sign-in"));
    let tampered = alice.get(&login.replacen("state=", "state=x", 1)).await;
    assert_eq!(tampered.status, 401, "{tampered:?}");
    let mixed_up = alice
        .get(&login.replace(
            &format!("iss={}", urlencode(&provider.issuer)),
            "iss=http%3A%2F%2Fevil.test",
        ))
        .await;
    assert_eq!(mixed_up.status, 401, "{mixed_up:?}");
    assert!(mixed_up.text.contains("evil.test"), "{}", mixed_up.text);
    let mut other_flow = Browser::new(&cocon.http, &alice_host);
    other_flow.get("/oidc/start").await;
    let crossed = other_flow.get(&login).await;
    assert_eq!(crossed.status, 401, "{crossed:?}");
    assert!(crossed.text.contains("another sign-in"));
    assert!(
        alice.cookies.contains_key("cocon_oidc"),
        "a refusal keeps no cookie of its own"
    );

    // The right browser with the right answer is signed in, and lands where it started.
    let flow_cookie = alice.cookies.get("cocon_oidc").cloned().unwrap();
    let signed_in = alice.get(&login).await;
    assert_eq!(signed_in.status, 303, "{signed_in:?}");
    assert!(alice.cookies.contains_key("cozysessid"));
    assert!(
        !alice.cookies.contains_key("cocon_oidc"),
        "the flow's cookie is cleared"
    );
    let home = alice.get("/").await;
    assert!(home.text.contains("You are signed in"), "{}", home.text);

    // Replayed (the same answer and cookie again): refused.
    let mut replay = Browser::new(&cocon.http, &alice_host);
    replay.cookies.insert("cocon_oidc".into(), flow_cookie);
    let replayed = replay.get(&login).await;
    assert_eq!(replayed.status, 401, "{replayed:?}");
    assert!(!replay.cookies.contains_key("cozysessid"));

    // A state not signed by Cocon is no redirect anywhere; a provider's refusal says why.
    let forged = callback
        .get("/oidc/redirect?state=eyJhbGciOiJub25lIn0.eyJpc3MiOiJldmlsLnRlc3QifQ.&code=x")
        .await;
    assert_eq!(forged.status, 401, "{forged:?}");
    assert!(forged.header("location").is_none());
    let denied = callback
        .get("/oidc/redirect?error=access_denied&error_description=the+person+said+no")
        .await;
    assert_eq!(denied.status, 401);
    assert!(denied.text.contains("the person said no"));

    // Apps learn how the instance signs in.
    let token = cocon.token("alice.localhost", "io.cozy.settings").await.unwrap();
    let api = cocon.api("alice.localhost", Some(&token));
    let capabilities = api.get("/settings/capabilities").await;
    assert_eq!(capabilities.status, 200, "{}", capabilities.text);
    let capabilities = &capabilities.body["data"]["attributes"];
    assert_eq!(capabilities["can_auth_with_oidc"], true, "{capabilities}");
    assert_eq!(capabilities["can_auth_with_password"], false, "{capabilities}");

    // The operator sees the provider, never its secret.
    let (status, context) = cocon
        .admin(reqwest::Method::GET, "/instances/contexts/school", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(context["oidc"]["client_id"], "cocon");
    assert_eq!(context["oidc"]["client_secret"], "<redacted>");
    assert!(!context.to_string().contains(SECRET));
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What the stand-in provider's token endpoint answers next.
#[derive(Clone, Copy, PartialEq, Debug)]
enum IdToken {
    Valid,
    /// Signed by a key the provider does not publish.
    Forged,
    Expired,
    OtherAudience,
    OtherIssuer,
    /// The nonce of another sign-in (a token replayed from it).
    OtherNonce,
    /// Valid, for another person.
    OtherPerson,
    /// Valid, signed with a new key the provider published after Cocon read its keys.
    Rotated,
}

struct StandIn {
    issuer: String,
    next: std::sync::Mutex<(IdToken, String)>,
}

/// A provider that signs whatever ID token the test asks for: only a real provider's shape
/// (discovery, JWKS, token endpoint), to show what Cocon refuses. Key A is published.
async fn stand_in_provider() -> std::sync::Arc<StandIn> {
    use axum::routing::{get, post};
    use openidconnect::core::{
        CoreGenderClaim, CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
        CoreRsaPrivateSigningKey,
    };
    use openidconnect::{
        Audience, EmptyAdditionalClaims, IssuerUrl, JsonWebKeyId, Nonce, PrivateSigningKey, StandardClaims,
        SubjectIdentifier,
    };
    use serde_json::json;

    let fixture =
        |name: &str| std::fs::read_to_string(format!("{}/fixtures/oidc/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let key_a = CoreRsaPrivateSigningKey::from_pem(&fixture("key-a.pem"), Some(JsonWebKeyId::new("a".into()))).unwrap();
    let key_b = CoreRsaPrivateSigningKey::from_pem(&fixture("key-b.pem"), Some(JsonWebKeyId::new("a".into()))).unwrap();
    // Key B again, as the key the provider rotates to (its own id).
    let key_c = CoreRsaPrivateSigningKey::from_pem(&fixture("key-b.pem"), Some(JsonWebKeyId::new("c".into()))).unwrap();
    let keys = |rotated: bool| {
        let key = if rotated { &key_c } else { &key_a };
        serde_json::to_value(CoreJsonWebKeySet::new(vec![key.as_verification_key()])).unwrap()
    };
    let (jwks, rotated_jwks) = (keys(false), keys(true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let state = std::sync::Arc::new(StandIn {
        issuer: issuer.clone(),
        next: std::sync::Mutex::new((IdToken::Valid, String::new())),
    });
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let token = {
        let state = state.clone();
        move || {
            let (kind, nonce) = state.next.lock().unwrap().clone();
            let now = chrono::Utc::now();
            let (iss, aud, exp, sub, nonce) = (
                if kind == IdToken::OtherIssuer {
                    "http://127.0.0.1:1".to_string()
                } else {
                    state.issuer.clone()
                },
                if kind == IdToken::OtherAudience {
                    "someone-else"
                } else {
                    "cocon"
                },
                if kind == IdToken::Expired {
                    now - chrono::Duration::minutes(5)
                } else {
                    now + chrono::Duration::minutes(5)
                },
                if kind == IdToken::OtherPerson { "bob" } else { "alice" },
                if kind == IdToken::OtherNonce {
                    "the-nonce-of-another-sign-in".to_string()
                } else {
                    nonce
                },
            );
            let claims = CoreIdTokenClaims::new(
                IssuerUrl::new(iss).unwrap(),
                vec![Audience::new(aud.into())],
                exp,
                now - chrono::Duration::minutes(6),
                StandardClaims::<CoreGenderClaim>::new(SubjectIdentifier::new(sub.into())),
                EmptyAdditionalClaims {},
            )
            .set_nonce(Some(Nonce::new(nonce)));
            let key = match kind {
                IdToken::Forged => &key_b,
                IdToken::Rotated => &key_c,
                _ => &key_a,
            };
            let id_token =
                CoreIdToken::new(claims, key, CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, None, None).unwrap();
            axum::Json(json!({
                "access_token": "an-access-token",
                "token_type": "bearer",
                "expires_in": 300,
                "id_token": id_token.to_string(),
            }))
        }
    };
    // Handlers are cloned: the signing keys are shared.
    let token = std::sync::Arc::new(token);
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            get({
                let state = state.clone();
                move || {
                    let rotated = state.next.lock().unwrap().0 == IdToken::Rotated;
                    let answer = if rotated { rotated_jwks.clone() } else { jwks.clone() };
                    async move { axum::Json(answer) }
                }
            }),
        )
        .route(
            "/token",
            post(move || {
                let answer = token.as_ref()();
                async move { answer }
            }),
        )
        // The access tokens it knows: alice's and bob's.
        .route(
            "/userinfo",
            get(|headers: axum::http::HeaderMap| async move {
                let bearer = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                match bearer {
                    "Bearer an-access-token" => Ok(axum::Json(json!({"sub": "alice"}))),
                    "Bearer bobs-access-token" => Ok(axum::Json(json!({"sub": "bob"}))),
                    _ => Err(axum::http::StatusCode::UNAUTHORIZED),
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    state
}

/// ID tokens that are forged, expired, for another client, from another issuer, replayed from
/// another sign-in or for another person are refused; the same answer with a valid token
/// signs in (so the stand-in is right and the refusals are Cocon's), and so does one signed
/// with a key the provider rotated to after Cocon read its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_forged_expired_and_replayed_id_tokens_are_refused() {
    let provider = stand_in_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let cocon = start_cocon(dir.path(), http_port, &provider.issuer, false).await;
    let host = format!("alice.localhost:{http_port}");
    for (kind, status, says) in [
        (IdToken::Forged, 401, "not valid"),
        (IdToken::Expired, 401, "not valid"),
        (IdToken::OtherAudience, 401, "not valid"),
        (IdToken::OtherIssuer, 401, "not valid"),
        (IdToken::OtherNonce, 401, "not valid"),
        (IdToken::OtherPerson, 403, "not of alice.localhost"),
        (IdToken::Valid, 303, ""),
        // Cocon read key A at the first sign-in: it reads the keys again for the new one.
        (IdToken::Rotated, 303, ""),
    ] {
        let mut browser = Browser::new(&cocon.http, &host);
        let started = browser.get("/oidc/start").await;
        assert_eq!(started.status, 303, "{started:?}");
        let authorize = url::Url::parse(started.header("location").unwrap()).unwrap();
        let param = |k: &str| authorize.query_pairs().find(|(n, _)| n == k).unwrap().1.to_string();
        assert_eq!(param("code_challenge_method"), "S256");
        assert_eq!(param("client_id"), "cocon");
        *provider.next.lock().unwrap() = (kind, param("nonce"));
        let answer = browser
            .get(&format!("/oidc/login?state={}&code=a-code", urlencode(&param("state"))))
            .await;
        assert_eq!(answer.status, status, "{kind:?}: {answer:?}");
        assert!(answer.text.contains(says), "{kind:?}: {}", answer.text);
        assert_eq!(browser.cookies.contains_key("cozysessid"), status == 303, "{kind:?}");
    }
}

/// An app of alice's instance trades a token of the provider for Cocon's
/// (`POST /oidc/access_token`): with an ID token checked against the provider's keys, or an
/// access token the provider's UserInfo endpoint vouches for. Forged, expired, foreign and
/// unknown tokens, another person's, a wrong client secret and a context that does not allow
/// it are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_an_app_trades_the_providers_token_for_cocons_only_when_allowed_and_valid() {
    let provider = stand_in_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let college = |k: &str| format!("COCON_CONTEXTS__COLLEGE__{k}");
    let env = [
        (
            "COCON_CONTEXTS__SCHOOL__OIDC__ALLOW_OAUTH_TOKEN".to_string(),
            "true".to_string(),
        ),
        (college("DOMAIN_TEMPLATE"), "{user}.localhost".to_string()),
        (college("OIDC__ISSUER"), provider.issuer.clone()),
        (college("OIDC__CLIENT_ID"), "cocon".to_string()),
        (college("OIDC__CLIENT_SECRET"), SECRET.to_string()),
        (
            college("OIDC__REDIRECT_URI"),
            format!("http://callback.localhost:{http_port}/oidc/redirect"),
        ),
    ];
    let cocon = start_cocon_env(dir.path(), http_port, &provider.issuer, false, &env).await;
    let (status, body) = cocon
        .admin(
            reqwest::Method::POST,
            "/instances",
            &[("Domain", "carol.localhost"), ("ContextName", "college")],
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");

    // The instances' hosts lead to Cocon (`*.localhost` is not in every resolver).
    let cocon_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
    let http = reqwest::Client::builder()
        .resolve("alice.localhost", cocon_addr)
        .resolve("carol.localhost", cocon_addr)
        .build()
        .unwrap();
    let register = |host: &str| {
        let (http, url) = (http.clone(), format!("http://{host}:{http_port}/auth/register"));
        async move {
            let answer: Value = http
                .post(url)
                .json(
                    &json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "client_name": "School app",
                              "software_id": "school.example/app"}),
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (
                answer["client_id"].as_str().unwrap().to_string(),
                answer["client_secret"].as_str().unwrap().to_string(),
            )
        }
    };
    let (client_id, client_secret) = register("alice.localhost").await;
    let id_token = |kind: IdToken| {
        *provider.next.lock().unwrap() = (kind, String::new());
        let (http, url) = (http.clone(), format!("{}/token", provider.issuer));
        async move {
            let answer: Value = http.post(url).send().await.unwrap().json().await.unwrap();
            answer["id_token"].as_str().unwrap().to_string()
        }
    };
    let trade = |host: &str, body: Value| {
        let (http, url) = (http.clone(), format!("http://{host}:{http_port}/oidc/access_token"));
        async move {
            let answer = http.post(url).json(&body).send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let asking = |token: (&str, String)| {
        let mut body = json!({"client_id": client_id, "client_secret": client_secret, "scope": "io.cozy.files"});
        body[token.0] = json!(token.1);
        body
    };

    // An ID token of the provider: Cocon's tokens, which reach alice's files.
    let (status, tokens) = trade("alice.localhost", asking(("id_token", id_token(IdToken::Valid).await))).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        (tokens["token_type"].as_str(), tokens["scope"].as_str()),
        (Some("bearer"), Some("io.cozy.files"))
    );
    assert!(tokens["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));
    let files = http
        .get(format!(
            "http://alice.localhost:{http_port}/files/io.cozy.files.root-dir"
        ))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(files.status(), 200);
    // An access token of the provider, which its UserInfo endpoint says is alice's.
    let (status, tokens) = trade("alice.localhost", asking(("oidc_token", "an-access-token".into()))).await;
    assert_eq!(status, 200, "{tokens}");

    for (kind, want) in [
        (IdToken::Forged, 401),
        (IdToken::Expired, 401),
        (IdToken::OtherAudience, 401),
        (IdToken::OtherIssuer, 401),
        (IdToken::OtherPerson, 403),
    ] {
        let (status, answer) = trade("alice.localhost", asking(("id_token", id_token(kind).await))).await;
        assert_eq!(status, want, "{kind:?}: {answer}");
        assert!(answer["access_token"].is_null(), "{kind:?}: {answer}");
    }
    for (token, want) in [("stolen", 401), ("bobs-access-token", 403), ("", 400)] {
        let (status, answer) = trade("alice.localhost", asking(("oidc_token", token.into()))).await;
        assert_eq!(status, want, "{token}: {answer}");
    }
    let mut wrong = asking(("oidc_token", "an-access-token".into()));
    wrong["client_secret"] = json!("not-the-secret");
    let (status, answer) = trade("alice.localhost", wrong).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client")),
        "{answer}"
    );
    let (status, answer) = trade(
        "alice.localhost",
        json!({"client_id": client_id, "client_secret": client_secret,
        "id_token": id_token(IdToken::Valid).await}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_scope")),
        "{answer}"
    );

    // The college does not allow it, however valid the token.
    let (client_id, client_secret) = register("carol.localhost").await;
    let (status, answer) = trade(
        "carol.localhost",
        json!({"client_id": client_id, "client_secret": client_secret, "scope": "io.cozy.files",
               "oidc_token": "an-access-token"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{answer}"
    );
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("allow_oauth_token")
    );
}

/// A sign-in link the school's portal signs with the context's `jwt_secret`
/// (`https://<instance>/?jwt=…`, cozy-stack's JWT delegated authentication) signs the person
/// in, once; a link that is forged, for another person, expired, unbounded or meant to last
/// too long is refused, and so is any link on an instance whose context takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_schools_sign_in_link_signs_in_once_and_forgeries_are_refused() {
    const PORTAL_SECRET: &str = "the-portal-secret";
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_CONTEXTS__SCHOOL__JWT_SECRET", PORTAL_SECRET)
        .start()
        .await
        .unwrap();
    add_school_instance(&cocon, "alice.localhost").await;
    let (status, body) = cocon
        .admin(reqwest::Method::POST, "/instances", &[("Domain", "dan.localhost")])
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, shown) = cocon
        .admin(reqwest::Method::GET, "/instances/contexts/school", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(!shown.to_string().contains(PORTAL_SECRET), "{shown}");

    let now = chrono::Utc::now().timestamp();
    let link = |secret: &str, claims: Value| {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        format!("/?jwt={token}")
    };
    let valid = link(PORTAL_SECRET, json!({"name": "alice.localhost", "exp": now + 300}));
    let mut browser = Browser::new(&cocon.http, "alice.localhost");
    let signed_in = browser.get(&valid).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    assert!(browser.cookies.contains_key("cozysessid"));
    let home = browser.get("/").await;
    assert_eq!(home.status, 200, "signed in: {}", home.text);

    for (path, status, says) in [
        (valid.as_str(), 401, "already used"),
        (
            &link("another-secret", json!({"name": "alice.localhost", "exp": now + 300})),
            401,
            "not valid",
        ),
        (
            &link(PORTAL_SECRET, json!({"name": "bob.localhost", "exp": now + 300})),
            403,
            "for bob.localhost",
        ),
        (
            &link(PORTAL_SECRET, json!({"name": "alice.localhost", "exp": now - 5})),
            401,
            "expired",
        ),
        (&link(PORTAL_SECRET, json!({"name": "alice.localhost"})), 401, "neither"),
        (
            &link(
                PORTAL_SECRET,
                json!({"name": "alice.localhost", "exp": now + 3 * 86_400}),
            ),
            401,
            "more than a day",
        ),
    ] {
        let mut stranger = Browser::new(&cocon.http, "alice.localhost");
        let page = stranger.get(path).await;
        assert_eq!(page.status, status, "{path}: {}", page.text);
        assert!(page.text.contains(says), "{path}: {}", page.text);
        assert!(!stranger.cookies.contains_key("cozysessid"), "{path}");
    }
    // Made now, with no end: it lasts ten minutes.
    let mut browser = Browser::new(&cocon.http, "alice.localhost");
    let page = browser
        .get(&link(PORTAL_SECRET, json!({"name": "alice.localhost", "iat": now})))
        .await;
    assert_eq!(page.status, 303, "{}", page.text);
    // An instance outside the school takes no link, however signed.
    let mut browser = Browser::new(&cocon.http, "dan.localhost");
    let page = browser
        .get(&link(PORTAL_SECRET, json!({"name": "dan.localhost", "exp": now + 300})))
        .await;
    assert_eq!(page.status, 403, "{}", page.text);
    assert!(page.text.contains("no jwt_secret"), "{}", page.text);
}
