//! The embedded backend: one redb file on local disk, made durable by a write-ahead log.
//!
//! Why redb: pure Rust (no C toolchain, nothing to install), ACID with copy-on-write B-trees,
//! readers never block the writer (MVCC). redb allows one writer at a time, which suits group
//! commit: a dedicated thread drains every batch waiting, applies them to its open transaction
//! and appends them to the write-ahead log as one record with one `fdatasync`. The transaction
//! commits without durability a few milliseconds later, or as soon as a read must see what it
//! holds; checkpoints make redb itself durable now and then (see [`crate::wal`]).
//!
//! Keys are `u32 BE partition length ++ partition ++ sort`, so a partition's rows are contiguous
//! and ordered by sort key, as in Scylla.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, TableDefinition, TableError};
use tokio::sync::oneshot;

use crate::model::{Op, prefix_end};
use crate::space::FreeSpace;
use crate::wal::{self, LoggedOp, Wal};
use crate::{Batch, Result, Row, ScanRange, StorageError, Store, TableRow};

/// The page cache by default: enough for a personal server's working set, small enough for a
/// Raspberry Pi (redb's own default is 1 GiB). `[store] cache_mb` changes it.
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// At most this many batches share one log record, so one group's latency stays bounded.
const MAX_BATCHES_PER_GROUP: usize = 4096;

/// Logged groups wait in redb's open write transaction at most this long before it commits
/// and readers see them; a read that must see them commits it at once. Under a steady stream
/// of writes one commit (copying each touched table's path of pages) serves many groups.
const COMMIT_WITHIN: Duration = Duration::from_millis(5);
/// … and at most this many batches.
const MAX_BATCHES_PER_TXN: usize = 1024;

/// A store with logged writes and none for this long checkpoints, so a restart replays little.
const CHECKPOINT_WHEN_IDLE: Duration = Duration::from_millis(500);

/// How long a read waits for a store reopening after a full disk before it answers 503.
const REOPEN_WAIT: Duration = Duration::from_secs(5);
/// A store broken down by a full disk tries to reopen this often, once this much is free
/// (or the watermark, if higher): enough for redb to repair and checkpoint the log.
const RECOVER_EVERY: Duration = Duration::from_secs(1);
const RECOVERY_ROOM: u64 = 4 * wal::CHECKPOINT_AT;

type Bin = TableDefinition<'static, &'static [u8], &'static [u8]>;

fn table(name: &'static str) -> Bin {
    TableDefinition::new(name)
}

enum WriterMsg {
    /// A batch, and whether it must be durable before the reply.
    Batch(Batch, bool, oneshot::Sender<Result<()>>),
    Clear(&'static str, oneshot::Sender<Result<()>>),
    /// A reader waits for acknowledged writes: commit the open transaction now.
    Flush,
    /// The last handle is gone: checkpoint and exit.
    Stop,
}

/// What readers know of the writer: a read must see every write acknowledged before it
/// started, and acknowledged writes may still wait in the writer's open transaction.
#[derive(Default)]
struct Visibility {
    /// Groups acknowledged so far (logged; durable when asked).
    logged: AtomicU64,
    /// Groups committed to redb so far: what readers see.
    committed: AtomicU64,
    /// Wakes readers waiting for a commit.
    notify: tokio::sync::Notify,
    /// Set when acknowledged writes cannot be made visible: reads fail until the log is
    /// replayed (by a restart, or in process after a full disk), rather than answer without them.
    broken: ArcSwapOption<GroupError>,
}

/// A batch of a group being logged, then kept in the open transaction until it commits.
enum Kept {
    Batch(Batch),
    Clear(&'static str),
}

impl Kept {
    fn ops(&self) -> impl Iterator<Item = LoggedOp<'_>> {
        let (ops, clear) = match self {
            Kept::Batch(batch) => (batch.ops.as_slice(), None),
            Kept::Clear(name) => (&[][..], Some(LoggedOp::Clear(name))),
        };
        ops.iter().map(LoggedOp::Op).chain(clear)
    }
}

/// Readers waiting for the writer's next commit would wait forever if it panicked.
struct BreakReadsOnPanic(Arc<Visibility>);

impl Drop for BreakReadsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.broken.store(Some(Arc::new(GroupError::Broken(
                "the store's writer stopped; restart cocon".into(),
            ))));
            self.0.notify.notify_waiters();
        }
    }
}

