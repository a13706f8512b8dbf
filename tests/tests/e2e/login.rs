//! The person's front door, end to end through the real binary: onboarding link, login and
//! sessions, passphrase change (plain and with cozy-stack's client-side hash), CSRF, open
//! redirects, rate limits, cross-instance cookies, and the auth events on real NATS.

use std::time::Duration;

use base64::Engine;
use cocon_tests::{
    Browser, Cocon, NatsServer, StreamReader, onboard, onboarding_link, register_token, submit_onboarding,
};
use serde_json::{Value, json};

const PASS: &str = "correct horse battery staple";

/// cozy-stack's client-side hash, computed as its clients do.
fn cozy_hash(passphrase: &str, domain: &str, iterations: u32) -> String {
    let mut master = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        passphrase.as_bytes(),
        format!("me@{domain}").as_bytes(),
        iterations,
        &mut master,
    );
    let mut hash = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(&master, passphrase.as_bytes(), 1, &mut hash);
    base64::engine::general_purpose::STANDARD.encode(hash)
}

async fn prelogin(browser: &mut Browser) -> Value {
    let page = browser.get("/public/prelogin").await;
    assert_eq!(page.status, 200);
    page.json()
}

#[tokio::test]
async fn test_onboarding_login_sessions_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let domain = "alice.test";
    let link = onboarding_link(&cocon, domain).await;
    let token = register_token(&link);
    let mut first = Browser::new(&cocon.http, domain);
    assert_eq!(prelogin(&mut first).await["onboarded"], false);
    assert_eq!(prelogin(&mut first).await["Salt"], "me@alice.test");

    // The onboarding page, then bad submissions that change nothing.
    let page = first.get(&link).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("autocomplete=\"new-password\""));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let csrf = first.csrf();
    assert!(!csrf.is_empty(), "the page sets a CSRF cookie");
    let bad_csrf = submit_onboarding(&mut first, "forged", &token, PASS, PASS).await;
    assert_eq!(bad_csrf.status, 403, "{bad_csrf:?}");
    let differ = submit_onboarding(&mut first, &csrf, &token, PASS, "other one").await;
    assert_eq!(differ.status, 400);
    assert!(differ.text.contains("differ"));
    let short = submit_onboarding(&mut first, &csrf, &token, "short", "short").await;
    assert_eq!(short.status, 400);
    let wrong_token = submit_onboarding(&mut first, &csrf, "guess", PASS, PASS).await;
    assert_eq!(wrong_token.status, 403);
    assert_eq!(prelogin(&mut first).await["onboarded"], false, "nothing was stored");

    // The real thing: a session cookie, then the home page.
    let done = submit_onboarding(&mut first, &csrf, &token, PASS, PASS).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.header("location"), Some("/"));
    let cookie = done.set_cookie("cozysessid").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Max-Age"),
        "without 'keep me signed in' the cookie ends with the browser"
    );
    assert_eq!(prelogin(&mut first).await["onboarded"], true);
    let home = first.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.text.contains("You are signed in") && home.text.contains("(this one)"));

    // The link is single-use.
    let mut other = Browser::new(&cocon.http, domain);
    other.get(&link).await;
    let csrf2 = other.csrf();
    let replay = submit_onboarding(&mut other, &csrf2, &token, "another passphrase", "another passphrase").await;
    assert_eq!(replay.status, 403, "{replay:?}");

    // A second browser: wrong passphrase, open redirect, then a "remember me" login.
    let mut second = Browser::new(&cocon.http, domain);
    assert_eq!(second.get("/").await.header("location"), Some("/auth/login"));
    let wrong = second.login("not the passphrase").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("wrong passphrase"));
    assert!(!second.cookies.contains_key("cozysessid"));
    let csrf = second.csrf();
    for evil in ["https://evil.test/", "//evil.test/x", "https://alice.test.evil.test/"] {
        let page = second
            .post_form(
                "/auth/login",
                &[("csrf_token", &csrf), ("password", PASS), ("redirect", evil)],
            )
            .await;
        assert_eq!(page.status, 400, "redirect to {evil}");
        assert!(page.set_cookie("cozysessid").is_none());
    }
    let no_csrf = second.post_form("/auth/login", &[("password", PASS)]).await;
    assert_eq!(no_csrf.status, 403);
    let ok = second
        .post_form(
            "/auth/login",
            &[
                ("csrf_token", &csrf),
                ("password", PASS),
                ("redirect", "https://drive.alice.test/#/folder"),
                ("long-run-session", "1"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{ok:?}");
    assert_eq!(ok.header("location"), Some("https://drive.alice.test/#/folder"));
    let cookie = ok.set_cookie("cozysessid").unwrap();
    let max_age: i64 = cookie
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&max_age), "{cookie}");
    // Signed in already: the login page sends the browser on.
    assert_eq!(
        second.get("/auth/login?redirect=/x").await.header("location"),
        Some("/x")
    );

    // Both sessions are listed, each browser sees which one is its own.
    let list = second.get("/settings/sessions").await;
    assert_eq!(list.status, 200);
    let data = list.json()["data"].as_array().cloned().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data.iter().filter(|s| s["attributes"]["current"] == true).count(), 1);
    assert!(data.iter().all(|s| s["type"] == "io.cozy.sessions"));
    assert!(data.iter().any(|s| s["attributes"]["long_run"] == true));
    assert_eq!(data[0]["attributes"]["user_agent"], "cocon-tests-browser/1");

    // Sign out the others: the first browser's session ends at once.
    assert_eq!(second.delete("/auth/login/others").await.status, 204);
    assert_eq!(first.get("/settings/sessions").await.status, 401);
    assert_eq!(first.get("/").await.header("location"), Some("/auth/login"));
    assert_eq!(
        second.get("/settings/sessions").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Sign out: the cookie is cleared and the session is gone.
    let kept = second.cookies.clone();
    let out = second.delete("/auth/login").await;
    assert_eq!(out.status, 204);
    assert!(out.set_cookie("cozysessid").unwrap().contains("Max-Age=0"));
    let mut replayed = Browser::new(&cocon.http, domain);
    replayed.cookies = kept;
    assert_eq!(
        replayed.get("/settings/sessions").await.status,
        401,
        "an ended session stays ended"
    );
    assert_eq!(second.delete("/auth/login").await.status, 401);

    // A session survives a restart (it is state, rebuilt from events).
    let mut third = Browser::new(&cocon.http, domain);
    assert_eq!(third.login(PASS).await.status, 303);
    drop(cocon);
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut third_again = Browser::new(&cocon.http, domain);
    third_again.cookies = third.cookies.clone();
    assert_eq!(third_again.get("/settings/sessions").await.status, 200);
}

