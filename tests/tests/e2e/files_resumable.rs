//! Resumable uploads (TUS 1.0 at `/files/uploads/`) end to end, against the real binary: an
//! upload cut off mid-way resumes from what the server kept, checksums refuse damaged appends,
//! the file appears only once whole, abandoned uploads are removed, and a real third-party TUS
//! client (Python's tuspy) uploads through it.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use cocon_tests::drive::download;
use cocon_tests::{Api, Cocon};
use md5::{Digest, Md5};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Bytes that differ from one offset to the next, so a misplaced chunk shows.
fn content(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let res = req.send().await.expect("the request reaches the server");
    Answer {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        text: res.text().await.unwrap_or_default(),
    }
}

fn tus(api: &Api, method: Method, path: &str) -> reqwest::RequestBuilder {
    api.request(method, path).header("Tus-Resumable", "1.0.0")
}

/// Starts an upload of `length` bytes with the given metadata; answers its path.
async fn create(api: &Api, length: usize, meta: &[(&str, &str)]) -> Answer {
    let meta: Vec<String> = meta.iter().map(|(k, v)| format!("{k} {}", b64(v.as_bytes()))).collect();
    send(
        tus(api, Method::POST, "/files/uploads/")
            .header("Upload-Length", length.to_string())
            .header("Upload-Metadata", meta.join(",")),
    )
    .await
}

/// Starts an upload of `length` bytes named `name` that announces the content's MD5 as `md5`
/// (base64); answers its path.
async fn create_claiming(api: &Api, length: usize, name: &str, md5: &str) -> String {
    let created = create(api, length, &[("filename", name), ("md5", md5)]).await;
    assert_eq!(created.status, 201, "{}", created.text);
    created.header("location").to_string()
}

async fn append(api: &Api, location: &str, offset: usize, data: &[u8], checksum: Option<String>) -> Answer {
    let mut req = tus(api, Method::PATCH, location)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset.to_string())
        .body(data.to_vec());
    if let Some(checksum) = checksum {
        req = req.header("Upload-Checksum", checksum);
    }
    send(req).await
}

async fn offset_of(api: &Api, location: &str) -> Answer {
    send(tus(api, Method::HEAD, location)).await
}

/// Every blob on disk (finished or not).
fn blob_files(dir: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| if e.path().is_dir() { count(&e.path()) } else { 1 })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&dir.join("blobs"))
}

