//! The in-process bus of the embedded default: JetStream's semantics (streams with limits,
//! de-duplication by message id, durable consumers with ack, nak and redelivery) in memory.
//!
//! Messages live as long as the process. Nothing is lost across a restart all the same: events
//! stay in the durable outbox until the bus has them, and the event log is the source of truth.
//!
//! Memory is bounded per stream ([`MemoryCaps`]). Past that bound the bus drops only what every
//! live consumer has handled; while a consumer still needs the oldest message, a publish is
//! refused ([`BusError::Backlogged`]) and the events wait in the publisher's outbox, on disk,
//! until the consumer catches up. A consumer that is gone (its subscription dropped) or stalled
//! (no delivery taken for [`MemoryCaps::stall_after`]) holds nothing back.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::bus::Acker;
use crate::live::{Listener, Registry};
use crate::subject::matches;
use crate::{BusError, ConsumerSpec, Delivery, EventBus, Message, StreamSpec, Subscription};

#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    listeners: Arc<Registry>,
    /// [`MemoryCaps::keep_handled`], the same for every stream: read without the state's lock.
    keep_handled: Duration,
    /// Whether the task that drops handled messages while nothing is published runs.
    tidying: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    streams: Vec<Stream>,
}

struct Stream {
    spec: StreamSpec,
    messages: VecDeque<Stored>,
    bytes: i64,
    next_seq: u64,
    /// Hashes of the ids published within the duplicate window (at most [`MAX_RECENT_IDS`]),
    /// with how many ids have each, and the same hashes in publish order, to expire them. A
    /// hash seen before is only a hint: the id itself is looked for among the kept messages.
    recent_ids: foldhash::HashMap<u64, u32>,
    recent_order: VecDeque<(Instant, u64)>,
    consumers: HashMap<String, ConsumerState>,
    caps: MemoryCaps,
    /// Wakes this stream's subscribers only: the documents stream, busy and often without
    /// subscribers, does not wake the others' at every publish.
    notify: Arc<Notify>,
}

struct Stored {
    seq: u64,
    at: Instant,
    message: Message,
}

struct ConsumerState {
    filter: String,
    /// Every message below this sequence has been acked (or did not match).
    next_seq: u64,
    /// The one message handed out and not acked yet: (seq, attempt, redeliver at).
    in_flight: Option<(u64, u32, Instant)>,
    ack_wait: Duration,
    /// How many subscriptions are open on it.
    subscribed: u32,
    /// When it last took or settled a delivery (or found nothing to take).
    last_seen: Instant,
    /// Already warned that its backlog no longer holds the stream.
    warned_stalled: bool,
}

impl ConsumerState {
    /// Whether this consumer still needs the message `seq` on `subject`.
    fn needs(&self, seq: u64, subject: &str, now: Instant, stall_after: Duration) -> bool {
        self.subscribed > 0 && self.will_take(seq, subject, now, stall_after)
    }

    /// Whether this consumer, subscribed now or between two subscriptions, has yet to handle
    /// `seq`; a stalled one is not waited for.
    fn will_take(&self, seq: u64, subject: &str, now: Instant, stall_after: Duration) -> bool {
        if now.duration_since(self.last_seen) > stall_after {
            return false;
        }
        self.in_flight.is_some_and(|(s, _, _)| s == seq) || (seq >= self.next_seq && matches(&self.filter, subject))
    }
}

/// How much a stream keeps in memory. Distinct from its retention limits: retention drops old
/// messages whoever needs them, as JetStream does; past these caps the bus pushes back instead.
#[derive(Debug, Clone, Copy)]
pub struct MemoryCaps {
    pub max_messages: usize,
    pub max_bytes: i64,
    /// A consumer that has taken no delivery for this long while messages wait for it no
    /// longer holds the stream back (a wedged handler must not stop every other consumer).
    pub stall_after: Duration,
    /// A message every consumer has handled is dropped once this old (zero: kept until the
    /// caps or the stream's limits drop it). Idle instances then cost the bus nothing: without
    /// it, a million instances' creations stayed in memory, up to the caps of every stream.
    /// The delay lets a consumer that subscribes just after a publish (at start-up) still get it.
    pub keep_handled: Duration,
}

