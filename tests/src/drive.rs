//! What the drive's tests all do: start a server with an instance, make directories, upload
//! files, read ids from answers.

use base64::Engine as _;
use md5::{Digest, Md5};
use reqwest::Method;

use crate::{Api, Cocon, Reply};

pub const ROOT: &str = cocon_common::cozy::ROOT_DIR_ID;
pub const TRASH: &str = cocon_common::cozy::TRASH_DIR_ID;

/// A server on its embedded default, and a token of `alice.test` with `scope`.
pub async fn setup(scope: &str) -> (tempfile::TempDir, Cocon, Api) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cocon = Cocon::start(dir.path()).await.expect("cocon starts");
    let api = cocon
        .instance("alice.test", scope)
        .await
        .expect("an instance and a token");
    (dir, cocon, api)
}

/// A PNG of `width` × `height` with a gradient: an image the thumbnailer reads.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, 90]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("a PNG is written to memory");
    out
}

pub fn md5_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn encoded(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

/// `POST /files/:parent?Type=directory`.
pub async fn mkdir(api: &Api, parent: &str, name: &str) -> Reply {
    let path = format!("/files/{parent}?Type=directory&Name={}", encoded(name));
    Api::reply(api.request(Method::POST, &path)).await
}

/// `POST /files/:parent?Type=file` with the content's `Content-MD5`, as cozy-client sends it.
pub async fn upload(api: &Api, parent: &str, name: &str, data: &[u8]) -> Reply {
    let path = format!("/files/{parent}?Type=file&Name={}", encoded(name));
    Api::reply(
        api.request(Method::POST, &path)
            .header("Content-MD5", md5_b64(data))
            .body(data.to_vec()),
    )
    .await
}

/// The id in a JSON-API answer.
pub fn id(reply: &Reply) -> String {
    reply.body["data"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {}", reply.text))
        .to_string()
}

/// The id of what an answer says was created (201).
pub fn created(reply: &Reply) -> String {
    assert_eq!(reply.status, 201, "{}", reply.text);
    id(reply)
}

/// A new directory's id.
pub async fn new_dir(api: &Api, parent: &str, name: &str) -> String {
    created(&mkdir(api, parent, name).await)
}

/// A new file's id.
pub async fn new_file(api: &Api, parent: &str, name: &str, data: &[u8]) -> String {
    created(&upload(api, parent, name, data).await)
}

/// A file's content (`GET /files/download/:id`, which must answer 200).
pub async fn download(api: &Api, id: &str) -> Vec<u8> {
    let res = api
        .request(Method::GET, &format!("/files/download/{id}"))
        .send()
        .await
        .expect("the request reaches the server");
    assert_eq!(res.status(), 200, "downloading {id}");
    res.bytes().await.expect("the body is readable").to_vec()
}
