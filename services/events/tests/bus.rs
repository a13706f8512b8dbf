//! One conformance suite for both event buses: the in-process one and NATS JetStream
//! (a real `nats-server` on a loopback port). Plus the outbox relay across a NATS outage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cocon_common::Shutdown;
use cocon_events::{
    Appended, BusError, ConsumerSpec, EventBus, EventLog, HandlerError, MemoryBus, MemoryCaps, Message, NatsBus, Relay,
    RelayConfig, StreamSpec, decode_envelope, run_consumer,
};
use cocon_proto::events::v1::Envelope;
use cocon_storage::{Batch, EmbeddedStore, Store};
use cocon_tests::NatsServer;
use tokio::sync::mpsc;

fn streams(max_messages: i64) -> Vec<StreamSpec> {
    vec![
        StreamSpec {
            name: "TEST".into(),
            subjects: vec!["cocon.test.>".into()],
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 20,
            max_messages,
            duplicate_window: Duration::from_secs(60),
            work_queue: false,
            replicas: 1,
        },
        StreamSpec {
            name: "DLQ".into(),
            subjects: vec!["cocon.dlq.>".into()],
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 20,
            max_messages: 1000,
            duplicate_window: Duration::from_secs(60),
            work_queue: false,
            replicas: 1,
        },
    ]
}

