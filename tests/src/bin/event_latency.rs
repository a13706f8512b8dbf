//! Write-to-event latency: how long from sending a document write until its event is delivered
//! on NATS. Writes one document at a time through the REST API of a cocon running with
//! `--nats`, and times each until a core-NATS subscriber on `cocon.documents.>` sees it.
//! Usage: `event_latency HTTP_URL NATS_URL DOMAIN TOKEN [COUNT]`.

use std::time::{Duration, Instant};

use futures::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: event_latency HTTP_URL NATS_URL DOMAIN TOKEN [COUNT]"
    );
    let (http, nats, domain, token) = (&args[1], &args[2], &args[3], &args[4]);
    let count: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let client = async_nats::connect(nats).await?;
    let mut sub = client.subscribe("cocon.documents.>").await?;
    let http_client = reqwest::Client::new();
    let mut write_ack = Vec::with_capacity(count);
    let mut to_event = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let res = http_client
            .put(format!("{http}/data/io.cozy.bench/lat-{i}"))
            .header("Host", domain)
            .bearer_auth(token)
            .body(format!("{{\"i\":{i}}}"))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "write failed: {}", res.status());
        write_ack.push(started.elapsed());
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await?
                .expect("subscription open");
            if msg.subject.as_str().ends_with("io:cozy:bench.created") {
                break;
            }
        }
        to_event.push(started.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0
    };
    println!(
        "writes={count} ack_p50_ms={:.2} ack_p99_ms={:.2} event_p50_ms={:.2} event_p99_ms={:.2}",
        pct(&mut write_ack, 0.5),
        pct(&mut write_ack, 0.99),
        pct(&mut to_event, 0.5),
        pct(&mut to_event, 0.99)
    );
    Ok(())
}
