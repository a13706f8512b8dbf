//! Realtime benchmarks against a running release `cocon serve` (embedded default), through its
//! public API and real websockets: `tests/bench/realtime.sh` runs it.
//!
//! `realtime_bench HTTP_URL ADMIN_URL ADMIN_TOKEN PID SOCKETS`:
//! 1. SOCKETS sockets on 100 instances, each authenticated and subscribed to `io.cozy.bench`:
//!    the server's RSS before and after (`/proc/PID/status`), so the memory per socket;
//! 2. the write rate on another instance (closed loop, 16 connections, 10 s) while they listen,
//!    then with them closed, and the ratio;
//! 3. 1,000 sockets on one instance's doctype: for 500 writes one at a time, from each request
//!    sent, its acknowledgement, its event on one socket, its event on all 1,000;
//! 4. SOCKETS sockets on that doctype: how long one write takes to reach them all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cocon_tests::{Read, Socket};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::Notify;

struct Server {
    http: String,
    admin: String,
    admin_token: String,
    client: reqwest::Client,
}

impl Server {
    async fn instance(&self, domain: &str) -> anyhow::Result<String> {
        let res = self
            .client
            .post(format!("{}/instances", self.admin))
            .query(&[("Domain", domain)])
            .bearer_auth(&self.admin_token)
            .send()
            .await?;
        ensure!(res.status().is_success(), "creating {domain}: {}", res.status());
        let res = self
            .client
            .post(format!("{}/instances/token", self.admin))
            .query(&[("Domain", domain), ("Scope", "io.cozy.bench")])
            .bearer_auth(&self.admin_token)
            .send()
            .await?;
        let body: Value = res.json().await?;
        Ok(body["token"].as_str().context("a token")?.to_string())
    }

