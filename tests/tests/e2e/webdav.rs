//! WebDAV at `/dav/files/` end to end, with standard clients: the `litmus` conformance suite
//! (its basic, copymove, props and locks groups) and `rclone` copying a tree up and back. The
//! instance is named `127.0.0.1` so that clients reach it by the server's own address.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cocon_tests::{Api, Cocon};
use md5::{Digest, Md5};
use reqwest::Method;

const DOMAIN: &str = "127.0.0.1";

async fn setup() -> (tempfile::TempDir, Cocon, Api, String) {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance(DOMAIN, "io.cozy.files").await.unwrap();
    let token = cocon.token(DOMAIN, "io.cozy.files").await.unwrap();
    (dir, cocon, api, token)
}

fn dav_url(cocon: &Cocon) -> String {
    format!("{}/dav/files/", cocon.http)
}

/// Every file under `root`, by relative path, with the MD5 of its content.
fn tree_md5s(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let sum = Md5::digest(std::fs::read(&path).unwrap());
                out.insert(rel, sum.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

async fn run(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        command
            .output()
            .expect("the client runs (the test command installs it)")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn test_litmus_passes_basic_copymove_props_and_locks() {
    let (dir, cocon, _api, token) = setup().await;
    let mut litmus = Command::new("litmus");
    litmus
        .env("TESTS", "basic copymove props locks")
        // litmus writes its debug.log in the working directory.
        .current_dir(dir.path())
        .args([&dav_url(&cocon), "anyone", &token]);
    let out = run(litmus).await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "litmus failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for group in ["basic", "copymove", "props", "locks"] {
        let summary = report
            .lines()
            .find(|l| l.starts_with(&format!("<- summary for `{group}'")))
            .unwrap_or_else(|| panic!("litmus ran no {group} group:\n{report}"));
        assert!(summary.contains(" 0 failed"), "{summary}");
    }
}

#[tokio::test]
async fn test_rclone_copies_a_tree_up_and_back_unchanged() {
    let (dir, cocon, api, token) = setup().await;
    let local = dir.path().join("local");
    let nested = local.join("Photos/2024 été");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::create_dir_all(local.join("Empty parent/Deeper")).unwrap();
    std::fs::write(local.join("empty.txt"), b"").unwrap();
    std::fs::write(local.join("one byte"), b"x").unwrap();
    std::fs::write(local.join("Empty parent/Deeper/notes.md"), b"# notes\n").unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(nested.join("beach.jpg"), &big).unwrap();
    std::fs::write(nested.join("ünïcødé & spaces.txt"), "héllo".repeat(1000)).unwrap();

    let rclone = |args: &[&str]| {
        let mut command = Command::new("rclone");
        command
            .env("RCLONE_CONFIG", dir.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_COCON_TYPE", "webdav")
            .env("RCLONE_CONFIG_COCON_URL", dav_url(&cocon))
            .env("RCLONE_CONFIG_COCON_VENDOR", "other")
            .env("RCLONE_CONFIG_COCON_BEARER_TOKEN", &token)
            .args(args);
        command
    };
    let up = run(rclone(&["copy", local.to_str().unwrap(), "cocon:backup"])).await;
    assert!(
        up.status.success(),
        "rclone copy up: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    // The files are in the drive, with the MD5 the content has.
    let shown = api
        .get("/files/metadata?Path=/backup/Photos/2024%20%C3%A9t%C3%A9/beach.jpg")
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    use base64::Engine as _;
    assert_eq!(
        shown.body["data"]["attributes"]["md5sum"],
        base64::engine::general_purpose::STANDARD.encode(Md5::digest(&big))
    );

    let back = dir.path().join("back");
    let down = run(rclone(&["copy", "cocon:backup", back.to_str().unwrap()])).await;
    assert!(
        down.status.success(),
        "rclone copy down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let sent = tree_md5s(&local);
    assert_eq!(sent.len(), 5);
    assert_eq!(tree_md5s(&back), sent, "every file came back identical");
    let check = run(rclone(&[
        "check",
        "--download",
        local.to_str().unwrap(),
        "cocon:backup",
    ]))
    .await;
    assert!(
        check.status.success(),
        "rclone check: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    // rclone sync deletes what is gone locally: for good, not into the trash.
    std::fs::remove_file(local.join("one byte")).unwrap();
    let sync = run(rclone(&["sync", local.to_str().unwrap(), "cocon:backup"])).await;
    assert!(
        sync.status.success(),
        "rclone sync: {}",
        String::from_utf8_lossy(&sync.stderr)
    );
    assert_eq!(api.get("/files/metadata?Path=/backup/one%20byte").await.status, 404);
    assert_eq!(api.get("/files/trash").await.body["meta"]["count"], 0);
}

#[tokio::test]
async fn test_webdav_needs_credentials_and_keeps_to_its_instance() {
    let (_dir, cocon, api, token) = setup().await;
    let client = reqwest::Client::new();
    let on = |host: &str, method: &str, path: &str| {
        client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", cocon.http),
            )
            .header("Host", host)
    };
    let dav = |method: &str, path: &str| on(DOMAIN, method, path);

    let anonymous = dav("PROPFIND", "/dav/files/")
        .header("Depth", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "clients are told to ask for credentials"
    );
    let wrong = dav("PROPFIND", "/dav/files/")
        .basic_auth("me", Some("not-a-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Basic credentials carry the token as the password.
    let put = dav("PUT", "/dav/files/hello.txt")
        .basic_auth("me", Some(&token))
        .body("hello over WebDAV")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let listed = dav("PROPFIND", "/dav/files/")
        .bearer_auth(&token)
        .header("Depth", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 207);
    let listing = listed.text().await.unwrap();
    assert!(listing.contains("/dav/files/hello.txt"), "{listing}");
    assert!(!listing.contains(".cozy_trash"), "the trash is not shown: {listing}");
    let trash = dav("PROPFIND", "/dav/files/.cozy_trash/")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(trash.status(), 404);
    // The same file through /files.
    assert_eq!(api.get("/files/metadata?Path=/hello.txt").await.status, 200);

    // A read-only token reads but does not write.
    let reader = cocon.token(DOMAIN, "io.cozy.files:GET").await.unwrap();
    let got = dav("GET", "/dav/files/hello.txt")
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "hello over WebDAV");
    let denied = dav("PUT", "/dav/files/other.txt")
        .bearer_auth(&reader)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let denied = dav("DELETE", "/dav/files/hello.txt")
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);

    // Another instance: its own empty tree; this one's token does not open it.
    let other = "other.test";
    cocon.add_instance(other).await.unwrap();
    let crossed = on(other, "PROPFIND", "/dav/files/")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(crossed.status(), 401);
    let own = cocon.token(other, "io.cozy.files").await.unwrap();
    let theirs = on(other, "GET", "/dav/files/hello.txt")
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);

    // A range read, and a missing parent.
    let part = dav("GET", "/dav/files/hello.txt")
        .bearer_auth(&token)
        .header("Range", "bytes=6-9")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.text().await.unwrap(), "over");
    let orphan = dav("PUT", "/dav/files/no/such/dir.txt")
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(orphan.status(), 409);

    // Over quota: 507, and nothing stored (the quota reaches the files service by an event).
    let (status, body) = cocon
        .admin(Method::PATCH, &format!("/instances/{DOMAIN}"), &[("DiskQuota", "40")])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let big = dav("PUT", "/dav/files/big.bin")
            .bearer_auth(&token)
            .body(vec![1u8; 100])
            .send()
            .await
            .unwrap();
        if big.status() == 507 {
            break;
        }
        assert_eq!(big.status(), 201, "before the quota applies");
        dav("DELETE", "/dav/files/big.bin")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(std::time::Instant::now() < deadline, "the quota never applied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(api.get("/files/metadata?Path=/big.bin").await.status, 404);
}

#[tokio::test]
async fn test_webdav_locks_time_out() {
    let (_dir, cocon, _api, token) = setup().await;
    let client = reqwest::Client::new();
    let dav = |method: &str, path: &str| {
        client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", cocon.http),
            )
            .header("Host", DOMAIN)
            .bearer_auth(&token)
    };
    let lock = |timeout: &str| {
        dav("LOCK", "/dav/files/doc.txt").header("Timeout", timeout).body(
            r#"<?xml version="1.0" encoding="utf-8"?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#,
        )
    };
    assert_eq!(
        dav("PUT", "/dav/files/doc.txt")
            .body("v1")
            .send()
            .await
            .unwrap()
            .status(),
        201
    );

    // A client may not hold a lock forever: an infinite timeout gets a finite one.
    let forever = lock("Infinite").send().await.unwrap();
    assert_eq!(forever.status(), 200);
    let lock_token = forever.headers()["lock-token"].to_str().unwrap().to_string();
    let granted = forever.text().await.unwrap();
    assert!(
        granted.contains("<D:timeout>Second-") && !granted.contains("Infinite"),
        "{granted}"
    );
    assert_eq!(
        dav("PUT", "/dav/files/doc.txt")
            .body("v2")
            .send()
            .await
            .unwrap()
            .status(),
        423,
        "a locked file refuses writes without the lock's token"
    );
    let unlocked = dav("UNLOCK", "/dav/files/doc.txt")
        .header("Lock-Token", &lock_token)
        .send()
        .await
        .unwrap();
    assert_eq!(unlocked.status(), 204);

    // A lock whose client went away ends with its timeout.
    let short = lock("Second-1").send().await.unwrap();
    assert_eq!(short.status(), 200);
    assert_eq!(
        dav("PUT", "/dav/files/doc.txt")
            .body("v3")
            .send()
            .await
            .unwrap()
            .status(),
        423
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = dav("PUT", "/dav/files/doc.txt")
            .body("v3")
            .send()
            .await
            .unwrap()
            .status();
        if status.is_success() {
            break;
        }
        assert_eq!(status, 423);
        assert!(std::time::Instant::now() < deadline, "the lock outlived its timeout");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = dav("GET", "/dav/files/doc.txt").send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "v3");
}

/// Every effect of a WebDAV method needs the verb a `/files` call with that effect needs, and
/// what a COPY or MOVE replaces is kept: a file's old content as a version, anything else in
/// the trash. Downloads never run as pages of the instance's origin.
#[tokio::test]
async fn test_webdav_effects_need_their_verbs_and_keep_what_they_replace() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_FILES__MIN_VERSION_DELAY_SECS", "0")
        .start()
        .await
        .unwrap();
    let api = cocon.instance(DOMAIN, "io.cozy.files").await.unwrap();
    let owner = cocon.token(DOMAIN, "io.cozy.files").await.unwrap();
    let client = reqwest::Client::new();
    let dav = |token: &str, method: &str, path: &str| {
        client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/dav/files{path}", cocon.http),
            )
            .header("Host", DOMAIN)
            .bearer_auth(token)
    };
    let destination = |path: &str| format!("http://{DOMAIN}/dav/files{path}");
    let status = |r: reqwest::Response| r.status().as_u16();
    let content = |path: &'static str| {
        let req = dav(&owner, "GET", path);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    for (path, body) in [
        ("/Important.txt", "precious"),
        ("/junk.txt", "junk"),
        ("/tmp.txt", "draft"),
    ] {
        assert_eq!(status(dav(&owner, "PUT", path).body(body).send().await.unwrap()), 201);
    }
    let important = api.get("/files/metadata?Path=/Important.txt").await;
    let important_id = important.body["data"]["id"].as_str().unwrap().to_string();
    let token = |scope: &str| {
        let scope = scope.to_string();
        let cocon = &cocon;
        async move { cocon.token(DOMAIN, &scope).await.unwrap() }
    };

    // A token that may only create: it copies to a new name, never over a file, and deletes
    // nothing.
    let creator = token("io.cozy.files:GET,POST").await;
    let over = dav(&creator, "COPY", "/junk.txt")
        .header("Destination", destination("/Important.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(over), 403, "COPY over a file needs PUT");
    assert_eq!(content("/Important.txt").await, (200, "precious".into()));
    let fresh = dav(&creator, "COPY", "/junk.txt")
        .header("Destination", destination("/junk-copy.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(fresh), 201);
    assert_eq!(status(dav(&creator, "DELETE", "/junk.txt").send().await.unwrap()), 403);
    assert_eq!(
        status(dav(&creator, "PUT", "/Important.txt").body("x").send().await.unwrap()),
        403,
        "new content for a file is an overwrite"
    );
    let mover = token("io.cozy.files:PATCH").await;
    let moved_over = dav(&mover, "MOVE", "/junk.txt")
        .header("Destination", destination("/Important.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(moved_over), 403, "MOVE over a file needs PUT");
    let writer = token("io.cozy.files:PUT").await;
    assert_eq!(
        status(dav(&writer, "PUT", "/new.txt").body("x").send().await.unwrap()),
        403,
        "a new file is a creation"
    );
    assert_eq!(content("/Important.txt").await, (200, "precious".into()));

    // With PUT, a copy over a file is new content for it: same id, old content as a version.
    let overwriter = token("io.cozy.files:GET,POST,PUT,PATCH").await;
    let copied = dav(&overwriter, "COPY", "/junk.txt")
        .header("Destination", destination("/Important.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(copied), 204);
    assert_eq!(content("/Important.txt").await, (200, "junk".into()));
    let after = api.get(&format!("/files/{important_id}")).await;
    assert_eq!(after.status, 200, "the file keeps its id: {}", after.text);
    let versions = after.body["data"]["relationships"]["old_versions"]["data"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(versions.len(), 1, "{}", after.text);
    let old = api
        .request(
            Method::GET,
            &format!(
                "/files/download/{important_id}/{}",
                versions[0]["id"].as_str().unwrap().split_once('/').unwrap().1
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(old.text().await.unwrap(), "precious");
    assert_eq!(
        content("/junk.txt").await,
        (200, "junk".into()),
        "a copy leaves its source"
    );

    // An editor saving through a temporary file: MOVE over the original keeps its history.
    let saved = dav(&overwriter, "MOVE", "/tmp.txt")
        .header("Destination", destination("/Important.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(saved), 204);
    assert_eq!(content("/Important.txt").await, (200, "draft".into()));
    assert_eq!(content("/tmp.txt").await.0, 404);
    let after = api.get(&format!("/files/{important_id}")).await;
    assert_eq!(
        after.body["data"]["relationships"]["old_versions"]["data"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{}",
        after.text
    );
    // Overwrite: F still refuses.
    let kept = dav(&owner, "COPY", "/junk.txt")
        .header("Destination", destination("/Important.txt"))
        .header("Overwrite", "F")
        .send()
        .await
        .unwrap();
    assert_eq!(status(kept), 412);

    // Replacing a directory removes it: DELETE is needed, and it goes to the trash whole.
    assert_eq!(status(dav(&owner, "MKCOL", "/Photos").send().await.unwrap()), 201);
    assert_eq!(
        status(dav(&owner, "PUT", "/Photos/cat.jpg").body("meow").send().await.unwrap()),
        201
    );
    let onto_dir = dav(&overwriter, "COPY", "/junk.txt")
        .header("Destination", destination("/Photos"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(onto_dir), 403, "replacing a directory needs DELETE");
    assert_eq!(content("/Photos/cat.jpg").await, (200, "meow".into()));
    let replaced = dav(&owner, "COPY", "/junk.txt")
        .header("Destination", destination("/Photos"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(replaced), 204);
    assert_eq!(content("/Photos").await, (200, "junk".into()));
    let trash = api.get("/files/io.cozy.files.trash-dir").await;
    let trashed: Vec<&str> = trash.body["included"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["attributes"]["name"].as_str())
        .collect();
    assert!(
        trashed.contains(&"Photos"),
        "the replaced directory is in the trash: {}",
        trash.text
    );

    // Downloads: no sniffing, sandboxed, and active types as attachments.
    assert_eq!(
        status(
            dav(&owner, "PUT", "/page.html")
                .body("<script>alert(1)</script>")
                .send()
                .await
                .unwrap()
        ),
        201
    );
    let page = dav(&owner, "GET", "/page.html").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h["content-security-policy"].to_str().unwrap().contains("sandbox"));
    assert!(
        h["content-disposition"].to_str().unwrap().starts_with("attachment"),
        "{:?}",
        h["content-disposition"]
    );
    let text = dav(&owner, "GET", "/junk.txt").send().await.unwrap();
    assert!(
        text.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );
    assert!(
        text.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
}