#[tokio::test]
async fn test_passphrase_change_and_cozy_client_hash() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let domain = "bob.test";
    let link = onboarding_link(&cocon, domain).await;

    // A cozy client onboards with its own hash, through the JSON API.
    let mut app = Browser::new(&cocon.http, domain);
    let iterations = 10_000;
    let hashed = cozy_hash(PASS, domain, iterations);
    let page = app
        .request(
            reqwest::Method::POST,
            "/settings/passphrase",
            None,
            Some(&json!({"register_token": register_token(&link), "passphrase": hashed, "iterations": iterations})),
        )
        .await;
    assert_eq!(page.status, 204, "{page:?}");
    assert!(app.cookies.contains_key("cozysessid"));
    assert_eq!(prelogin(&mut app).await["KdfIterations"], iterations);

    // The HTML form's plain passphrase and the client's hash are the same passphrase.
    let mut web = Browser::new(&cocon.http, domain);
    assert_eq!(web.login(PASS).await.status, 303);
    let mut json_client = Browser::new(&cocon.http, domain);
    json_client.get("/auth/login").await;
    let csrf = json_client.csrf();
    let page = json_client
        .request(
            reqwest::Method::POST,
            "/auth/login",
            Some(&[("csrf_token", csrf.as_str()), ("passphrase", hashed.as_str())]),
            None,
        )
        .await;
    assert_eq!(page.status, 303, "{page:?}");

    // A change needs the current passphrase; a wrong one changes nothing.
    let new = "a brand new passphrase";
    let wrong = app
        .request(
            reqwest::Method::PUT,
            "/settings/passphrase",
            None,
            Some(&json!({"current_password": "wrong one!", "new_password": new})),
        )
        .await;
    assert_eq!(wrong.status, 403, "{wrong:?}");
    assert_eq!(web.get("/settings/sessions").await.status, 200, "nothing changed");
    let changed = app
        .request(
            reqwest::Method::PUT,
            "/settings/passphrase",
            None,
            Some(&json!({"current_passphrase": hashed, "new_password": new})),
        )
        .await;
    assert_eq!(changed.status, 204, "{changed:?}");
    // The session that changed it stays; every other one ends.
    assert_eq!(app.get("/settings/sessions").await.status, 200);
    assert_eq!(web.get("/settings/sessions").await.status, 401);
    assert_eq!(json_client.get("/settings/sessions").await.status, 401);
    let mut later = Browser::new(&cocon.http, domain);
    assert_eq!(
        later.login(PASS).await.status,
        401,
        "the old passphrase no longer works"
    );
    assert_eq!(later.login(new).await.status, 303);

    // Without a session, a change is refused.
    let mut stranger = Browser::new(&cocon.http, domain);
    let page = stranger
        .request(
            reqwest::Method::PUT,
            "/settings/passphrase",
            None,
            Some(&json!({"current_password": new, "new_password": "taken over!"})),
        )
        .await;
    assert_eq!(page.status, 401);

    // The administrator's reset link signs every session out and sets a new passphrase.
    let (status, body) = cocon
        .admin(reqwest::Method::POST, &format!("/instances/{domain}/onboarding"), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let reset = body["onboarding_url"].as_str().unwrap();
    let mut owner = Browser::new(&cocon.http, domain);
    let path = format!("/{}", reset.splitn(4, '/').nth(3).unwrap());
    assert_eq!(owner.get(&path).await.status, 200);
    let csrf = owner.csrf();
    let token = register_token(reset);
    let page = submit_onboarding(&mut owner, &csrf, &token, PASS, PASS).await;
    assert_eq!(page.status, 303);
    assert_eq!(app.get("/settings/sessions").await.status, 401);
    assert_eq!(later.get("/settings/sessions").await.status, 401);
    assert_eq!(owner.get("/settings/sessions").await.status, 200);
}