#[tokio::test]
async fn test_an_upload_cut_off_resumes_where_it_stopped() {
    use tokio::io::AsyncWriteExt;
    let (dir, cocon, api) = cocon_tests::drive::setup("io.cozy.files").await;
    let data = content(3 * 1024 * 1024 + 77);

    // What the server speaks, asked without credentials (CORS preflights and clients do).
    let caps = send(api.with_token(None).request(Method::OPTIONS, "/files/uploads/")).await;
    assert_eq!(caps.status, 204);
    assert_eq!(caps.header("tus-version"), "1.0.0");
    assert!(caps.header("tus-extension").contains("creation"), "{:?}", caps.headers);
    assert!(caps.header("tus-checksum-algorithm").contains("sha1"));

    // Requests that do not speak TUS 1.0, or carry no token, are refused.
    let old = send(
        api.request(Method::POST, "/files/uploads/")
            .header("Tus-Resumable", "0.2.2")
            .header("Upload-Length", "5"),
    )
    .await;
    assert_eq!(old.status, 412, "{}", old.text);
    assert_eq!(old.header("tus-version"), "1.0.0");
    let anonymous = create(&api.with_token(None), 5, &[("filename", "x")]).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text);

    let created = create(
        &api,
        data.len(),
        &[("filename", "holiday.mov"), ("filetype", "video/quicktime")],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.header("tus-resumable"), "1.0.0");
    let location = created.header("location").to_string();
    assert!(location.starts_with("/files/uploads/"), "{location}");
    assert!(!created.header("upload-expires").is_empty());
    let head = offset_of(&api, &location).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("upload-offset"), "0");
    assert_eq!(head.header("upload-length"), data.len().to_string());
    assert_eq!(head.header("cache-control"), "no-store");

    // The connection breaks 1 MiB and a bit into a PATCH that announced everything.
    let sent = 1024 * 1024 + 123;
    let token = cocon.token("alice.test", "io.cozy.files").await.unwrap();
    let addr = cocon.http.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "PATCH {location} HTTP/1.1\r\nHost: alice.test\r\nAuthorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(&data[..sent]).await.unwrap();
    tcp.flush().await.unwrap();
    drop(tcp);
    // The server keeps what arrived once it notices the broken connection (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let head = offset_of(&api, &location).await;
        if head.header("upload-offset") == sent.to_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not keep the {sent} bytes sent: {:?}",
            head.headers
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unfinished = api.get("/files/metadata?Path=/holiday.mov").await;
    assert_eq!(unfinished.status, 404, "nothing is visible before the upload is whole");

    // An append from the wrong offset, however large, gets its answer and changes nothing.
    let large = vec![0u8; 16 << 20];
    let wrong = append(&api, &location, 0, &large, None).await;
    assert_eq!(wrong.status, 409, "{}", wrong.text);
    assert!(
        wrong.text.contains(&sent.to_string()),
        "says where it is: {}",
        wrong.text
    );

    // A damaged append (its checksum does not match) is refused, and nothing of it is kept.
    let rest = &data[sent..];
    let mut damaged = rest.to_vec();
    damaged[1000] ^= 0xff;
    let sha1 = |bytes: &[u8]| format!("sha1 {}", b64(&sha1::Sha1::digest(bytes)));
    let refused = append(&api, &location, sent, &damaged, Some(sha1(rest))).await;
    assert_eq!(refused.status, 460, "{}", refused.text);
    assert_eq!(
        offset_of(&api, &location).await.header("upload-offset"),
        sent.to_string()
    );
    // Refused before its bytes are read, a large append still gets its answer, not a
    // connection broken while it sends.
    let unknown = append(&api, &location, sent, &large, Some("crc99 AAAA".into())).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text);
    assert!(unknown.text.contains("crc99"), "{}", unknown.text);
    let wrong_type = send(
        tus(&api, Method::PATCH, &location)
            .header("Content-Type", "application/json")
            .header("Upload-Offset", sent.to_string())
            .body("{}"),
    )
    .await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.text);

    // The rest, checked, completes it: the file appears whole.
    let done = append(&api, &location, sent, rest, Some(sha1(rest))).await;
    assert_eq!(done.status, 204, "{}", done.text);
    assert_eq!(done.header("upload-offset"), data.len().to_string());
    let file_path = done.header("content-location").to_string();
    assert!(file_path.starts_with("/files/"), "{:?}", done.headers);
    let file = api.get(&file_path).await;
    assert_eq!(file.status, 200, "{}", file.text);
    let attrs = &file.body["data"]["attributes"];
    assert_eq!(attrs["name"], "holiday.mov");
    assert_eq!(attrs["path"], "/holiday.mov");
    assert_eq!(attrs["mime"], "video/quicktime");
    assert_eq!(attrs["size"], data.len().to_string());
    assert_eq!(attrs["md5sum"], b64(&Md5::digest(&data)));
    let id = file.body["data"]["id"].as_str().unwrap().to_string();
    assert!(
        download(&api, &id).await == data,
        "the downloaded content is the uploaded one"
    );

    // A client that lost the last answer asks again: same answer, still one file.
    let again = append(&api, &location, data.len(), &[], None).await;
    assert_eq!(again.status, 204, "{}", again.text);
    assert_eq!(again.header("content-location"), file_path);
    let root = api.get("/files/io.cozy.files.root-dir").await;
    assert_eq!(root.body["meta"]["count"], 2, "the trash and the file: {}", root.text);

    // The parts were joined into the file's content and then removed: one blob is left.
    assert_eq!(blob_files(dir.path()), 1);
}

