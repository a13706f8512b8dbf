//! Jobs benchmarks against a running server, through its public API.
//!
//! `jobs_bench HTTP_URL DOMAIN TOKEN throughput COUNT CONNECTIONS`: queues COUNT no-op (`log`)
//! jobs over CONNECTIONS concurrent connections, then waits until none is queued or running;
//! prints the enqueue rate and the enqueue-to-done rate.
//!
//! `jobs_bench HTTP_URL DOMAIN TOKEN event COUNT`: makes an `@event` trigger on
//! `io.cozy.bench` creations, writes COUNT documents one at a time (5 ms apart), and prints how
//! long from each write's acknowledgement to its job being queued and started (server times,
//! same machine's clock).
//!
//! The token needs `io.cozy.jobs io.cozy.triggers io.cozy.bench`.
//!
//! `jobs_bench jetstream NATS_URL COUNT`: JetStream's own acked publish rate to a work-queue
//! stream, the ceiling of split mode's queue.
//!
//! `jobs_bench HTTP_URL ADMIN_URL ADMIN_TOKEN schedule INSTANCES PER_INSTANCE EVERY WAIT`:
//! creates INSTANCES instances with PER_INSTANCE `@every EVERY` triggers each (`log` jobs),
//! waits WAIT seconds, and prints the scheduler's lag quantiles and the jobs done, from the
//! server's metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use futures::StreamExt;
use serde_json::{Value, json};