fn msg(subject: &str, id: &str) -> Message {
    Message {
        subject: subject.into(),
        id: id.into(),
        headers: vec![(
            "traceparent".into(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        )],
        payload: Bytes::from(id.to_string()),
    }
}

fn spec(durable: &str, filter: &str, max_deliver: u32) -> ConsumerSpec {
    ConsumerSpec {
        stream: "TEST".into(),
        durable: durable.into(),
        filter: filter.into(),
        max_deliver,
        ack_wait: Duration::from_secs(30),
    }
}

async fn next(sub: &mut Box<dyn cocon_events::Subscription>) -> cocon_events::Delivery {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a delivery within 10 s")
        .expect("subscription open")
        .expect("delivery ok")
}

/// The suite: what any bus must do for Cocon.
async fn conformance(bus: Arc<dyn EventBus>) {
    // Publish, then a durable consumer with a filter receives in order, with headers.
    for i in 0..5 {
        bus.publish(msg(&format!("cocon.test.a.{}", i % 2), &format!("m{i}")))
            .await
            .unwrap();
    }
    // The same id again is dropped (de-duplication window).
    bus.publish(msg("cocon.test.a.0", "m0")).await.unwrap();
    let mut sub = bus.subscribe(spec("evens", "cocon.test.a.0", 5)).await.unwrap();
    for expected in ["m0", "m2", "m4"] {
        let d = next(&mut sub).await;
        assert_eq!(d.message.payload, Bytes::from(expected));
        assert_eq!(
            d.message.header("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(d.attempt, 1);
        d.ack().await.unwrap();
    }

    // A nak'd message comes back, with its attempt counted.
    let mut sub = bus.subscribe(spec("odds", "cocon.test.a.1", 5)).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message.payload, Bytes::from("m1"));
    d.nak(Duration::from_millis(10)).await.unwrap();
    // JetStream may deliver the next message before the redelivery: order is not promised then.
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = next(&mut sub).await;
        got.push((String::from_utf8_lossy(&d.message.payload).into_owned(), d.attempt));
        d.ack().await.unwrap();
    }
    got.sort();
    assert_eq!(
        got,
        [("m1".to_string(), 2), ("m3".to_string(), 1)],
        "the nak'd message comes back, counted"
    );
    drop(sub);

    // A durable consumer resumes after its last ack.
    bus.publish(msg("cocon.test.a.1", "m5")).await.unwrap();
    let mut sub = bus.subscribe(spec("odds", "cocon.test.a.1", 5)).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message.payload, Bytes::from("m5"), "resumes where it acked");
    d.ack().await.unwrap();
    drop(sub);

    // The runner: handled events are acked once; a poisoned one is retried, then dead-lettered,
    // and the events after it still flow.
    for id in ["ok1", "poison", "ok2"] {
        bus.publish(msg("cocon.test.run", id)).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shutdown = Shutdown::new();
    let runner = tokio::spawn(run_consumer(
        bus.clone(),
        spec("runner", "cocon.test.run", 3),
        move |m: Message| {
            let tx = tx.clone();
            async move {
                let id = String::from_utf8_lossy(&m.payload).into_owned();
                tx.send(id.clone()).unwrap();
                if id == "poison" {
                    Err(HandlerError("cannot handle poison".into()))
                } else {
                    Ok(())
                }
            }
        },
        shutdown.clone(),
    ));
    let mut seen = HashMap::<String, u32>::new();
    while !seen.contains_key("ok2") || seen.get("poison").copied().unwrap_or(0) < 3 {
        let id = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("handler called")
            .unwrap();
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen["ok1"], 1);
    assert_eq!(seen["poison"], 3, "tried max_deliver times");
    let dlq_spec = ConsumerSpec {
        stream: "DLQ".into(),
        durable: "dlq-reader".into(),
        filter: "cocon.dlq.>".into(),
        max_deliver: 1,
        ack_wait: Duration::from_secs(30),
    };
    let mut dlq = bus.subscribe(dlq_spec).await.unwrap();
    let dead = next(&mut dlq).await;
    assert_eq!(dead.message.payload, Bytes::from("poison"));
    assert_eq!(dead.message.header("Cocon-Original-Subject"), Some("cocon.test.run"));
    assert!(
        dead.message
            .header("Cocon-Error")
            .unwrap()
            .contains("cannot handle poison")
    );
    while let Ok(id) = rx.try_recv() {
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen["poison"], 3, "not retried after it was dead-lettered");
    assert_eq!(seen["ok2"], 1);
    shutdown.trigger();
    runner.await.unwrap();
}

/// Retention: a stream keeps at most its limit.
async fn retention(bus: Arc<dyn EventBus>) {
    for i in 0..30 {
        bus.publish(msg("cocon.test.ret", &format!("r{i}"))).await.unwrap();
    }
    let mut sub = bus.subscribe(spec("retention", "cocon.test.ret", 1)).await.unwrap();
    let first = next(&mut sub).await;
    assert_eq!(first.message.payload, Bytes::from("r20"), "only the last 10 are kept");
}

#[tokio::test]
async fn test_memory_bus_conformance() {
    conformance(Arc::new(MemoryBus::new(streams(1000)))).await;
    retention(Arc::new(MemoryBus::new(streams(10)))).await;
}

#[tokio::test]
async fn test_nats_bus_conformance() {
    let nats = NatsServer::start().await.unwrap();
    conformance(Arc::new(NatsBus::connect(&nats.url(), &streams(1000)).await.unwrap())).await;
    let nats2 = NatsServer::start().await.unwrap();
    retention(Arc::new(NatsBus::connect(&nats2.url(), &streams(10)).await.unwrap())).await;
}

/// A NATS server whose JetStream storage cannot hold what the streams reserve refuses them; the
/// error says which setting to change instead of only the server's error code.
#[tokio::test]
async fn test_too_small_a_jetstream_store_says_what_to_change() {
    let nats = NatsServer::start_with_store_limit("512KB").await.unwrap();
    let Err(e) = NatsBus::connect(&nats.url(), &streams(1000)).await else {
        panic!("a 1 MiB stream fits a 512 KB store")
    };
    let message = e.to_string();
    assert!(message.contains("cannot create stream TEST"), "{message}");
    assert!(message.contains("[events] max_bytes"), "{message}");
    assert!(message.contains("max_file_store"), "{message}");
}

/// An embedded store in `dir` and an event log with its outbox in it.
async fn open_log(dir: &std::path::Path) -> (Arc<dyn Store>, EventLog) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("s.redb")).unwrap());
    let log = EventLog::open(store.clone(), "test.events", "test.outbox")
        .await
        .unwrap();
    (store, log)
}

fn spawn_relay(
    log: &EventLog,
    bus: Arc<dyn EventBus>,
    batch: usize,
    poll_ms: u64,
    shutdown: &Shutdown,
) -> tokio::task::JoinHandle<()> {
    let config = RelayConfig {
        batch,
        poll: Duration::from_millis(poll_ms),
        drain_timeout: Duration::from_secs(5),
    };
    tokio::spawn(Relay::new(log.outbox().clone(), bus, config).run(shutdown.clone()))
}

