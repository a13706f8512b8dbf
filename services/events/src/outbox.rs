//! The transactional outbox. The event log is the outbox's storage: each batch that appends
//! events also writes one small pointer row per instance (instance, first and last sequence), in
//! the same atomic batch, and the [`Relay`] publishes the events those pointers name, deleting a
//! pointer only once the bus has all of its events. Events are stored once, in the log; the
//! outbox costs one row per instance per commit, not one per event. A dead or slow bus makes
//! the outbox grow; it never blocks or slows the write.
//!
//! The store is the outbox's truth, but reading the events back costs a scan per commit. So a
//! committer whose commits land in order and cannot be cancelled half-way (the documents
//! service's, on its own thread) hands each committed batch's encoded events to the relay in
//! memory ([`Outbox::hand_over`]), and the relay publishes from there while it keeps up. Other
//! writers call [`Outbox::committed`] and the relay reads their events from the store. It also
//! reads the store to catch up: at start, when the in-memory queue overflowed or the bus failed,
//! and once per poll interval from the first row, which finds a pointer that committed after
//! one with a higher id (two writers of different instances race to the store).

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cocon_common::Shutdown;
use cocon_storage::{Batch, ScanRange, Store};
use tokio::sync::Notify;

use crate::{BusError, EventBus, Message};
use cocon_proto::events::v1::EnvelopeHead;
use prost::Message as _;

/// The partition of a writer that is alone on its store (the embedded store, or one replica
/// at a time): its rows, ordered by a monotonic id.
pub const SOLE_PARTITION: &str = "0";

/// The partition listing the writers' partitions ([`Outbox::partitions`]), so that the rows of a
/// writer that died are found and relayed by another ([`Relay::adopted`]).
const PARTITIONS: &[u8] = b"~partitions";

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    store: Arc<dyn Store>,
    table: &'static str,
    /// The event log the pointers refer to.
    log_table: &'static str,
    /// This writer's partition: replicas sharing a store each write their own, so that their
    /// ids never collide.
    partition: Vec<u8>,
    next_id: AtomicU64,
    notify: Notify,
    /// Committed pointers and their events, in commit order, for the relay.
    hot: Mutex<HotQueue>,
}

/// At most this many events wait in memory for the relay; beyond, the relay reads the store.
const HOT_MAX_EVENTS: usize = 65_536;

#[derive(Default)]
struct HotQueue {
    pointers: VecDeque<HotPointer>,
    events: usize,
    /// Some committed pointers are not in the queue (no room, or their writer did not hand
    /// them over): the relay must read the store.
    stale: bool,
}

/// A committed outbox pointer with its events, as encoded in the log.
struct HotPointer {
    id: u64,
    events: Vec<Bytes>,
}

fn now_us() -> u64 {
    cocon_common::time::now_us().max(0) as u64
}

/// The events one batch appends, per instance: (first, last) sequence and the encoded events.
/// Sealed into the batch as outbox pointers by [`crate::EventLog::seal`].
#[derive(Debug, Default)]
pub struct Appended {
    pub(crate) ranges: foldhash::HashMap<String, Range>,
}

#[derive(Debug)]
pub(crate) struct Range {
    first: u64,
    last: u64,
    events: Vec<Bytes>,
}

impl Appended {
    pub(crate) fn add(&mut self, instance: &str, seq: u64, event: Bytes) {
        match self.ranges.get_mut(instance) {
            Some(range) => {
                range.last = seq;
                range.events.push(event);
            }
            None => {
                let range = Range {
                    first: seq,
                    last: seq,
                    events: vec![event],
                };
                self.ranges.insert(instance.to_string(), range);
            }
        }
    }
}

/// The outbox pointers of a batch about to be committed. Give it to [`Outbox::committed`] or
/// [`Outbox::hand_over`] once the batch is; drop it if the commit failed.
#[must_use = "give it to Outbox::committed or Outbox::hand_over once the batch is committed"]
pub struct Sealed {
    pointers: Vec<HotPointer>,
}

/// An outbox row: the events `first..=last` of `instance` wait to be published.
#[derive(Debug, PartialEq)]
struct Pointer {
    instance: String,
    first: u64,
    last: u64,
}