impl Default for MemoryCaps {
    fn default() -> Self {
        MemoryCaps {
            max_messages: 200_000,
            max_bytes: 64 * 1024 * 1024,
            stall_after: Duration::from_secs(120),
            keep_handled: Duration::from_secs(10),
        }
    }
}

/// Duplicates are looked for among at most this many recent ids, whatever the window: the only
/// re-publisher in-process is the relay retrying what it just sent, and memory stays bounded
/// at any event rate (a two-minute window at 20k events/s would hold 2.4M ids).
const MAX_RECENT_IDS: usize = 65_536;
static ID_HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x636f_636f_6e5f_6964);

impl MemoryBus {
    pub fn new(streams: Vec<StreamSpec>) -> MemoryBus {
        MemoryBus::with_caps(streams, MemoryCaps::default())
    }

    pub fn with_caps(streams: Vec<StreamSpec>, caps: MemoryCaps) -> MemoryBus {
        let streams = streams
            .into_iter()
            .map(|spec| Stream {
                spec,
                messages: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                recent_ids: Default::default(),
                recent_order: VecDeque::new(),
                consumers: HashMap::new(),
                caps,
                notify: Arc::new(Notify::new()),
            })
            .collect();
        MemoryBus {
            inner: Arc::new(Inner {
                state: Mutex::new(State { streams }),
                listeners: Arc::default(),
                keep_handled: caps.keep_handled,
                tidying: Default::default(),
            }),
        }
    }

    /// Once, from the first publish (in a runtime): a task that drops the messages every consumer
    /// has handled when nothing is published ([`MemoryCaps::keep_handled`]) and reports what each
    /// stream holds; it ends with the bus.
    fn tidy_while_idle(&self) {
        use std::sync::atomic::Ordering;
        let every = self.inner.keep_handled;
        if every.is_zero()
            || self.inner.tidying.load(Ordering::Relaxed)
            || self.inner.tidying.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let now = Instant::now();
                let mut state = inner.state.lock().expect("bus state poisoned");
                for stream in &mut state.streams {
                    stream.drop_handled(now);
                    stream.report();
                }
            }
        });
    }

    /// How many messages a stream holds now (after retention).
    pub fn stream_len(&self, stream: &str) -> usize {
        let state = self.inner.state.lock().expect("bus state poisoned");
        state
            .streams
            .iter()
            .find(|s| s.spec.name == stream)
            .map_or(0, |s| s.messages.len())
    }
}

impl Stream {
    /// What the stream holds in memory, as gauges (by the tidying task: not on the publish path).
    fn report(&self) {
        let name = self.spec.name.clone();
        metrics::gauge!("cocon_bus_memory_messages", "stream" => name.clone()).set(self.messages.len() as f64);
        metrics::gauge!("cocon_bus_memory_bytes", "stream" => name).set(self.bytes as f64);
    }

