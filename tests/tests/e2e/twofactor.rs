//! Two-factor with an authenticator app, end to end: set-up needs a valid code first, login asks
//! for a code after the passphrase, codes and recovery codes work once, and turning it off needs
//! the passphrase.

use cocon_tests::{Api, Browser, Cocon, hidden_field, onboard};
use serde_json::{Value, json};
use totp_rs::TOTP;

const PASS: &str = "correct horse battery staple";

async fn send(browser: &mut Browser, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let page = browser.request(method, path, None, Some(&body)).await;
    (page.status, page.json())
}

/// The code of the step after the current one: accepted now (one step of skew) and newer than
/// the step that turned two-factor on.
fn next_code(totp: &TOTP) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(now + 30)
}

#[tokio::test]
async fn test_two_factor_setup_login_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    // More attempts than the default rate limit allows a minute (tests/tests/e2e/login.rs tests it).
    let cocon = Cocon::builder(dir.path()).passphrase_unlimited().start().await.unwrap();
    let mut owner = onboard(&cocon, "alice.test", PASS).await;
    let (status, body) = send(&mut owner, reqwest::Method::GET, "/settings/twofactor", json!({})).await;
    assert_eq!((status, &body["enabled"]), (200, &json!(false)));

    // The settings page shows a QR code and the key.
    let home = owner.get("/").await;
    let csrf = hidden_field(&home.text, "csrf_token").unwrap();
    let setup = owner.post_form("/auth/twofactor/setup", &[("csrf_token", &csrf)]).await;
    assert_eq!(setup.status, 200);
    assert!(setup.text.contains("<svg") && setup.text.contains("Key: <code>"));

    // The JSON API proposes a new secret (replacing the page's); a wrong code enables nothing.
    let (status, proposal) = send(&mut owner, reqwest::Method::POST, "/settings/twofactor", json!({})).await;
    assert_eq!(status, 200);
    let uri = proposal["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/Cocon:me%40alice.test?secret="), "{uri}");
    let totp = TOTP::from_url(uri).unwrap();
    let (status, _) = send(
        &mut owner,
        reqwest::Method::PUT,
        "/settings/twofactor",
        json!({"code": "000000"}),
    )
    .await;
    assert_eq!(status, 401);
    let mut plain = Browser::new(&cocon.http, "alice.test");
    assert_eq!(plain.login(PASS).await.status, 303, "still one step");

    // The right code turns it on and shows ten distinct recovery codes, once.
    let (status, body) = send(
        &mut owner,
        reqwest::Method::PUT,
        "/settings/twofactor",
        json!({"code": totp.generate_current().unwrap()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(codes.iter().collect::<std::collections::HashSet<_>>().len(), 10);

    // Login: the passphrase alone opens no session, it asks for a code.
    let mut phone = Browser::new(&cocon.http, "alice.test");
    let step = phone.login(PASS).await;
    assert_eq!(step.status, 200);
    assert!(step.set_cookie("cozysessid").is_none());
    assert!(step.text.contains("autocomplete=\"one-time-code\""));
    let token = hidden_field(&step.text, "two_factor_token").unwrap();
    let csrf = phone.csrf();
    let submit = |code: String| {
        let (csrf, token) = (csrf.clone(), token.clone());
        move |b: Browser| async move {
            let mut b = b;
            let page = b
                .post_form(
                    "/auth/twofactor",
                    &[
                        ("csrf_token", &csrf),
                        ("two_factor_token", &token),
                        ("two_factor_passcode", &code),
                    ],
                )
                .await;
            (b, page)
        }
    };
    let (phone, wrong) = submit("123456".into())(phone).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.set_cookie("cozysessid").is_none());
    let code = next_code(&totp);
    let (phone, ok) = submit(code.clone())(phone).await;
    assert_eq!(ok.status, 303, "{ok:?}");
    assert!(ok.set_cookie("cozysessid").is_some());
    let (_, replay) = submit(code)(phone).await;
    assert_eq!(replay.status, 401, "a code works once");

    // A recovery code (typed with spaces and capitals) works once.
    let mut lost = Browser::new(&cocon.http, "alice.test");
    let step = lost.login(PASS).await;
    let token = hidden_field(&step.text, "two_factor_token").unwrap();
    let csrf = lost.csrf();
    let typed = codes[3].replace('-', " ").to_uppercase();
    let page = lost
        .post_form(
            "/auth/twofactor",
            &[
                ("csrf_token", &csrf),
                ("two_factor_token", &token),
                ("two_factor_passcode", &typed),
            ],
        )
        .await;
    assert_eq!(page.status, 303);
    let mut again = Browser::new(&cocon.http, "alice.test");
    let step = again.login(PASS).await;
    let token = hidden_field(&step.text, "two_factor_token").unwrap();
    let csrf = again.csrf();
    let page = again
        .post_form(
            "/auth/twofactor",
            &[
                ("csrf_token", &csrf),
                ("two_factor_token", &token),
                ("two_factor_passcode", &codes[3]),
            ],
        )
        .await;
    assert_eq!(page.status, 401);
    let (_, body) = send(&mut owner, reqwest::Method::GET, "/settings/twofactor", json!({})).await;
    assert_eq!(body["recovery_codes_left"], 9);

    // The first step's token is bound to its instance and signed: a forged one is refused.
    let mut forger = Browser::new(&cocon.http, "alice.test");
    forger.get("/auth/login").await;
    let csrf = forger.csrf();
    let page = forger
        .request(
            reqwest::Method::POST,
            "/auth/twofactor",
            Some(&[
                ("csrf_token", csrf.as_str()),
                ("two_factor_token", "e30.e30.sig"),
                ("two_factor_passcode", &codes[0]),
            ]),
            None,
        )
        .await;
    assert_eq!(page.status, 401);

    // Off needs the passphrase.
    let (status, _) = send(
        &mut owner,
        reqwest::Method::DELETE,
        "/settings/twofactor",
        json!({"password": "wrong"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &mut owner,
        reqwest::Method::DELETE,
        "/settings/twofactor",
        json!({"password": PASS}),
    )
    .await;
    assert_eq!(status, 204);
    let mut after = Browser::new(&cocon.http, "alice.test");
    assert_eq!(after.login(PASS).await.status, 303);
}

/// The settings app (a web app granted `io.cozy.settings` whole) sets two-factor up for the
/// person who types the passphrase, never without it; a CLI token on the same doctype turns it
/// neither on nor off.
#[tokio::test]
async fn test_an_app_turns_two_factor_on_only_with_the_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path()).passphrase_unlimited().start().await.unwrap();
    let owner = onboard(&cocon, "alice.test", PASS).await;
    cocon.app_installed("alice.test", "settings").await;
    let page = owner.to_domain("settings.alice.test").get("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    let start = page.text.find("data-cozy=\"").unwrap() + "data-cozy=\"".len();
    let data = &page.text[start..start + page.text[start..].find('"').unwrap()];
    let cozy: Value = serde_json::from_str(&data.replace("&#34;", "\"")).unwrap();
    let token = cozy["token"].as_str().unwrap().to_string();
    let session = owner.cookies["cozysessid"].clone();
    let app = |method: reqwest::Method, body: Value| {
        let request = reqwest::Client::new()
            .request(method, format!("{}/settings/twofactor", cocon.http))
            .header("Host", "alice.test")
            .header("Origin", "http://settings.alice.test")
            .header("Cookie", format!("cozysessid={session}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let res = request.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, proposal) = app(reqwest::Method::POST, json!({})).await;
    assert_eq!(status, 200, "{proposal}");
    assert!(proposal["qr_svg"].as_str().unwrap().contains("<svg"), "{proposal}");
    let totp = TOTP::from_url(proposal["otpauth_uri"].as_str().unwrap()).unwrap();
    let code = totp.generate_current().unwrap();
    let (status, body) = app(reqwest::Method::PUT, json!({ "code": code })).await;
    assert_eq!(status, 400, "without the passphrase: {body}");
    assert!(body["reason"].as_str().unwrap().contains("passphrase"), "{body}");
    let (status, body) = app(reqwest::Method::PUT, json!({ "code": code, "password": "not it" })).await;
    assert_eq!(status, 403, "a wrong passphrase: {body}");
    let (_, state) = app(reqwest::Method::GET, json!({})).await;
    assert_eq!(state["enabled"], false, "{state}");

    let (status, body) = app(reqwest::Method::PUT, json!({ "code": code, "password": PASS })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    let (_, state) = app(reqwest::Method::GET, json!({})).await;
    assert_eq!(state["enabled"], true, "{state}");

    // A CLI token granted the whole doctype reads the state and changes nothing.
    let cli_token = cocon.token("alice.test", "io.cozy.settings").await.unwrap();
    let cli = cocon.api("alice.test", Some(&cli_token));
    let read = cli.get("/settings/twofactor").await;
    assert_eq!((read.status, read.get("enabled")), (200, &json!(true)), "{}", read.text);
    let off = Api::reply(
        cli.request(reqwest::Method::DELETE, "/settings/twofactor")
            .body(json!({ "password": PASS }).to_string()),
    )
    .await;
    assert_eq!(off.status, 403, "{}", off.text);
    let (_, state) = app(reqwest::Method::GET, json!({})).await;
    assert_eq!(state["enabled"], true, "{state}");
}
