//! Apps on flat sub-domains (`gateway.subdomains = "flat"`: `alice-home.test` for the instance
//! `alice.test`), as cozy-stack serves them for a certificate of `*.test`: the instance's
//! cookie cannot reach them, so the login sends the browser on with a one-time session code
//! that the app's host trades for a cookie of its own.

use cocon_tests::sharing::{PASSPHRASE, person, port};
use cocon_tests::{Browser, Cocon};
use reqwest::Method;
use serde_json::Value;

/// A Cocon serving apps on flat sub-domains.
async fn flat(dir: &std::path::Path) -> Cocon {
    Cocon::builder(dir)
        .env("COCON_GATEWAY__SUBDOMAINS", "flat")
        .start()
        .await
        .unwrap()
}

fn data_cozy(html: &str) -> Value {
    let start = html.find("data-cozy=\"").expect("data-cozy") + "data-cozy=\"".len();
    let raw = &html[start..start + html[start..].find('"').unwrap()];
    serde_json::from_str(&raw.replace("&#34;", "\"")).unwrap()
}

/// The `session_code` of a Location that carries one.
fn session_code(location: &str) -> String {
    let url = url::Url::parse(location).unwrap_or_else(|e| panic!("{location}: {e}"));
    url.query_pairs()
        .find(|(k, _)| k == "session_code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no session code in {location}"))
}

