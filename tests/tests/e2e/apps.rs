//! Web apps as cozy-stack installs and serves them: installed from a directory, a tarball on
//! the web with its checksum, or the apps registry; served on their own sub-domain with the
//! person's session, their index rendered with a token that holds what their manifest grants
//! and only with that session; updated and removed with their permissions following at once.

use std::path::Path;

use cocon_tests::sharing::{PASSPHRASE, person, port};
use cocon_tests::{Browser, Cocon};
use reqwest::Method;
use serde_json::{Value, json};

use super::jobs::cli;

const INDEX: &str = r#"<!DOCTYPE html>
<html lang="{{.Locale}}"><head><meta charset="utf-8"><title>{{.AppName}}</title>
<script src="app.0123456789abcdef.js"></script></head>
<body><div role="application" data-cozy-token="{{.Token}}" data-cozy-domain="{{.Domain}}" data-cozy="{{.CozyData}}"></div></body></html>
"#;

/// A small app built as Cozy's are: its manifest (permissions, a private and a public route),
/// its index, a hashed script, a public page, and a link that must not be served.
fn write_app(dir: &Path, version: &str, permissions: Value) {
    std::fs::create_dir_all(dir.join("public")).unwrap();
    let manifest = json!({
        "name": "Notes", "slug": "notes", "version": version, "editor": "Cocon tests",
        "icon": "icon.svg", "permissions": permissions,
        "intents": [{"action": "PICK", "type": ["io.cozy.files", "image/*"], "href": "/pick"}],
        "routes": {"/": {"folder": "/", "index": "index.html", "public": false},
                   "/public": {"folder": "/public", "index": "index.html", "public": true}},
    });
    std::fs::write(dir.join("manifest.webapp"), manifest.to_string()).unwrap();
    std::fs::write(dir.join("index.html"), INDEX).unwrap();
    std::fs::write(
        dir.join("app.0123456789abcdef.js"),
        format!("console.log('notes {version}')"),
    )
    .unwrap();
    std::fs::write(dir.join("icon.svg"), "<svg xmlns='http://www.w3.org/2000/svg'/>").unwrap();
    std::fs::write(dir.join("public/index.html"), "<p>a public page</p>").unwrap();
    let _ = std::os::unix::fs::symlink("/etc/passwd", dir.join("leak"));
}

/// A `text/event-stream` body as (event name, JSON data) pairs.
fn sse(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
            Some((
                field("event:")?.to_string(),
                serde_json::from_str(field("data:")?).unwrap(),
            ))
        })
        .collect()
}

fn attribute<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("{name} in {html}"))
        + name.len()
        + 2;
    &html[start..start + html[start..].find('"').unwrap()]
}