#[tokio::test]
async fn test_rate_limit_and_cookies_of_another_instance() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let mut alice = onboard(&cocon, "alice.test", PASS).await;
    let mut bob = onboard(&cocon, "bob.test", PASS).await;

    // Alice's cookie means nothing to Bob's instance.
    let mut confused = alice.to_domain("bob.test");
    assert_eq!(confused.get("/settings/sessions").await.status, 401);
    assert_eq!(confused.get("/").await.header("location"), Some("/auth/login"));
    assert_eq!(confused.delete("/auth/login/others").await.status, 401);
    assert_eq!(
        bob.get("/settings/sessions").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A forged cookie (another session id under a copied signature) is refused too.
    let genuine = alice.cookies["cozysessid"].clone();
    let (_, mac) = genuine.split_once('.').unwrap();
    let mut forger = Browser::new(&cocon.http, "alice.test");
    forger
        .cookies
        .insert("cozysessid".into(), format!("{}.{mac}", "0".repeat(32)));
    assert_eq!(forger.get("/settings/sessions").await.status, 401);
    assert_eq!(alice.get("/settings/sessions").await.status, 200);

    // Ten passphrase attempts a minute from one address (the onboarding was one), refilled one
    // every 6 s; then 429 with Retry-After. Bob's instance is not affected.
    let mut guesser = Browser::new(&cocon.http, "alice.test");
    let started = std::time::Instant::now();
    let mut wrong = 0;
    loop {
        match guesser.login("guess guess guess").await.status {
            401 => wrong += 1,
            429 => break,
            other => panic!("unexpected {other}"),
        }
        assert!(wrong <= 30, "no limit after {wrong} attempts");
    }
    let refilled = started.elapsed().as_secs() / 6 + 1;
    assert!((9..=9 + refilled).contains(&wrong), "{wrong} attempts before the limit");
    let limited = guesser.login(PASS).await;
    assert_eq!(limited.status, 429, "even the right passphrase waits");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert!(limited.set_cookie("cozysessid").is_none());
    let mut bob2 = Browser::new(&cocon.http, "bob.test");
    assert_eq!(bob2.login(PASS).await.status, 303);
}

