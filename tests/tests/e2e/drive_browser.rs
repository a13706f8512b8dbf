//! Cocon's own drive app in headless Chromium (`tests/browser/drive_app.py`): the person signs
//! in on `drive.<instance>`, uploads files (one over TUS) and a folder with progress
//! bars, sees a thumbnail, renames, moves, trashes and restores, and shares a photo by a link
//! that opens in a fresh browser profile, and by one with a password. What the browser did is
//! then read back through the API.

use std::path::Path;

use cocon_tests::drive::{ROOT, download, md5_b64, md5_hex, new_dir, png, upload};
use cocon_tests::sharing::{PASSPHRASE, person, port};
use cocon_tests::{Api, Cocon};
use futures::StreamExt;

use super::browser::run_script;

const BIG: usize = 40 * 1024 * 1024;
/// More than the first page (100) and the next one (1,000).
const MANY: usize = 1234;

/// What the person uploads: a photo, a note, a file past the TUS threshold, a folder tree.
fn fixtures(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let photo = png(640, 480);
    std::fs::write(dir.join("photo.png"), &photo).unwrap();
    std::fs::write(dir.join("notes.txt"), "things to remember\n").unwrap();
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::create_dir_all(dir.join("album/sub")).unwrap();
    std::fs::write(dir.join("album/a.txt"), "a").unwrap();
    std::fs::write(dir.join("album/sub/b.txt"), "b").unwrap();
    (photo, big)
}