/// A request to the instance's API with the app's token, from the app's origin, with or
/// without the person's session cookie.
async fn api_call(
    cocon: &Cocon,
    person: &Browser,
    token: &str,
    method: Method,
    path: &str,
    session: bool,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", cocon.http))
        .header("Host", "alice.test")
        .bearer_auth(token)
        .json(&json!({"title": "from the app"}));
    if session {
        req = req.header("Cookie", format!("cozysessid={}", person.cookies["cozysessid"]));
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// What the app's token gets on the person's contacts, with `person`'s session.
async fn contacts(cocon: &Cocon, person: &Browser, token: &str) -> (u16, String) {
    api_call(
        cocon,
        person,
        token,
        Method::GET,
        "/data/io.cozy.contacts/_all_docs",
        true,
    )
    .await
}

#[tokio::test]
async fn test_an_app_is_installed_served_with_its_token_updated_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let code = dir.path().join("notes");
    write_app(
        &code,
        "1.0.0",
        json!({"notes": {"type": "io.cozy.notes", "description": "the notes"}}),
    );
    let cocon = Cocon::start(&data).await.unwrap();
    let mut alice = person(&cocon, "alice.test").await;
    let p = port(&cocon);

    let (ok, out, err) = cli(&cocon, &data, &["apps", "install", "notes", code.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("\"slug\": \"notes\""), "{out}");
    let (ok, out, _) = cli(&cocon, &data, &["apps", "ls"]);
    assert!(ok && out.contains("notes\t1.0.0\tNotes\tfile://"), "{out}");
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "notes", code.to_str().unwrap()]);
    assert!(!ok && err.contains("already installed"), "{err}");

    // Listed and read by a token with io.cozy.apps; its icon is sent so that it never runs.
    let reader = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.apps:GET").await.unwrap()),
    );
    let listed = reader.get("/apps/").await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let notes = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attributes"]["slug"] == "notes")
        .unwrap_or_else(|| panic!("{}", listed.text));
    assert_eq!(notes["id"], "io.cozy.apps/notes");
    assert_eq!(notes["attributes"]["permissions"]["notes"]["type"], "io.cozy.notes");
    let icon = reader
        .request(Method::GET, notes["links"]["icon"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    assert_eq!(icon.headers()["content-security-policy"], "default-src 'none'; sandbox");
    assert_eq!(reader.get("/apps/nothing").await.status, 404);

    // The session cookie is set for the instance's domain, so that it reaches its apps.
    let login = alice.login(PASSPHRASE).await;
    let cookie = login.set_cookie("cozysessid").unwrap();
    assert!(cookie.contains("Domain=alice.test"), "{cookie}");

    // Nobody signed in: the app's page sends to the login page, its files are refused, its
    // public route is served.
    let mut stranger = Browser::new(&cocon.http, "notes.alice.test");
    let page = stranger.get("/").await;
    assert_eq!(page.status, 302, "{page:?}");
    let to = page.header("location").unwrap();
    assert!(
        to.starts_with(&format!(
            "http://alice.test:{p}/auth/login?redirect=http%3A%2F%2Fnotes.alice.test%3A{p}%2F"
        )),
        "{to}"
    );
    assert_eq!(stranger.get("/app.0123456789abcdef.js").await.status, 401);
    let public = stranger.get("/public/").await;
    assert_eq!(public.status, 200, "{public:?}");
    assert!(public.text.contains("a public page"));

    // Signed in: the index carries a token for the app and the instance's domain.
    let mut in_app = alice.to_domain("notes.alice.test");
    let page = in_app.get("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains(&format!("connect-src 'self' http://alice.test:{p} ws://alice.test:{p}")),
        "{csp}"
    );
    assert!(page.text.contains("<title>Notes</title>"), "{}", page.text);
    assert_eq!(attribute(&page.text, "data-cozy-domain"), format!("alice.test:{p}"));
    let token = attribute(&page.text, "data-cozy-token").to_string();
    let cozy: Value = serde_json::from_str(&attribute(&page.text, "data-cozy").replace("&#34;", "\"")).unwrap();
    assert_eq!(cozy["token"], token.as_str());
    assert_eq!(cozy["app"]["slug"], "notes");
    assert_eq!(page.header("cache-control"), Some("private, no-store, must-revalidate"));

    // Its files: typed, hashed names cached forever; a link in its code is not followed.
    let script = in_app.get("/app.0123456789abcdef.js").await;
    assert_eq!(script.status, 200);
    assert_eq!(script.text, "console.log('notes 1.0.0')");
    assert!(script.header("content-type").unwrap().contains("javascript"));
    assert_eq!(script.header("cache-control"), Some("max-age=31536000, immutable"));
    assert_eq!(in_app.get("/leak").await.status, 404);
    assert_eq!(in_app.request(Method::POST, "/", None, None).await.status, 405);

    // The token: what the manifest grants, with the session only.
    let (status, text) = api_call(&cocon, &alice, &token, Method::POST, "/data/io.cozy.notes/", true).await;
    assert_eq!(status, 201, "{text}");
    let (status, text) = contacts(&cocon, &alice, &token).await;
    assert_eq!(status, 403, "{text}");
    let (status, text) = api_call(&cocon, &alice, &token, Method::POST, "/data/io.cozy.notes/", false).await;
    assert_eq!(status, 401, "{text}");
    // An app may not install apps.
    let (status, text) = api_call(
        &cocon,
        &alice,
        &token,
        Method::POST,
        "/apps/other?Source=registry://other",
        true,
    )
    .await;
    assert_eq!(status, 403, "{text}");

    // An intent: the apps whose manifest offers the action on the type are its services, each
    // at its address with the intent's id; the asking app reads it back; other tokens cannot.
    let intent = reqwest::Client::new()
        .post(format!("{}/intents", cocon.http))
        .header("Host", "alice.test")
        .header("Cookie", format!("cozysessid={}", alice.cookies["cozysessid"]))
        .bearer_auth(&token)
        .json(&json!({"data": {"type": "io.cozy.intents",
                               "attributes": {"action": "PICK", "type": "image/png", "permissions": ["GET"]}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(intent.status(), 200);
    let intent: Value = intent.json().await.unwrap();
    let id = intent["data"]["id"].as_str().unwrap().to_string();
    let attributes = &intent["data"]["attributes"];
    assert_eq!(attributes["client"], "io.cozy.apps/notes", "{intent}");
    assert_eq!(
        attributes["services"],
        json!([{"slug": "notes", "href": format!("http://notes.alice.test:{p}/pick?intent={id}")}]),
        "{intent}"
    );
    let (status, text) = api_call(&cocon, &alice, &token, Method::GET, &format!("/intents/{id}"), true).await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = api_call(&cocon, &alice, &token, Method::POST, "/intents", true).await;
    assert_eq!(status, 400, "{text}");
    let cli_token = cocon.token("alice.test", "io.cozy.intents").await.unwrap();
    let by_cli = cocon
        .api("alice.test", Some(&cli_token))
        .get(&format!("/intents/{id}"))
        .await;
    assert_eq!(by_cli.status, 403, "{}", by_cli.text);

    // The API answers the app's origin with CORS, and no other origin.
    let origin = format!("http://notes.alice.test:{p}");
    let preflight = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/data/io.cozy.notes/", cocon.http))
        .header("Host", format!("alice.test:{p}"))
        .header("Origin", &origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin.as_str());
    assert_eq!(preflight.headers()["access-control-allow-credentials"], "true");
    let elsewhere = reqwest::Client::new()
        .get(format!("{}/settings/capabilities", cocon.http))
        .header("Host", format!("alice.test:{p}"))
        .header("Origin", format!("http://evil.test:{p}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(elsewhere.headers().get("access-control-allow-origin").is_none());

    // An update that drops the notes permission: the token loses it at once.
    write_app(
        &code,
        "1.1.0",
        json!({"contacts": {"type": "io.cozy.contacts", "verbs": ["GET"]}}),
    );
    let (ok, out, err) = cli(&cocon, &data, &["apps", "update", "notes"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"version\": \"1.1.0\""), "{out}");
    let (status, text) = api_call(&cocon, &alice, &token, Method::POST, "/data/io.cozy.notes/", true).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(
        in_app.get("/app.0123456789abcdef.js").await.text,
        "console.log('notes 1.1.0')"
    );

    // Removed: its token stops working, its host answers 404.
    let (ok, _, err) = cli(&cocon, &data, &["apps", "uninstall", "notes"]);
    assert!(ok, "{err}");
    let (status, text) = contacts(&cocon, &alice, &token).await;
    assert_eq!(status, 401, "{text}");
    assert_eq!(in_app.get("/").await.status, 404);

    // Installed again, a new page's token ends with the person's session.
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "notes", code.to_str().unwrap()]);
    assert!(ok, "{err}");
    let page = in_app.get("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    let token = attribute(&page.text, "data-cozy-token").to_string();
    let (status, text) = contacts(&cocon, &alice, &token).await;
    assert_eq!(status, 200, "{text}");
    // The cookie as it was: the session behind it is gone.
    let before = alice.to_domain("alice.test");
    assert_eq!(alice.delete("/auth/login").await.status, 204);
    let (status, text) = contacts(&cocon, &before, &token).await;
    assert_eq!(status, 401, "{text}");
}

/// The notes app (version 2.0.0) as a tarball under `dir`: its bytes and their SHA-256 (hex).
pub(super) fn notes_tarball(dir: &Path) -> (Vec<u8>, String) {
    use sha2::Digest;
    write_app(&dir.join("notes"), "2.0.0", json!({"notes": {"type": "io.cozy.notes"}}));
    let tarball = dir.join("notes.tar.gz");
    let status = std::process::Command::new("tar")
        .args(["-czf", tarball.to_str().unwrap(), "-C", dir.to_str().unwrap(), "notes"])
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&tarball).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    (bytes, sha)
}

/// A registry speaking cozy's protocol on loopback, and the tarball it names.
pub(super) async fn registry(tarball: Vec<u8>, sha256: String) -> String {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let url = format!("{base}/files/notes-2.0.0.tar.gz");
    let version = json!({"slug": "notes", "version": "2.0.0", "type": "webapp", "url": url, "sha256": sha256});
    let router = axum::Router::new()
        .route(
            "/registry/notes/stable/latest",
            get(move || {
                let v = version.clone();
                async move { axum::Json(v) }
            }),
        )
        .route(
            "/files/notes-2.0.0.tar.gz",
            get(move || {
                let t = tarball.clone();
                async move { t }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

// Two threads: the registry answers while the test waits on the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_apps_install_from_the_registry_and_from_a_checked_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (bytes, sha) = notes_tarball(dir.path());
    let tarball_size = bytes.len();
    let base = registry(bytes, sha.clone()).await;
    let cocon = Cocon::builder(&data)
        .env("COCON_JOBS__APPS__REGISTRY", &base)
        .start()
        .await
        .unwrap();
    person(&cocon, "alice.test").await;

    let (ok, out, err) = cli(&cocon, &data, &["apps", "install", "notes", "registry://notes/stable"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"version\": \"2.0.0\""), "{out}");
    assert!(out.contains("\"source\": \"registry://notes/stable\""), "{out}");
    let (ok, _, err) = cli(&cocon, &data, &["apps", "uninstall", "notes"]);
    assert!(ok, "{err}");

    // A tarball on the web: its checksum must match.
    let url = format!("{base}/files/notes-2.0.0.tar.gz");
    let wrong = format!("{url}#{}", "0".repeat(64));
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "notes", &wrong]);
    assert!(!ok && err.contains("does not match its checksum"), "{err}");
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "notes", &format!("{url}#{sha}")]);
    assert!(ok, "{err}");

    // Through the API with `Accept: text/event-stream`: the app installing at once, then ready.
    let token = cocon.token("alice.test", "io.cozy.apps").await.unwrap();
    let api = cocon.api("alice.test", Some(&token));
    assert_eq!(api.delete("/apps/notes").await.status, 200);
    let stream = api
        .request(Method::POST, "/apps/notes?Source=registry://notes/stable")
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse(&stream.text().await.unwrap());
    let states: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "state")
        .map(|(_, e)| e["data"]["attributes"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["installing", "ready"], "{events:?}");
    assert_eq!(events.last().unwrap().1["data"]["attributes"]["version"], "2.0.0");
    // The download's progress in between, its last one the whole tarball.
    let progress: Vec<&Value> = events.iter().filter(|(n, _)| n == "progress").map(|(_, e)| e).collect();
    let last = progress.last().unwrap_or_else(|| panic!("no progress: {events:?}"));
    assert_eq!(last["total"], tarball_size, "{events:?}");
    assert_eq!(last["received"], tarball_size, "{events:?}");
    assert_eq!(events[events.len() - 2].0, "progress", "between the states: {events:?}");
    // A failed installation ends its stream with the error.
    assert_eq!(api.delete("/apps/notes").await.status, 200);
    let failed = api
        .request(
            Method::POST,
            &format!("/apps/notes?Source={}", wrong.replace('#', "%23")),
        )
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let events = sse(&failed.text().await.unwrap());
    let (name, error) = events.last().unwrap();
    assert_eq!(name, "error", "{events:?}");
    assert!(
        error["errors"][0]["detail"].as_str().unwrap().contains("checksum"),
        "{error}"
    );
    // An app unknown to the registry, and a source Cocon does not take.
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "other", "registry://other/stable"]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = cli(
        &cocon,
        &data,
        &["apps", "install", "other", "git://example.org/other.git"],
    );
    assert!(!ok && err.contains("400"), "{err}");
}

/// Code no installation uses any more is swept at start once untouched for
/// `keep_unused_secs`; code in use stays and is still served.
#[tokio::test]
async fn test_code_no_installation_uses_is_swept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (v1, v2) = (dir.path().join("notes-1"), dir.path().join("notes-2"));
    write_app(&v1, "1.0.0", json!({"notes": {"type": "io.cozy.notes"}}));
    write_app(&v2, "2.0.0", json!({"notes": {"type": "io.cozy.notes"}}));
    let start = || {
        Cocon::builder(&data)
            .env("COCON_JOBS__APPS__KEEP_UNUSED_SECS", "0")
            .start()
    };
    let mut cocon = start().await.unwrap();
    let alice = person(&cocon, "alice.test").await;
    let (ok, _, err) = cli(&cocon, &data, &["apps", "install", "notes", v1.to_str().unwrap()]);
    assert!(ok, "{err}");
    let kept = |d: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(d.join("apps/notes"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let first = kept(&data);
    assert_eq!(first.len(), 1, "{first:?}");
    let (ok, _, err) = cli(&cocon, &data, &["apps", "update", "notes", v2.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(kept(&data).len(), 2, "the old code stays until a sweep");

    // The sweep at the next start removes the old code, the new one stays and is served.
    cocon.stop().await.unwrap();
    let cocon = start().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while kept(&data).contains(&first[0]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the unused code stays: {:?}",
            kept(&data)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(kept(&data).len(), 1);
    let mut in_app = Browser::new(&cocon.http, "notes.alice.test");
    in_app.cookies = alice.cookies.clone();
    let script = in_app.get("/app.0123456789abcdef.js").await;
    assert_eq!(script.text, "console.log('notes 2.0.0')", "{script:?}");
}

/// A built-in app a new binary brings is installed on every existing instance at its start; a
/// built-in app the person removed stays removed across restarts. (The "previous binary" is
/// played by the pass's marker, `builtin.sums`, written without the settings app.)
#[tokio::test]
async fn test_a_newly_shipped_built_in_app_reaches_existing_instances() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cocon = Cocon::start(&data).await.unwrap();
    person(&cocon, "alice.test").await;
    for app in ["home", "drive", "settings"] {
        cocon.app_installed("alice.test", app).await;
    }
    for app in ["drive", "settings"] {
        let (ok, _, err) = cli(&cocon, &data, &["apps", "uninstall", app]);
        assert!(ok, "{err}");
    }
    let marker = data.join("apps/builtin.sums");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !marker.exists() {
        assert!(std::time::Instant::now() < deadline, "the first pass never ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let sums = std::fs::read_to_string(&marker).unwrap();
    assert!(sums.lines().any(|l| l.starts_with("settings ")), "{sums}");
    cocon.stop().await.unwrap();
    let older: String = sums
        .lines()
        .filter(|l| !l.starts_with("settings "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&marker, older).unwrap();

    // The settings app is new to the marker's binary: offered again; the drive is not: it
    // stays removed. The pass ends with the marker of this binary.
    let cocon = Cocon::start(&data).await.unwrap();
    cocon.app_installed("alice.test", "settings").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&marker).unwrap() != sums {
        assert!(std::time::Instant::now() < deadline, "the pass never ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (ok, out, err) = cli(&cocon, &data, &["apps", "ls"]);
    assert!(ok, "{err}");
    assert!(out.contains("settings\t") && !out.contains("drive\t"), "{out}");
}
