//! The per-instance event log of a service: partition = instance, sort = sequence (big-endian),
//! value = the protobuf [`Envelope`]. Sequences start at 1 and have no gaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cocon_proto::events::v1::Envelope;
use cocon_storage::{Batch, ScanRange, StorageError, Store};
use prost::Message as _;

use crate::outbox::{Appended, Sealed};
use crate::{BusError, Outbox};

#[derive(Clone)]
pub struct EventLog {
    store: Arc<dyn Store>,
    table: &'static str,
    outbox: Outbox,
    /// Last sequence per instance; filled from the log on first use.
    last: Arc<Mutex<HashMap<String, u64>>>,
}

pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, BusError> {
    Envelope::decode(bytes).map_err(|e| BusError::Other(format!("undecodable event: {e}")))
}

impl EventLog {
    /// Opens the log in `table`, with its outbox in `outbox_table`.
    pub async fn open(
        store: Arc<dyn Store>,
        table: &'static str,
        outbox_table: &'static str,
    ) -> Result<EventLog, BusError> {
        let outbox = Outbox::open(store.clone(), outbox_table, table).await?;
        Ok(EventLog {
            store,
            table,
            outbox,
            last: Arc::default(),
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The sequence the next event of `instance` gets. Callers serialise writes per instance
    /// (each service has one committer) and call [`EventLog::forget`] if the commit fails.
    pub async fn next_seq(&self, instance: &str) -> Result<u64, BusError> {
        if let Some(last) = self.last.lock().expect("seq cache poisoned").get(instance) {
            return Ok(last + 1);
        }
        let last = self.last_seq(instance).await?;
        Ok(last + 1)
    }

    /// The last committed sequence of `instance` (0 when it has no event).
    pub async fn last_seq(&self, instance: &str) -> Result<u64, BusError> {
        let rows = self
            .store
            .scan(self.table, instance.as_bytes(), ScanRange::all().reverse(true).limit(1))
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.sort.as_slice().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Records that `seq` was used by a batch about to be committed.
    pub fn advance(&self, instance: &str, seq: u64) {
        self.last
            .lock()
            .expect("seq cache poisoned")
            .insert(instance.to_string(), seq);
    }

    /// Adds to `batch` the removal of every event of `instance` (its data is being erased).
    pub fn delete_instance(&self, batch: &mut Batch, instance: &str) {
        batch.delete_partition(self.table, instance.as_bytes().to_vec());
    }

    /// Drops the cached sequence of `instance`, after a failed commit, so it is re-read.
    pub fn forget(&self, instance: &str) {
        self.last.lock().expect("seq cache poisoned").remove(instance);
    }

    /// Adds the event to the log in `batch`, and notes it in `appended`. Call
    /// [`EventLog::seal`] before committing the batch.
    pub fn append(&self, batch: &mut Batch, appended: &mut Appended, envelope: &Envelope) {
        let encoded = Bytes::from(envelope.encode_to_vec());
        batch.put(
            self.table,
            envelope.instance.as_bytes().to_vec(),
            envelope.seq.to_be_bytes().to_vec(),
            encoded.clone(),
        );
        appended.add(&envelope.instance, envelope.seq, encoded);
    }

    /// Adds to `batch` the outbox pointers to the events appended: the relay publishes them once
    /// the batch is committed (by [`EventLog::commit`], or by the caller, which then gives the
    /// result to [`crate::Outbox::hand_over`] or [`crate::Outbox::committed`]).
    pub fn seal(&self, batch: &mut Batch, appended: Appended) -> Sealed {
        self.outbox.seal(batch, appended)
    }

    /// Commits `batch`, whose events of `instance` end at `last_seq`, and wakes the relay; for
    /// writers serialised per instance whose callers may be cancelled (a request whose client
    /// went away). Once called, the commit runs to its end on a task of its own, and the
    /// sequences count as used before it starts: a caller cancelled while the store commits
    /// can neither leave a committed batch unannounced nor let the instance's next write reuse
    /// its sequences and overwrite its events. If the commit fails, the sequences are re-read.
    pub async fn commit(
        &self,
        store: Arc<dyn Store>,
        instance: &str,
        last_seq: u64,
        batch: Batch,
        sealed: Sealed,
    ) -> Result<(), StorageError> {
        self.advance(instance, last_seq);
        let log = self.clone();
        let instance = instance.to_string();
        tokio::spawn(async move {
            match store.apply(batch).await {
                Ok(()) => {
                    log.outbox.committed(sealed);
                    Ok(())
                }
                Err(err) => {
                    log.forget(&instance);
                    Err(err)
                }
            }
        })
        .await
        .map_err(|e| StorageError::Backend(format!("the commit task failed: {e}")))?
    }

    /// Commits `batch`, holding only the first events of instances nobody can write yet (they
    /// are being created: no sequence of theirs is cached), and wakes the relay. As
    /// [`EventLog::commit`], the commit runs to its end even if the caller is cancelled.
    pub async fn commit_new(&self, store: Arc<dyn Store>, batch: Batch, sealed: Sealed) -> Result<(), StorageError> {
        let log = self.clone();
        tokio::spawn(async move {
            store.apply(batch).await?;
            log.outbox.committed(sealed);
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Backend(format!("the commit task failed: {e}")))?
    }

    /// Events of one instance after `after_seq`, in order.
    pub async fn read(&self, instance: &str, after_seq: u64, limit: usize) -> Result<Vec<Envelope>, BusError> {
        let rows = self
            .store
            .scan(
                self.table,
                instance.as_bytes(),
                ScanRange::between(
                    std::ops::Bound::Excluded(after_seq.to_be_bytes().to_vec()),
                    std::ops::Bound::Unbounded,
                )
                .limit(limit),
            )
            .await?;
        rows.iter().map(|r| decode_envelope(&r.value)).collect()
    }

    /// A page of the whole log, every instance, for rebuilds: (events, cursor for the next page).
    pub async fn scan_all(
        &self,
        after: Option<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> Result<(Vec<Envelope>, Option<(Vec<u8>, Vec<u8>)>), BusError> {
        let rows = self.store.scan_table(self.table, after, limit).await?;
        let next = rows.last().map(|r| (r.partition.clone(), r.sort.clone()));
        let events = rows
            .iter()
            .map(|r| decode_envelope(&r.value))
            .collect::<Result<_, _>>()?;
        Ok((events, next))
    }
}
