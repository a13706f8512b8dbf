//! Secret links end to end: download links (`POST /files/downloads`) and zip archives
//! (`POST /files/archive`), opened without a token, only on their own instance, until they
//! expire. Archives are checked by a real zip reader (Python's zipfile, which verifies every
//! entry's CRC).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cocon_tests::drive::{ROOT, md5_hex, new_dir as mkdir, new_file as upload};
use cocon_tests::{Api, Cocon, Reply};
use reqwest::Method;
use serde_json::{Value, json};

/// A link's path, from a creation's answer.
fn related(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text);
    let href = reply.body["links"]["related"].as_str().unwrap().to_string();
    assert_eq!(reply.body["data"]["attributes"]["href"], href.as_str());
    href
}

/// A GET without any token, as a browser's download manager sends it.
async fn fetch(cocon: &Cocon, domain: &str, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", cocon.http))
        .header("Host", domain);
    if let Some(range) = range {
        req = req.header("Range", range);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn test_download_links_open_without_a_token_on_their_instance_only() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_FILES__MIN_VERSION_DELAY_SECS", "0")
        .start()
        .await
        .unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    cocon.instance("bob.test", "io.cozy.files").await.unwrap();
    let id = upload(&api, ROOT, "report 2024.txt", b"first draft").await;
    let put = Api::reply(api.request(Method::PUT, &format!("/files/{id}")).body("final version")).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let version = put.body["data"]["relationships"]["old_versions"]["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a version was kept: {}", put.text))
        .to_string();

    let anonymous = Api::reply(
        api.with_token(None)
            .request(Method::POST, &format!("/files/downloads?Id={id}")),
    )
    .await;
    assert_eq!(anonymous.status, 401, "making a link needs a token");
    let by_id = related(&Api::reply(api.request(Method::POST, &format!("/files/downloads?Id={id}"))).await);
    assert!(by_id.starts_with("/files/downloads/"), "{by_id}");
    assert!(by_id.ends_with("/report%202024.txt"), "{by_id}");

    let res = fetch(&cocon, "alice.test", &by_id, None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("report 2024.txt"),
        "{:?}",
        res.headers()
    );
    assert_eq!(res.headers()["cache-control"], "private, no-store");
    assert_eq!(res.text().await.unwrap(), "final version");
    let part = fetch(&cocon, "alice.test", &by_id, Some("bytes=6-12")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(part.text().await.unwrap(), "version");

    // By path, and an earlier version.
    let by_path = related(&Api::reply(api.request(Method::POST, "/files/downloads?Path=/report%202024.txt")).await);
    assert_eq!(
        fetch(&cocon, "alice.test", &by_path, None).await.text().await.unwrap(),
        "final version"
    );
    let old =
        related(&Api::reply(api.request(Method::POST, &format!("/files/downloads?Id={id}&VersionId={version}"))).await);
    assert_eq!(
        fetch(&cocon, "alice.test", &old, None).await.text().await.unwrap(),
        "first draft"
    );

    // The secret opens nothing elsewhere, and a made-up one opens nothing at all.
    assert_eq!(fetch(&cocon, "bob.test", &by_id, None).await.status(), 404);
    assert_eq!(fetch(&cocon, "nobody.test", &by_id, None).await.status(), 404);
    let forged = format!("/files/downloads/{}/x.txt", "0".repeat(64));
    assert_eq!(fetch(&cocon, "alice.test", &forged, None).await.status(), 404);
    // An archive's secret is not a download's.
    let zip = related(
        &api.post("/files/archive", &json!({"data": {"attributes": {"ids": [id]}}}))
            .await,
    );
    let secret = zip.split('/').nth(3).unwrap();
    let crossed = fetch(&cocon, "alice.test", &format!("/files/downloads/{secret}/x"), None).await;
    assert_eq!(crossed.status(), 404);

    // What cannot be linked.
    let dir_id = mkdir(&api, ROOT, "Docs").await;
    let dir_link = Api::reply(api.request(Method::POST, &format!("/files/downloads?Id={dir_id}"))).await;
    assert_eq!(dir_link.status, 400, "{}", dir_link.text);
    assert_eq!(
        Api::reply(api.request(Method::POST, "/files/downloads?Id=nope"))
            .await
            .status,
        404
    );
    assert_eq!(
        Api::reply(api.request(Method::POST, "/files/downloads")).await.status,
        400
    );
}

#[tokio::test]
async fn test_archives_stream_a_valid_zip_of_files_and_trees() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let photos = mkdir(&api, ROOT, "Photos").await;
    let trip = mkdir(&api, &photos, "Trip").await;
    mkdir(&api, &photos, "Empty").await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    upload(&api, &photos, "cover.jpg", b"jpeg bytes").await;
    upload(&api, &trip, "day 1.jpg", &big).await;
    upload(&api, &trip, "été.txt", b"accents survive").await;
    // Names Windows extractors would refuse or misread.
    upload(&api, &trip, "a:b?.txt", b"a stream on NTFS").await;
    upload(&api, &trip, "CON", b"a device on Windows").await;
    let notes = mkdir(&api, ROOT, "Notes").await;
    let todo = upload(&api, &notes, "todo.md", b"- write tests").await;

    let answer = api
        .post(
            "/files/archive",
            &json!({"data": {"type": "io.cozy.files.archives",
                "attributes": {"name": "holiday", "ids": [todo], "files": ["/Photos"]}}}),
        )
        .await;
    assert_eq!(answer.body["data"]["type"], "io.cozy.files.archives");
    let href = related(&answer);
    assert!(href.ends_with("/holiday.zip"), "{href}");

    let res = fetch(&cocon, "alice.test", &href, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/zip");
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("holiday.zip"),
        "{:?}",
        res.headers()
    );
    let zip = res.bytes().await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &zip).unwrap();
    let script = r#"
