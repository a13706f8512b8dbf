//! JetStream with three copies of each event against one: how fast Cocon's NATS bus gets events
//! acknowledged by a 3-node cluster of Debian's `nats-server` on loopback. Two streams on the same
//! cluster, R1 and R3, in alternating rounds: COUNT events of 512 bytes sent as the outbox's
//! relay sends them (`publish_all`, batches of 1,000, acks awaited in windows), then 2,000 sent
//! one at a time, each awaiting its ack (p50, p99). Prints one line per round and the medians.
//! Usage: `nats_ack_bench [COUNT] [ROUNDS]`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cocon_events::{EventBus, Message, NatsBus, StreamSpec};
use cocon_tests::NatsCluster;

const SIZE: usize = 512;

fn spec(replicas: usize) -> StreamSpec {
    StreamSpec {
        name: format!("BENCH_R{replicas}"),
        subjects: vec![format!("bench.r{replicas}.>")],
        max_age: Duration::from_secs(3600),
        max_bytes: 4 << 30,
        max_messages: 10_000_000,
        duplicate_window: Duration::from_secs(120),
        work_queue: false,
        replicas,
    }
}

fn message(replicas: usize, round: usize, i: usize) -> Message {
    Message {
        subject: format!("bench.r{replicas}.instance{}.io:cozy:bench.created", i % 1000),
        id: format!("r{replicas}:{round}:{i}"),
        headers: Vec::new(),
        payload: Bytes::from(vec![b'x'; SIZE]),
    }
}

/// Events acknowledged per second, sent as the relay sends them.
async fn rate(bus: &NatsBus, replicas: usize, round: usize, count: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut i = 0;
    while i < count {
        let batch: Vec<Message> = (i..(i + 1000).min(count))
            .map(|i| message(replicas, round, i))
            .collect();
        let n = batch.len();
        let (sent, failed) = bus.publish_all(batch).await;
        anyhow::ensure!(sent == n, "R{replicas}: {sent} of {n} sent: {failed:?}");
        i += n;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// (p50, p99) in ms of one event sent and acknowledged at a time.
async fn latency(bus: &NatsBus, replicas: usize, round: usize) -> anyhow::Result<(f64, f64)> {
    let mut times = Vec::with_capacity(2000);
    for i in 0..2000 {
        let started = Instant::now();
        bus.publish(message(replicas, round + 1_000_000, i)).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[1000], times[1980]))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let cluster = NatsCluster::start(3).await?;
    let bus = NatsBus::connect(&cluster.urls(), &[spec(1), spec(3)]).await?;
    anyhow::ensure!(
        cluster.stream_replicas("BENCH_R3").await? == 3,
        "BENCH_R3 has not three copies"
    );
    let mut results: [(Vec<f64>, Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..rounds {
        for (slot, replicas) in [(0, 1), (1, 3)] {
            let per_s = rate(&bus, replicas, round, count).await?;
            let (p50, p99) = latency(&bus, replicas, round).await?;
            println!(
                "round={round} replicas={replicas} events_per_s={per_s:.0} one_at_a_time_p50_ms={p50:.3} p99_ms={p99:.3}"
            );
            results[slot].0.push(per_s);
            results[slot].1.push(p50);
            results[slot].2.push(p99);
        }
    }
    let [(r1, r1_p50, r1_p99), (r3, r3_p50, r3_p99)] = results;
    let (r1, r3) = (median(r1), median(r3));
    println!(
        "median: R1 {r1:.0}/s (p50 {:.3} ms, p99 {:.3} ms), R3 {r3:.0}/s (p50 {:.3} ms, p99 {:.3} ms), R3/R1 {:.1} %",
        median(r1_p50),
        median(r1_p99),
        median(r3_p50),
        median(r3_p99),
        r3 / r1 * 100.0
    );
    Ok(())
}