    fn enforce_limits(&mut self, now: Instant) {
        let spec = &self.spec;
        while let Some(front) = self.messages.front() {
            let too_old = spec.max_age > Duration::ZERO && now.duration_since(front.at) > spec.max_age;
            let too_many = spec.max_messages > 0 && self.messages.len() as i64 > spec.max_messages;
            let too_big = spec.max_bytes > 0 && self.bytes > spec.max_bytes;
            if !(too_old || too_many || too_big) {
                break;
            }
            let dropped = self.messages.pop_front().expect("front exists");
            self.bytes -= dropped.message.payload.len() as i64;
        }
        let window = spec.duplicate_window;
        self.make_room(0, now);
        self.drop_handled(now);
        while let Some((at, _)) = self.recent_order.front() {
            if now.duration_since(*at) <= window && self.recent_order.len() <= MAX_RECENT_IDS {
                break;
            }
            let (_, hash) = self.recent_order.pop_front().expect("front exists");
            if let Entry::Occupied(mut count) = self.recent_ids.entry(hash) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
    }

    /// Drops the oldest messages that every consumer has handled and that are older than
    /// [`MemoryCaps::keep_handled`]. A work queue removes each message as it is acked instead.
    fn drop_handled(&mut self, now: Instant) {
        let keep = self.caps.keep_handled;
        if keep.is_zero() || self.spec.work_queue {
            return;
        }
        while let Some(front) = self.messages.front() {
            let (seq, subject) = (front.seq, front.message.subject.as_str());
            if now.duration_since(front.at) < keep
                || self
                    .consumers
                    .values()
                    .any(|c| c.will_take(seq, subject, now, self.caps.stall_after))
            {
                break;
            }
            let dropped = self.messages.pop_front().expect("front exists");
            self.bytes -= dropped.message.payload.len() as i64;
        }
    }

    /// Drops the oldest messages no live consumer needs until `extra` more bytes and one more
    /// message (if `extra > 0`) fit the memory caps; gives whether they do.
    fn make_room(&mut self, extra: i64, now: Instant) -> bool {
        let more = usize::from(extra > 0);
        while self.messages.len() + more > self.caps.max_messages || self.bytes + extra > self.caps.max_bytes {
            let Some(front) = self.messages.front() else {
                return true;
            };
            let (seq, subject) = (front.seq, front.message.subject.as_str());
            let stall_after = self.caps.stall_after;
            if self.consumers.values().any(|c| c.needs(seq, subject, now, stall_after)) {
                return false;
            }
            for (name, consumer) in &mut self.consumers {
                let stalled = consumer.subscribed > 0 && seq >= consumer.next_seq && matches(&consumer.filter, subject);
                if stalled && !consumer.warned_stalled {
                    consumer.warned_stalled = true;
                    tracing::warn!(stream = %self.spec.name, consumer = %name, "a consumer has taken no event for too long: the stream drops what it has not handled");
                }
            }
            let dropped = self.messages.pop_front().expect("front exists");
            self.bytes -= dropped.message.payload.len() as i64;
        }
        true
    }

    /// Whether a message with `id` is among the most recent ones kept. A duplicate whose first
    /// copy retention already dropped is stored again: consumers are idempotent by contract.
    fn is_duplicate(&self, id: &str) -> bool {
        self.messages
            .iter()
            .rev()
            .take(MAX_RECENT_IDS)
            .any(|m| m.message.id == id)
    }

    /// The stored message with sequence `seq`, found by position (sequences are contiguous).
    fn position(&self, seq: u64) -> Option<usize> {
        let first = self.messages.front()?.seq;
        let index = seq.checked_sub(first)? as usize;
        (index < self.messages.len()).then_some(index)
    }
}

impl State {
    /// Stores `message` in the stream its subject belongs to, unless it is a duplicate; gives the
    /// stream's index.
    fn store(&mut self, message: Message, now: Instant) -> Result<(usize, bool), BusError> {
        let index = self
            .streams
            .iter()
            .position(|s| s.spec.subjects.iter().any(|f| matches(f, &message.subject)))
            .ok_or_else(|| BusError::NoStream(message.subject.clone()))?;
        let stream = &mut self.streams[index];
        let hash = ID_HASHER.hash_one(message.id.as_str());
        if stream.recent_ids.contains_key(&hash) && stream.is_duplicate(&message.id) {
            return Ok((index, false));
        }
        // A lone message larger than the caps is still taken: refusing it would wedge the outbox.
        let size = (message.payload.len() as i64).max(1);
        if !stream.make_room(size, now) && !stream.messages.is_empty() {
            return Err(BusError::Backlogged(stream.spec.name.clone()));
        }
        *stream.recent_ids.entry(hash).or_default() += 1;
        stream.recent_order.push_back((now, hash));
        let seq = stream.next_seq;
        stream.next_seq += 1;
        stream.bytes += message.payload.len() as i64;
        stream.messages.push_back(Stored { seq, at: now, message });
        stream.enforce_limits(now);
        Ok((index, true))
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, message: Message) -> Result<(), BusError> {
        let (_, failed) = self.publish_all(vec![message]).await;
        failed.map_or(Ok(()), Err)
    }