#[tokio::test]
async fn test_auth_events_on_nats_carry_no_secret() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .arg("--nats")
        .arg(nats.url())
        .start()
        .await
        .unwrap();
    let mut browser = onboard(&cocon, "carol.test", PASS).await;
    let id = cocon.instance_id("carol.test").await.unwrap();
    let mut guesser = Browser::new(&cocon.http, "carol.test");
    assert_eq!(guesser.login("wrong passphrase").await.status, 401);
    assert_eq!(browser.delete("/auth/login").await.status, 204);

    let mut reader = StreamReader::open(&nats.url(), "COCON_AUTH", "login-test", &format!("cocon.auth.{id}.>"))
        .await
        .unwrap();
    let mut subjects = Vec::new();
    let secrets = [
        PASS.as_bytes().to_vec(),
        cozy_hash(PASS, "carol.test", 100_000).into_bytes(),
        b"$argon2".to_vec(),
    ];
    while let Some(m) = reader.next(Duration::from_secs(5)).await {
        for secret in &secrets {
            assert!(
                !m.payload.windows(secret.len()).any(|w| w == secret.as_slice()),
                "a secret in {}",
                m.subject
            );
        }
        subjects.push(m.subject.to_string());
        if m.subject.ends_with("session.ended") {
            break;
        }
    }
    // The home app's permission set, recorded as the jobs service installs it on the new
    // instance, lands among these whenever it does (docs/apps.md).
    let verbs: Vec<&str> = subjects
        .iter()
        .map(|s| s.splitn(4, '.').nth(3).unwrap())
        .filter(|verb| *verb != "permission.created")
        .collect();
    assert_eq!(
        verbs,
        [
            "instance.created",
            "onboarding.issued",
            "passphrase.set",
            "session.created",
            "login.failed",
            "session.ended"
        ]
    );
}

/// A sign-in that was not asked to return to a page lands on the home app (cozy-stack's default
/// redirection) once the instance has it; one asked to return somewhere goes there.
#[tokio::test]
async fn test_a_sign_in_lands_on_the_home_app() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    cocon_tests::sharing::person(&cocon, "alice.test").await;
    cocon.app_installed("alice.test", "home").await;
    let p = cocon_tests::sharing::port(&cocon);
    let mut b = Browser::new(&cocon.http, "alice.test");
    let done = b.login(cocon_tests::sharing::PASSPHRASE).await;
    assert_eq!(done.status, 303, "{done:?}");
    let home = format!("http://home.alice.test:{p}/");
    assert_eq!(done.header("location"), Some(home.as_str()));
    assert_eq!(b.get("/auth/login").await.header("location"), Some(home.as_str()));
    assert_eq!(
        b.get("/auth/login?redirect=/settings").await.header("location"),
        Some("/settings")
    );
}
