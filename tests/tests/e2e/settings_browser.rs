//! Cocon's own settings app in headless Chromium (`tests/browser/settings_app.py`): the person
//! signs in on `settings.<instance>`, signs out another device, disconnects an OAuth client,
//! changes the name and the passphrase, sets up two-factor, chooses the notifications that come
//! by e-mail; what the browser did is then checked from outside.

use cocon_tests::sharing::{PASSPHRASE, person, port};
use cocon_tests::{Browser, Cocon, hidden_field};
use reqwest::Method;
use serde_json::json;

use super::browser::run_script;

const NEW_PASSPHRASE: &str = "a brand new passphrase of mine";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_person_manages_the_account_in_the_settings_app() {
    let dir = tempfile::tempdir().unwrap();
    // The browser and this test type the passphrase more often than a person would in a minute.
    let cocon = Cocon::builder(dir.path()).passphrase_unlimited().start().await.unwrap();
    // Another device: the onboarding's session, in this test's client.
    let mut other = person(&cocon, "alice.localhost").await;
    assert_eq!(other.get("/").await.status, 200, "the other device is signed in");
    let registered = other
        .request(
            Method::POST,
            "/auth/register",
            None,
            Some(&json!({
                "redirect_uris": ["http://127.0.0.1:9/callback"],
                "client_name": "Notes on the go",
                "software_id": "github.com/example/notes",
            })),
        )
        .await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    let client_id = registered.json()["client_id"].as_str().unwrap().to_string();
    let access = format!(
        "Bearer {}",
        registered.json()["registration_access_token"].as_str().unwrap()
    );
    let read_client = |b: &mut Browser| {
        let (path, access) = (format!("/auth/register/{client_id}"), access.clone());
        let mut b = b.to_domain("alice.localhost");
        async move {
            b.send(Method::GET, &path, &[("Authorization", &access)], None, None)
                .await
                .status
        }
    };
    assert_eq!(read_client(&mut other).await, 200, "the client is registered");

    cocon.app_installed("alice.localhost", "settings").await;

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let p = port(&cocon);
    let seen = run_script(
        "settings_app.py",
        &[
            &format!("http://settings.alice.localhost:{p}/"),
            &format!("http://home.alice.localhost:{p}/"),
            PASSPHRASE,
            NEW_PASSPHRASE,
            shots.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(seen["problem_shown"], false, "{seen}");
    assert_eq!(seen["sessions_before"], 2, "{seen}");
    assert_eq!(seen["this_device"].as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen["sessions_after"], 1, "{seen}");
    assert_eq!(seen["clients_before"], json!(["Notes on the go"]), "{seen}");
    assert_eq!(seen["clients_after"], "No app is connected.", "{seen}");
    assert_eq!(seen["profile_said"], "Saved.", "{seen}");
    assert_eq!(
        seen["mismatch_said"], "The two new passphrases differ: type the same twice.",
        "{seen}"
    );
    assert_eq!(
        seen["passphrase_said"], "Passphrase changed: your other devices were signed out.",
        "{seen}"
    );
    assert!(seen["storage"].as_str().unwrap().ends_with(" used"), "{seen}");
    assert_eq!(seen["greeting"], "Hello, Alice Martin", "{seen}");
    assert!(seen["twofactor_before"].as_str().unwrap().starts_with("Off."), "{seen}");
    assert_eq!(
        seen["twofactor_refused"], "That did not work: the passphrase is wrong",
        "{seen}"
    );
    assert_eq!(seen["twofactor_said"], "Two-factor is on.", "{seen}");
    assert!(
        seen["twofactor_after"]
            .as_str()
            .unwrap()
            .contains("10 recovery codes left"),
        "{seen}"
    );
    let codes: Vec<&str> = seen["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(codes.len(), 10, "{seen}");
    // Every stack category listed, by mail until told otherwise; the choice is the preferences
    // document the notifications service reads.
    for category in ["disk-quota", "oauth-clients", "sharing-request"] {
        assert_eq!(seen["categories"][category], true, "{seen}");
    }
    assert_eq!(seen["mail_said"], "Saved.", "{seen}");
    let token = cocon.token("alice.localhost", "io.cozy.settings").await.unwrap();
    let prefs = cocon
        .api("alice.localhost", Some(&token))
        .get("/data/io.cozy.settings/io.cozy.notifications")
        .await;
    assert_eq!(prefs.status, 200, "{}", prefs.text);
    assert_eq!(prefs.body["mail"]["disk-quota"], false, "{}", prefs.text);
    assert_eq!(prefs.body["mail"]["oauth-clients"], true, "{}", prefs.text);
    assert!(shots.join("settings.png").metadata().unwrap().len() > 1000);

    // The other device was signed out, the client's registration is gone, and the passphrase
    // is the new one.
    assert_eq!(
        other.get("/").await.header("location"),
        Some("/auth/login"),
        "the other device's session ended"
    );
    let gone = read_client(&mut other).await;
    assert!(gone == 401 || gone == 404, "the client's registration is gone: {gone}");
    let mut fresh = Browser::new(&cocon.http, "alice.localhost");
    assert_ne!(fresh.login(PASSPHRASE).await.status, 303, "the old passphrase fails");
    // The new passphrase alone no longer signs in: two-factor asks for a code, and a recovery
    // code the app showed opens the session.
    let mut fresh = Browser::new(&cocon.http, "alice.localhost");
    let step = fresh.login(NEW_PASSPHRASE).await;
    assert_eq!(step.status, 200, "the code is asked");
    let token = hidden_field(&step.text, "two_factor_token").expect("the two-factor step");
    let csrf = fresh.csrf();
    let signed_in = fresh
        .post_form(
            "/auth/twofactor",
            &[
                ("csrf_token", &csrf),
                ("two_factor_token", &token),
                ("two_factor_passcode", codes[0]),
            ],
        )
        .await;
    assert_eq!(signed_in.status, 303, "a recovery code signs in: {}", signed_in.text);
    assert!(signed_in.set_cookie("cozysessid").is_some());
}
