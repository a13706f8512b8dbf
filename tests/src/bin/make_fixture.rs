//! Writes the data directory `tests/fixtures/data-v0` that `tests/tests/e2e/durability.rs` opens
//! with today's binary: one instance with documents (an index, an update, a deletion), files
//! (a directory, a file with an old version, references from a document), a sharing link and a
//! disk quota, written by the binary in `COCON_BIN` (a build from before tables were
//! versioned). What the test should find is written beside it in `fixture.json`.
//!
//! Usage: COCON_BIN=/path/to/old/cocon cargo run -p cocon-tests --bin make_fixture -- OUT_DIR

use anyhow::{Context, bail};
use base64::Engine as _;
use cocon_tests::{Api, Cocon, onboard};
use md5::{Digest, Md5};
use reqwest::Method;
use serde_json::{Value, json};

pub const DOMAIN: &str = "alice.test";
pub const PASSPHRASE: &str = "correct horse battery staple";

fn id(reply: &cocon_tests::Reply) -> anyhow::Result<String> {
    reply.body["data"]["id"]
        .as_str()
        .or_else(|| reply.body["id"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no id in {}", reply.text))
}

async fn upload(api: &Api, parent: &str, name: &str, data: &[u8]) -> anyhow::Result<String> {
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(data));
    let reply = Api::reply(
        api.request(Method::POST, &format!("/files/{parent}?Type=file&Name={name}"))
            .header("Content-MD5", md5)
            .header("Content-Type", "text/plain")
            .body(data.to_vec()),
    )
    .await;
    if reply.status != 201 {
        bail!("upload {name}: {} {}", reply.status, reply.text);
    }
    id(&reply)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).context("usage: make_fixture OUT_DIR")?;
    let out = std::path::PathBuf::from(out);
    if out.exists() {
        bail!("{} exists: remove it first", out.display());
    }
    let mut cocon = Cocon::builder(&out)
        .env("COCON_FILES__MIN_VERSION_DELAY_SECS", "0")
        .start()
        .await?;
    onboard(&cocon, DOMAIN, PASSPHRASE).await;
    let token = cocon
        .token(DOMAIN, "io.cozy.notes io.cozy.files io.cozy.permissions")
        .await?;
    let api = cocon.api(DOMAIN, Some(&token));

    let mut notes = Vec::new();
    for title in ["groceries", "holidays", "taxes"] {
        let reply = api.post("/data/io.cozy.notes/", &json!({"title": title})).await;
        notes.push((id(&reply)?, reply.body["rev"].as_str().unwrap_or_default().to_string()));
    }
    let (taxes, taxes_rev) = notes[2].clone();
    let updated = api
        .put(
            &format!("/data/io.cozy.notes/{taxes}"),
            &json!({"_rev": taxes_rev, "title": "taxes 2026"}),
        )
        .await;
    if updated.status != 200 {
        bail!("update: {}", updated.text);
    }
    let (holidays, holidays_rev) = notes[1].clone();
    let deleted = api
        .delete(&format!("/data/io.cozy.notes/{holidays}?rev={holidays_rev}"))
        .await;
    if deleted.status != 200 {
        bail!("delete: {}", deleted.text);
    }
    let index = api
        .post("/data/io.cozy.notes/_index", &json!({"index": {"fields": ["title"]}}))
        .await;
    if index.status != 200 {
        bail!("index: {}", index.text);
    }

    let dir = Api::reply(api.request(Method::POST, "/files/?Type=directory&Name=Papers")).await;
    let dir = id(&dir)?;
    let file = upload(&api, &dir, "letter.txt", b"first draft").await?;
    let second = Api::reply(
        api.request(Method::PUT, &format!("/files/{file}"))
            .body(b"final letter".to_vec()),
    )
    .await;
    if second.status != 200 {
        bail!("new version: {}", second.text);
    }
    let refs = api
        .send(
            Method::POST,
            &format!("/data/io.cozy.notes/{}/relationships/references", notes[0].0),
            Some(
                json!({"data": [{"type": "io.cozy.files", "id": file}]})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
    if refs.status != 204 {
        bail!("references: {}", refs.text);
    }
    let set = api
        .post(
            "/permissions?codes=bob",
            &json!({"data": {"type": "io.cozy.permissions", "attributes": {"permissions": {
                "note": {"type": "io.cozy.notes", "verbs": ["GET"], "values": [notes[0].0]}
            }}}}),
        )
        .await;
    let code = set.body["data"]["attributes"]["codes"]["bob"]
        .as_str()
        .with_context(|| format!("no code in {}", set.text))?
        .to_string();
    let (status, body) = cocon
        .admin(
            Method::PATCH,
            &format!("/instances/{DOMAIN}"),
            &[("DiskQuota", "1000000")],
        )
        .await?;
    if status != 200 {
        bail!("quota: {status} {body}");
    }
    cocon.stop().await?;

    let manifest: Value = json!({
        "domain": DOMAIN,
        "passphrase": PASSPHRASE,
        "notes": {"groceries": notes[0].0, "holidays": holidays, "taxes": taxes},
        "dir": dir,
        "file": file,
        "code": code,
        "quota": 1_000_000,
    });
    std::fs::write(out.join("fixture.json"), serde_json::to_vec_pretty(&manifest)?)?;
    println!("{}", manifest);
    Ok(())
}
