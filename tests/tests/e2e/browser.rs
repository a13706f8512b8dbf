//! The person's pages in a real browser: headless Chromium, driven through Selenium by
//! `tests/browser/login_flow.py` (Debian's `chromium`, `chromium-driver` and `python3-selenium`,
//! installed by the test command).

use cocon_tests::{Cocon, onboarding_link};
use serde_json::Value;

#[tokio::test]
async fn test_login_pages_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    // Chromium resolves *.localhost to this machine: the link works as the person gets it.
    let link = onboarding_link(&cocon, "alice.localhost").await;
    let port = cocon.http.rsplit(':').next().unwrap().to_string();
    let url = format!("http://alice.localhost:{port}{link}");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/login_flow.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args([script, &url])
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
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    for step in ["onboarded", "login", "two_factor", "two_step_login"] {
        assert_eq!(seen[step], true, "{step}: {seen}");
    }
}
