//! Thumbnails end to end: an uploaded image gets tiny, small, medium and large JPEGs, made
//! after the upload by the files service's event consumer, served without a token by links
//! whose secret follows the content; what is not an image gets none.

use std::time::{Duration, Instant};

use cocon_tests::drive::png;
use cocon_tests::{Api, Cocon, Reply};
use reqwest::Method;
use serde_json::Value;

async fn upload(api: &Api, name: &str, data: Vec<u8>) -> Reply {
    let reply = Api::reply(
        api.request(Method::POST, &format!("/files/?Type=file&Name={name}"))
            .body(data),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply
}

/// Fetches a thumbnail link without a token until it is made (bounded), and decodes it.
async fn fetch(cocon: &Cocon, link: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{link}", cocon.http))
        .header("Host", "alice.test")
        .send()
        .await
        .unwrap()
}

async fn made(cocon: &Cocon, link: &str) -> image::DynamicImage {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = fetch(cocon, link).await;
        if res.status() == 200 {
            assert_eq!(res.headers()["content-type"], "image/jpeg");
            let body = res.bytes().await.unwrap();
            return image::load_from_memory_with_format(&body, image::ImageFormat::Jpeg).unwrap();
        }
        assert_eq!(res.status(), 404, "not made yet");
        assert!(Instant::now() < deadline, "the thumbnail {link} was never made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn links(reply: &Reply) -> Value {
    reply.body["data"]["links"].clone()
}

#[tokio::test]
async fn test_images_get_thumbnails_after_upload() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    cocon.add_instance("bob.test").await.unwrap();
    // A drive learns on the realtime socket when they are ready, one event per format.
    let mut socket = cocon_tests::Socket::authed(&cocon.http, "alice.test", api.token().unwrap())
        .await
        .unwrap();
    assert_eq!(socket.subscribe("io.cozy.files.thumbnails", None).await.unwrap(), None);

    let photo = upload(&api, "photo.png", png(1600, 1200)).await;
    let id = photo.body["data"]["id"].as_str().unwrap().to_string();
    let mut announced = Vec::new();
    while announced.len() < 4 {
        let frame = socket.json(std::time::Duration::from_secs(30)).await.unwrap();
        assert_eq!(frame["event"], "CREATED", "{frame}");
        assert_eq!(frame["payload"]["type"], "io.cozy.files.thumbnails");
        assert_eq!(frame["payload"]["id"], id.as_str());
        announced.push(frame["payload"]["doc"]["format"].as_str().unwrap().to_string());
    }
    announced.sort();
    assert_eq!(announced, ["large", "medium", "small", "tiny"]);
    let first = links(&photo);
    for (format, width, height) in [
        ("tiny", 96, 72),
        ("small", 640, 480),
        ("medium", 960, 720),
        ("large", 1440, 1080),
    ] {
        let link = first[format]
            .as_str()
            .unwrap_or_else(|| panic!("no {format} link: {first}"));
        assert!(link.starts_with(&format!("/files/{id}/thumbnails/")), "{link}");
        let thumb = made(&cocon, link).await;
        assert_eq!((thumb.width(), thumb.height()), (width, height), "{format}");
    }
    // The same links in a directory listing.
    let root = api.get("/files/io.cozy.files.root-dir").await;
    let listed = root.body["included"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["links"]["small"], first["small"]);

    // A forged secret, another instance, an unknown format: nothing.
    let small = first["small"].as_str().unwrap().to_string();
    let forged = small.replace("/thumbnails/", "/thumbnails/x");
    assert_eq!(fetch(&cocon, &forged).await.status(), 404);
    let elsewhere = reqwest::Client::new()
        .get(format!("{}{small}", cocon.http))
        .header("Host", "bob.test")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    assert_eq!(fetch(&cocon, &small.replace("/small", "/huge")).await.status(), 400);

    // New content: new links, never enlarged; the old ones stop working.
    let put = Api::reply(api.request(Method::PUT, &format!("/files/{id}")).body(png(200, 100))).await;
    assert_eq!(put.status, 200, "{}", put.text);
    let second = links(&put);
    assert_ne!(second["small"], first["small"]);
    let thumb = made(&cocon, second["small"].as_str().unwrap()).await;
    assert_eq!((thumb.width(), thumb.height()), (200, 100));
    assert_eq!(fetch(&cocon, &small).await.status(), 404, "a stale link");

    // Deleted for good: its thumbnails go too.
    assert_eq!(api.delete(&format!("/files/{id}")).await.status, 200);
    assert_eq!(api.delete(&format!("/files/trash/{id}")).await.status, 204);
    let instance = cocon.instance_id("alice.test").await.unwrap();
    let thumbs = dir.path().join("blobs").join(&instance).join("thumbs").join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&thumbs).map(|d| d.count()).unwrap_or(0) > 0 {
        assert!(Instant::now() < deadline, "the thumbnails of a deleted file stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn test_what_is_not_a_readable_image_gets_no_thumbnails() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let text = upload(&api, "notes.txt", b"just words".to_vec()).await;
    assert!(links(&text)["small"].is_null(), "{}", text.text);

    // Named like a photo, but not one: its links say so once the consumer looked at it.
    let fake = upload(&api, "fake.jpg", b"these bytes are no JPEG".to_vec()).await;
    let link = links(&fake)["small"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = fetch(&cocon, &link).await;
        assert_eq!(res.status(), 404);
        let body = res.text().await.unwrap();
        if body.contains("not an image") {
            break;
        }
        assert!(body.contains("being made"), "{body}");
        assert!(Instant::now() < deadline, "the consumer never looked at the file");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Operators see it too.
    let metric = super::jobs::metric;
    assert_eq!(
        metric(&cocon, "cocon_files_thumbnails_total", "outcome=\"unreadable\"").await,
        1
    );
    assert_eq!(
        metric(&cocon, "cocon_files_thumbnails_total", "outcome=\"made\"").await,
        0
    );
}

/// A thumbnail link ends with the rights of whoever was shown it (a sharing link deleted, a
/// token revoked) and while its file is in the trash.
#[tokio::test]
async fn test_thumbnail_links_end_with_their_grantor_and_the_trash() {
    let dir = tempfile::tempdir().unwrap();
    let cocon = Cocon::start(dir.path()).await.unwrap();
    let api = cocon.instance("alice.test", "io.cozy.files").await.unwrap();
    let folder = Api::reply(api.request(Method::POST, "/files/?Type=directory&Name=Shared")).await;
    let folder_id = folder.body["data"]["id"].as_str().unwrap().to_string();
    let photo = Api::reply(
        api.request(Method::POST, &format!("/files/{folder_id}?Type=file&Name=p.png"))
            .body(png(320, 240)),
    )
    .await;
    assert_eq!(photo.status, 201, "{}", photo.text);
    let id = photo.body["data"]["id"].as_str().unwrap().to_string();
    let owners = links(&photo)["tiny"].as_str().unwrap().to_string();
    made(&cocon, &owners).await;

    // Shared by link: the code holder is shown links bound to the link's permission set.
    let set = api
        .post(
            "/permissions?codes=friend",
            &serde_json::json!({"data": {"type": "io.cozy.permissions", "attributes": {"permissions":
                {"album": {"type": "io.cozy.files", "verbs": ["GET"], "values": [folder_id]}}}}}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    let set_id = set.body["data"]["id"].as_str().unwrap().to_string();
    let code = set.body["data"]["attributes"]["codes"]["friend"]
        .as_str()
        .unwrap()
        .to_string();
    let friend = api.with_token(Some(&code));
    let seen = friend.get(&format!("/files/{id}")).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    let shared = links(&seen)["tiny"].as_str().unwrap().to_string();
    assert_ne!(shared, owners);
    assert!(shared.contains(&format!("/p-{set_id}.")), "{shared}");
    assert_eq!(fetch(&cocon, &shared).await.status(), 200);
    // A forged grantor, or the base secret recovered from it, does not open.
    let forged = shared.replace(&format!("p-{set_id}"), "p-0000");
    assert_eq!(fetch(&cocon, &forged).await.status(), 404);

    // The link is deleted: its thumbnails go with it; the owner's stay.
    assert_eq!(api.delete(&format!("/permissions/{set_id}")).await.status, 204);
    assert_eq!(fetch(&cocon, &shared).await.status(), 404);
    assert_eq!(fetch(&cocon, &owners).await.status(), 200);

    // A revoked CLI token's links end too.
    let (status, issued) = cocon
        .admin(
            Method::POST,
            "/instances/token",
            &[("Domain", "alice.test"), ("Scope", "io.cozy.files:GET")],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let reader = api.with_token(issued["token"].as_str());
    let readers = links(&reader.get(&format!("/files/{id}")).await)["tiny"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fetch(&cocon, &readers).await.status(), 200);
    let token_id = issued["id"].as_str().unwrap();
    let (status, _) = cocon
        .admin(Method::DELETE, &format!("/instances/alice.test/tokens/{token_id}"), &[])
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(fetch(&cocon, &readers).await.status(), 404);

    // In the trash, no thumbnail; restored, it is back.
    assert_eq!(api.delete(&format!("/files/{folder_id}")).await.status, 200);
    assert_eq!(fetch(&cocon, &owners).await.status(), 404);
    let restored = Api::reply(api.request(Method::POST, &format!("/files/trash/{folder_id}"))).await;
    assert_eq!(restored.status, 200, "{}", restored.text);
    assert_eq!(fetch(&cocon, &owners).await.status(), 200);
}
