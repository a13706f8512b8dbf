//! The transactional outbox. The event log is the outbox's storage: each batch that appends
//! events also writes one small pointer row per instance (instance, first and last sequence), in
//! the same atomic batch, and the [`Relay`] publishes the events those pointers name, deleting a
//! pointer only once the bus has all of its events. Events are stored once, in the log; the
//! outbox costs one row per instance per commit, not one per event. A dead or slow bus makes
//! the outbox grow; it never blocks or slows the write.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cocon_common::Shutdown;
use cocon_storage::{Batch, ScanRange, Store};
use tokio::sync::Notify;

use crate::{BusError, EventBus, Message};
use cocon_proto::events::v1::EnvelopeHead;
use prost::Message as _;

/// Every outbox row lives in one partition, ordered by a monotonic id.
const PARTITION: &[u8] = b"0";

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    store: Arc<dyn Store>,
    table: &'static str,
    /// The event log the pointers refer to.
    log_table: &'static str,
    next_id: AtomicU64,
    notify: Notify,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The events one batch appends, per instance: (first, last) sequence. Sealed into the batch as
/// outbox pointers by [`crate::EventLog::seal`].
#[derive(Debug, Default)]
pub struct Appended {
    pub(crate) ranges: HashMap<String, (u64, u64)>,
}

impl Appended {
    pub(crate) fn add(&mut self, instance: &str, seq: u64) {
        match self.ranges.get_mut(instance) {
            Some((_, last)) => *last = seq,
            None => {
                self.ranges.insert(instance.to_string(), (seq, seq));
            }
        }
    }
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
    pub(crate) async fn open(
        store: Arc<dyn Store>,
        table: &'static str,
        log_table: &'static str,
    ) -> Result<Outbox, BusError> {
        let last = store
            .scan(table, PARTITION, ScanRange::all().reverse(true).limit(1))
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
                next_id: AtomicU64::new(after_last.max(now_us())),
                notify: Notify::new(),
            }),
        })
    }

    /// Adds to `batch` the pointers to the events it appends; they are published once it commits.
    pub(crate) fn seal(&self, batch: &mut Batch, appended: Appended) {
        for (instance, (first, last)) in appended.ranges {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let pointer = Pointer { instance, first, last };
            batch.put(self.inner.table, PARTITION, id.to_be_bytes().to_vec(), pointer.encode());
        }
    }

    /// Wakes the relay; call after committing a batch that was sealed.
    pub fn committed(&self) {
        self.inner.notify.notify_one();
    }

    /// How many events wait to be published (or were, and wait for their pointer's deletion).
    pub async fn backlog(&self) -> Result<u64, BusError> {
        let rows = self
            .inner
            .store
            .scan(self.inner.table, PARTITION, ScanRange::all())
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
    let mut headers = vec![("Cocon-Event-Type".to_string(), envelope.r#type)];
    if !envelope.traceparent.is_empty() {
        headers.push((
            cocon_common::trace_context::TRACEPARENT.to_string(),
            envelope.traceparent,
        ));
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
/// Published rows are deleted in bulk (every `batch` rows, or when the outbox is idle), not one
/// commit per round: until then an in-memory cursor skips them. After a crash they are published
/// again, with the same ids, and JetStream drops the duplicates.
pub struct Relay {
    outbox: Outbox,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    /// The last pointer whose events are all published.
    cursor: Option<Vec<u8>>,
    /// Within the next pointer, the last sequence published (after a partial failure).
    resume_after: Option<u64>,
    published: Vec<Vec<u8>>,
    last_forget: tokio::time::Instant,
}

impl Relay {
    pub fn new(outbox: Outbox, bus: Arc<dyn EventBus>, config: RelayConfig) -> Relay {
        Relay {
            outbox,
            bus,
            config,
            cursor: None,
            resume_after: None,
            published: Vec::new(),
            last_forget: tokio::time::Instant::now(),
        }
    }

    /// Deletes the rows published so far.
    async fn forget_published(&mut self) -> Result<(), BusError> {
        if self.published.is_empty() {
            return Ok(());
        }
        let inner = &self.outbox.inner;
        let mut done = Batch::new();
        for key in self.published.drain(..) {
            done.delete(inner.table, PARTITION, key);
        }
        // Losing these deletions in a crash only re-publishes events JetStream de-duplicates.
        inner.store.apply_relaxed(done).await?;
        self.last_forget = tokio::time::Instant::now();
        Ok(())
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
        // Graceful drain: publish what is left, for a bounded time.
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

    /// Publishes the events of one page of pointers; returns how many were published.
    pub async fn round(&mut self) -> Result<usize, BusError> {
        let inner = &self.outbox.inner;
        let start = match &self.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let range = ScanRange::between(start, Bound::Unbounded).limit(self.config.batch);
        let rows = inner.store.scan(inner.table, PARTITION, range).await?;
        let mut published = 0;
        let mut first_error = None;
        'rows: for row in rows {
            let Some(pointer) = Pointer::decode(row.value.clone()) else {
                tracing::error!(table = inner.table, "dropping an undecodable outbox row");
                self.cursor = Some(row.sort.clone());
                self.published.push(row.sort);
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
            self.published.push(row.sort);
        }
        if self.published.len() >= self.config.batch * 8 {
            self.forget_published().await?;
        }
        match first_error {
            Some(err) if published == 0 => Err(err),
            _ => Ok(published),
        }
    }
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
