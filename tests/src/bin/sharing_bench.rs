//! Sharing figures between two hosts on loopback (`tests/bench/sharing.sh` runs it on release
//! builds, `COCON_BIN` naming the binary): alice on one `cocon serve`, bob on another, set up
//! through the real flow (request, consent, answer).
//!
//! `sharing_bench EDITS DOCS DOWN_SECS`:
//! 1. propagation: EDITS edits of alice's shared note, one at a time; for each, from alice's
//!    acknowledgement to the change arriving on bob's realtime socket (bob's host wrote it):
//!    p50, p99, max;
//! 2. initial sync: alice writes DOCS notes tagged `shared` (bulk, timed: the direct write to
//!    compare with), shares them with a rule on `tags`; from bob's acceptance to the last one on
//!    bob: time and documents per second;
//! 3. a peer down: bob's host stopped for DOWN_SECS while alice writes shared notes one at a
//!    time, interleaved with writes of a doctype nobody shares: the p50 and p99 of both (the
//!    write path must not notice the dead peer), then the time bob's host takes to catch up.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cocon_tests::Socket;
use cocon_tests::sharing::{NOTE, accept_request, bulk_notes, restart, share_with, two_hosts};
use serde_json::json;

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(args.len() == 4, "usage: sharing_bench EDITS DOCS DOWN_SECS");
    let edits: usize = args[1].parse()?;
    let docs: usize = args[2].parse()?;
    let down: u64 = args[3].parse()?;
    let mut h = two_hosts().await;

    // 1. Propagation of one note's edits.
    let rule = json!({"title": "Plans", "doctype": "io.cozy.notes", "values": [NOTE], "add": "sync", "update": "sync", "remove": "sync"});
    h.alice
        .put(&format!("/data/io.cozy.notes/{NOTE}"), &json!({"title": "n"}))
        .await;
    let id = share_with(&h, "Holiday plans", rule).await;
    accept_request(&mut h, &id).await;
    let token = h.bob.token().context("bob's token")?.to_string();
    let mut socket = Socket::authed(&h.bob_host.http, h.bob.domain(), &token).await?;
    socket.subscribe("io.cozy.notes", None).await?;
    let path = format!("/data/io.cozy.notes/{NOTE}");
    let mut rev = h.alice.get(&path).await.body["_rev"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The first sync (it may have come before the socket subscribed), then the edits.
    let on_bob = h.bob.get(&format!("/sharings/{id}")).await;
    let bob_note = on_bob.body["data"]["attributes"]["rules"][0]["values"][0]
        .as_str()
        .context("bob's id of the note")?
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let copy = h.bob.get(&format!("/data/io.cozy.notes/{bob_note}")).await;
        if copy.body["_rev"] == rev.as_str() {
            break;
        }
        ensure!(Instant::now() < deadline, "the first sync did not come: {}", copy.text);
        // Woken by the change, or looking again after a while.
        let _ = socket.json(Duration::from_millis(200)).await;
    }
    let mut times = Vec::with_capacity(edits);
    let mut whole = Vec::with_capacity(edits);
    for n in 0..edits {
        let sent = Instant::now();
        let put = h.alice.put(&path, &json!({"_rev": rev, "title": "n", "n": n})).await;
        ensure!(put.status == 200, "edit: {}", put.text);
        let acked = Instant::now();
        rev = put.body["rev"].as_str().unwrap_or_default().to_string();
        loop {
            let event = socket.json(Duration::from_secs(30)).await?;
            if event["payload"]["doc"]["_rev"] == rev.as_str() {
                break;
            }
        }
        times.push(acked.elapsed());
        whole.push(sent.elapsed());
    }
    times.sort();
    whole.sort();
    println!(
        "propagation of {edits} edits, alice's acknowledgement → bob's socket: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile(&times, 0.5),
        quantile(&times, 0.99),
        quantile(&times, 1.0)
    );
    println!(
        "the same from alice's request sent (her write included): p50 {:.1} ms, p99 {:.1} ms",
        quantile(&whole, 0.5),
        quantile(&whole, 0.99)
    );

    // 2. Initial sync of many documents shared by a field, against writing them directly.
    let direct = Instant::now();
    bulk_notes(&h.alice, "doc", 0..docs, "shared").await;
    let direct = direct.elapsed();
    let rule = json!({"title": "Shared notes", "doctype": "io.cozy.notes", "selector": "tags", "values": ["shared"], "add": "push", "update": "push", "remove": "push"});
    let id = share_with(&h, "Shared notes", rule).await;
    let started = Instant::now();
    accept_request(&mut h, &id).await;
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let all = h.bob.get("/data/io.cozy.notes/_all_docs?limit=1").await;
        // The note of the first sharing, and every document of this one.
        if all.body["total_rows"].as_u64() == Some(docs as u64 + 1) {
            break;
        }
        ensure!(Instant::now() < deadline, "the initial sync did not end: {}", all.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    println!(
        "initial sync of {docs} documents (consent {:.0} ms included): {:.2} s, {:.0} documents/s",
        accepted.as_secs_f64() * 1000.0,
        took.as_secs_f64(),
        docs as f64 / took.as_secs_f64()
    );
    println!(
        "alice writing the same {docs} documents herself (_bulk_docs by 1,000): {:.2} s, {:.0} documents/s; the sync runs at {:.0} % of it",
        direct.as_secs_f64(),
        docs as f64 / direct.as_secs_f64(),
        100.0 * direct.as_secs_f64() / took.as_secs_f64()
    );

    // 3. Bob's host down for `down` seconds while alice writes: her writes of shared notes
    // against, interleaved, her writes of a doctype nobody shares; then bob's host back, and
    // the time until it holds them all.
    h.bob_host.stop().await?;
    let (mut shared, mut unshared) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let mut n = 0usize;
    while started.elapsed() < Duration::from_secs(down) {
        for (doctype, tags, times) in [
            ("io.cozy.notes", json!(["shared"]), &mut shared),
            ("io.cozy.contacts", json!([]), &mut unshared),
        ] {
            let sent = Instant::now();
            let put = h
                .alice
                .put(
                    &format!("/data/{doctype}/down{n:07}"),
                    &json!({"tags": tags, "text": "x".repeat(200)}),
                )
                .await;
            ensure!(put.status == 200, "write while bob is down: {}", put.text);
            times.push(sent.elapsed());
        }
        n += 1;
    }
    shared.sort();
    unshared.sort();
    println!(
        "bob's host down {down} s: {n} writes of shared notes p50 {:.2} ms, p99 {:.2} ms; {n} writes nobody shares p50 {:.2} ms, p99 {:.2} ms (p99 ratio {:.2})",
        quantile(&shared, 0.5),
        quantile(&shared, 0.99),
        quantile(&unshared, 0.5),
        quantile(&unshared, 0.99),
        quantile(&shared, 0.99) / quantile(&unshared, 0.99)
    );
    h.bob_host = restart(&h.bob_host).await;
    let back = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let all = h.bob.get("/data/io.cozy.notes/_all_docs?limit=1").await;
        if all.body["total_rows"].as_u64() == Some((docs + 1 + n) as u64) {
            break;
        }
        ensure!(Instant::now() < deadline, "bob's host did not catch up: {}", all.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "bob's host back: it holds the {n} notes written while it was down after {:.2} s (its start included)",
        back.elapsed().as_secs_f64()
    );
    Ok(())
}