impl Pointer {
    fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(20 + self.instance.len());
        buf.put_u32(self.instance.len() as u32);
        buf.put_slice(self.instance.as_bytes());
        buf.put_u64(self.first);
        buf.put_u64(self.last);
        buf.freeze()
    }

    fn decode(mut buf: Bytes) -> Option<Pointer> {
        if buf.remaining() < 4 {
            return None;
        }
        let len = buf.get_u32() as usize;
        if buf.remaining() != len + 16 {
            return None;
        }
        let instance = String::from_utf8(buf.split_to(len).to_vec()).ok()?;
        let (first, last) = (buf.get_u64(), buf.get_u64());
        (1 <= first && first <= last).then_some(Pointer { instance, first, last })
    }
}

impl Outbox {
    /// Opens the outbox in `table` for the writer whose rows go in `partition`
    /// ([`SOLE_PARTITION`] when it is alone on its store); a writer's partition is listed, so
    /// that another relays it once the writer is gone.
    pub(crate) async fn open(
        store: Arc<dyn Store>,
        table: &'static str,
        log_table: &'static str,
        partition: &str,
    ) -> Result<Outbox, BusError> {
        let partition = partition.as_bytes().to_vec();
        if partition != SOLE_PARTITION.as_bytes() {
            let mut listed = Batch::new();
            listed.put(table, PARTITIONS, partition.clone(), Bytes::new());
            store.apply(listed).await?;
        }
        let last = store
            .scan(table, &partition, ScanRange::all().reverse(true).limit(1))
            .await?;
        let after_last = last
            .first()
            .and_then(|r| r.sort.as_slice().try_into().ok())
            .map_or(0, |b: [u8; 8]| u64::from_be_bytes(b) + 1);
        Ok(Outbox {
            inner: Arc::new(OutboxInner {
                store,
                table,
                log_table,
                partition,
                next_id: AtomicU64::new(after_last.max(now_us())),
                notify: Notify::new(),
                hot: Mutex::default(),
            }),
        })
    }

    /// Adds to `batch` the pointers to the events it appends; they are published once it commits.
    pub(crate) fn seal(&self, batch: &mut Batch, appended: Appended) -> Sealed {
        let mut pointers = Vec::with_capacity(appended.ranges.len());
        for (instance, range) in appended.ranges {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let pointer = Pointer {
                instance,
                first: range.first,
                last: range.last,
            };
            batch.put(
                self.inner.table,
                self.inner.partition.clone(),
                id.to_be_bytes().to_vec(),
                pointer.encode(),
            );
            pointers.push(HotPointer {
                id,
                events: range.events,
            });
        }
        Sealed { pointers }
    }

    /// Wakes the relay to publish a committed batch's events, read back from the store.
    pub fn committed(&self, sealed: Sealed) {
        drop(sealed);
        self.inner.hot.lock().expect("outbox queue poisoned").stale = true;
        self.inner.notify.notify_one();
    }

    /// Hands the events of a committed batch to the relay and wakes it. Only for a writer whose
    /// batches commit in the order they were sealed and whose hand-over cannot be skipped once
    /// committed: the relay publishes handed-over events as they come, so a missing or late one
    /// would reorder an instance's events.
    pub fn hand_over(&self, sealed: Sealed) {
        {
            let mut hot = self.inner.hot.lock().expect("outbox queue poisoned");
            for pointer in sealed.pointers {
                if hot.events + pointer.events.len() > HOT_MAX_EVENTS {
                    // The relay is behind (or the bus down): it will read the store instead.
                    hot.pointers.clear();
                    hot.events = 0;
                    hot.stale = true;
                }
                if !hot.stale {
                    hot.events += pointer.events.len();
                    hot.pointers.push_back(pointer);
                }
            }
        }
        self.inner.notify.notify_one();
    }

    /// Takes what was handed over; `None` if the store holds more (see [`HotQueue::stale`]).
    fn take_hot(&self) -> Option<VecDeque<HotPointer>> {
        let mut hot = self.inner.hot.lock().expect("outbox queue poisoned");
        hot.events = 0;
        let pointers = std::mem::take(&mut hot.pointers);
        if std::mem::take(&mut hot.stale) {
            return None;
        }
        Some(pointers)
    }

    /// This writer's partition.
    pub fn partition(&self) -> &str {
        std::str::from_utf8(&self.inner.partition).unwrap_or(SOLE_PARTITION)
    }

    /// Every writer's partition on this store, [`SOLE_PARTITION`] included.
    pub async fn partitions(&self) -> Result<Vec<String>, BusError> {
        let rows = self
            .inner
            .store
            .scan(self.inner.table, PARTITIONS, ScanRange::all())
            .await?;
        let mut partitions = vec![SOLE_PARTITION.to_string()];
        partitions.extend(rows.into_iter().filter_map(|r| String::from_utf8(r.sort).ok()));
        Ok(partitions)
    }

