//! Cocon's own apps pass axe-core's WCAG 2.1 A and AA rules (labels, names, contrast, ARIA,
//! landmarks) in headless Chromium (`tests/browser/a11y.py`): the account page, home, drive
//! (and its dialog) and settings (and its two-factor form), and fit a phone's screen. axe-core
//! comes from the npm registry (`tests/a11y/`).

use cocon_tests::Cocon;
use cocon_tests::drive::{ROOT, new_dir, png, upload};
use cocon_tests::npm_ci;
use cocon_tests::sharing::{PASSPHRASE, person, port};

use super::browser::run_script;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_the_built_in_apps_pass_the_accessibility_rules() {
    let dir = tempfile::tempdir().unwrap();
    let axe = dir.path().join("axe");
    let into = axe.clone();
    tokio::task::spawn_blocking(move || npm_ci("a11y", &["package.json", "package-lock.json"], &into, true))
        .await
        .unwrap();
    let cocon = Cocon::start(&dir.path().join("data")).await.unwrap();
    person(&cocon, "alice.localhost").await;
    for app in ["home", "drive", "settings"] {
        cocon.app_installed("alice.localhost", app).await;
    }
    // The drive shows rows to audit: a folder, a photo, a note.
    let token = cocon.token("alice.localhost", "io.cozy.files").await.unwrap();
    let api = cocon.api("alice.localhost", Some(&token));
    new_dir(&api, ROOT, "Holidays").await;
    assert_eq!(upload(&api, ROOT, "beach.png", &png(64, 48)).await.status, 201);
    assert_eq!(upload(&api, ROOT, "notes.txt", b"to remember").await.status, 201);
    let p = port(&cocon);
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let apps: Vec<String> = ["home", "drive", "settings"]
        .iter()
        .map(|app| format!("http://{app}.alice.localhost:{p}/"))
        .collect();
    let mut args = vec![
        format!("http://alice.localhost:{p}"),
        PASSPHRASE.to_string(),
        axe.join("node_modules/axe-core/axe.min.js")
            .to_string_lossy()
            .into_owned(),
        shots.to_string_lossy().into_owned(),
    ];
    args.extend(apps);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let seen = run_script("a11y.py", &args).await;
    for page in [
        "account",
        "home",
        "drive",
        "drive-dialog",
        "settings",
        "settings-twofactor",
    ] {
        let audit = &seen[page];
        assert_eq!(
            audit["violations"],
            serde_json::json!([]),
            "{page} breaks these rules: {audit}"
        );
        // The audit ran: a page of an app passes a good number of rules (names, labels,
        // contrast, ARIA, language).
        assert!(audit["passed"].as_u64().unwrap() >= 10, "{page}: {audit}");
    }
    // Responsive: on a phone, no app is wider than the screen.
    for app in ["home", "drive", "settings"] {
        assert_eq!(
            seen[format!("{app}-overflow")],
            0,
            "{app} runs off a phone's screen: {seen}"
        );
        assert!(shots.join(format!("{app}-phone.png")).metadata().unwrap().len() > 1000);
    }
}
