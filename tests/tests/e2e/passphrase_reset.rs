//! Mail people expect from a personal cloud, received by a real SMTP server (aiosmtpd): the
//! onboarding link when an instance is created with an address, and a forgotten passphrase
//! reset by a one-time link, which ends every session.

use cocon_tests::{Browser, Cocon, SmtpServer, hidden_field, text_of};
use reqwest::Method;
use serde_json::Value;

async fn with_smtp(dir: &std::path::Path, smtp: &SmtpServer) -> Cocon {
    Cocon::builder(dir)
        .smtp(smtp.port)
        .env("COCON_JOBS__SMTP__NOREPLY_ADDRESS", "noreply@cocon.test")
        .start()
        .await
        .unwrap()
}

/// The path and query of the first link to `domain` in `text`.
fn link_path(text: &str, domain: &str) -> String {
    let start = text.find(&format!("http://{domain}:")).expect("a link in the mail");
    let url: String = text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    let (_, after_port) = url.split_once(&format!("{domain}:")).unwrap();
    format!("/{}", after_port.split_once('/').unwrap().1)
}

/// Creates `domain` with an address and returns the admin API's answer.
async fn create(cocon: &Cocon, domain: &str, email: &str, locale: &str) -> Value {
    let (status, body) = cocon
        .admin(
            Method::POST,
            "/instances",
            &[("Domain", domain), ("Email", email), ("Locale", locale)],
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

#[tokio::test]
async fn test_an_instance_created_with_an_address_gets_its_onboarding_link_by_mail() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await.unwrap();
    let cocon = with_smtp(dir.path(), &smtp).await;
    let body = create(&cocon, "alice.test", "alice@example.org", "fr").await;
    assert_eq!(body["email"], "alice@example.org");
    assert_eq!(body["locale"], "fr");
    assert_eq!(body["onboarding_mailed_to"], "alice@example.org");
    let mails = smtp.wait_for(1).await;
    assert!(mails[0].contains("To: alice@example.org"), "{}", mails[0]);
    let (subject, text) = text_of(&mails[0]);
    assert!(subject.contains("alice.test"), "{subject}");
    assert!(text.contains("Bonjour"), "in French: {text}");
    // The mailed link is the one the administrator sees, and it works.
    let path = link_path(&text, "alice.test");
    assert!(body["onboarding_url"].as_str().unwrap().ends_with(&path), "{path}");
    let mut browser = Browser::new(&cocon.http, "alice.test");
    assert_eq!(browser.get(&path).await.status, 200);

    // Bad addresses and locales are refused with a reason; nothing is created.
    for (email, locale) in [("not an address", "en"), ("bob@example.org", "tlh")] {
        let (status, body) = cocon
            .admin(
                Method::POST,
                "/instances",
                &[("Domain", "bob.test"), ("Email", email), ("Locale", locale)],
            )
            .await
            .unwrap();
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = cocon.admin(Method::GET, "/instances/bob.test", &[]).await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn test_a_forgotten_passphrase_is_reset_by_a_mailed_one_time_link() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start().await.unwrap();
    let cocon = with_smtp(dir.path(), &smtp).await;
    let body = create(&cocon, "alice.test", "alice@example.org", "en").await;
    smtp.wait_for(1).await;
    // Onboarded with the link the administrator got; signed in in one browser.
    let url = body["onboarding_url"].as_str().unwrap();
    let token = url.split_once("registerToken=").unwrap().1;
    let mut signed_in = Browser::new(&cocon.http, "alice.test");
    signed_in.get(&format!("/auth/onboarding?registerToken={token}")).await;
    let csrf = signed_in.csrf();
    let page = cocon_tests::submit_onboarding(&mut signed_in, &csrf, token, "old passphrase", "old passphrase").await;
    assert_eq!(page.status, 303, "{page:?}");
    assert_eq!(signed_in.get("/").await.status, 200);

    // In another browser, the login page leads to the reset form, which mails a link.
    let mut forgetful = Browser::new(&cocon.http, "alice.test");
    let login = forgetful.get("/auth/login").await;
    assert!(login.text.contains("href=\"/auth/passphrase_reset\""), "{}", login.text);
    let form = forgetful.get("/auth/passphrase_reset").await;
    assert_eq!(form.status, 200);
    let csrf = forgetful.csrf();
    let refused = forgetful
        .post_form("/auth/passphrase_reset", &[("csrf_token", "forged")])
        .await;
    assert_eq!(refused.status, 403, "a forged CSRF token is refused");
    let sent = forgetful
        .post_form("/auth/passphrase_reset", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    assert!(sent.text.contains("a••••@example.org"), "{}", sent.text);
    let mails = smtp.wait_for(2).await;
    let (subject, text) = mails
        .iter()
        .map(|m| text_of(m))
        .find(|(subject, _)| !subject.starts_with("Your Cocon is ready"))
        .unwrap();
    assert_eq!(subject, "Choose a new passphrase for alice.test");
    let path = link_path(&text, "alice.test");
    assert!(path.starts_with("/auth/passphrase_renew?token="), "{path}");
    let token = path.split_once("token=").unwrap().1.to_string();
    assert!(!sent.text.contains(&token), "the link is only in the mail");

    // The link's page takes the new passphrase, twice.
    let page = forgetful.get(&path).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        hidden_field(&page.text, "register_token").as_deref(),
        Some(token.as_str())
    );
    let csrf = forgetful.csrf();
    let renew = |pass: &'static str, again: &'static str| {
        [
            ("csrf_token", csrf.clone()),
            ("register_token", token.clone()),
            ("password", pass.to_string()),
            ("password2", again.to_string()),
        ]
    };
    let fields = renew("new passphrase", "other passphrase");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let differ = forgetful.post_form("/auth/passphrase_renew", &fields).await;
    assert_eq!(differ.status, 400, "{}", differ.text);
    let fields = renew("new passphrase", "new passphrase");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = forgetful.post_form("/auth/passphrase_renew", &fields).await;
    assert_eq!(done.status, 303, "{}", done.text);
    assert_eq!(done.header("location"), Some("/auth/login"));

    // Every session ended; the old passphrase is gone, the new one signs in; the link is spent.
    let home = signed_in.get("/").await;
    assert_ne!(home.status, 200, "the old session ended");
    let mut fresh = Browser::new(&cocon.http, "alice.test");
    assert_ne!(fresh.login("old passphrase").await.status, 303);
    let mut fresh = Browser::new(&cocon.http, "alice.test");
    assert_eq!(fresh.login("new passphrase").await.status, 303);
    let again = forgetful.post_form("/auth/passphrase_renew", &fields).await;
    assert_eq!(again.status, 403, "{}", again.text);
    assert!(again.text.contains("invalid, used or expired"), "{}", again.text);
}

#[tokio::test]
async fn test_a_reset_without_an_address_says_whom_to_ask() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path()).start().await.unwrap();
    cocon.add_instance("alice.test").await.unwrap();
    let mut browser = Browser::new(&cocon.http, "alice.test");
    browser.get("/auth/passphrase_reset").await;
    let csrf = browser.csrf();
    let page = browser
        .post_form("/auth/passphrase_reset", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(page.status, 409, "{}", page.text);
    assert!(page.text.contains("onboarding-link"), "{}", page.text);
}