    /// One lock and one wake-up for the whole batch.
    async fn publish_all(&self, messages: Vec<Message>) -> (usize, Option<BusError>) {
        self.tidy_while_idle();
        let now = Instant::now();
        let mut sent = 0;
        let mut failed = None;
        let mut state = self.inner.state.lock().expect("bus state poisoned");
        // Expire old messages and ids before looking for duplicates: once per call.
        for stream in &mut state.streams {
            stream.enforce_limits(now);
        }
        let mut touched: Vec<usize> = Vec::with_capacity(1);
        let listened = !self.inner.listeners.is_empty();
        let mut live = Vec::new();
        for message in messages {
            // Only listened events are copied (a copy shares the payload).
            let copy = listened.then(|| message.clone());
            match state.store(message, now) {
                Ok((index, fresh)) => {
                    if !touched.contains(&index) {
                        touched.push(index);
                    }
                    live.extend(copy.filter(|_| fresh));
                }
                Err(err) => {
                    failed = Some(err);
                    break;
                }
            }
            sent += 1;
        }
        // Waking only schedules the subscribers' tasks: they take the lock once it is released.
        for index in touched {
            let stream = &state.streams[index];
            if !stream.consumers.is_empty() {
                stream.notify.notify_waiters();
            }
        }
        drop(state);
        if !live.is_empty() {
            self.inner.listeners.dispatch(&live);
        }
        (sent, failed)
    }

    async fn listen(&self, filters: Vec<String>) -> Result<Box<dyn Listener>, BusError> {
        Ok(Box::new(self.inner.listeners.listen(filters)))
    }

    async fn publish_live(&self, message: Message) -> Result<(), BusError> {
        self.inner.listeners.dispatch(std::slice::from_ref(&message));
        Ok(())
    }

    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Box<dyn Subscription>, BusError> {
        let mut state = self.inner.state.lock().expect("bus state poisoned");
        let stream = state
            .streams
            .iter_mut()
            .find(|s| s.spec.name == spec.stream)
            .ok_or_else(|| BusError::NoStream(spec.stream.clone()))?;
        let first = stream.messages.front().map_or(stream.next_seq, |m| m.seq);
        let now = Instant::now();
        let consumer = stream.consumers.entry(spec.durable.clone()).or_insert(ConsumerState {
            filter: spec.filter.clone(),
            next_seq: first,
            in_flight: None,
            ack_wait: spec.ack_wait,
            subscribed: 0,
            last_seen: now,
            warned_stalled: false,
        });
        consumer.subscribed += 1;
        consumer.last_seen = now;
        Ok(Box::new(MemorySubscription {
            inner: self.inner.clone(),
            notify: stream.notify.clone(),
            stream: spec.stream,
            durable: spec.durable,
        }))
    }
}

struct MemorySubscription {
    inner: Arc<Inner>,
    notify: Arc<Notify>,
    stream: String,
    durable: String,
}

enum Next {
    Deliver(Delivery),
    WaitUntil(Option<Instant>),
}

impl MemorySubscription {
    fn poll_state(&self) -> Result<Next, BusError> {
        let now = Instant::now();
        let mut state = self.inner.state.lock().expect("bus state poisoned");
        let stream = state
            .streams
            .iter_mut()
            .find(|s| s.spec.name == self.stream)
            .ok_or_else(|| BusError::NoStream(self.stream.clone()))?;
        stream.enforce_limits(now);
        let first_kept = stream.messages.front().map_or(stream.next_seq, |m| m.seq);
        let (in_flight, next_seq, ack_wait) = {
            let c = stream
                .consumers
                .get(&self.durable)
                .ok_or_else(|| BusError::Other("consumer deleted".into()))?;
            (c.in_flight, c.next_seq.max(first_kept), c.ack_wait)
        };
        // A message retention dropped while in flight is forgotten, as JetStream does.
        let in_flight = in_flight.and_then(|(seq, attempt, due)| stream.position(seq).map(|i| (i, seq, attempt, due)));
        let (deliver, in_flight, next_seq) = match in_flight {
            Some((_, _, _, due)) if due > now => return Ok(Next::WaitUntil(Some(due))),
            Some((i, seq, attempt, _)) => (
                Some((stream.messages[i].message.clone(), seq, attempt + 1)),
                Some((seq, attempt + 1, now + ack_wait)),
                next_seq,
            ),
            None => {
                let consumer = stream.consumers.get(&self.durable).expect("checked above");
                let start = stream.position(next_seq).unwrap_or(stream.messages.len());
                match stream
                    .messages
                    .range(start..)
                    .find(|m| matches(&consumer.filter, &m.message.subject))
                {
                    Some(m) => (
                        Some((m.message.clone(), m.seq, 1)),
                        Some((m.seq, 1, now + ack_wait)),
                        next_seq,
                    ),
                    None => (None, None, stream.next_seq),
                }
            }
        };
        let consumer = stream.consumers.get_mut(&self.durable).expect("checked above");
        consumer.in_flight = in_flight;
        consumer.next_seq = next_seq;
        consumer.last_seen = now;
        consumer.warned_stalled = false;
        Ok(match deliver {
            Some((message, seq, attempt)) => Next::Deliver(self.delivery(message, seq, attempt)),
            None => Next::WaitUntil(None),
        })
    }