/// Events committed while NATS is down all arrive once it is back, in order per instance, none
/// twice. Batches append several events for several instances, so outbox pointers span ranges.
#[tokio::test]
async fn test_outbox_survives_a_nats_outage() {
    let mut nats = NatsServer::start().await.unwrap();
    let bus = Arc::new(NatsBus::connect(&nats.url(), &streams(100_000)).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open_log(dir.path()).await;
    let shutdown = Shutdown::new();
    let relay = spawn_relay(&log, bus.clone(), 64, 100, &shutdown);
    // Batch `i` appends two events to instance `i % 3` and one to instance `(i + 1) % 3`.
    let write = |i: usize| {
        let store = store.clone();
        let log = log.clone();
        async move {
            let mut batch = Batch::new();
            let mut appended = Appended::default();
            batch.put(
                "test.state",
                b"p".to_vec(),
                format!("{i:05}").into_bytes(),
                Bytes::new(),
            );
            let mut seqs = Vec::new();
            for (k, instance) in [i % 3, i % 3, (i + 1) % 3].into_iter().enumerate() {
                let instance = format!("i{instance}");
                let seq = match seqs.iter().rev().find(|(inst, _)| *inst == instance) {
                    Some((_, seq)) => seq + 1,
                    None => log.next_seq(&instance).await.unwrap(),
                };
                seqs.push((instance.clone(), seq));
                let envelope = Envelope {
                    id: format!("e{i}-{k}"),
                    r#type: "test.outage".into(),
                    instance: instance.clone(),
                    seq,
                    subject: "cocon.test.outage".into(),
                    ..Envelope::default()
                };
                log.append(&mut batch, &mut appended, &envelope);
            }
            let sealed = log.seal(&mut batch, appended);
            store.apply(batch).await.unwrap();
            for (instance, seq) in seqs {
                log.advance(&instance, seq);
            }
            // One writer, in order: its events go to the relay in memory, and from the store
            // once the bus has failed.
            log.outbox().hand_over(sealed);
        }
    };
    for i in 0..100 {
        write(i).await;
    }
    nats.kill();
    // Writes go on while the bus is down: they never wait for it.
    let started = std::time::Instant::now();
    for i in 100..300 {
        write(i).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the write path does not wait for NATS"
    );
    assert!(
        log.outbox().backlog().await.unwrap() >= 600,
        "the 200 batches wait in the outbox"
    );
    nats.restart().await.unwrap();

    let mut sub = loop {
        // The client reconnects in the background; subscribing fails until it has.
        match bus.subscribe(spec("outage", "cocon.test.outage", 5)).await {
            Ok(sub) => break sub,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut counts = HashMap::<String, u32>::new();
    let mut last_seq = HashMap::<String, u64>::new();
    while counts.len() < 900 {
        let d = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("every event arrives")
            .unwrap()
            .unwrap();
        let envelope = decode_envelope(&d.message.payload).unwrap();
        *counts.entry(envelope.id.clone()).or_default() += 1;
        let last = last_seq.entry(envelope.instance.clone()).or_default();
        assert!(envelope.seq > *last, "events of an instance arrive in order");
        *last = envelope.seq;
        d.ack().await.unwrap();
    }
    assert!(counts.values().all(|&c| c == 1), "no event twice");
    assert_eq!(last_seq.values().sum::<u64>(), 900, "sequences have no gap");
    // Nothing more is pending.
    let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(extra.is_err(), "no duplicate after the 300 events");
    assert_eq!(log.outbox().backlog().await.unwrap(), 0);
    shutdown.trigger();
    relay.await.unwrap();
}

/// The relay publishes what a committer hands over in memory, and what another writer only
/// committed from the store, in order: every event arrives once, in order per instance, and
/// the outbox drains.
#[tokio::test]
async fn test_relay_publishes_handed_over_and_stored_batches_in_order() {
    let bus = Arc::new(MemoryBus::new(streams(100_000)));
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open_log(dir.path()).await;
    let mut sub = bus.subscribe(spec("relay", "cocon.test.relay", 5)).await.unwrap();
    let shutdown = Shutdown::new();
    let relay = spawn_relay(&log, bus.clone(), 16, 200, &shutdown);
    // Batch `i` appends one event to `a` and one to `b`; batch 100 is not handed over.
    for i in 0..201u64 {
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        for instance in ["a", "b"] {
            let envelope = Envelope {
                id: format!("{instance}-{i}"),
                r#type: "test.relay".into(),
                instance: instance.into(),
                seq: i + 1,
                subject: "cocon.test.relay".into(),
                ..Envelope::default()
            };
            log.append(&mut batch, &mut appended, &envelope);
        }
        let sealed = log.seal(&mut batch, appended);
        store.apply(batch).await.unwrap();
        if i == 100 {
            log.outbox().committed(sealed);
        } else {
            log.outbox().hand_over(sealed);
        }
    }
    let mut last_seq = HashMap::<String, u64>::new();
    for _ in 0..402 {
        let d = next(&mut sub).await;
        let envelope = decode_envelope(&d.message.payload).unwrap();
        let last = last_seq.entry(envelope.instance.clone()).or_default();
        assert_eq!(envelope.seq, *last + 1, "events of an instance arrive once, in order");
        *last = envelope.seq;
        d.ack().await.unwrap();
    }
    assert_eq!(last_seq, HashMap::from([("a".into(), 201), ("b".into(), 201)]));
    let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(extra.is_err(), "no duplicate after the 402 events");
    shutdown.trigger();
    relay.await.unwrap();
    assert_eq!(
        log.outbox().backlog().await.unwrap(),
        0,
        "published pointers are deleted"
    );
}

/// A store whose commits wait for a permit: a writer can be cancelled while the store commits.
struct GatedStore {
    inner: Arc<dyn Store>,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl Store for GatedStore {
    async fn get(&self, table: &'static str, partition: &[u8], sort: &[u8]) -> cocon_storage::Result<Option<Bytes>> {
        self.inner.get(table, partition, sort).await
    }
    async fn scan(
        &self,
        table: &'static str,
        partition: &[u8],
        range: cocon_storage::ScanRange,
    ) -> cocon_storage::Result<Vec<cocon_storage::Row>> {
        self.inner.scan(table, partition, range).await
    }
    async fn apply(&self, batch: Batch) -> cocon_storage::Result<()> {
        // One permit per commit.
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.apply(batch).await
    }
    async fn apply_relaxed(&self, batch: Batch) -> cocon_storage::Result<()> {
        self.inner.apply_relaxed(batch).await
    }
    async fn scan_table(
        &self,
        table: &'static str,
        after: Option<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> cocon_storage::Result<Vec<cocon_storage::TableRow>> {
        self.inner.scan_table(table, after, limit).await
    }
    async fn clear_table(&self, table: &'static str) -> cocon_storage::Result<()> {
        self.inner.clear_table(table).await
    }
}

/// A writer cancelled while the store commits its batch (a client that went away): the commit
/// still lands and its event is published, and the instance's next write takes the next
/// sequence instead of reusing (and overwriting) the cancelled one's.
#[tokio::test]
async fn test_a_cancelled_commit_lands_and_its_sequences_stay_used() {
    let bus = Arc::new(MemoryBus::new(streams(1000)));
    let dir = tempfile::tempdir().unwrap();
    let (embedded, _) = open_log(dir.path()).await;
    let gated = Arc::new(GatedStore {
        inner: embedded,
        gate: tokio::sync::Semaphore::new(0),
    });
    let store: Arc<dyn Store> = gated.clone();
    let log = EventLog::open(store.clone(), "test.events", "test.outbox")
        .await
        .unwrap();
    let mut sub = bus.subscribe(spec("cancel", "cocon.test.cancel", 5)).await.unwrap();
    let shutdown = Shutdown::new();
    let relay = spawn_relay(&log, bus.clone(), 16, 200, &shutdown);
    let write = |seq: u64| {
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        let envelope = Envelope {
            id: format!("cancel-{seq}"),
            r#type: "test.cancel".into(),
            instance: "i".into(),
            seq,
            subject: "cocon.test.cancel".into(),
            ..Envelope::default()
        };
        log.append(&mut batch, &mut appended, &envelope);
        let sealed = log.seal(&mut batch, appended);
        log.commit(store.clone(), "i", seq, batch, sealed)
    };

    gated.gate.add_permits(1);
    write(log.next_seq("i").await.unwrap()).await.unwrap();
    let seq = log.next_seq("i").await.unwrap();
    assert_eq!(seq, 2);
    // The store holds the commit; the caller gives up.
    let cancelled = tokio::time::timeout(Duration::from_millis(100), write(seq)).await;
    assert!(cancelled.is_err(), "the commit waits at the gate");
    assert_eq!(log.next_seq("i").await.unwrap(), 3, "sequence 2 stays used");
    gated.gate.add_permits(10);
    write(3).await.unwrap();
    for expected in 1..=3 {
        let d = next(&mut sub).await;
        assert_eq!(decode_envelope(&d.message.payload).unwrap().seq, expected);
        d.ack().await.unwrap();
    }
    let stored = log.read("i", 0, 10).await.unwrap();
    assert_eq!(
        stored.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["cancel-1", "cancel-2", "cancel-3"],
        "no event was overwritten"
    );
    shutdown.trigger();
    relay.await.unwrap();
}

fn small_caps(max_messages: usize, stall_after: Duration) -> MemoryCaps {
    MemoryCaps {
        max_messages,
        max_bytes: 1 << 20,
        stall_after,
        keep_handled: Duration::ZERO,
    }
}

/// Past its memory caps the in-process bus drops only what live consumers have handled: while
/// one still needs the oldest message a publish is refused, and accepted again once it acks.
/// A consumer of other subjects, or one whose subscription is gone, holds nothing back.
#[tokio::test]
async fn test_memory_bus_pushes_back_instead_of_dropping_what_a_consumer_needs() {
    let bus = MemoryBus::with_caps(streams(100_000), small_caps(10, Duration::from_secs(120)));
    let mut slow = bus.subscribe(spec("slow", "cocon.test.kept", 5)).await.unwrap();
    let _other = bus.subscribe(spec("other", "cocon.test.elsewhere", 5)).await.unwrap();
    for i in 0..10 {
        bus.publish(msg("cocon.test.kept", &format!("k{i}"))).await.unwrap();
    }
    let refused = bus.publish(msg("cocon.test.kept", "k10")).await;
    assert!(
        matches!(refused, Err(BusError::Backlogged(ref s)) if s == "TEST"),
        "{refused:?}"
    );
    let (sent, failed) = bus
        .publish_all(vec![msg("cocon.test.kept", "k10"), msg("cocon.test.kept", "k11")])
        .await;
    assert_eq!(sent, 0);
    assert!(matches!(failed, Some(BusError::Backlogged(_))));
    // Handling three makes room for three.
    for i in 0..3 {
        let d = next(&mut slow).await;
        assert_eq!(d.message.payload, Bytes::from(format!("k{i}")));
        d.ack().await.unwrap();
    }
    let more: Vec<Message> = (10..14).map(|i| msg("cocon.test.kept", &format!("k{i}"))).collect();
    let (sent, failed) = bus.publish_all(more).await;
    assert_eq!(sent, 3, "{failed:?}");
    // Every message reaches the slow consumer, in order, none dropped.
    for i in 3..13 {
        let d = next(&mut slow).await;
        assert_eq!(d.message.payload, Bytes::from(format!("k{i}")));
        d.ack().await.unwrap();
    }
    // A new consumer starts from the oldest message kept and needs all ten; once its
    // subscription is gone it no longer holds the stream.
    let mut gone = bus.subscribe(spec("gone", "cocon.test.kept", 5)).await.unwrap();
    assert!(bus.publish(msg("cocon.test.kept", "k13")).await.is_err());
    assert_eq!(next(&mut gone).await.message.payload, Bytes::from("k3"));
    drop(gone);
    for i in 13..23 {
        bus.publish(msg("cocon.test.kept", &format!("k{i}"))).await.unwrap();
    }
    for i in 13..23 {
        let d = next(&mut slow).await;
        assert_eq!(d.message.payload, Bytes::from(format!("k{i}")));
        d.ack().await.unwrap();
    }
    assert_eq!(bus.stream_len("TEST"), 10, "the oldest, handled, were dropped");
}

/// A consumer that takes nothing for longer than the stall limit (a wedged handler) stops
/// holding the stream: the others' events flow again.
#[tokio::test]
async fn test_a_stalled_consumer_stops_holding_the_memory_bus() {
    let stall = Duration::from_millis(300);
    let bus = MemoryBus::with_caps(streams(100_000), small_caps(5, stall));
    let _wedged = bus.subscribe(spec("wedged", "cocon.test.>", 5)).await.unwrap();
    for i in 0..5 {
        bus.publish(msg("cocon.test.s", &format!("s{i}"))).await.unwrap();
    }
    assert!(bus.publish(msg("cocon.test.s", "s5")).await.is_err());
    let started = std::time::Instant::now();
    let mut accepted = false;
    while started.elapsed() < Duration::from_secs(10) {
        if bus.publish(msg("cocon.test.s", "s5")).await.is_ok() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(accepted, "the wedged consumer still holds the stream");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it held the stream while live"
    );
}

/// The regression the caps used to cause: far more events than the bus keeps in memory,
/// committed faster than a consumer handles them, all reach it, once and in order. The bus
/// pushes back and the rest waits in the outbox on disk.
#[tokio::test]
async fn test_a_slow_consumer_gets_every_event_past_the_memory_bus_caps() {
    let bus = Arc::new(MemoryBus::with_caps(
        streams(100_000),
        small_caps(40, Duration::from_secs(120)),
    ));
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open_log(dir.path()).await;
    let mut sub = bus.subscribe(spec("slow", "cocon.test.flood", 5)).await.unwrap();
    let shutdown = Shutdown::new();
    let relay = spawn_relay(&log, bus.clone(), 16, 20, &shutdown);
    const EVENTS: u64 = 1_000;
    for i in 0..EVENTS {
        let mut batch = Batch::new();
        let mut appended = Appended::default();
        let envelope = Envelope {
            id: format!("flood-{i}"),
            r#type: "test.flood".into(),
            instance: "a".into(),
            seq: i + 1,
            subject: "cocon.test.flood".into(),
            ..Envelope::default()
        };
        log.append(&mut batch, &mut appended, &envelope);
        let sealed = log.seal(&mut batch, appended);
        store.apply(batch).await.unwrap();
        log.outbox().hand_over(sealed);
    }
    assert!(
        log.outbox().backlog().await.unwrap() > 0,
        "the bus took everything: the test does not exercise its caps"
    );
    for expected in 1..=EVENTS {
        let d = next(&mut sub).await;
        let envelope = decode_envelope(&d.message.payload).unwrap();
        assert_eq!(envelope.seq, expected, "every event, once, in order");
        d.ack().await.unwrap();
    }
    shutdown.trigger();
    relay.await.unwrap();
    assert_eq!(log.outbox().backlog().await.unwrap(), 0);
}

/// Messages every consumer has handled leave memory once older than `keep_handled`, with no
/// publish after them (the bus tidies itself while idle); a consumer that has not handled them
/// yet, even between two subscriptions, holds them.
#[tokio::test]
async fn test_memory_bus_forgets_what_every_consumer_has_handled() {
    let caps = MemoryCaps {
        keep_handled: Duration::from_millis(50),
        ..small_caps(1000, Duration::from_secs(120))
    };
    let bus = MemoryBus::with_caps(streams(100_000), caps);
    let mut fast = bus.subscribe(spec("fast", "cocon.test.kept", 5)).await.unwrap();
    let slow = bus.subscribe(spec("slow", "cocon.test.kept", 5)).await.unwrap();
    // "slow" is between two subscriptions: it has handled nothing and still counts.
    drop(slow);
    for i in 0..3 {
        bus.publish(msg("cocon.test.kept", &format!("h{i}"))).await.unwrap();
    }
    for i in 0..3 {
        let d = next(&mut fast).await;
        assert_eq!(d.message.payload, Bytes::from(format!("h{i}")));
        d.ack().await.unwrap();
    }
    // "fast" waits for more, in a task.
    let idle = tokio::spawn(async move {
        let got = fast.next().await;
        (fast, got.map(|d| d.map(|d| d.message.payload)))
    });
    let settled = |want: usize| {
        let bus = bus.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while bus.stream_len("TEST") != want && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            bus.stream_len("TEST")
        }
    };
    // Held for "slow", whatever the time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        bus.stream_len("TEST"),
        3,
        "kept for the consumer that has not handled them"
    );
    let mut slow = bus.subscribe(spec("slow", "cocon.test.kept", 5)).await.unwrap();
    for i in 0..3 {
        let d = next(&mut slow).await;
        assert_eq!(d.message.payload, Bytes::from(format!("h{i}")));
        d.ack().await.unwrap();
    }
    assert_eq!(
        settled(0).await,
        0,
        "handled by all: gone from memory without another publish"
    );
    // The consumers go on as before.
    bus.publish(msg("cocon.test.kept", "h3")).await.unwrap();
    let (_fast, got) = idle.await.unwrap();
    assert_eq!(got.unwrap().unwrap(), Bytes::from("h3"));
    assert_eq!(next(&mut slow).await.message.payload, Bytes::from("h3"));
}

/// Two writers share one store (replicas owning different instances), each with its own
/// outbox partition: their pointer ids never collide, and once one is gone without relaying
/// what it committed, another adopts its partition and publishes it. Adopting twice (two
/// survivors at once) sends nothing twice: JetStream drops the duplicates by id.
#[tokio::test]
async fn test_a_dead_writers_outbox_partition_is_relayed_by_another() {
    let nats = NatsServer::start().await.unwrap();
    let bus = Arc::new(NatsBus::connect(&nats.url(), &streams(100_000)).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
    let a = EventLog::open_shared(store.clone(), "test.events", "test.outbox", "replica-a")
        .await
        .unwrap();
    let b = EventLog::open_shared(store.clone(), "test.events", "test.outbox", "replica-b")
        .await
        .unwrap();
    // Each writes 50 batches of its own instance, in the same microseconds: ids from the
    // same clock would collide in one partition.
    for i in 0..50u64 {
        for (log, instance) in [(&a, "alice"), (&b, "bob")] {
            let mut batch = Batch::new();
            let mut appended = Appended::default();
            let envelope = Envelope {
                id: format!("{instance}-{i}"),
                r#type: "test.adopt".into(),
                instance: instance.into(),
                seq: i + 1,
                subject: "cocon.test.adopt".into(),
                ..Envelope::default()
            };
            log.append(&mut batch, &mut appended, &envelope);
            log.outbox().committed(log.seal(&mut batch, appended));
            store.apply(batch).await.unwrap();
        }
    }
    assert_eq!(a.outbox().backlog().await.unwrap(), 50, "a's pointers are its own");
    assert_eq!(b.outbox().backlog().await.unwrap(), 50, "b's pointers are its own");
    let mut partitions = b.outbox().partitions().await.unwrap();
    partitions.sort();
    assert_eq!(partitions, ["0", "replica-a", "replica-b"]);

    // b relays its own; a died before relaying: b adopts a's partition, twice.
    let mut sub = bus.subscribe(spec("adopt", "cocon.test.adopt", 5)).await.unwrap();
    let config = RelayConfig::default();
    let own = Relay::new(b.outbox().clone(), bus.clone(), config.clone()).adopted();
    assert_eq!(own.await.unwrap(), 50);
    let orphan = b.outbox().of_partition("replica-a");
    let first = Relay::new(orphan.clone(), bus.clone(), config.clone()).adopted();
    let second = Relay::new(orphan.clone(), bus.clone(), config).adopted();
    let (first, second) = tokio::join!(first, second);
    assert!(first.unwrap() + second.unwrap() >= 50, "a's events are all sent");
    assert_eq!(orphan.backlog().await.unwrap(), 0, "the adopted partition is emptied");

    let mut seen = HashMap::<String, u64>::new();
    while seen.len() < 100 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("every event arrives")
            .unwrap()
            .unwrap();
        let envelope = decode_envelope(&d.message.payload).unwrap();
        assert!(
            seen.insert(envelope.id.clone(), envelope.seq).is_none(),
            "{} arrived twice",
            envelope.id
        );
        d.ack().await.unwrap();
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(extra.is_err(), "no duplicate after the 100 events");
}