struct Api {
    base: String,
    domain: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Host", &self.domain)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status();
        let text = res.text().await?;
        ensure!(status.is_success(), "{path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn time_us(v: &Value) -> anyhow::Result<i64> {
    let text = v.as_str().context("a time")?;
    let t = humantime::parse_rfc3339_weak(text)?;
    Ok(t.duration_since(UNIX_EPOCH)?.as_micros() as i64)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// JetStream's own acked publish rate: COUNT small messages to a work-queue stream with up to
/// 256 publishes awaiting their acks (as Cocon's publishers do), then the stream dropped.
async fn jetstream_publish_rate(url: &str, count: usize) -> anyhow::Result<()> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let stream = "BENCH_WORKQUEUE";
    let _ = js.delete_stream(stream).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.into(),
        subjects: vec!["bench.jobq.>".into()],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await?;
    let started = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for i in 0..count {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(format!("bench.test\0{i:032x}").into())
            .message_id(format!("jobq:bench.test:{i}"));
        acks.push_back(js.send_publish("bench.jobq.log", publish).await?);
        if acks.len() == 256 {
            acks.pop_front().expect("full").await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    let elapsed = started.elapsed();
    js.delete_stream(stream).await?;
    println!(
        "jetstream_acked_publishes={count} per_s={:.0} s={:.2}",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("jetstream") && args.len() == 4 {
        return jetstream_publish_rate(&args[2], args[3].parse()?).await;
    }
    ensure!(
        args.len() >= 6,
        "usage: jobs_bench HTTP_URL DOMAIN TOKEN throughput COUNT CONNECTIONS | event COUNT"
    );
    let api = std::sync::Arc::new(Api {
        base: args[1].trim_end_matches('/').to_string(),
        domain: args[2].clone(),
        token: args[3].clone(),
        http: reqwest::Client::new(),
    });
    let count: usize = args[5].parse()?;
    match args[4].as_str() {
        "throughput" => {
            let connections: usize = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(16);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..connections {
                let api = api.clone();
                let share = count / connections + usize::from(c < count % connections);
                tasks.push(tokio::spawn(async move {
                    for _ in 0..share {
                        api.call(
                            reqwest::Method::POST,
                            "/jobs/queue/log",
                            Some(json!({"data": {"attributes": {"arguments": {}}}})),
                        )
                        .await?;
                    }
                    anyhow::Ok(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            let queued = started.elapsed();
            loop {
                let queue = api.call(reqwest::Method::GET, "/jobs/queue/log", None).await?;
                if queue["data"].as_array().is_some_and(Vec::is_empty) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let done = started.elapsed();
            println!(
                "jobs={count} connections={connections} enqueue_per_s={:.0} enqueue_to_done_per_s={:.0} queued_s={:.2} done_s={:.2}",
                count as f64 / queued.as_secs_f64(),
                count as f64 / done.as_secs_f64(),
                queued.as_secs_f64(),
                done.as_secs_f64()
            );
        }
        "event" => {
            let trigger = api
                .call(
                    reqwest::Method::POST,
                    "/jobs/triggers",
                    Some(json!({"data": {"attributes": {"type": "@event", "arguments": "io.cozy.bench:CREATED", "worker": "log"}}})),
                )
                .await?;
            let trigger = trigger["data"]["id"].as_str().context("a trigger id")?.to_string();
            let mut acked: HashMap<String, i64> = HashMap::new();
            let run = now_us();
            for i in 0..count {
                let id = format!("ev-{run}-{i}");
                api.call(
                    reqwest::Method::PUT,
                    &format!("/data/io.cozy.bench/{id}"),
                    Some(json!({"i": i})),
                )
                .await?;
                acked.insert(id, now_us());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            let jobs = loop {
                let jobs = api
                    .call(
                        reqwest::Method::GET,
                        &format!("/jobs/triggers/{trigger}/jobs?Limit={count}"),
                        None,
                    )
                    .await?;
                let list = jobs["data"].as_array().cloned().unwrap_or_default();
                let started = list.iter().filter(|j| j["attributes"]["state"] == "done").count();
                if started >= count || Instant::now() > deadline {
                    break list;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            ensure!(jobs.len() == count, "{} jobs of {count}", jobs.len());
            let (mut to_queued, mut to_started) = (Vec::new(), Vec::new());
            for job in &jobs {
                let a = &job["attributes"];
                let doc = a["event"]["doc"]["_id"].as_str().context("the event's document")?;
                let ack = acked[doc];
                to_queued.push((time_us(&a["queued_at"])? - ack) as f64 / 1000.0);
                to_started.push((time_us(&a["started_at"])? - ack) as f64 / 1000.0);
            }
            println!(
                "events={count} ack_to_queued_p50_ms={:.2} p99_ms={:.2} ack_to_running_p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
                pct(&mut to_queued, 0.5),
                pct(&mut to_queued, 0.99),
                pct(&mut to_started, 0.5),
                pct(&mut to_started, 0.99),
                pct(&mut to_started, 1.0)
            );
        }
        "schedule" => {
            let (admin, admin_token) = (api.domain.clone(), api.token.clone());
            let instances = count;
            let per_instance: usize = args.get(6).context("PER_INSTANCE")?.parse()?;
            let every = args.get(7).context("EVERY")?.clone();
            let wait: u64 = args.get(8).context("WAIT")?.parse()?;
            let http = reqwest::Client::new();
            let started = Instant::now();
            let made = futures::stream::iter(0..instances)
                .map(|i| {
                    let (http, admin, admin_token, base) = (http.clone(), admin.clone(), admin_token.clone(), api.base.clone());
                    let every = every.clone();
                    async move {
                        let domain = format!("s{i}.bench.localhost");
                        let res = http
                            .post(format!("{admin}/instances"))
                            .bearer_auth(&admin_token)
                            .query(&[("Domain", &domain)])
                            .send()
                            .await?;
                        ensure!(res.status().is_success(), "instance {domain}: {}", res.status());
                        let token: Value = http
                            .post(format!("{admin}/instances/token"))
                            .bearer_auth(&admin_token)
                            .query(&[("Domain", domain.as_str()), ("Scope", "io.cozy.triggers io.cozy.jobs")])
                            .send()
                            .await?
                            .json()
                            .await?;
                        let api = Api {
                            base,
                            domain,
                            token: token["token"].as_str().context("a token")?.to_string(),
                            http,
                        };
                        for _ in 0..per_instance {
                            api.call(
                                reqwest::Method::POST,
                                "/jobs/triggers",
                                Some(json!({"data": {"attributes": {"type": "@every", "arguments": every, "worker": "log"}}})),
                            )
                            .await?;
                        }
                        anyhow::Ok(())
                    }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await;
            for m in made {
                m?;
            }
            let setup = started.elapsed();
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let metrics = http.get(format!("{admin}/metrics")).send().await?.text().await?;
            let lines: Vec<&str> = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("cocon_jobs_trigger_lag_seconds") || l.starts_with("cocon_jobs_finished_total")
                })
                .collect();
            println!(
                "instances={instances} triggers={} every={every} setup_s={:.1} waited_s={wait}",
                instances * per_instance,
                setup.as_secs_f64()
            );
            for l in lines {
                println!("  {l}");
            }
        }
        other => anyhow::bail!("unknown mode {other}: throughput, event or schedule"),
    }
    Ok(())
}