    async fn put(&self, domain: &str, token: &str, id: &str) -> anyhow::Result<()> {
        let res = self
            .client
            .put(format!("{}/data/io.cozy.bench/{id}", self.http))
            .header("Host", domain)
            .bearer_auth(token)
            .body(r#"{"v":1}"#)
            .send()
            .await?;
        ensure!(res.status().is_success(), "write failed: {}", res.status());
        Ok(())
    }

    /// Writes new documents over 16 connections for `secs`; the writes per second.
    async fn write_rate(self: &Arc<Self>, domain: &str, token: &str, tag: &str, secs: u64) -> anyhow::Result<f64> {
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for c in 0..16 {
            let (server, domain, token, tag, done) = (
                self.clone(),
                domain.to_string(),
                token.to_string(),
                tag.to_string(),
                done.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while Instant::now() < until {
                    server.put(&domain, &token, &format!("{tag}-{c}-{i}")).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    }
}

fn rss_kib(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("a number")?.parse()?)
}

/// Opens `count` sockets on `domain`, subscribed to io.cozy.bench, 100 at a time.
async fn open(http: &str, domain: &str, token: &str, count: usize) -> anyhow::Result<Vec<Socket>> {
    let opened = futures::stream::iter(0..count)
        .map(|_| async move {
            let mut socket = Socket::authed(http, domain, token).await?;
            let refused = socket.subscribe("io.cozy.bench", None).await?;
            ensure!(refused.is_none(), "subscription refused: {refused:?}");
            anyhow::Ok(socket)
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

/// When each write's event reached the first socket and the last one.
struct Arrivals {
    counts: Vec<AtomicUsize>,
    first: Vec<std::sync::OnceLock<Instant>>,
    last: Vec<std::sync::OnceLock<Instant>>,
    sockets: usize,
    all_in: Notify,
}

fn listen(sockets: Vec<Socket>, arrivals: &Arc<Arrivals>, tag: &str) -> Vec<tokio::task::JoinHandle<()>> {
    let prefix = format!("{tag}-");
    sockets
        .into_iter()
        .map(|mut socket| {
            let arrivals = arrivals.clone();
            let prefix = prefix.clone();
            tokio::spawn(async move {
                while let Some(Read::Json(frame)) = socket.read(Duration::from_secs(3600)).await {
                    let Some(i) = frame["payload"]["id"]
                        .as_str()
                        .and_then(|id| id.strip_prefix(prefix.as_str()))
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let now = Instant::now();
                    let _ = arrivals.first[i].set(now);
                    if arrivals.counts[i].fetch_add(1, Ordering::AcqRel) + 1 == arrivals.sockets {
                        let _ = arrivals.last[i].set(now);
                        arrivals.all_in.notify_one();
                    }
                }
            })
        })
        .collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Writes `writes` documents one at a time on `domain`, each once every socket has the last.
async fn fan_out(
    server: &Server,
    domain: &str,
    token: &str,
    sockets: Vec<Socket>,
    writes: usize,
    tag: &str,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let arrivals = Arc::new(Arrivals {
        counts: (0..writes).map(|_| AtomicUsize::new(0)).collect(),
        first: (0..writes).map(|_| std::sync::OnceLock::new()).collect(),
        last: (0..writes).map(|_| std::sync::OnceLock::new()).collect(),
        sockets: sockets.len(),
        all_in: Notify::new(),
    });
    let readers = listen(sockets, &arrivals, tag);
    let (mut acks, mut to_one, mut to_all) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..writes {
        let sent = Instant::now();
        server.put(domain, token, &format!("{tag}-{i}")).await?;
        acks.push(sent.elapsed().as_secs_f64() * 1e3);
        while arrivals.last[i].get().is_none() {
            tokio::time::timeout(Duration::from_secs(30), arrivals.all_in.notified())
                .await
                .with_context(|| {
                    format!(
                        "write {i} reached {} sockets",
                        arrivals.counts[i].load(Ordering::Acquire)
                    )
                })?;
        }
        let ms = |t: &std::sync::OnceLock<Instant>| t.get().map_or(0.0, |t| t.duration_since(sent).as_secs_f64() * 1e3);
        to_one.push(ms(&arrivals.first[i]));
        to_all.push(ms(&arrivals.last[i]));
    }
    for reader in readers {
        reader.abort();
    }
    Ok((acks, to_one, to_all))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(
        args.len() == 6,
        "usage: realtime_bench HTTP_URL ADMIN_URL ADMIN_TOKEN PID SOCKETS"
    );
    let server = Arc::new(Server {
        http: args[1].clone(),
        admin: args[2].clone(),
        admin_token: args[3].clone(),
        client: reqwest::Client::new(),
    });
    let pid = &args[4];
    let total: usize = args[5].parse()?;
    let writer = server.instance("writer.localhost").await?;
    let mut listeners = Vec::new();
    for i in 0..100 {
        let domain = format!("listen{i}.localhost");
        let token = server.instance(&domain).await?;
        listeners.push((domain, token));
    }
    let hot = server.instance("hot.localhost").await?;

    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut sockets = Vec::new();
    for (domain, token) in &listeners {
        sockets.extend(open(&server.http, domain, token, total / listeners.len()).await?);
    }
    let opened = started.elapsed();
    let after = rss_kib(pid)?;
    println!(
        "{} sockets on {} instances opened in {:.1} s: server RSS {} MiB -> {} MiB, {:.1} KiB per socket",
        sockets.len(),
        listeners.len(),
        opened.as_secs_f64(),
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / sockets.len() as f64
    );
    // Warm up (the writer's first writes make its tables), then the rate while they listen.
    server.write_rate("writer.localhost", &writer, "warm", 2).await?;
    let listening = server.write_rate("writer.localhost", &writer, "listening", 10).await?;
    drop(sockets);
    let alone = server.write_rate("writer.localhost", &writer, "alone", 10).await?;
    println!(
        "write rate on one instance: {alone:.0}/s with no socket open, {listening:.0}/s while they listen to other instances ({:.0} %)",
        listening / alone * 100.0
    );

    let subscribers = open(&server.http, "hot.localhost", &hot, 1000).await?;
    let (mut acks, mut one, mut all) = fan_out(&server, "hot.localhost", &hot, subscribers, 500, "a").await?;
    println!(
        "1,000 subscribers to the doctype, 500 writes one at a time, from each request sent: ack p50 {:.2} ms p99 {:.2} ms; event on one socket p50 {:.2} ms p99 {:.2} ms; on all 1,000 p50 {:.2} ms p99 {:.2} ms",
        percentile(&mut acks, 0.5),
        percentile(&mut acks, 0.99),
        percentile(&mut one, 0.5),
        percentile(&mut one, 0.99),
        percentile(&mut all, 0.5),
        percentile(&mut all, 0.99)
    );

    let subscribers = open(&server.http, "hot.localhost", &hot, total).await?;
    let rss = rss_kib(pid)?;
    let (_, _, mut all) = fan_out(&server, "hot.localhost", &hot, subscribers, 20, "b").await?;
    println!(
        "{total} subscribers to the doctype (server RSS {} MiB), 20 writes: request sent -> event on all of them p50 {:.1} ms, max {:.1} ms",
        rss / 1024,
        percentile(&mut all, 0.5),
        percentile(&mut all, 1.0)
    );
    Ok(())
}
