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
    last: Arc<Mutex<LastSeqs>>,
}

/// How many instances' last sequences a log keeps in memory (about 100 bytes each). Past it the
/// least recently written are read from the log again: a host of a million instances does not
/// hold them all, and a busy instance is never re-read.
const LAST_SEQS_KEPT: usize = 65_536;

/// Each instance's last sequence, as far as the writers know.
struct LastSeqs {
    /// Of commits under way: never evicted, since the store may not show them yet, and a
    /// sequence re-read from it then would be given twice. (last sequence, commits running)
    running: HashMap<String, (u64, u32)>,
    /// Of committed writes, the most recently used.
    recent: quick_cache::unsync::Cache<String, u64>,
}

impl Default for LastSeqs {
    fn default() -> Self {
        LastSeqs::keeping(LAST_SEQS_KEPT)
    }
}

impl LastSeqs {
    fn keeping(recent: usize) -> LastSeqs {
        LastSeqs {
            running: HashMap::new(),
            recent: quick_cache::unsync::Cache::new(recent),
        }
    }

    fn get(&self, instance: &str) -> Option<u64> {
        match self.running.get(instance) {
            Some((last, _)) => Some(*last),
            None => self.recent.get(instance).copied(),
        }
    }

    fn began(&mut self, instance: &str, last: u64) {
        match self.running.get_mut(instance) {
            Some(entry) => *entry = (entry.0.max(last), entry.1 + 1),
            None => {
                self.running.insert(instance.to_string(), (last, 1));
            }
        }
    }

    /// A commit begun with [`LastSeqs::began`] ended; `ok`: the store has it.
    fn ended(&mut self, instance: &str, ok: bool) {
        let Some((_, running)) = self.running.get_mut(instance) else {
            return;
        };
        *running -= 1;
        if *running > 0 {
            return;
        }
        let (instance, (last, _)) = self.running.remove_entry(instance).expect("found above");
        if ok {
            self.recent.insert(instance, last);
        } else {
            self.recent.remove(instance.as_str());
        }
    }
}

pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, BusError> {
    Envelope::decode(bytes).map_err(|e| BusError::Other(format!("undecodable event: {e}")))
}

impl EventLog {
    /// Opens the log in `table`, with its outbox in `outbox_table`, for a writer alone on its
    /// store.
    pub async fn open(
        store: Arc<dyn Store>,
        table: &'static str,
        outbox_table: &'static str,
    ) -> Result<EventLog, BusError> {
        EventLog::open_shared(store, table, outbox_table, crate::outbox::SOLE_PARTITION).await
    }

    /// Opens the log for one of several writers sharing the store (replicas owning different
    /// instances), its outbox rows in `partition`, one per writer.
    pub async fn open_shared(
        store: Arc<dyn Store>,
        table: &'static str,
        outbox_table: &'static str,
        partition: &str,
    ) -> Result<EventLog, BusError> {
        let outbox = Outbox::open(store.clone(), outbox_table, table, partition).await?;
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

    /// Records that `seq` was used by a batch the store has committed.
    pub fn advance(&self, instance: &str, seq: u64) {
        self.last
            .lock()
            .expect("seq cache poisoned")
            .recent
            .insert(instance.to_string(), seq);
    }

    /// Adds to `batch` the removal of every event of `instance` (its data is being erased).
    pub fn delete_instance(&self, batch: &mut Batch, instance: &str) {
        batch.delete_partition(self.table, instance.as_bytes().to_vec());
    }

    /// Drops the cached sequences of every instance not being committed, so they are read
    /// again from the store: another writer sharing it may have written them (this one just
    /// took over some instances).
    pub fn forget_all(&self) {
        self.last.lock().expect("seq cache poisoned").recent.clear();
    }

    /// Drops the cached sequence of `instance`, after a failed commit, so it is re-read.
    pub fn forget(&self, instance: &str) {
        self.last.lock().expect("seq cache poisoned").recent.remove(instance);
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
        self.last.lock().expect("seq cache poisoned").began(instance, last_seq);
        let log = self.clone();
        let instance = instance.to_string();
        tokio::spawn(async move {
            let applied = store.apply(batch).await;
            let ok = applied.is_ok();
            log.last.lock().expect("seq cache poisoned").ended(&instance, ok);
            if ok {
                log.outbox.committed(sealed);
            }
            applied
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

#[cfg(test)]
mod tests {
    use super::LastSeqs;

    /// However many instances write, a commit under way keeps its sequence (the store may not
    /// show it yet); once committed it is one of the recent ones, evicted like any other.
    #[test]
    fn test_a_running_commit_keeps_its_sequence_past_the_cache() {
        let mut seqs = LastSeqs::keeping(100);
        seqs.began("busy", 7);
        for i in 0..10_000 {
            let other = format!("i{i}");
            seqs.began(&other, 1);
            seqs.ended(&other, true);
        }
        assert_eq!(
            seqs.get("busy"),
            Some(7),
            "a running commit's sequence is never dropped"
        );
        assert!(seqs.get("i9999").is_some(), "the most recent are kept");
        assert!((0..10_000).filter(|i| seqs.get(&format!("i{i}")).is_some()).count() <= 100);
        // Two commits of one instance under way: the later sequence stands until both end.
        seqs.began("busy", 9);
        seqs.ended("busy", true);
        assert_eq!(seqs.get("busy"), Some(9));
        seqs.ended("busy", true);
        assert_eq!(seqs.get("busy"), Some(9));
        // A failed commit's sequence is forgotten: the next writer reads the store.
        seqs.began("failed", 3);
        seqs.ended("failed", false);
        assert_eq!(seqs.get("failed"), None);
    }
}