import hashlib, json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    bad = z.testzip()
    assert bad is None, f"bad CRC in {bad}"
    print(json.dumps({i.filename: hashlib.md5(z.read(i)).hexdigest() for i in z.infolist()}))
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    let empty = md5_hex(b"");
    let expected: BTreeMap<String, String> = [
        ("todo.md", md5_hex(b"- write tests")),
        ("Photos/", empty.clone()),
        ("Photos/cover.jpg", md5_hex(b"jpeg bytes")),
        ("Photos/Empty/", empty.clone()),
        ("Photos/Trip/", empty.clone()),
        ("Photos/Trip/day 1.jpg", md5_hex(&big)),
        ("Photos/Trip/été.txt", md5_hex(b"accents survive")),
        ("Photos/Trip/a_b_.txt", md5_hex(b"a stream on NTFS")),
        ("Photos/Trip/_CON", md5_hex(b"a device on Windows")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(entries, expected);

    // Bad requests.
    let nothing = api
        .post("/files/archive", &json!({"data": {"attributes": {"name": "x"}}}))
        .await;
    assert_eq!(nothing.status, 400, "{}", nothing.text);
    let missing = api
        .post("/files/archive", &json!({"data": {"attributes": {"ids": ["nope"]}}}))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    let not_list = api
        .post("/files/archive", &json!({"data": {"attributes": {"files": "/Photos"}}}))
        .await;
    assert_eq!(not_list.status, 400, "{}", not_list.text);
    let garbage = api.raw(Method::POST, "/files/archive", b"{not json").await;
    assert_eq!(garbage.status, 400, "{}", garbage.text);
    assert_eq!(fetch(&cocon, "bob.test", &href, None).await.status(), 404);
}

#[tokio::test]
async fn test_links_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        .env("COCON_FILES__LINK_TTL_SECS", "1")
        .start()
        .await
        .unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let id = upload(&api, ROOT, "a.txt", b"short-lived").await;
    let link = related(&Api::reply(api.request(Method::POST, &format!("/files/downloads?Id={id}"))).await);
    let expires: Value = api
        .request(Method::POST, &format!("/files/downloads?Id={id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(expires["data"]["attributes"]["expires_at"].is_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = fetch(&cocon, "alice.test", &link, None).await.status();
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the link never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