    /// The outbox of another writer's `partition`, to relay what it left ([`Relay::adopted`]);
    /// nothing is sealed into it.
    pub fn of_partition(&self, partition: &str) -> Outbox {
        let inner = &self.inner;
        Outbox {
            inner: Arc::new(OutboxInner {
                store: inner.store.clone(),
                table: inner.table,
                log_table: inner.log_table,
                partition: partition.as_bytes().to_vec(),
                next_id: AtomicU64::new(0),
                notify: Notify::new(),
                hot: Mutex::default(),
            }),
        }
    }

    /// How many events wait to be published (or were, and wait for their pointer's deletion).
    pub async fn backlog(&self) -> Result<u64, BusError> {
        let rows = self
            .inner
            .store
            .scan(self.inner.table, &self.inner.partition, ScanRange::all())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Pointer::decode(r.value))
            .map(|p| p.last - p.first + 1)
            .sum())
    }
}

/// The message that carries a logged event on the bus. Only the envelope's head is decoded: the
/// payload travels as the stored bytes.
fn message(row: Bytes) -> Result<Message, BusError> {
    let envelope =
        EnvelopeHead::decode(row.as_ref()).map_err(|e| BusError::Other(format!("undecodable event: {e}")))?;
    let mut headers = vec![("Cocon-Event-Type".into(), envelope.r#type)];
    if !envelope.traceparent.is_empty() {
        headers.push((cocon_common::trace_context::TRACEPARENT.into(), envelope.traceparent));
    }
    Ok(Message {
        subject: envelope.subject,
        id: envelope.id,
        headers,
        payload: row,
    })
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// At most this many events per round.
    pub batch: usize,
    /// Poll at least this often, to retry after failures.
    pub poll: Duration,
    /// On shutdown, keep flushing for at most this long.
    pub drain_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch: 512,
            poll: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Publishes what the outbox holds, in order, until shut down; then drains what it can.
///
/// Published rows are deleted in bulk (every `8 × batch` rows, or when the outbox is idle), not
/// one commit per round: until then `done` skips them. After a crash they are published again,
/// with the same ids, and the bus drops the duplicates (JetStream's duplicate window); a
/// duplicate may also slip through when a catch-up scan and the hand-over overlap, which
/// consumers, idempotent by contract, absorb.
pub struct Relay {
    outbox: Outbox,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    /// Catching up from the store rather than publishing what committers hand over.
    scanning: bool,
    /// When the last catch-up scan reached the end of the outbox.
    last_scan: tokio::time::Instant,
    /// In a scan, the last pointer row read.
    cursor: Option<Vec<u8>>,
    /// Within the next pointer, the last sequence published (after a partial failure).
    resume_after: Option<u64>,
    /// Rows whose events are all published, to delete; `done` holds their ids.
    published: Vec<Vec<u8>>,
    done: foldhash::HashSet<u64>,
    last_forget: tokio::time::Instant,
}

impl Relay {
    pub fn new(outbox: Outbox, bus: Arc<dyn EventBus>, config: RelayConfig) -> Relay {
        let now = tokio::time::Instant::now();
        Relay {
            outbox,
            bus,
            config,
            scanning: true,
            last_scan: now,
            cursor: None,
            resume_after: None,
            published: Vec::new(),
            done: Default::default(),
            last_forget: now,
        }
    }

    /// Reads the store again: from the first row, or from the last row read, whose
    /// predecessors were all published then.
    fn start_scan(&mut self, from_first: bool) {
        self.scanning = true;
        if from_first {
            self.cursor = None;
        }
        self.resume_after = None;
    }

    fn mark_done(&mut self, row: Vec<u8>) {
        if let Some(id) = pointer_id(&row) {
            self.done.insert(id);
        }
        self.published.push(row);
    }

    /// Deletes the rows published so far.
    async fn forget_published(&mut self) -> Result<(), BusError> {
        if self.published.is_empty() {
            return Ok(());
        }
        let inner = &self.outbox.inner;
        let mut done = Batch::new();
        for key in &self.published {
            done.delete(inner.table, inner.partition.clone(), key.clone());
        }
        // Losing these deletions in a crash only re-publishes events JetStream de-duplicates.
        inner.store.apply_relaxed(done).await?;
        self.published.clear();
        self.done.clear();
        self.last_forget = tokio::time::Instant::now();
        Ok(())
    }

    /// Publishes everything the outbox's partition holds, once, and deletes its rows: for the
    /// partition of a writer that is gone ([`Outbox::of_partition`]). Returns how many events
    /// were published. Two relays adopting the same partition publish its events twice, with
    /// the same ids: the bus drops the duplicates.
    pub async fn adopted(mut self) -> Result<usize, BusError> {
        self.start_scan(true);
        let mut published = 0;
        loop {
            let (sent, end) = self.scan_page().await?;
            published += sent;
            if end {
                break;
            }
        }
        self.forget_published().await?;
        Ok(published)
    }

    pub async fn run(mut self, shutdown: Shutdown) {
        let mut failures = 0u32;
        loop {
            let wait = match self.round().await {
                Ok(0) => {
                    failures = 0;
                    let due = self.last_forget.elapsed() >= self.config.poll;
                    if let Err(err) = if due { self.forget_published().await } else { Ok(()) } {
                        tracing::warn!(error = %err, "cannot delete published outbox rows; will retry");
                    }
                    self.config.poll
                }
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(err) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(table = self.outbox.inner.table, error = %err, failures, "cannot publish events, they stay in the outbox");
                    }
                    Duration::from_millis(50u64 << failures.min(7)).min(self.config.poll * 5)
                }
            };
            tokio::select! {
                _ = self.outbox.inner.notify.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => break,
            }
        }
        // Graceful drain: publish what is left, store included, for a bounded time.
        self.start_scan(true);
        let deadline = tokio::time::Instant::now() + self.config.drain_timeout;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.round()).await {
                Ok(Ok(0)) => {
                    let _ = self.forget_published().await;
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(
                        table = self.outbox.inner.table,
                        "outbox not fully drained at shutdown; the rest is published at next start"
                    );
                    break;
                }
            }
        }
    }

    /// Publishes what is waiting, a page at most; returns how many events were published.
    pub async fn round(&mut self) -> Result<usize, BusError> {
        if !self.scanning && self.last_scan.elapsed() >= self.config.poll {
            self.start_scan(true);
        }
        loop {
            if self.scanning {
                let (published, end) = self.scan_page().await?;
                if end {
                    self.scanning = false;
                    self.last_scan = tokio::time::Instant::now();
                }
                if published > 0 {
                    return Ok(published);
                }
                if !end {
                    continue;
                }
            }
            match self.outbox.take_hot() {
                Some(pointers) => return self.publish_handed_over(pointers).await,
                None => self.start_scan(false),
            }
        }
    }

    /// Publishes the events committers handed over, in one call to the bus.
    async fn publish_handed_over(&mut self, pointers: VecDeque<HotPointer>) -> Result<usize, BusError> {
        // A catch-up scan may have published some already.
        let pointers: Vec<HotPointer> = pointers.into_iter().filter(|p| !self.done.contains(&p.id)).collect();
        let mut messages = Vec::with_capacity(pointers.iter().map(|p| p.events.len()).sum());
        // The pointer each message belongs to.
        let mut owners = Vec::with_capacity(messages.capacity());
        for (i, pointer) in pointers.iter().enumerate() {
            for event in &pointer.events {
                match message(event.clone()) {
                    Ok(m) => {
                        messages.push(m);
                        owners.push(i);
                    }
                    Err(err) => {
                        tracing::error!(table = self.outbox.inner.table, error = %err, "skipping an undecodable event")
                    }
                }
            }
        }
        let (sent, failed) = if messages.is_empty() {
            (0, None)
        } else {
            self.bus.publish_all(messages).await
        };
        let complete = owners.get(sent).copied().unwrap_or(pointers.len());
        for pointer in &pointers[..complete] {
            self.mark_done(pointer.id.to_be_bytes().to_vec());
        }
        if self.published.len() >= self.config.batch * 8 {
            self.forget_published().await?;
        }
        match failed {
            None => Ok(sent),
            Some(err) => {
                // The rest waits in the store, in order.
                self.start_scan(false);
                if sent == 0 { Err(err) } else { Ok(sent) }
            }
        }
    }

    /// Publishes the events of one page of pointers read from the store: (how many were
    /// published, whether the page reached the end of the outbox).
    async fn scan_page(&mut self) -> Result<(usize, bool), BusError> {
        let inner = self.outbox.inner.clone();
        let start = match &self.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let range = ScanRange::between(start, Bound::Unbounded).limit(self.config.batch);
        let rows = inner.store.scan(inner.table, &inner.partition, range).await?;
        let mut end = rows.len() < self.config.batch;
        let mut published = 0;
        let mut first_error = None;
        'rows: for row in rows {
            if pointer_id(&row.sort).is_some_and(|id| self.done.contains(&id)) {
                self.cursor = Some(row.sort);
                continue;
            }
            let Some(pointer) = Pointer::decode(row.value.clone()) else {
                tracing::error!(table = inner.table, "dropping an undecodable outbox row");
                self.cursor = Some(row.sort.clone());
                self.mark_done(row.sort);
                continue;
            };
            let mut after = self.resume_after.unwrap_or(pointer.first - 1).max(pointer.first - 1);
            while after < pointer.last {
                let limit = ((pointer.last - after) as usize).min(self.config.batch.max(1));
                let events = inner
                    .store
                    .scan(
                        inner.log_table,
                        pointer.instance.as_bytes(),
                        ScanRange::between(
                            Bound::Excluded(after.to_be_bytes().to_vec()),
                            Bound::Included(pointer.last.to_be_bytes().to_vec()),
                        )
                        .limit(limit),
                    )
                    .await?;
                // Fewer events than pointed at: the instance's log was erased; nothing left to send.
                let exhausted = events.len() < limit;
                for event in events {
                    let seq = event
                        .sort
                        .as_slice()
                        .try_into()
                        .map_or(pointer.last, u64::from_be_bytes);
                    match message(event.value) {
                        Ok(message) => {
                            if let Err(err) = self.bus.publish(message).await {
                                // Stop at the first failure, so events stay in order.
                                first_error = Some(err);
                                break 'rows;
                            }
                            published += 1;
                        }
                        Err(err) => {
                            tracing::error!(table = inner.log_table, seq, error = %err, "skipping an undecodable event")
                        }
                    }
                    after = seq;
                    self.resume_after = Some(seq);
                }
                if exhausted {
                    break;
                }
            }
            self.resume_after = None;
            self.cursor = Some(row.sort.clone());
            self.mark_done(row.sort);
        }
        if self.published.len() >= self.config.batch * 8 {
            self.forget_published().await?;
        }
        match first_error {
            Some(err) if published == 0 => Err(err),
            Some(_) => {
                end = false;
                Ok((published, end))
            }
            None => Ok((published, end)),
        }
    }
}

