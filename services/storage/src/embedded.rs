//! The embedded backend: one redb file on local disk.
//!
//! Why redb: pure Rust (no C toolchain, nothing to install), ACID with copy-on-write B-trees,
//! readers never block the writer (MVCC), and one fsync per commit. redb allows one writer at a
//! time, which suits group commit: a dedicated thread drains every batch waiting, applies them in
//! one write transaction and fsyncs once for all of them.
//!
//! Keys are `u32 BE partition length ++ partition ++ sort`, so a partition's rows are contiguous
//! and ordered by sort key, as in Scylla.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use tokio::sync::oneshot;

use crate::model::{Op, prefix_end};
use crate::{Batch, Result, Row, ScanRange, StorageError, Store, TableRow};

/// The page cache by default: enough for a personal server's working set, small enough for a
/// Raspberry Pi (redb's own default is 1 GiB). `[store] cache_mb` changes it.
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// At most this many batches share one commit, so one commit's latency stays bounded.
const MAX_BATCHES_PER_COMMIT: usize = 4096;

type Bin = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn table(name: &'static str) -> Bin {
    TableDefinition::new(name)
}

enum WriterMsg {
    /// A batch, and whether it must be durable before the reply.
    Batch(Batch, bool, oneshot::Sender<Result<()>>),
    Clear(&'static str, oneshot::Sender<Result<()>>),
}

/// A durable store in one file, shared by every service of the process.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: mpsc::SyncSender<WriterMsg>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`, a file, with the default page cache.
    pub fn open(path: &Path) -> Result<EmbeddedStore> {
        EmbeddedStore::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store at `path`, caching at most `cache_bytes` of its pages in memory.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<EmbeddedStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StorageError::Backend(format!("cannot open the embedded store {}: {e}", path.display())))?;
        let db = Arc::new(db);
        let (writer, rx) = mpsc::sync_channel(MAX_BATCHES_PER_COMMIT);
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("cocon-store-writer".into())
            .spawn(move || write_loop(&writer_db, rx))?;
        Ok(EmbeddedStore { db, writer })
    }

    async fn send(&self, make: impl FnOnce(oneshot::Sender<Result<()>>) -> WriterMsg) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let writer = self.writer.clone();
        let msg = make(tx);
        // The channel is bounded: when the writer is saturated, wait off the async threads.
        if let Err(mpsc::TrySendError::Full(msg)) = writer.try_send(msg) {
            tokio::task::spawn_blocking(move || writer.send(msg))
                .await
                .map_err(|_| StorageError::Closed)?
                .map_err(|_| StorageError::Closed)?;
        }
        rx.await.map_err(|_| StorageError::Closed)?
    }
}

fn key(partition: &[u8], sort: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + partition.len() + sort.len());
    k.extend_from_slice(&(partition.len() as u32).to_be_bytes());
    k.extend_from_slice(partition);
    k.extend_from_slice(sort);
    k
}

fn split_key(k: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(k.get(..4)?.try_into().ok()?) as usize;
    let partition = k.get(4..4 + len)?;
    Some((partition, &k[4 + len..]))
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::backend(e)
}

