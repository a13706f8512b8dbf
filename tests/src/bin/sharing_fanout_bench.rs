//! One owner sharing with many recipients (`tests/bench/sharing.sh` runs it on release builds,
//! `COCON_BIN` naming the binary): alice on one `cocon serve`, RECIPIENTS instances on another
//! (`r0.localhost`, …), each signed in and accepting through its consent page.
//!
//! `sharing_fanout_bench RECIPIENTS DOCS EDITS`:
//! 1. initial sync: alice's DOCS notes tagged `fanout`, shared with every recipient in one
//!    sharing, each recipient accepting in turn; from the first acceptance to every recipient
//!    holding them all;
//! 2. propagation: EDITS edits of those notes one at a time (a different note each time); for
//!    each, from alice's acknowledgement to the change on the realtime socket of each recipient:
//!    p50 and p99 of one recipient's delay and of the last one's, and the CPU time alice's host
//!    spent per change (user + system, from `/proc`, the edits' own requests included).

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cocon_tests::sharing::{accept_as, bulk_notes, person, port, two_hosts};
use cocon_tests::{Api, Browser, Socket};
use serde_json::json;

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat` (in clock ticks of
/// 10 ms, Linux's USER_HZ).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command's name (which may hold spaces) in its parentheses.
    let rest = stat.rsplit_once(')').context("a stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

struct Recipient {
    api: Api,
    person: Browser,
    origin: String,
    socket: Option<Socket>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(args.len() == 4, "usage: sharing_fanout_bench RECIPIENTS DOCS EDITS");
    let count: usize = args[1].parse()?;
    let docs: usize = args[2].parse()?;
    let edits: usize = args[3].parse()?;
    let h = two_hosts().await;
    let host = &h.bob_host;
    let mut recipients = Vec::with_capacity(count);
    let mut contacts = Vec::with_capacity(count);
    for i in 0..count {
        let domain = format!("r{i}.localhost:{}", port(host));
        let person = person(host, &domain).await;
        let token = host.token(&domain, "io.cozy.notes io.cozy.notifications").await?;
        let origin = format!("http://{domain}");
        let contact = h
            .alice
            .post(
                "/data/io.cozy.contacts/",
                &json!({"fullname": format!("R{i}"), "email": [{"address": format!("r{i}@example.org")}],
                        "cozy": [{"url": origin, "primary": true}]}),
            )
            .await;
        ensure!(contact.status == 201, "contact: {}", contact.text);
        contacts.push(json!({"id": contact.get("id"), "type": "io.cozy.contacts"}));
        let mut socket = Socket::authed(&host.http, &domain, &token).await?;
        socket.subscribe("io.cozy.notes", None).await?;
        recipients.push(Recipient {
            api: host.api(&domain, Some(&token)),
            person,
            origin,
            socket: Some(socket),
        });
    }

    // 1. Alice's notes, shared with everyone at once; each recipient accepts.
    bulk_notes(&h.alice, "fan", 0..docs, "fanout").await;
    let rule = json!({"title": "Team notes", "doctype": "io.cozy.notes", "selector": "tags", "values": ["fanout"],
                      "add": "push", "update": "push", "remove": "push"});
    let created = h
        .alice
        .post(
            "/sharings/",
            &json!({"data": {"type": "io.cozy.sharings", "attributes": {"description": "Team notes", "rules": [rule]},
                "relationships": {"recipients": {"data": contacts}}}}),
        )
        .await;
    ensure!(created.status == 201, "sharing: {}", created.text);
    let id = created.body["data"]["id"]
        .as_str()
        .context("the sharing's id")?
        .to_string();
    let first_consent = Instant::now();
    for r in &mut recipients {
        accept_as(&r.api, &mut r.person, &r.origin, &id).await;
    }
    let accepted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    for r in &recipients {
        loop {
            let all = r.api.get("/data/io.cozy.notes/_all_docs?limit=1").await;
            if all.body["total_rows"].as_u64() == Some(docs as u64) {
                break;
            }
            ensure!(Instant::now() < deadline, "the initial sync did not end: {}", all.text);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (synced, consents) = (first_consent.elapsed(), accepted - first_consent);
    println!(
        "initial sync of {docs} notes to {count} recipients, each starting at its consent: {:.2} s from the first consent to the last copy ({:.2} s of it the {count} consent pages, one after the other; {:.2} s after the last consent)",
        synced.as_secs_f64(),
        consents.as_secs_f64(),
        accepted.elapsed().as_secs_f64()
    );
    // What the initial sync sent, read and dropped: each socket starts from here.
    for r in &mut recipients {
        let socket = r.socket.as_mut().context("a socket")?;
        while socket.json(Duration::from_millis(300)).await.is_ok() {}
    }

    // 2. Edits, one at a time, each awaited on every recipient's socket.
    let (mut one, mut last) = (Vec::with_capacity(edits * count), Vec::with_capacity(edits));
    let cpu_before = cpu_time(h.alice_host.pid())?;
    let started = Instant::now();
    for n in 0..edits {
        let path = format!("/data/io.cozy.notes/fan{:06}", n % docs);
        let doc = h.alice.get(&path).await.body;
        let put = h
            .alice
            .put(
                &path,
                &json!({"_rev": doc["_rev"], "tags": ["fanout"], "text": "y", "n": n}),
            )
            .await;
        ensure!(put.status == 200, "edit: {}", put.text);
        let acked = Instant::now();
        let rev = put.body["rev"].as_str().unwrap_or_default().to_string();
        for r in &mut recipients {
            let socket = r.socket.as_mut().context("a socket")?;
            loop {
                let event = socket.json(Duration::from_secs(30)).await?;
                if event["payload"]["doc"]["_rev"] == rev.as_str() {
                    break;
                }
            }
            one.push(acked.elapsed());
        }
        last.push(acked.elapsed());
    }
    let wall = started.elapsed();
    let cpu = cpu_time(h.alice_host.pid())? - cpu_before;
    one.sort();
    last.sort();
    println!(
        "{edits} edits to {count} recipients, alice's acknowledgement → a recipient's socket: p50 {:.1} ms, p99 {:.1} ms; → the last of the {count}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quantile(&one, 0.5),
        quantile(&one, 0.99),
        quantile(&last, 0.5),
        quantile(&last, 0.99),
        quantile(&last, 1.0)
    );
    println!(
        "alice's host CPU: {:.2} ms per change ({:.3} ms per change and recipient), {:.0} % of a core over {:.1} s",
        cpu.as_secs_f64() * 1000.0 / edits as f64,
        cpu.as_secs_f64() * 1000.0 / (edits * count) as f64,
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    Ok(())
}
