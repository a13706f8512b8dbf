//! A web app built for cozy-stack, as Cozy's apps are, run unchanged against Cocon in a real
//! browser: its `manifest.webapp`, an `index.html` with `data-cozy="{{.CozyData}}"`, and Cozy's
//! published `cozy-client` from npm, bundled here with esbuild (`tests/webapp/`). In headless
//! Chromium (`tests/browser/third_party_app.py`) the person opens it on its sub-domain, signs in,
//! and the app writes and reads its documents with the token Cocon gave it, and is refused a
//! doctype its manifest does not grant.

use std::path::Path;

use cocon_tests::sharing::{PASSPHRASE, person, port};
use cocon_tests::{Cocon, cocon_bin, npm_ci};

use super::browser::run_script;

/// Installs the probe app's locked packages and bundles it, as its developer would; answers
/// the directory to install (manifest, index, icon and the bundle).
fn build_probe(dir: &Path) -> std::path::PathBuf {
    let project = dir.join("project");
    npm_ci(
        "webapp",
        &["package.json", "package-lock.json", ".npmrc"],
        &project,
        false,
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("webapp");
    std::fs::create_dir_all(project.join("src")).unwrap();
    for name in ["src/main.js", "src/shims.js"] {
        std::fs::copy(source.join(name), project.join(name)).unwrap();
    }
    let out = std::process::Command::new("npm")
        .args(["run", "build"])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "esbuild: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = dir.join("probe");
    std::fs::create_dir_all(&app).unwrap();
    for name in ["manifest.webapp", "index.html", "icon.svg"] {
        std::fs::copy(source.join(name), app.join(name)).unwrap();
    }
    std::fs::copy(project.join("build/probe.js"), app.join("probe.js")).unwrap();
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_an_app_built_for_cozy_stack_runs_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = build_probe(dir.path());
    let cocon = Cocon::start(&data).await.unwrap();
    person(&cocon, "alice.localhost").await;
    let out = std::process::Command::new(cocon_bin())
        .args([
            "apps",
            "install",
            "probe",
            app.to_str().unwrap(),
            "--domain",
            "alice.localhost",
        ])
        .args([
            "--url",
            &cocon.http,
            "--admin",
            &cocon.admin,
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Cocon's own home app is installed on every new instance, as the instance is created.
    cocon.app_installed("alice.localhost", "home").await;

    // Chromium resolves *.localhost to this machine: the app's sub-domain works as is.
    let p = port(&cocon);
    let shots = screenshots_dir();
    let seen = run_script(
        "third_party_app.py",
        &[
            &format!("http://probe.alice.localhost:{p}/"),
            &format!("http://home.alice.localhost:{p}/"),
            PASSPHRASE,
            shots.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(seen["sent_to_sign_in"], true, "{seen}");
    assert_eq!(seen["back_in_the_app"], true, "{seen}");
    let result = &seen["result"];
    assert!(result.get("error").is_none(), "{seen}");
    assert_eq!(result["uri"], format!("http://alice.localhost:{p}"), "{seen}");
    let id = result["saved"].as_str().unwrap_or_else(|| panic!("{seen}"));
    assert!(
        result["todos"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "written by the probe app"),
        "{seen}"
    );
    assert_eq!(result["contacts"], "403", "{seen}");
    assert_eq!(
        seen["cookie_domains"],
        serde_json::json!([".alice.localhost"]),
        "{seen}"
    );

    // The home app shows the installed app as a tile leading to its sub-domain, and the storage.
    let home = &seen["home"];
    assert_eq!(
        home["tiles"]["probe"],
        format!("http://probe.alice.localhost:{p}/"),
        "{seen}"
    );
    assert!(home["tiles"].get("home").is_none(), "{seen}");
    assert_eq!(home["greeting"], "Your Cozy", "{seen}");
    assert!(home["storage"].as_str().unwrap().ends_with(" used"), "{seen}");
    assert_eq!(home["problem"], false, "{seen}");
    for shot in ["probe.png", "home.png"] {
        assert!(shots.join(shot).metadata().unwrap().len() > 1000, "{shot}");
    }

    // The to-do is the person's, as any of their apps reads it.
    let token = cocon.token("alice.localhost", "io.cozy.todos:GET").await.unwrap();
    let todo = cocon
        .api("alice.localhost", Some(&token))
        .get(&format!("/data/io.cozy.todos/{id}"))
        .await;
    assert_eq!(todo.status, 200, "{}", todo.text);
    assert_eq!(todo.body["title"], "written by the probe app");
}

/// Where the browser tests save their screenshots: `target/screenshots/`, kept after the run.
fn screenshots_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
