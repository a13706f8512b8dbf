//! The transactional outbox: an event is written to the outbox in the same atomic batch as the
//! state change, and the [`Relay`] publishes it afterwards, deleting it only once the bus has it.
//! A dead or slow bus makes the outbox grow; it never blocks or slows the write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use cocon_common::Shutdown;
use cocon_storage::{Batch, ScanRange, Store};
use tokio::sync::Notify;

use crate::{BusError, EventBus, Message};

/// Every outbox row lives in one partition, ordered by a monotonic id.
const PARTITION: &[u8] = b"0";

#[derive(Clone)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

struct OutboxInner {
    store: Arc<dyn Store>,
    table: &'static str,
    next_id: AtomicU64,
    notify: Notify,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Outbox {
    pub async fn open(store: Arc<dyn Store>, table: &'static str) -> Result<Outbox, BusError> {
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
                next_id: AtomicU64::new(after_last.max(now_us())),
                notify: Notify::new(),
            }),
        })
    }

    /// Adds the message to `batch`; it will be published once the batch is committed.
    pub fn put(&self, batch: &mut Batch, message: &Message) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        batch.put(self.inner.table, PARTITION, id.to_be_bytes().to_vec(), encode(message));
    }

    /// Wakes the relay; call after committing a batch that [`Outbox::put`] wrote to.
    pub fn committed(&self) {
        self.inner.notify.notify_one();
    }

    /// How many events wait to be published.
    pub async fn backlog(&self) -> Result<usize, BusError> {
        Ok(self
            .inner
            .store
            .scan(self.inner.table, PARTITION, ScanRange::all())
            .await?
            .len())
    }
}

fn put_str(buf: &mut BytesMut, s: &str) {
    buf.put_u32(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

fn encode(m: &Message) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + m.subject.len() + m.payload.len());
    put_str(&mut buf, &m.subject);
    put_str(&mut buf, &m.id);
    buf.put_u32(m.headers.len() as u32);
    for (k, v) in &m.headers {
        put_str(&mut buf, k);
        put_str(&mut buf, v);
    }
    buf.put_slice(&m.payload);
    buf.freeze()
}

fn get_str(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 4 {
        return None;
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return None;
    }
    String::from_utf8(buf.split_to(len).to_vec()).ok()
}

fn decode(mut buf: Bytes) -> Option<Message> {
    let subject = get_str(&mut buf)?;
    let id = get_str(&mut buf)?;
    if buf.remaining() < 4 {
        return None;
    }
    let n = buf.get_u32() as usize;
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        headers.push((get_str(&mut buf)?, get_str(&mut buf)?));
    }
    Some(Message {
        subject,
        id,
        headers,
        payload: buf,
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
    cursor: Option<Vec<u8>>,
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

    /// Publishes one page of the outbox; returns how many events were published.
    pub async fn round(&mut self) -> Result<usize, BusError> {
        let inner = &self.outbox.inner;
        let start = match &self.cursor {
            Some(c) => std::ops::Bound::Excluded(c.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let range = ScanRange::between(start, std::ops::Bound::Unbounded).limit(self.config.batch);
        let rows = inner.store.scan(inner.table, PARTITION, range).await?;
        let mut published = 0;
        let mut first_error = None;
        for row in rows {
            let Some(message) = decode(row.value.clone()) else {
                tracing::error!(table = inner.table, "dropping an undecodable outbox row");
                self.cursor = Some(row.sort.clone());
                self.published.push(row.sort);
                continue;
            };
            match self.bus.publish(message).await {
                Ok(()) => {
                    published += 1;
                    self.cursor = Some(row.sort.clone());
                    self.published.push(row.sort);
                }
                Err(err) => {
                    // Stop at the first failure, so events stay in order.
                    first_error = Some(err);
                    break;
                }
            }
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
    fn test_outbox_row_round_trips() {
        let m = Message {
            subject: "cocon.documents.i.io:cozy:notes.created".into(),
            id: "documents:i:7".into(),
            headers: vec![("traceparent".into(), "00-abc-def-01".into())],
            payload: Bytes::from_static(b"\x00\x01payload"),
        };
        assert_eq!(decode(encode(&m)), Some(m));
        assert_eq!(decode(Bytes::from_static(b"\x00\x00\x00\x09short")), None);
    }
}
