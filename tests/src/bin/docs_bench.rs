//! Document write benchmark against a running server, through `/data`: what keeping revision
//! trees costs a write as a document's history grows.
//!
//! `docs_bench HTTP_URL DOMAIN TOKEN DOCS UPDATES`: DOCS concurrent clients each create a
//! document, then update it UPDATES times in a row (each update waits for the one before, so
//! the history, and the tree the server rewrites, grows to UPDATES revisions). Prints the
//! create rate, then the update rate and latency quantiles for each tenth of the run.
//! The token needs `io.cozy.bench`.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};

async fn write(http: &reqwest::Client, url: &str, domain: &str, token: &str, body: &Value) -> anyhow::Result<String> {
    let res = http
        .put(url)
        .header("Host", domain)
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    let status = res.status();
    let text = res.text().await?;
    ensure!(status.is_success(), "{url}: {status} {text}");
    let v: Value = serde_json::from_str(&text)?;
    Ok(v["rev"].as_str().context("a revision")?.to_string())
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(args.len() == 6, "usage: docs_bench HTTP_URL DOMAIN TOKEN DOCS UPDATES");
    let (base, domain, token) = (args[1].clone(), args[2].clone(), args[3].clone());
    let docs: usize = args[4].parse()?;
    let updates: usize = args[5].parse()?;
    let http = reqwest::Client::new();
    let run = format!("{:x}", std::process::id());

    let start = Instant::now();
    let mut tasks = Vec::new();
    for d in 0..docs {
        let (http, base, domain, token, run) = (http.clone(), base.clone(), domain.clone(), token.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/data/io.cozy.bench/{run}-{d}");
            let created = Instant::now();
            let mut rev = write(&http, &url, &domain, &token, &json!({"n": 0, "title": "a note"})).await?;
            let create = created.elapsed();
            let mut times = Vec::with_capacity(updates);
            for n in 1..=updates {
                let t = Instant::now();
                rev = write(
                    &http,
                    &url,
                    &domain,
                    &token,
                    &json!({"_rev": rev, "n": n, "title": "a note"}),
                )
                .await?;
                times.push((t, t.elapsed()));
            }
            anyhow::Ok((create, times))
        }));
    }
    let mut creates = Vec::new();
    let mut per_step: Vec<Vec<(Instant, Duration)>> = vec![Vec::new(); updates];
    for task in tasks {
        let (create, times) = task.await??;
        creates.push(create);
        for (i, t) in times.into_iter().enumerate() {
            per_step[i].push(t);
        }
    }
    let total = start.elapsed();
    println!(
        "{docs} documents × {updates} updates in {:.1} s ({:.0} writes/s overall)",
        total.as_secs_f64(),
        (docs * (updates + 1)) as f64 / total.as_secs_f64()
    );
    let tenth = (updates / 10).max(1);
    for chunk in per_step.chunks(tenth) {
        let first = chunk.iter().flatten().map(|(t, _)| *t).min().context("a step")?;
        let last = chunk.iter().flatten().map(|(t, d)| *t + *d).max().context("a step")?;
        let mut lat: Vec<Duration> = chunk.iter().flatten().map(|(_, d)| *d).collect();
        lat.sort();
        let from = per_step.iter().position(|s| std::ptr::eq(s, &chunk[0])).unwrap_or(0) + 1;
        println!(
            "history {from:>5}..{:<5} {:>7.0} updates/s  p50 {:.2} ms  p99 {:.2} ms",
            from + chunk.len() - 1,
            lat.len() as f64 / (last - first).as_secs_f64(),
            quantile(&lat, 0.5),
            quantile(&lat, 0.99)
        );
    }
    Ok(())
}