#[tokio::test]
async fn test_uploads_are_checked_cancelled_and_kept_to_their_instance() {
    let (dir, cocon, api) = cocon_tests::drive::setup("io.cozy.files").await;
    let hello = b"hello, resumable world";
    let first = api
        .request(Method::POST, "/files/?Type=file&Name=taken.txt")
        .body(hello.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let taken: Value = first.json().await.unwrap();
    let taken_id = taken["data"]["id"].as_str().unwrap().to_string();
    let baseline = blob_files(dir.path());

    // Where the file would go is checked before any byte is sent.
    let conflict = create(&api, 5, &[("filename", "taken.txt")]).await;
    assert_eq!(conflict.status, 409, "{}", conflict.text);
    let no_dir = create(&api, 5, &[("filename", "a.txt"), ("dir_id", "nope")]).await;
    assert_eq!(no_dir.status, 404, "{}", no_dir.text);
    let bad_name = create(&api, 5, &[("filename", "../etc")]).await;
    assert_eq!(bad_name.status, 400, "{}", bad_name.text);
    let no_length = send(tus(&api, Method::POST, "/files/uploads/")).await;
    assert_eq!(no_length.status, 400, "{}", no_length.text);
    let other = cocon.instance("bob.test", "io.cozy.files").await.unwrap();
    let read_only = cocon.api(
        "alice.test",
        Some(&cocon.token("alice.test", "io.cozy.files:GET").await.unwrap()),
    );
    let denied = create(&read_only, 5, &[("filename", "ro.txt")]).await;
    assert_eq!(denied.status, 403, "{}", denied.text);

    // Appending past the announced length is refused.
    let small = create(&api, 10, &[("filename", "small.txt")]).await;
    let small_at = small.header("location").to_string();
    let too_long = append(&api, &small_at, 0, b"eleven byte", None).await;
    assert_eq!(too_long.status, 400, "{}", too_long.text);
    assert_eq!(offset_of(&api, &small_at).await.header("upload-offset"), "0");

    // Another instance cannot see or touch it.
    assert_eq!(offset_of(&other, &small_at).await.status, 404);
    assert_eq!(append(&other, &small_at, 0, b"0123456789", None).await.status, 404);
    assert_eq!(send(tus(&other, Method::DELETE, &small_at)).await.status, 404);

    // Cancelled: gone, with what it received.
    assert_eq!(append(&api, &small_at, 0, b"01234", None).await.status, 204);
    assert_eq!(blob_files(dir.path()), baseline + 1);
    let cancelled = send(tus(&api, Method::DELETE, &small_at)).await;
    assert_eq!(cancelled.status, 204, "{}", cancelled.text);
    assert_eq!(offset_of(&api, &small_at).await.status, 404);
    assert_eq!(blob_files(dir.path()), baseline);

    // A whole-content MD5 that does not match: refused at the end, nothing stored.
    let wrong_at = create_claiming(&api, hello.len(), "md5.txt", &b64(&Md5::digest(b"other"))).await;
    let refused = append(&api, &wrong_at, 0, hello, None).await;
    assert_eq!(refused.status, 412, "{}", refused.text);
    assert_eq!(offset_of(&api, &wrong_at).await.status, 404, "given up");
    assert_eq!(api.get("/files/metadata?Path=/md5.txt").await.status, 404);
    assert_eq!(blob_files(dir.path()), baseline);

    // New content for an existing file, sent first with the creation (creation-with-upload),
    // guarded by If-Match; the old content is kept as a version.
    let newer = b"hello, second version";
    let stale = send(
        tus(&api, Method::POST, "/files/uploads/")
            .header("Upload-Length", newer.len().to_string())
            .header("Upload-Metadata", format!("file_id {}", b64(taken_id.as_bytes())))
            .header("If-Match", "1-0000"),
    )
    .await;
    assert_eq!(stale.status, 412, "{}", stale.text);
    let rev = taken["data"]["meta"]["rev"].as_str().unwrap().to_string();
    let overwrite = send(
        tus(&api, Method::POST, "/files/uploads/")
            .header("Upload-Length", newer.len().to_string())
            .header("Upload-Metadata", format!("file_id {}", b64(taken_id.as_bytes())))
            .header("If-Match", rev)
            .header("Content-Type", "application/offset+octet-stream")
            .body(newer.to_vec()),
    )
    .await;
    assert_eq!(overwrite.status, 201, "{}", overwrite.text);
    assert_eq!(overwrite.header("upload-offset"), newer.len().to_string());
    assert_eq!(overwrite.header("content-location"), format!("/files/{taken_id}"));
    assert_eq!(download(&api, &taken_id).await, newer);

    // An empty file needs no append: it exists at once.
    let empty = create(&api, 0, &[("filename", "empty.txt")]).await;
    assert_eq!(empty.status, 201, "{}", empty.text);
    assert!(empty.header("content-location").starts_with("/files/"));
    let shown = api.get("/files/metadata?Path=/empty.txt").await;
    assert_eq!(shown.body["data"]["attributes"]["size"], "0", "{}", shown.text);
}

#[tokio::test]
async fn test_abandoned_uploads_are_removed_and_quota_counts_unfinished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::builder(dir.path())
        // Expiry counts whole seconds from the last touch: 3 s leaves the first append at
        // least 2 s, however the clock's second falls.
        .env("COCON_FILES__UPLOAD_EXPIRY_SECS", "3")
        .start()
        .await
        .unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let baseline = blob_files(dir.path());
    let started = create(&api, 100, &[("filename", "left.bin")]).await;
    let at = started.header("location").to_string();
    assert_eq!(append(&api, &at, 0, &[1u8; 40], None).await.status, 204);
    assert_eq!(blob_files(dir.path()), baseline + 1);
    // Left alone, the upload and what it received go (the sweep runs every second here).
    let deadline = Instant::now() + Duration::from_secs(15);
    while offset_of(&api, &at).await.status != 404 || blob_files(dir.path()) != baseline {
        assert!(Instant::now() < deadline, "the abandoned upload was not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Unfinished uploads count against the quota: two of 600 bytes do not fit in 1000.
    let (status, body) = cocon
        .admin(Method::PATCH, "/instances/alice.test", &[("DiskQuota", "1000")])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let big = create(&api, 2000, &[("filename", "big.bin")]).await;
        if big.status == 413 {
            assert!(big.text.contains("quota_exceeded"), "{}", big.text);
            break;
        }
        assert!(Instant::now() < deadline, "the quota never applied: {}", big.text);
        // Not yet: the files service learns the quota from the auth service's event.
        if big.status == 201 {
            send(tus(&api, Method::DELETE, big.header("location"))).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let one = create(&api, 600, &[("filename", "one.bin")]).await;
    assert_eq!(one.status, 201, "{}", one.text);
    let two = create(&api, 600, &[("filename", "two.bin")]).await;
    assert_eq!(two.status, 413, "{}", two.text);
}

/// An upload in several appends is hashed as one stream while it arrives, and its parts are
/// joined without being read again; a restart loses that running hash, and the upload still
/// completes with the right MD5 (hashed whole once more). A whole-content MD5 that does not
/// match is refused either way; an append's own checksum covers that append alone.
#[tokio::test]
async fn test_uploads_in_several_appends_complete_whole_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let data = content(3 * 1024 * 1024 + 11);
    let (a, b) = (1024 * 1024 + 5, 2 * 1024 * 1024 + 7);
    let md5_of = |bytes: &[u8]| format!("md5 {}", b64(&Md5::digest(bytes)));

    // In three appends, in one process: the second and third carry their own MD5 as checksum.
    let created = create(&api, data.len(), &[("filename", "three.bin")]).await;
    let at = created.header("location").to_string();
    assert_eq!(append(&api, &at, 0, &data[..a], None).await.status, 204);
    let damaged = append(&api, &at, a, &data[a..b], Some(md5_of(&data[..b]))).await;
    assert_eq!(
        damaged.status, 460,
        "the checksum is the append's own: {}",
        damaged.text
    );
    let second = append(&api, &at, a, &data[a..b], Some(md5_of(&data[a..b]))).await;
    assert_eq!(second.status, 204, "{}", second.text);
    let done = append(&api, &at, b, &data[b..], Some(md5_of(&data[b..]))).await;
    assert_eq!(done.status, 204, "{}", done.text);
    let file = api.get("/files/metadata?Path=/three.bin").await;
    assert_eq!(file.body["data"]["attributes"]["md5sum"], b64(&Md5::digest(&data)));
    let id = file.body["data"]["id"].as_str().unwrap().to_string();
    assert!(download(&api, &id).await == data, "the parts joined in order");
    let lies_at = create_claiming(&api, data.len(), "lies.bin", &b64(&Md5::digest(b"x"))).await;
    assert_eq!(append(&api, &lies_at, 0, &data[..a], None).await.status, 204);
    let refused = append(&api, &lies_at, a, &data[a..], None).await;
    assert_eq!(refused.status, 412, "{}", refused.text);

    // Across a restart, between the first and the second append.
    let whole_md5 = b64(&Md5::digest(&data));
    let at = create_claiming(&api, data.len(), "restarted.bin", &whole_md5).await;
    // And one announcing another MD5, which must not become a file.
    let lies_at = create_claiming(&api, data.len(), "lies.bin", &b64(&Md5::digest(b"x"))).await;
    for location in [&at, &lies_at] {
        assert_eq!(append(&api, location, 0, &data[..a], None).await.status, 204);
    }
    cocon.stop().await.unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let token = cocon.token("alice.test", "io.cozy.files").await.unwrap();
    let api = cocon.api("alice.test", Some(&token));
    for location in [&at, &lies_at] {
        assert_eq!(offset_of(&api, location).await.header("upload-offset"), a.to_string());
        assert_eq!(append(&api, location, a, &data[a..b], None).await.status, 204);
    }
    let done = append(&api, &at, b, &data[b..], None).await;
    assert_eq!(done.status, 204, "{}", done.text);
    let file = api.get("/files/metadata?Path=/restarted.bin").await;
    assert_eq!(file.body["data"]["attributes"]["md5sum"], whole_md5);
    let id = file.body["data"]["id"].as_str().unwrap().to_string();
    assert!(download(&api, &id).await == data, "the parts joined in order");
    let refused = append(&api, &lies_at, b, &data[b..], None).await;
    assert_eq!(refused.status, 412, "{}", refused.text);
    assert_eq!(api.get("/files/metadata?Path=/lies.bin").await.status, 404);
}

#[tokio::test]
async fn test_a_third_party_tus_client_uploads_in_parts() {
    let (_dir, cocon, api) = cocon_tests::drive::setup("io.cozy.files").await;
    let data = content(2 * 1024 * 1024 + 500);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    let token = cocon.token("alice.test", "io.cozy.files").await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tus/tuspy_upload.py");
    let args = [
        script.to_string(),
        format!("{}/files/uploads/", cocon.http),
        "alice.test".into(),
        token,
        file.path().display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("/usr/bin/python3")
            .args(&args)
            .output()
            .expect("python3 runs (the test command installs python3-tuspy)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tuspy failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = api.get("/files/metadata?Path=/from-tuspy.bin").await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.body["data"]["attributes"]["md5sum"], b64(&Md5::digest(&data)));
    assert_eq!(shown.body["data"]["attributes"]["size"], data.len().to_string());
}

#[tokio::test]
async fn test_unfinished_uploads_are_limited_per_instance() {
    let (_dir, _cocon, api) = cocon_tests::drive::setup("io.cozy.files").await;
    // Finished uploads (empty files complete at once) stay recorded for a while; they must not
    // hide the unfinished ones from the count.
    for i in 0..210 {
        let done = create(&api, 0, &[("filename", &format!("done-{i}"))]).await;
        assert_eq!(done.status, 201, "{}", done.text);
    }
    for i in 0..100 {
        let open = create(&api, 10, &[("filename", &format!("open-{i}"))]).await;
        assert_eq!(open.status, 201, "{}", open.text);
    }
    let one_more = create(&api, 10, &[("filename", "one-more")]).await;
    assert_eq!(one_more.status, 429, "{}", one_more.text);
    assert!(one_more.text.contains("finish or cancel"), "{}", one_more.text);
}
