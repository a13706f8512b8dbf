//! The command line explains itself, and manages instances of a running server.

use std::process::Command;

use cocon_tests::{Cocon, cocon_bin};

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cocon_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn test_every_command_has_help_with_an_example() {
    for cmd in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["instances", "add", "--help"],
        vec!["instances", "ls", "--help"],
        vec!["instances", "rm", "--help"],
        vec!["instances", "onboarding-link", "--help"],
        vec!["instances", "token-cli", "--help"],
        vec!["instances", "tokens", "--help"],
        vec!["instances", "revoke-token", "--help"],
        vec!["instances", "import", "--help"],
        vec!["contexts", "ls", "--help"],
        vec!["contexts", "show", "--help"],
        vec!["rebuild-projections", "--help"],
        vec!["mesh-cert", "--help"],
        vec!["jobs", "run", "--help"],
        vec!["triggers", "ls", "--help"],
        vec!["konnectors", "install", "--help"],
        vec!["konnectors", "ls", "--help"],
        vec!["konnectors", "uninstall", "--help"],
        vec!["konnectors", "run", "--help"],
    ] {
        let (ok, stdout, _) = run(&cmd);
        assert!(ok, "{cmd:?} --help fails");
        assert!(
            stdout.contains("Example"),
            "{cmd:?}: the help shows an example:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn test_instances_commands_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let admin = ["--admin", cocon.admin.as_str(), "--data-dir", data_dir];
    let with = |mut args: Vec<&str>| {
        let mut v: Vec<String> = args.drain(..).map(str::to_string).collect();
        v.extend(admin.iter().map(|s| s.to_string()));
        v
    };
    let call = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    };
    let (ok, out, err) = call(with(vec!["instances", "add", "alice.test"]));
    assert!(ok, "{err}");
    assert!(out.contains("\"domain\": \"alice.test\""), "{out}");
    assert!(
        err.contains("/auth/onboarding?registerToken="),
        "the onboarding link is printed: {err}"
    );
    let (ok, link, err) = call(with(vec!["instances", "onboarding-link", "alice.test"]));
    assert!(ok, "{err}");
    assert!(
        link.trim().starts_with("http://alice.test:") && link.contains("registerToken="),
        "{link}"
    );
    let (ok, out, _) = call(with(vec!["instances", "ls"]));
    assert!(ok);
    assert!(out.starts_with("alice.test\t"), "{out}");
    let (ok, token, err) = call(with(vec![
        "instances",
        "token-cli",
        "alice.test",
        "io.cozy.notes:GET",
        "io.cozy.contacts",
    ]));
    assert!(ok, "{err}");
    let api = cocon.api("alice.test", Some(token.trim()));
    assert_eq!(api.get("/data/io.cozy.notes/_all_docs").await.status, 200);
    assert_eq!(
        api.put("/data/io.cozy.notes/x", &serde_json::json!({})).await.status,
        403
    );
    // Each token has an id: listed (never the token itself), and revoked at once.
    let token_id = err
        .split_whitespace()
        .skip_while(|w| *w != "id")
        .nth(1)
        .unwrap_or_else(|| panic!("the token's id is printed: {err}"))
        .to_string();
    let (ok, listed, err) = call(with(vec!["instances", "tokens", "alice.test"]));
    assert!(ok, "{err}");
    let row = listed
        .lines()
        .find(|l| l.starts_with(&token_id))
        .unwrap_or_else(|| panic!("{token_id} is listed:\n{listed}"));
    assert!(row.ends_with("io.cozy.notes:GET io.cozy.contacts"), "{row}");
    assert!(!listed.contains(token.trim()), "the token is never shown again");
    let (ok, _, err) = call(with(vec!["instances", "revoke-token", "alice.test", &token_id]));
    assert!(ok, "{err}");
    let refused = api.get("/data/io.cozy.notes/_all_docs").await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let (_, listed, _) = call(with(vec!["instances", "tokens", "alice.test"]));
    assert!(!listed.contains(&token_id), "{listed}");
    let (ok, _, err) = call(with(vec!["instances", "revoke-token", "alice.test", &token_id]));
    assert!(!ok);
    assert!(err.contains("cocon instances tokens"), "a clear next step: {err}");
    let (ok, _, err) = call(with(vec!["instances", "token-cli", "nobody.test", "io.cozy.notes"]));
    assert!(!ok);
    assert!(err.contains("no instance for domain nobody.test"), "{err}");
    let (ok, _, err) = call(with(vec!["instances", "rm", "alice.test"]));
    assert!(ok, "{err}");
    let (ok, _, err) = call(with(vec!["instances", "ls"]));
    assert!(ok);
    assert!(err.contains("no instance yet"), "{err}");
    // A wrong admin URL says what to do.
    let (ok, _, err) = run(&["instances", "ls", "--admin", "http://127.0.0.1:9", "--admin-token", "x"]);
    assert!(!ok);
    assert!(err.contains("is `cocon serve` running?"), "{err}");
}

#[test]
fn test_mesh_cert_makes_a_ca_and_a_certificate_and_never_overwrites_them() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let (ok, _, err) = run(&["mesh-cert", tls.to_str().unwrap()]);
    assert!(ok, "{err}");
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        let text = std::fs::read_to_string(tls.join(file)).unwrap();
        assert!(text.starts_with("-----BEGIN"), "{file}: {text}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tls.join("key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
    let (ok, _, err) = run(&["mesh-cert", tls.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("never overwrites"), "{err}");
}
