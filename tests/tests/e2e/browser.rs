//! The person's pages in a real browser: headless Chromium, driven through Selenium by
//! `tests/browser/login_flow.py` and `passphrase_reset.py` (Debian's `chromium`, `chromium-driver` and `python3-selenium`,
//! installed by the test command).

use cocon_tests::{Cocon, onboarding_link};
use serde_json::Value;

#[tokio::test]
async fn test_login_pages_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    // Chromium resolves *.localhost to this machine: the link works as the person gets it.
    let link = onboarding_link(&cocon, "alice.localhost").await;
    // A sign-in lands on the home app once the instance has it.
    cocon.app_installed("alice.localhost", "home").await;
    let port = cocon.http.rsplit(':').next().unwrap().to_string();
    let url = format!("http://alice.localhost:{port}{link}");
    let seen = run_script("login_flow.py", &[&url]).await;
    for step in ["onboarded", "login", "two_factor", "two_step_login"] {
        assert_eq!(seen[step], true, "{step}: {seen}");
    }
}

/// A forgotten passphrase in Chromium: the login page's link, the request, the mailed link
/// (read from a real SMTP server), the new passphrase, and signing in with it.
#[tokio::test]
async fn test_passphrase_reset_in_a_real_browser() {
    use cocon_tests::{Browser, SmtpServer, submit_onboarding};

    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await.unwrap();
    let cocon = Cocon::builder(dir.path()).smtp(smtp.port).start().await.unwrap();
    let (status, body) = cocon
        .admin(
            reqwest::Method::POST,
            "/instances",
            &[("Domain", "alice.localhost"), ("Email", "alice@example.org")],
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let token = body["onboarding_url"]
        .as_str()
        .unwrap()
        .split_once("registerToken=")
        .unwrap()
        .1;
    let mut http = Browser::new(&cocon.http, "alice.localhost");
    http.get(&format!("/auth/onboarding?registerToken={token}")).await;
    let csrf = http.csrf();
    let page = submit_onboarding(&mut http, &csrf, token, "first passphrase", "first passphrase").await;
    assert_eq!(page.status, 303, "{page:?}");
    smtp.wait_for(1).await;

    // A sign-in lands on the home app once the instance has it.
    cocon.app_installed("alice.localhost", "home").await;
    let port = cocon.http.rsplit(':').next().unwrap().to_string();
    let origin = format!("http://alice.localhost:{port}");
    let seen = run_script("passphrase_reset.py", &["request", &origin]).await;
    assert_eq!(seen["requested"], true, "{seen}");
    let mails = smtp.wait_for(2).await;
    let mail = mails
        .iter()
        .find(|m| m.contains("passphrase_renew"))
        .expect("the reset mail");
    let parsed = mailparse::parse_mail(mail.as_bytes()).unwrap();
    let text = parsed
        .subparts
        .iter()
        .find(|p| p.ctype.mimetype == "text/plain")
        .unwrap()
        .get_body()
        .unwrap();
    let start = text.find(&origin).expect("the link");
    let link: String = text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    let seen = run_script("passphrase_reset.py", &["renew", &link, "second passphrase"]).await;
    assert_eq!(seen["renewed"], true, "{seen}");
    assert_eq!(seen["signed_in"], true, "{seen}");
}

/// Runs a script of `tests/browser/` and reads the JSON line it prints last.
pub(super) async fn run_script(script: &str, args: &[&str]) -> Value {
    let script = format!("{}/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .args(&args)
            .output()
            .expect("python3 runs (the test command installs python3-selenium and chromium)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

/// A sharing taken from the mailed link in Chromium: alice's host mails Bob, whose Cozy it does
/// not know; he gives his address on the discovery page, signs in on his own host and accepts
/// on its consent page; both hosts then show the sharing ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_sharing_is_accepted_in_a_real_browser() {
    use cocon_tests::SmtpServer;
    use cocon_tests::sharing::{PASSPHRASE, link_in, share_by_mail, two_hosts_with};

    let smtp = SmtpServer::start().await.unwrap();
    let h = two_hosts_with(Some(smtp.port)).await;
    let created = share_by_mail(&h, "recipients").await;
    let id = created.body["data"]["id"].as_str().unwrap().to_string();
    let mails = smtp.wait_for(1).await;
    let link = link_in(&cocon_tests::text_of(&mails[0]).1, &h.alice_origin);

    let seen = run_script("sharing_flow.py", &[&link, &h.bob_origin, PASSPHRASE]).await;
    for step in [
        "discovery",
        "wrong_address_explained",
        "sent_to_sign_in",
        "consent",
        "accepted",
    ] {
        assert_eq!(seen[step], true, "{step}: {seen}");
    }
    let on_alice = h.alice.get(&format!("/sharings/{id}")).await;
    assert_eq!(
        on_alice.body["data"]["attributes"]["members"][1]["status"], "ready",
        "{}",
        on_alice.text
    );
    let on_bob = h.bob.get(&format!("/sharings/{id}")).await;
    assert_eq!(on_bob.body["data"]["attributes"]["active"], true, "{}", on_bob.text);
}