    fn delivery(&self, message: Message, seq: u64, attempt: u32) -> Delivery {
        Delivery {
            message,
            attempt,
            acker: Box::new(MemoryAcker {
                inner: self.inner.clone(),
                notify: self.notify.clone(),
                stream: self.stream.clone(),
                durable: self.durable.clone(),
                seq,
            }),
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.poll_state() {
                Err(e) => return Some(Err(e)),
                Ok(Next::Deliver(d)) => return Some(Ok(d)),
                Ok(Next::WaitUntil(None)) => notified.await,
                Ok(Next::WaitUntil(Some(at))) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
            }
        }
    }
}

impl Drop for MemorySubscription {
    /// A closed subscription holds no message back; its consumer resumes where it acked if it
    /// subscribes again, from what retention kept.
    fn drop(&mut self) {
        let Ok(mut state) = self.inner.state.lock() else { return };
        if let Some(consumer) = state
            .streams
            .iter_mut()
            .find(|s| s.spec.name == self.stream)
            .and_then(|s| s.consumers.get_mut(&self.durable))
        {
            consumer.subscribed = consumer.subscribed.saturating_sub(1);
        }
    }
}

struct MemoryAcker {
    inner: Arc<Inner>,
    notify: Arc<Notify>,
    stream: String,
    durable: String,
    seq: u64,
}

impl MemoryAcker {
    fn update(&self, f: impl FnOnce(&mut ConsumerState)) {
        let now = Instant::now();
        let mut state = self.inner.state.lock().expect("bus state poisoned");
        if let Some(consumer) = state
            .streams
            .iter_mut()
            .find(|s| s.spec.name == self.stream)
            .and_then(|s| s.consumers.get_mut(&self.durable))
            && consumer.in_flight.is_some_and(|(seq, _, _)| seq == self.seq)
        {
            consumer.last_seen = now;
            f(consumer);
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        let seq = self.seq;
        self.update(|c| {
            c.in_flight = None;
            c.next_seq = seq + 1;
        });
        self.notify.notify_waiters();
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        self.update(|c| {
            if let Some((seq, attempt, _)) = c.in_flight {
                c.in_flight = Some((seq, attempt, Instant::now() + delay));
            }
        });
        self.notify.notify_waiters();
        Ok(())
    }
}