/// How often [`adopt_orphans`] looks for the partitions of writers that are gone.
const ADOPT_EVERY: Duration = Duration::from_secs(2);

/// Relays, every [`ADOPT_EVERY`] until shut down, the outbox partitions of writers that are gone
/// (`gone(partition)`: a replica holding no instance any more) and [`SOLE_PARTITION`], as
/// [`Relay::adopted`]: what a replica committed and died before publishing is published by the
/// survivors. Several survivors may relay one partition at once; the bus drops the duplicates.
pub async fn adopt_orphans(
    outbox: Outbox,
    bus: Arc<dyn EventBus>,
    gone: impl Fn(&str) -> bool + Send,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ADOPT_EVERY) => {}
            _ = shutdown.wait() => return,
        }
        let partitions = match outbox.partitions().await {
            Ok(partitions) => partitions,
            Err(err) => {
                tracing::warn!(table = outbox.inner.table, error = %err, "cannot list the outbox's partitions; will retry");
                continue;
            }
        };
        for partition in partitions {
            if partition == outbox.partition() || (partition != SOLE_PARTITION && !gone(&partition)) {
                continue;
            }
            let orphan = outbox.of_partition(&partition);
            match Relay::new(orphan, bus.clone(), RelayConfig::default()).adopted().await {
                Ok(0) => {}
                Ok(published) => {
                    tracing::info!(table = outbox.inner.table, partition = %partition, published, "published what a gone replica left in its outbox")
                }
                Err(err) => {
                    tracing::warn!(table = outbox.inner.table, partition = %partition, error = %err, "cannot relay a gone replica's outbox; will retry")
                }
            }
        }
    }
}

/// The id of an outbox row, from its sort key.
fn pointer_id(sort: &[u8]) -> Option<u64> {
    sort.try_into().ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_outbox_pointer_round_trips() {
        let p = Pointer {
            instance: "i1".into(),
            first: 7,
            last: 9,
        };
        assert_eq!(Pointer::decode(p.encode()), Some(p));
        assert_eq!(Pointer::decode(Bytes::from_static(b"\x00\x00\x00\x09short")), None);
    }
}