async fn at(api: &Api, path: &str) -> serde_json::Value {
    let reply = api.get(&format!("/files/metadata?Path={path}")).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    reply.body["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_person_uses_the_drive_app_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let (photo, big) = fixtures(&inputs);
    let cocon = Cocon::start(&dir.path().join("data")).await.unwrap();
    person(&cocon, "alice.localhost").await;
    let token = cocon
        .token(
            "alice.localhost",
            "io.cozy.apps:GET io.cozy.files io.cozy.permissions:GET",
        )
        .await
        .unwrap();
    let api = cocon.api("alice.localhost", Some(&token));
    // The drive is installed on every new instance, as the instance is created.
    cocon.app_installed("alice.localhost", "drive").await;

    // A folder of more entries than one page: the listing goes on behind the first screen.
    let many = new_dir(&api, ROOT, "many").await;
    let names: Vec<String> = (0..MANY).map(|i| format!("file-{i:04}.txt")).collect();
    futures::stream::iter(names.iter())
        .map(|name| {
            let (api, many) = (&api, &many);
            async move { assert_eq!(upload(api, many, name, b"").await.status, 201) }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let p = port(&cocon);
    let seen = run_script(
        "drive_app.py",
        &[
            &format!("http://drive.alice.localhost:{p}/"),
            PASSPHRASE,
            inputs.to_str().unwrap(),
            shots.to_str().unwrap(),
            &many,
            &format!("file-{:04}.txt", MANY - 1),
        ],
    )
    .await;

    assert_eq!(seen["signed_in"], true, "{seen}");
    assert_eq!(seen["first_text"], "1 item", "{seen}");
    let uploads: Vec<&str> = seen["all_uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(uploads, ["Uploaded"; 5], "{seen}");
    assert!(
        seen["progress_steps"].as_u64().unwrap() >= 1,
        "the large file's bar moved through steps: {seen}"
    );
    assert_eq!(
        seen["listing"],
        serde_json::json!(["album", "big.bin", "many", "notes.txt", "photo.png"]),
        "{seen}"
    );
    assert_eq!(seen["count_text"], "5 items", "{seen}");
    let listed = &seen["many"];
    assert_eq!(listed["status"], format!("{MANY} items"), "{seen}");
    assert_eq!(listed["first"], "file-0000.txt", "{seen}");
    assert!(
        listed["rows_in_page"].as_u64().unwrap() < 100,
        "only the rows in view are in the page: {seen}"
    );
    assert_eq!(listed["last_shown"], true, "{seen}");
    assert_eq!(seen["thumbnail"], true, "{seen}");
    assert_eq!(
        seen["moved"],
        serde_json::json!(["a.txt", "journal.txt", "sub"]),
        "{seen}"
    );
    assert_eq!(seen["crumbs"], "Files\nalbum", "{seen}");
    assert_eq!(seen["in_trash"], serde_json::json!(["journal.txt"]), "{seen}");
    assert_eq!(seen["restored"], true, "{seen}");
    let link = seen["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("http://drive.alice.localhost:{p}/public/?sharecode=")),
        "{seen}"
    );
    let public = &seen["public"];
    assert_eq!(public["rows"], serde_json::json!(["photo.png"]), "{seen}");
    assert_eq!(public["title"], "Shared with you by link", "{seen}");
    assert_eq!(public["places_hidden"], true, "{seen}");
    assert_eq!(public["upload_hidden"], true, "{seen}");
    assert_eq!(public["download_shown"], true, "{seen}");
    assert_eq!(public["download_bytes"], photo.len(), "{seen}");
    let protected = &seen["protected"];
    assert_eq!(
        protected["wrong_told"], "This is not the link’s password: try again.",
        "{seen}"
    );
    assert_eq!(protected["rows"], serde_json::json!(["photo.png"]), "{seen}");
    assert!(!protected["url"].as_str().unwrap().contains("password=wrong"), "{seen}");

    // What the browser did is what the drive holds.
    let big_file = at(&api, "/big.bin").await;
    assert_eq!(big_file["attributes"]["size"], BIG.to_string());
    assert_eq!(big_file["attributes"]["md5sum"], md5_b64(&big), "the large file's MD5");
    let content = download(&api, big_file["id"].as_str().unwrap()).await;
    assert_eq!(md5_hex(&content), md5_hex(&big), "the large file arrived whole");
    let journal = at(&api, "/album/journal.txt").await;
    assert_eq!(
        download(&api, journal["id"].as_str().unwrap()).await,
        b"things to remember\n"
    );
    assert_eq!(
        download(&api, at(&api, "/album/sub/b.txt").await["id"].as_str().unwrap()).await,
        b"b"
    );
    assert_eq!(api.get("/files/metadata?Path=/notes.txt").await.status, 404);
    let links = api.get("/permissions/doctype/io.cozy.files/shared-by-link").await;
    assert_eq!(links.status, 200, "{}", links.text);
    assert_eq!(links.body["data"].as_array().unwrap().len(), 2, "{}", links.text);
    for shot in ["drive.png", "drive-grid.png", "drive-share.png", "drive-public.png"] {
        assert!(shots.join(shot).metadata().unwrap().len() > 1000, "{shot}");
    }
}

/// A large upload from the drive page, behind a proxy that refuses bodies over 32 MiB (a 413
/// without CORS headers, as nginx's `client_max_body_size` answers) and breaks the first append
/// it lets through after 8 MiB: the page goes on in parts, from what the server kept of the
/// broken append, and the file arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_large_upload_from_the_drive_survives_a_limiting_proxy_and_a_broken_connection() {
    const LIMIT: usize = 32 << 20;
    const CUT_AFTER: usize = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8 ^ (i >> 16) as u8).collect();
    let file = dir.path().join("large.bin");
    std::fs::write(&file, &big).unwrap();
    let cocon = Cocon::start(&dir.path().join("data")).await.unwrap();
    person(&cocon, "alice.localhost").await;
    cocon.app_installed("alice.localhost", "drive").await;
    let token = cocon.token("alice.localhost", "io.cozy.files").await.unwrap();
    let api = cocon.api("alice.localhost", Some(&token));

    let seen = run_script(
        "drive_resume.py",
        &[
            &port(&cocon).to_string(),
            "alice.localhost",
            PASSPHRASE,
            file.to_str().unwrap(),
            &LIMIT.to_string(),
            &CUT_AFTER.to_string(),
        ],
    )
    .await;
    assert_eq!(seen["done"], "true", "{seen}");
    let asked: Vec<(String, Option<u64>, u64, Option<String>)> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["offset"].as_str().map(|o| o.parse().unwrap()),
                r["length"].as_u64().unwrap(),
                r["proxy"].as_str().map(str::to_string),
            )
        })
        .collect();
    let patches: Vec<_> = asked.iter().filter(|r| r.0 == "PATCH").collect();
    // The whole file in one append first, refused by the proxy.
    assert_eq!(patches[0].1, Some(0), "{seen}");
    assert_eq!(patches[0].2, BIG as u64, "{seen}");
    assert_eq!(patches[0].3.as_deref(), Some("413"), "{seen}");
    // Then parts no larger than the proxy takes; the first of them broken off mid-way.
    assert_eq!(patches[1].1, Some(0), "{seen}");
    assert_eq!(patches[1].2, LIMIT as u64, "{seen}");
    assert!(patches[1].3.as_deref().unwrap_or_default().starts_with("cut"), "{seen}");
    // The upload goes on where the server's HEAD said it stood: past what it kept of the cut
    // (Chromium may first send the broken append again on a new connection, refused: 409).
    let resumed = patches.iter().filter_map(|p| p.1).find(|&o| o > 0).unwrap();
    assert!(resumed <= CUT_AFTER as u64, "{seen}");
    assert!(asked.iter().filter(|r| r.0 == "HEAD").count() >= 2, "{seen}");
    assert!(
        patches[2..].iter().all(|p| p.2 <= LIMIT as u64 && p.3.is_none()),
        "{seen}"
    );

    let reply = api.get("/files/metadata?Path=/large.bin").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["data"]["attributes"]["md5sum"], md5_b64(&big));
    let content = download(&api, reply.body["data"]["id"].as_str().unwrap()).await;
    assert_eq!(md5_hex(&content), md5_hex(&big), "the file arrived whole");
}