#[tokio::test]
async fn test_apps_on_flat_sub_domains_get_the_session_through_a_one_time_code() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = flat(dir.path()).await;
    let mut alice = person(&cocon, "alice.test").await;
    cocon.app_installed("alice.test", "home").await;
    let p = port(&cocon);
    let home = format!("http://alice-home.test:{p}/");

    // Nobody signed in on the app's host: sent to the instance's login, to come back here.
    let mut tab = Browser::new(&cocon.http, &format!("alice-home.test:{p}"));
    let page = tab.get("/").await;
    assert_eq!(page.status, 302, "{page:?}");
    let login = page.header("location").unwrap().to_string();
    let expected = format!("http://alice.test:{p}/auth/login?redirect=http%3A%2F%2Falice-home.test%3A{p}%2F");
    assert!(login.starts_with(&expected), "{login}");

    // Signed in on the instance, its login page sends the browser on with a code.
    let on = alice
        .get(&format!(
            "/auth/login?redirect={}",
            &login[login.find("redirect=").unwrap() + 9..]
        ))
        .await;
    assert_eq!(on.status, 303, "{on:?}");
    let to = on.header("location").unwrap().to_string();
    assert!(to.starts_with(&format!("{home}?session_code=")), "{to}");
    let code = session_code(&to);

    // The app's host trades it for a cookie of its own (no Domain: for this host alone) and
    // comes back without it; the page then carries a token and says it is flat.
    let traded = tab.get(&format!("/?session_code={code}")).await;
    assert_eq!(traded.status, 302, "{traded:?}");
    assert_eq!(traded.header("location"), Some("/"));
    let cookie = traded
        .set_cookie("cozysessid")
        .expect("a session cookie for the app's host");
    assert!(!cookie.contains("Domain="), "{cookie}");
    let page = tab.get("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    let cozy = data_cozy(&page.text);
    assert_eq!(cozy["subdomain"], "flat");
    assert_eq!(cozy["capabilities"]["flat_subdomains"], true);
    assert!(!cozy["token"].as_str().unwrap().is_empty());
    // Its page frames the instance's other apps by name, never every instance's.
    let csp = page.header("content-security-policy").unwrap();
    let frames = csp.split(';').find(|d| d.trim().starts_with("frame-src")).unwrap();
    assert!(frames.contains(&format!("http://alice-home.test:{p}")), "{csp}");
    assert!(!csp.contains("*."), "{csp}");

    // A code works once, on the host it names.
    let mut other = Browser::new(&cocon.http, &format!("alice-home.test:{p}"));
    let replay = other.get(&format!("/?session_code={code}")).await;
    assert_eq!(replay.status, 401, "{replay:?}");
    assert!(
        replay.text.contains("Open the app again"),
        "a page leading back: {replay:?}"
    );
    let on = alice.get(&format!("/auth/login?redirect={}", url_encode(&home))).await;
    let fresh = session_code(on.header("location").unwrap());
    let mut elsewhere = Browser::new(&cocon.http, &format!("alice-drive.test:{p}"));
    let wrong_host = elsewhere.get(&format!("/?session_code={fresh}")).await;
    assert_eq!(wrong_host.status, 401, "{wrong_host:?}");
    // Another instance's app, as a redirect: refused.
    let away = alice
        .get(&format!(
            "/auth/login?redirect={}",
            url_encode(&format!("http://bob-home.test:{p}/"))
        ))
        .await;
    assert_eq!(away.status, 400, "{away:?}");

    // A sign-in lands on the home app, with a code.
    let mut laptop = Browser::new(&cocon.http, "alice.test");
    let signed_in = laptop.login(PASSPHRASE).await;
    assert_eq!(signed_in.status, 303);
    assert!(
        signed_in
            .header("location")
            .unwrap()
            .starts_with(&format!("{home}?session_code="))
    );

    // The API answers the flat app's origin with CORS; the nested name is no app here.
    let token = cozy["token"].as_str().unwrap().to_string();
    let origin = format!("http://alice-home.test:{p}");
    let cors = tab
        .to_domain(&format!("alice.test:{p}"))
        .send(
            Method::GET,
            "/apps/",
            &[("Origin", &origin), ("Authorization", &format!("Bearer {token}"))],
            None,
            None,
        )
        .await;
    assert_eq!(
        cors.header("access-control-allow-origin"),
        Some(origin.as_str()),
        "{cors:?}"
    );
    let nested = Browser::new(&cocon.http, &format!("home.alice.test:{p}"))
        .get("/")
        .await;
    assert_eq!(nested.status, 404, "{nested:?}");

    // An instance whose first label holds a '-' would read as an app's host: refused.
    let (status, body) = cocon
        .admin(Method::POST, "/instances", &[("Domain", "mary-jane.test")])
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The same in headless Chromium (`tests/browser/flat_apps.py`): `*.localhost` reaches this
/// machine, so `alice-drive.cozy.localhost` is a real flat host with its own cookies. (Two
/// labels under `localhost`, as a real deployment's instances sit under a registrable domain:
/// the apps and the instance are then one site, whose `SameSite=Lax` cookie their API calls
/// carry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_flat_apps_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = flat(dir.path()).await;
    person(&cocon, "alice.cozy.localhost").await;
    for app in ["home", "drive"] {
        cocon.app_installed("alice.cozy.localhost", app).await;
    }
    let p = port(&cocon);
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let seen = super::browser::run_script(
        "flat_apps.py",
        &[
            &format!("http://alice-drive.cozy.localhost:{p}/"),
            PASSPHRASE,
            shots.to_str().unwrap(),
        ],
    )
    .await;
    let sent_to = seen["sent_to"].as_str().unwrap();
    assert!(
        sent_to.starts_with(&format!("http://alice.cozy.localhost:{p}/auth/login?redirect=")),
        "{seen}"
    );
    // Back on the drive, the code gone from the address, with a cookie for its host alone.
    assert_eq!(
        seen["drive_at"],
        format!("http://alice-drive.cozy.localhost:{p}/"),
        "{seen}"
    );
    assert_eq!(
        seen["drive_cookies"],
        serde_json::json!(["alice-drive.cozy.localhost"]),
        "{seen}"
    );
    assert_eq!(seen["drive_problem"], false, "{seen}");
    assert_eq!(
        seen["home_link"],
        format!("http://alice-home.cozy.localhost:{p}/"),
        "{seen}"
    );
    assert_eq!(
        seen["home_at"],
        format!("http://alice-home.cozy.localhost:{p}/"),
        "{seen}"
    );
    assert_eq!(seen["home_problem"], false, "{seen}");
    let tiles = seen["tiles"].as_array().unwrap();
    assert!(
        tiles.contains(&serde_json::json!(format!("http://alice-drive.cozy.localhost:{p}/"))),
        "{seen}"
    );
    assert_eq!(seen["log"], serde_json::json!([]), "{seen}");
}