fn write_loop(db: &Database, rx: mpsc::Receiver<WriterMsg>) {
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        while msgs.len() < MAX_BATCHES_PER_COMMIT {
            match rx.try_recv() {
                Ok(msg) => msgs.push(msg),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let result = commit(db, &msgs);
        metrics::histogram!("cocon_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("cocon_store_commit_batches").record(msgs.len() as f64);
        for msg in msgs {
            let reply = match msg {
                WriterMsg::Batch(_, _, reply) | WriterMsg::Clear(_, reply) => reply,
            };
            let _ = reply.send(result.clone().map_err(StorageError::Backend));
        }
    }
}

/// Applies every message in one write transaction: one fsync for all of them.
fn commit(db: &Database, msgs: &[WriterMsg]) -> std::result::Result<(), String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    // Only relaxed batches in this group: skip the fsync; the next durable commit covers them.
    if msgs.iter().all(|m| matches!(m, WriterMsg::Batch(_, false, _))) {
        txn.set_durability(redb::Durability::None).map_err(|e| e.to_string())?;
    }
    {
        // Each table is opened once per commit, however many rows it gets.
        let mut open: HashMap<&'static str, redb::Table<&'static [u8], &'static [u8]>> = HashMap::new();
        for msg in msgs {
            match msg {
                WriterMsg::Batch(batch, _, _) => {
                    for op in &batch.ops {
                        apply_op(&txn, &mut open, op).map_err(|e| e.to_string())?;
                    }
                }
                WriterMsg::Clear(name, _) => {
                    open.remove(name);
                    txn.delete_table(table(name)).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

fn apply_op<'txn>(
    txn: &'txn redb::WriteTransaction,
    open: &mut HashMap<&'static str, redb::Table<'txn, &'static [u8], &'static [u8]>>,
    op: &Op,
) -> std::result::Result<(), redb::Error> {
    let name = match op {
        Op::Put { table, .. } | Op::Delete { table, .. } | Op::DeletePartition { table, .. } => *table,
    };
    let t = match open.entry(name) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(txn.open_table(table(name))?),
    };
    match op {
        Op::Put {
            partition, sort, value, ..
        } => {
            t.insert(key(partition, sort).as_slice(), value.as_ref())?;
        }
        Op::Delete { partition, sort, .. } => {
            t.remove(key(partition, sort).as_slice())?;
        }
        Op::DeletePartition { partition, .. } => {
            let start = key(partition, b"");
            match prefix_end(&start) {
                Some(end) => t.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?,
                None => t.retain_in(start.as_slice().., |_, _| false)?,
            }
        }
    }
    Ok(())
}

fn bound_key(partition: &[u8], bound: &Bound<Vec<u8>>, is_end: bool) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(s) => Bound::Included(key(partition, s)),
        Bound::Excluded(s) => Bound::Excluded(key(partition, s)),
        Bound::Unbounded if !is_end => Bound::Included(key(partition, b"")),
        Bound::Unbounded => match prefix_end(&key(partition, b"")) {
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        },
    }
}

fn as_slice_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl EmbeddedStore {
    fn read_table<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> std::result::Result<T, redb::StorageError>,
        empty: T,
    ) -> Result<T> {
        let txn = self.db.begin_read().map_err(backend)?;
        match txn.open_table(table(name)) {
            Ok(t) => f(&t).map_err(backend),
            Err(TableError::TableDoesNotExist(_)) => Ok(empty),
            Err(e) => Err(backend(e)),
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, name: &'static str, partition: &[u8], sort: &[u8]) -> Result<Option<Bytes>> {
        let k = key(partition, sort);
        self.read_table(
            name,
            |t| Ok(t.get(k.as_slice())?.map(|v| Bytes::copy_from_slice(v.value()))),
            None,
        )
    }

    async fn scan(&self, name: &'static str, partition: &[u8], range: ScanRange) -> Result<Vec<Row>> {
        if range.limit == 0 {
            return Ok(Vec::new());
        }
        let start = bound_key(partition, &range.start, false);
        let end = bound_key(partition, &range.end, true);
        let skip = 4 + partition.len();
        self.read_table(
            name,
            |t| {
                let iter = t.range::<&[u8]>((as_slice_bound(&start), as_slice_bound(&end)))?;
                let mut rows = Vec::new();
                let mut push = |entry: std::result::Result<_, redb::StorageError>| -> std::result::Result<bool, redb::StorageError> {
                    let (k, v): (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>) = entry?;
                    rows.push(Row {
                        sort: k.value()[skip..].to_vec(),
                        value: Bytes::copy_from_slice(v.value()),
                    });
                    Ok(rows.len() < range.limit)
                };
                if range.reverse {
                    for entry in iter.rev() {
                        if !push(entry)? {
                            break;
                        }
                    }
                } else {
                    for entry in iter {
                        if !push(entry)? {
                            break;
                        }
                    }
                }
                Ok(rows)
            },
            Vec::new(),
        )
    }

    async fn apply(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.send(|reply| WriterMsg::Batch(batch, true, reply)).await
    }

    async fn apply_relaxed(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.send(|reply| WriterMsg::Batch(batch, false, reply)).await
    }

    async fn scan_table(
        &self,
        name: &'static str,
        after: Option<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> Result<Vec<TableRow>> {
        let start = match &after {
            Some((p, s)) => Bound::Excluded(key(p, s)),
            None => Bound::Unbounded,
        };
        self.read_table(
            name,
            |t| {
                let mut rows = Vec::new();
                for entry in t.range::<&[u8]>((as_slice_bound(&start), Bound::Unbounded))? {
                    if rows.len() >= limit {
                        break;
                    }
                    let (k, v) = entry?;
                    let Some((partition, sort)) = split_key(k.value()) else {
                        continue;
                    };
                    rows.push(TableRow {
                        partition: partition.to_vec(),
                        sort: sort.to_vec(),
                        value: Bytes::copy_from_slice(v.value()),
                    });
                }
                Ok(rows)
            },
            Vec::new(),
        )
    }

    async fn clear_table(&self, name: &'static str) -> Result<()> {
        self.send(|reply| WriterMsg::Clear(name, reply)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_embedded_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        crate::testsuite::run_all(&store).await;
    }

    #[tokio::test]
    async fn test_writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            let mut batch = Batch::new();
            batch.put("t", b"p".to_vec(), b"s".to_vec(), Bytes::from_static(b"v"));
            store.apply(batch).await.unwrap();
        }
        // The writer thread of the first handle may still hold the file: wait until it is free.
        let store = loop {
            match EmbeddedStore::open(&path) {
                Ok(store) => break store,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        assert_eq!(store.get("t", b"p", b"s").await.unwrap().as_deref(), Some(&b"v"[..]));
    }
}