/// redb's write transaction between commits, and the logged batches it holds.
struct OpenTxn {
    txn: redb::WriteTransaction,
    since: Instant,
    kept: Vec<Kept>,
}

/// A durable store in one file, shared by every service of the process.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// redb's file, shared with the writer; `None` while it reopens it.
    db: Arc<ArcSwapOption<Database>>,
    vis: Arc<Visibility>,
    /// The free-space watermark of the store's filesystem.
    space: FreeSpace,
    writer: mpsc::SyncSender<WriterMsg>,
    thread: Option<JoinHandle<()>>,
    recovered: usize,
}

impl Drop for Inner {
    /// Waits for the writer's final checkpoint, so the file is closed (and can be reopened) and
    /// the next start has no log to replay.
    fn drop(&mut self) {
        let _ = self.writer.send(WriterMsg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`, a file, with the default page cache.
    pub fn open(path: &Path) -> Result<EmbeddedStore> {
        EmbeddedStore::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store at `path`, caching at most `cache_bytes` of its pages in
    /// memory, and replays what its write-ahead log holds beyond the last checkpoint.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<EmbeddedStore> {
        EmbeddedStore::open_with_options(path, cache_bytes, 0)
    }

    /// As [`EmbeddedStore::open_with_cache`], refusing batches that add data while less than
    /// `min_free_bytes` are free on the store's filesystem (0: no watermark).
    pub fn open_with_options(path: &Path, cache_bytes: usize, min_free_bytes: u64) -> Result<EmbeddedStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StorageError::Backend(format!("cannot open the embedded store {}: {e}", path.display())))?;
        let wal_path = wal::path_for(path);
        let wal = Wal::open(&wal_path).map_err(|e| {
            StorageError::Backend(format!("cannot open the write-ahead log {}: {e}", wal_path.display()))
        })?;
        let vis = Arc::new(Visibility::default());
        let space_dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let db = Arc::new(db);
        let mut writer = Writer {
            db: Some(db.clone()),
            shared: Arc::new(ArcSwapOption::new(Some(db))),
            path: path.to_path_buf(),
            cache_bytes,
            space: FreeSpace::new(space_dir, min_free_bytes),
            recovery_room: min_free_bytes.max(RECOVERY_ROOM),
            last_recovery: Instant::now(),
            wal,
            broken: None,
            full_disk_seen: false,
            vis: vis.clone(),
            open: None,
            logged: 0,
        };
        let recovered = writer
            .recover()
            .map_err(|e| StorageError::Backend(format!("cannot recover the embedded store {}: {e}", path.display())))?;
        let db = writer.shared.clone();
        let (tx, rx) = mpsc::sync_channel(MAX_BATCHES_PER_GROUP);
        let thread = std::thread::Builder::new()
            .name("cocon-store-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                vis,
                space: FreeSpace::new(space_dir, min_free_bytes),
                writer: tx,
                thread: Some(thread),
                recovered,
            }),
        })
    }

    /// How many write-ahead log records the open replayed: non-zero after a crash.
    pub fn recovered_records(&self) -> usize {
        self.inner.recovered
    }

    async fn send(&self, make: impl FnOnce(oneshot::Sender<Result<()>>) -> WriterMsg) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let writer = self.inner.writer.clone();
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

    /// Waits until every write acknowledged before this call is visible to readers.
    async fn visible(&self) -> Result<()> {
        let vis = &self.inner.vis;
        let want = vis.logged.load(Ordering::Acquire);
        // The common case, without touching the waiters' list.
        if vis.committed.load(Ordering::Acquire) >= want
            && vis.broken.load().is_none()
            && self.inner.db.load().is_some()
        {
            return Ok(());
        }
        let mut asked = false;
        // A store reopening after a full disk has its log to replay first: its readers wait
        // for that (a moment) rather than read the file without it.
        let reopening_until = tokio::time::Instant::now() + REOPEN_WAIT;
        loop {
            let notified = vis.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(why) = vis.broken.load_full() {
                return Err(GroupError::clone(&why).into_storage());
            }
            if self.inner.db.load().is_none() {
                if tokio::time::timeout_at(reopening_until, notified).await.is_err() {
                    return Err(StorageError::Unavailable(
                        "the store is reopening after a full disk; try again in a moment".into(),
                    ));
                }
                continue;
            }
            if vis.committed.load(Ordering::Acquire) >= want {
                return Ok(());
            }
            if !asked {
                // A full channel means a busy writer, which commits within COMMIT_WITHIN anyway.
                if let Err(mpsc::TrySendError::Disconnected(_)) = self.inner.writer.try_send(WriterMsg::Flush) {
                    return Err(StorageError::Closed);
                }
                asked = true;
            }
            notified.await;
        }
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

/// Why a group of batches was refused, told to each of its callers.
#[derive(Debug, Clone)]
enum GroupError {
    /// The disk is full: nothing was written, and later writes may pass.
    Full(String),
    /// The group was refused (the store may be broken down until a restart).
    Broken(String),
}

impl GroupError {
    fn into_storage(self) -> StorageError {
        match self {
            GroupError::Full(why) => StorageError::InsufficientStorage(why),
            GroupError::Broken(why) => StorageError::Backend(why),
        }
    }
}

/// The store's only writer, on its own thread.
struct Writer {
    /// redb's file; `None` only while a store broken down by a full disk reopens it.
    db: Option<Arc<Database>>,
    /// The same, for readers.
    shared: Arc<ArcSwapOption<Database>>,
    path: PathBuf,
    cache_bytes: usize,
    space: FreeSpace,
    /// What must be free before a store broken down by a full disk reopens.
    recovery_room: u64,
    last_recovery: Instant,
    wal: Wal,
    /// Set when the log and redb may disagree (a log write or a commit failed half-way): writes
    /// get this refusal until the log is replayed, which settles what is durable. `Full` when a
    /// full disk caused it (507, and the writer recovers by itself).
    broken: Option<GroupError>,
    /// redb failed a write for want of space; it then answers `PreviousIo` until reopened.
    full_disk_seen: bool,
    vis: Arc<Visibility>,
    /// The transaction logged groups wait in until it commits.
    open: Option<OpenTxn>,
    /// Groups logged so far.
    logged: u64,
}

impl Writer {
    /// Replays the records the last checkpoint does not cover, then checkpoints, so the log
    /// starts a new epoch (an epoch is never reused: see [`crate::wal`]).
    fn recover(&mut self) -> std::result::Result<usize, String> {
        let epoch = self.durable_epoch().map_err(|e| e.to_string())?;
        let records = match epoch {
            // A store that never checkpointed has never logged either.
            None => Vec::new(),
            Some(epoch) => self.wal.replay(epoch).map_err(|e| e.to_string())?,
        };
        let next = epoch.unwrap_or(0) + 1;
        self.durable_commit(records.iter().flatten().map(|op| op.as_logged()), next)
            .map_err(|e| e.to_string())?;
        self.wal.restart(next);
        if !records.is_empty() {
            tracing::info!(records = records.len(), "replayed the store's write-ahead log");
        }
        Ok(records.len())
    }

    fn durable_epoch(&self) -> std::result::Result<Option<u64>, redb::Error> {
        let txn = self.db()?.begin_read()?;
        let t = match txn.open_table(table(wal::META_TABLE)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(key(b"", wal::EPOCH_KEY).as_slice())?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
    }

    fn run(mut self, rx: mpsc::Receiver<WriterMsg>) {
        let _reads = BreakReadsOnPanic(self.vis.clone());
        loop {
            if self.broken_by_full_disk() && self.last_recovery.elapsed() >= RECOVER_EVERY {
                self.try_recover();
            }
            let wait = match &self.open {
                _ if self.broken_by_full_disk() => Some(RECOVER_EVERY.saturating_sub(self.last_recovery.elapsed())),
                Some(open) => Some(COMMIT_WITHIN.saturating_sub(open.since.elapsed())),
                None if self.wal.len() > 0 => Some(CHECKPOINT_WHEN_IDLE),
                None => None,
            };
            let first = match wait {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.broken_by_full_disk() {
                            continue;
                        }
                        if self.open.is_some() {
                            self.commit_open();
                        } else {
                            self.checkpoint();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            let (mut stop, mut flush, mut durable) = (false, false, false);
            let mut group = Vec::new();
            let mut replies = Vec::new();
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    WriterMsg::Stop => stop = true,
                    WriterMsg::Flush => flush = true,
                    WriterMsg::Batch(batch, must_sync, reply) => {
                        durable |= must_sync;
                        group.push(Kept::Batch(batch));
                        replies.push(reply);
                    }
                    WriterMsg::Clear(name, reply) => {
                        durable = true;
                        group.push(Kept::Clear(name));
                        replies.push(reply);
                    }
                }
                if !stop && group.len() < MAX_BATCHES_PER_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if !group.is_empty() {
                let started = Instant::now();
                let result = self.log_group(&group, durable);
                metrics::histogram!("cocon_store_log_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("cocon_store_log_batches").record(group.len() as f64);
                for reply in replies {
                    let _ = reply.send(result.clone().map_err(GroupError::into_storage));
                }
                if let (Ok(()), Some(open)) = (&result, &mut self.open) {
                    open.kept.extend(group);
                }
            }
            let due = self.open.as_ref().is_some_and(|open| {
                flush
                    || stop
                    || open.since.elapsed() >= COMMIT_WITHIN
                    || open.kept.len() >= MAX_BATCHES_PER_TXN
                    || self.wal.len() >= wal::CHECKPOINT_AT
            });
            if due {
                self.commit_open();
            }
            if stop {
                break;
            }
            if self.wal.len() >= wal::CHECKPOINT_AT {
                self.checkpoint();
            }
        }
        self.commit_open();
        if self.wal.len() > 0 {
            self.checkpoint();
        }
    }

    /// Applies a group of batches to the open transaction and logs them as one record (one
    /// `fdatasync` if any must be `durable`; otherwise the next durable record's covers it). The
    /// transaction commits later ([`Self::commit_open`]): readers never see a write that is not
    /// durable yet.
    fn log_group(&mut self, group: &[Kept], durable: bool) -> std::result::Result<(), GroupError> {
        if let Some(refusal) = &self.broken {
            return Err(refusal.clone());
        }
        let open = match &mut self.open {
            Some(open) => open,
            None => {
                let began = self.db().and_then(|db| Ok(db.begin_write()?));
                let txn = began.and_then(|mut txn| {
                    txn.set_durability(redb::Durability::None)?;
                    Ok(txn)
                });
                let txn = match txn {
                    Ok(txn) => txn,
                    Err(e) => return Err(self.refused(e)),
                };
                self.open.insert(OpenTxn {
                    txn,
                    since: Instant::now(),
                    kept: Vec::new(),
                })
            }
        };
        if let Err(e) = apply_all(&open.txn, group.iter().flat_map(Kept::ops)) {
            // Nothing of this group was logged; the transaction may hold part of it.
            let refused = self.refused(e);
            self.reopen();
            return Err(refused);
        }
        let offset = self.wal.len();
        let appended = self
            .wal
            .append(group.iter().flat_map(Kept::ops))
            .and_then(|()| if durable { self.wal.sync() } else { Ok(()) });
        if let Err(e) = appended {
            self.reopen();
            if crate::space::is_full(&e) {
                // Nothing was acknowledged: the next record goes where this one would have, and
                // writes resume once space returns, without a restart.
                self.wal.forget_from(offset);
                tracing::warn!(error = %e, "the disk is full: a write was refused");
                return Err(GroupError::Full(format!(
                    "the server's disk is full ({e}): writes are refused until the operator frees space"
                )));
            }
            return Err(GroupError::Broken(
                self.break_down(format!("the store's write-ahead log failed: {e}"), false),
            ));
        }
        self.logged += 1;
        self.vis.logged.store(self.logged, Ordering::Release);
        Ok(())
    }

    /// Commits the open transaction: the groups it holds become visible.
    fn commit_open(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let started = Instant::now();
        let batches = open.kept.len();
        match open.txn.commit() {
            Ok(()) => {
                metrics::histogram!("cocon_store_commit_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("cocon_store_commit_batches").record(batches as f64);
                self.show_logged();
            }
            Err(e) => {
                let e = redb::Error::from(e);
                let full = self.is_full_disk(&e);
                let why = self.break_down(format!("a logged commit failed: {e}"), full);
                self.break_reads(why, full);
            }
        }
    }

    /// Drops the open transaction, which holds part of a refused group, and commits the logged
    /// groups it held in a new one.
    fn reopen(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        drop(open.txn);
        let redo = || -> std::result::Result<(), redb::Error> {
            let mut txn = self.db()?.begin_write()?;
            txn.set_durability(redb::Durability::None)?;
            apply_all(&txn, open.kept.iter().flat_map(Kept::ops))?;
            txn.commit()?;
            Ok(())
        };
        match redo() {
            Ok(()) => self.show_logged(),
            Err(e) => {
                let full = self.is_full_disk(&e);
                let why = self.break_down(format!("cannot re-apply logged writes: {e}"), full);
                self.break_reads(why, full);
            }
        }
    }

    fn show_logged(&self) {
        self.vis.committed.store(self.logged, Ordering::Release);
        self.vis.notify.notify_waiters();
    }

    /// Reads fail until the log is replayed: with 507 after a full disk (writes resume by
    /// themselves), with 500 after any other failure.
    fn break_reads(&self, why: String, full_disk: bool) {
        let why = match full_disk {
            true => GroupError::Full(why),
            false => GroupError::Broken(why),
        };
        self.vis.broken.store(Some(Arc::new(why)));
        self.vis.notify.notify_waiters();
    }

    /// A durable redb commit: it covers every commit before it, so the log starts over.
    fn checkpoint(&mut self) {
        self.commit_open();
        if self.broken.is_some() {
            return;
        }
        let started = Instant::now();
        let next = self.wal.epoch() + 1;
        match self.durable_commit(std::iter::empty(), next) {
            Ok(()) => {
                metrics::histogram!("cocon_store_checkpoint_seconds").record(started.elapsed().as_secs_f64());
                metrics::histogram!("cocon_store_checkpoint_log_bytes").record(self.wal.len() as f64);
                self.wal.restart(next);
            }
            Err(e) => {
                let full = self.is_full_disk(&e);
                self.break_down(format!("a checkpoint failed: {e}"), full);
            }
        }
    }

    /// Applies `ops` and records `epoch` as the log's new epoch in one durable redb commit, which
    /// also makes every earlier non-durable commit durable.
    fn durable_commit<'a>(
        &self,
        ops: impl Iterator<Item = LoggedOp<'a>>,
        epoch: u64,
    ) -> std::result::Result<(), redb::Error> {
        let epoch_row = Op::Put {
            table: wal::META_TABLE,
            partition: Vec::new(),
            sort: wal::EPOCH_KEY.to_vec(),
            value: Bytes::copy_from_slice(&epoch.to_le_bytes()),
        };
        let txn = self.db()?.begin_write()?;
        apply_all(&txn, ops)?;
        apply_all(&txn, std::iter::once(LoggedOp::Op(&epoch_row)))?;
        txn.commit()?;
        Ok(())
    }

    fn db(&self) -> std::result::Result<&Database, redb::Error> {
        self.db
            .as_deref()
            .ok_or_else(|| redb::Error::Io(std::io::Error::other("the store's file is being reopened")))
    }

    /// A store broken down by a full disk reopens redb (which latches an I/O failure until
    /// then) and replays the log once space is back, so writes resume without a restart.
    fn try_recover(&mut self) {
        self.last_recovery = Instant::now();
        match self.space.available() {
            Ok(free) if free >= self.recovery_room => {}
            _ => return,
        }
        // The open transaction, if any, belongs to the failed file; the log holds its groups.
        self.open = None;
        self.db = None;
        if !self.close_shared() {
            return;
        }
        let reopened = Database::builder().set_cache_size(self.cache_bytes).create(&self.path);
        match reopened {
            // Readers get the file once the log is replayed into it, not before: without the
            // log it lacks the last acknowledged writes.
            Ok(db) => self.db = Some(Arc::new(db)),
            Err(e) => {
                tracing::warn!(error = %e, "the store cannot reopen yet after a full disk");
                return;
            }
        }
        match self.recover() {
            Ok(records) => {
                self.shared.store(self.db.clone());
                self.broken = None;
                self.full_disk_seen = false;
                self.vis.broken.store(None);
                self.show_logged();
                tracing::info!(
                    records,
                    "space is back: the store replayed its log and takes writes again"
                );
            }
            Err(e) => tracing::warn!(error = %e, "the store cannot replay its log yet after a full disk"),
        }
    }

    /// Waits (boundedly) for readers to let go of the failed file, so it can be reopened.
    fn close_shared(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // Readers hold the file only within one read; they fail fast on a latched file.
            if let Some(db) = self.shared.swap(None) {
                match Arc::try_unwrap(db) {
                    Ok(db) => drop(db),
                    Err(db) => {
                        self.shared.store(Some(db));
                        if Instant::now() > deadline {
                            return false;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                }
            }
            return true;
        }
    }

    /// Whether `e` comes from a full disk, directly or as the `PreviousIo` redb answers after one.
    fn is_full_disk(&mut self, e: &redb::Error) -> bool {
        match e {
            redb::Error::Io(io) if crate::space::is_full(io) => self.full_disk_seen = true,
            redb::Error::PreviousIo => {}
            _ => return false,
        }
        self.full_disk_seen
    }

    /// Why a group was refused by redb, before anything of it was logged.
    fn refused(&mut self, e: redb::Error) -> GroupError {
        match self.is_full_disk(&e) {
            true => GroupError::Full(format!(
                "the server's disk is full ({e}): writes are refused until the operator frees space"
            )),
            false => GroupError::Broken(e.to_string()),
        }
    }

    /// Refuses every later write: redb latches an I/O failure (its file must be reopened), and
    /// the log holds every acknowledged write. After a full disk the writer reopens the file
    /// and replays the log itself once space is back ([`Self::try_recover`]); after any other
    /// failure a restart does.
    fn break_down(&mut self, why: String, full_disk: bool) -> String {
        let why = match full_disk {
            true => {
                format!("the server's disk filled up: {why}; writes resume by themselves once space is freed on it")
            }
            false => format!("{why}; restart cocon to recover from the write-ahead log"),
        };
        tracing::error!(error = %why, "the embedded store refuses writes");
        self.broken = Some(match full_disk {
            true => GroupError::Full(why.clone()),
            false => GroupError::Broken(why.clone()),
        });
        why
    }

    fn broken_by_full_disk(&self) -> bool {
        matches!(self.broken, Some(GroupError::Full(_)))
    }
}

fn apply_all<'a>(
    txn: &redb::WriteTransaction,
    ops: impl Iterator<Item = LoggedOp<'a>>,
) -> std::result::Result<(), redb::Error> {
    // Each table is opened once, however many rows it gets.
    let mut open = HashMap::new();
    for op in ops {
        apply_logged(txn, &mut open, &op)?;
    }
    Ok(())
}

type OpenTables<'txn> = HashMap<&'static str, redb::Table<'txn, &'static [u8], &'static [u8]>>;

fn apply_logged<'txn>(
    txn: &'txn redb::WriteTransaction,
    open: &mut OpenTables<'txn>,
    op: &LoggedOp<'_>,
) -> std::result::Result<(), redb::Error> {
    let op = match op {
        LoggedOp::Op(op) => op,
        LoggedOp::Clear(name) => {
            open.remove(name);
            txn.delete_table(table(name))?;
            return Ok(());
        }
    };
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
        let db = self.inner.db.load();
        let Some(db) = db.as_ref() else {
            return Err(StorageError::Unavailable(
                "the store is reopening after a full disk; try again in a moment".into(),
            ));
        };
        let txn = db.begin_read().map_err(backend)?;
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
        self.visible().await?;
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
        self.visible().await?;
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
        if batch.adds_data() {
            self.inner.space.check()?;
        }
        self.send(|reply| WriterMsg::Batch(batch, true, reply)).await
    }

    async fn apply_relaxed(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.adds_data() {
            self.inner.space.check()?;
        }
        self.send(|reply| WriterMsg::Batch(batch, false, reply)).await
    }

    async fn scan_table(
        &self,
        name: &'static str,
        after: Option<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> Result<Vec<TableRow>> {
        self.visible().await?;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn test_reads_see_every_acknowledged_write_while_the_transaction_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        let tasks: Vec<_> = (0..16u32)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..50u32 {
                        let sort = format!("{t}-{i}").into_bytes();
                        let mut batch = Batch::new();
                        batch.put("t", b"p".to_vec(), sort.clone(), Bytes::from(sort.clone()));
                        store.apply(batch).await.unwrap();
                        let got = store.get("t", b"p", &sort).await.unwrap();
                        assert_eq!(
                            got.as_deref(),
                            Some(sort.as_slice()),
                            "a read missed an acknowledged write"
                        );
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let rows = store.scan("t", b"p", ScanRange::all()).await.unwrap();
        assert_eq!(rows.len(), 16 * 50);
    }

    #[tokio::test]
    async fn test_logged_writes_commit_without_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
        let mut batch = Batch::new();
        batch.put("t", b"p".to_vec(), b"s".to_vec(), Bytes::from_static(b"v"));
        store.apply(batch).await.unwrap();
        let vis = &store.inner.vis;
        let logged = vis.logged.load(Ordering::Acquire);
        assert!(logged > 0);
        // The writer commits on its own within COMMIT_WITHIN; wait for it, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        while vis.committed.load(Ordering::Acquire) < logged {
            assert!(Instant::now() < deadline, "the open transaction never committed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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
        // Dropping the last handle checkpointed and closed the file: nothing to replay.
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.recovered_records(), 0);
        assert_eq!(store.get("t", b"p", b"s").await.unwrap().as_deref(), Some(&b"v"[..]));
    }
}
