//! The initial sync of a shared folder between two hosts on loopback
//! (`tests/bench/sharing.sh` runs it on release builds, `COCON_BIN` naming the binary).
//!
//! `sharing_files_bench FILES SIZE`: alice uploads FILES files of SIZE bytes into a folder, 4 at
//! a time as a drive client does (timed: the direct upload to compare with), shares the folder
//! with Bob; from bob's acceptance to the last file whole on bob's host: time, files and MB per
//! second, and the ratio to the direct upload.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cocon_tests::drive::{ROOT, new_dir, upload};
use cocon_tests::sharing::{accept_request, share_with, two_hosts};
use futures::StreamExt;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(args.len() == 3, "usage: sharing_files_bench FILES SIZE");
    let files: usize = args[1].parse()?;
    let size: usize = args[2].parse()?;
    let mut h = two_hosts().await;
    let folder = new_dir(&h.alice, ROOT, "Holiday").await;

    let started = Instant::now();
    let uploads = futures::stream::iter(0..files)
        .map(|n| {
            let (api, folder) = (h.alice.clone(), folder.clone());
            async move {
                // Each file its own content, so no blob store could take a shortcut.
                let mut data = vec![(n % 251) as u8; size];
                data[..8].copy_from_slice(&(n as u64).to_be_bytes());
                upload(&api, &folder, &format!("photo-{n:05}.jpg"), &data).await
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let direct = started.elapsed();
    ensure!(
        uploads.iter().all(|r| r.status == 201),
        "an upload failed: {:?}",
        uploads.iter().find(|r| r.status != 201)
    );

    let rule = json!({"title": "Holiday", "doctype": "io.cozy.files", "values": [folder],
                      "add": "sync", "update": "sync", "remove": "sync"});
    let id = share_with(&h, "Holiday", rule).await;
    let accepted = Instant::now();
    accept_request(&mut h, &id).await;
    let copy = h.bob.get("/files/metadata?Path=/Shared%20with%20me/Holiday").await;
    let copy_id = copy.body["data"]["id"]
        .as_str()
        .context("bob's copy of the folder")?
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let page = h.bob.get(&format!("/files/{copy_id}?page[limit]=1")).await;
        if page.body["meta"]["count"].as_u64() == Some(files as u64) {
            break;
        }
        ensure!(Instant::now() < deadline, "the sync did not finish: {}", page.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sync = accepted.elapsed();

    let mb = (files * size) as f64 / 1e6;
    println!(
        "direct upload: {files} files of {size} B ({mb:.0} MB) in {:.2} s: {:.0} files/s, {:.1} MB/s",
        direct.as_secs_f64(),
        files as f64 / direct.as_secs_f64(),
        mb / direct.as_secs_f64()
    );
    println!(
        "initial sync:  {files} files from acceptance to the last on bob in {:.2} s: {:.0} files/s, {:.1} MB/s ({:.0} % of the direct upload's rate)",
        sync.as_secs_f64(),
        files as f64 / sync.as_secs_f64(),
        mb / sync.as_secs_f64(),
        100.0 * direct.as_secs_f64() / sync.as_secs_f64()
    );
    Ok(())
}
