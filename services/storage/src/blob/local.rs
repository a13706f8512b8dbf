//! Blobs as files under a directory on local disk: `objects/<key>`. A blob is written to
//! `tmp/` first, fsynced, then renamed into place and its directory fsynced, so a blob is either
//! absent or whole and durable, whatever the crash.
//!
//! One process owns the directory: at open, whatever is left in `tmp/` belongs to writes that
//! died with an earlier process and is removed.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::direct::BlockFile;
use super::{BlobEntry, BlobStore, BlobWriter, ByteStream, Written, check_key, check_prefix};
use crate::aligned::aligned_block;
use crate::{Result, StorageError};

/// Writes reach the disk in blocks of this size (one blocking-pool hop each).
const WRITE_BLOCK: usize = 1 << 20;
/// Reads come back in chunks of this size.
const READ_CHUNK: usize = 256 << 10;

#[derive(Clone)]
pub struct LocalBlobs {
    inner: Arc<Dirs>,
}

struct Dirs {
    /// The free-space watermark of the directory's filesystem.
    space: crate::space::FreeSpace,
    objects: PathBuf,
    tmp: PathBuf,
    /// New blobs' blocks are written past the page cache (see `direct`), until the filesystem
    /// refuses it.
    direct: Arc<AtomicBool>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> Result<T> {
    joined(tokio::task::spawn_blocking(f)).await
}

/// The result of a task on the blocking pool.
async fn joined<T>(task: tokio::task::JoinHandle<std::io::Result<T>>) -> Result<T> {
    task.await
        .map_err(|e| StorageError::Backend(format!("blob task failed: {e}")))?
        .map_err(StorageError::Io)
}

/// Creates `dir` and its missing parents, fsyncing each parent that gained an entry, so the
/// new directories survive a crash along with the blob renamed into them.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl LocalBlobs {
    pub fn open(root: &Path) -> Result<LocalBlobs> {
        let objects = root.join("objects");
        let tmp = root.join("tmp");
        ensure_dir(&objects)?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        ensure_dir(&tmp)?;
        Ok(LocalBlobs {
            inner: Arc::new(Dirs {
                space: crate::space::FreeSpace::new(root, 0),
                objects,
                tmp,
                direct: Arc::new(AtomicBool::new(true)),
            }),
        })
    }

    /// Refuses new contents while less than `bytes` are free on the directory's filesystem
    /// (0: no watermark), so a full disk never fails the metadata's commit halfway.
    pub fn min_free(self, bytes: u64) -> LocalBlobs {
        let root = self.inner.objects.parent().unwrap_or(Path::new(".")).to_path_buf();
        let dirs = Dirs {
            space: crate::space::FreeSpace::new(&root, bytes),
            objects: self.inner.objects.clone(),
            tmp: self.inner.tmp.clone(),
            direct: self.inner.direct.clone(),
        };
        LocalBlobs { inner: Arc::new(dirs) }
    }

    /// Whether new blobs' full blocks are written past the page cache (`O_DIRECT`, the default
    /// where the filesystem allows it). Off, every write goes through the cache: a file just
    /// uploaded is then read back from memory, at the cost of the copy into it.
    pub fn direct_io(self, on: bool) -> LocalBlobs {
        self.inner.direct.store(on, Ordering::Relaxed);
        self
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.inner.objects.join(key))
    }

    fn tmp_path(&self) -> PathBuf {
        self.inner.tmp.join(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// Reads the next chunk, at most `remaining` bytes, on the blocking pool. The buffer is not
/// zeroed first: the read fills it.
fn read_chunk(file: File, remaining: u64) -> tokio::task::JoinHandle<std::io::Result<(File, Vec<u8>)>> {
    let want = remaining.min(READ_CHUNK as u64);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(want as usize);
        let mut part = file.take(want);
        part.read_to_end(&mut buf)?;
        if (buf.len() as u64) < want {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok((part.into_inner(), buf))
    })
}

/// Moves a finished temporary file into place, durably.
fn publish(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| std::io::Error::other("blob path has no directory"))?;
    ensure_dir(dir)?;
    std::fs::rename(tmp, dest)?;
    File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>> {
        self.inner.space.check()?;
        let dest = self.path(key)?;
        let tmp = self.tmp_path();
        let path = tmp.clone();
        let file = blocking(move || File::create_new(&path)).await?;
        Ok(Box::new(LocalWriter::new(file, tmp, dest, self.inner.direct.clone())))
    }

    async fn list(&self, prefix: &str) -> Result<futures::stream::BoxStream<'static, Result<BlobEntry>>> {
        check_prefix(prefix)?;
        let objects = self.inner.objects.clone();
        let start = objects.join(prefix);
        // The walk runs on the blocking pool and hands entries over as it finds them, so a
        // large store is listed in bounded memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BlobEntry>>(256);
        tokio::task::spawn_blocking(move || {
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e.into()));
                        return;
                    }
                };
                for entry in entries {
                    let found = entry.and_then(|entry| {
                        let meta = entry.metadata()?;
                        Ok((entry.path(), meta))
                    });
                    let (path, meta) = match found {
                        Ok(found) => found,
                        // Removed while listed.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e.into()));
                            return;
                        }
                    };
                    if meta.is_dir() {
                        dirs.push(path);
                        continue;
                    }
                    let Some(key) = path
                        .strip_prefix(&objects)
                        .ok()
                        .and_then(|rel| rel.to_str())
                        .map(|rel| rel.replace(std::path::MAIN_SEPARATOR, "/"))
                    else {
                        continue;
                    };
                    let blob = BlobEntry {
                        key,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                    };
                    if tx.blocking_send(Ok(blob)).is_err() {
                        return;
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(futures::StreamExt::boxed(stream))
    }

    async fn read(&self, key: &str, range: Option<(u64, u64)>) -> Result<ByteStream> {
        let path = self.path(key)?;
        let display = key.to_string();
        let opened = blocking(move || match File::open(&path) {
            Ok(mut file) => {
                let len = file.metadata()?.len();
                let (start, end) = range.unwrap_or((0, len));
                let end = end.min(len);
                if start > 0 {
                    file.seek(SeekFrom::Start(start))?;
                }
                Ok(Some((file, end.saturating_sub(start))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await?;
        let Some((file, remaining)) = opened else {
            return Err(StorageError::NotFound(display));
        };
        // The next chunk is read while this one is on its way to the client: the disk and the
        // network overlap, and no thread waits on a slow client.
        let first = (remaining > 0).then(|| read_chunk(file, remaining));
        let stream = futures::stream::unfold((first, remaining), |(reading, remaining)| async move {
            let (file, chunk) = match joined(reading?).await {
                Ok(read) => read,
                Err(err) => return Some((Err(err), (None, 0))),
            };
            let left = remaining - chunk.len() as u64;
            let next = (left > 0).then(|| read_chunk(file, left));
            Some((Ok(Bytes::from(chunk)), (next, left)))
        });
        Ok(Box::pin(stream))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner.space.check()?;
        let src = self.path(from)?;
        let dest = self.path(to)?;
        let tmp = self.tmp_path();
        let missing = from.to_string();
        let copied = blocking(move || {
            let result = (|| {
                match std::fs::copy(&src, &tmp) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(e),
                }
                File::open(&tmp)?.sync_data()?;
                publish(&tmp, &dest)?;
                Ok(true)
            })();
            if !matches!(result, Ok(true)) {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        })
        .await?;
        if copied {
            Ok(())
        } else {
            Err(StorageError::NotFound(missing))
        }
    }
}

/// A blob being written: the request task fills blocks and hands them to a blocking task that
/// writes them, so receiving (and hashing) the next block overlaps the disk write of this one.
/// At most [`BLOCKS_IN_FLIGHT`] blocks wait, which bounds memory whatever the size.
struct LocalWriter {
    blocks: Option<tokio::sync::mpsc::Sender<Bytes>>,
    /// The writing task; it gives the file back once the channel closes.
    task: Option<tokio::task::JoinHandle<std::io::Result<File>>>,
    /// The store's: whether blocks may go past the page cache.
    direct: Arc<AtomicBool>,
    buf: BytesMut,
    tmp: PathBuf,
    dest: PathBuf,
    size: u64,
    finished: bool,
}

/// Blocks queued for the writing task (each up to [`WRITE_BLOCK`]).
const BLOCKS_IN_FLIGHT: usize = 4;

impl LocalWriter {
    fn new(file: File, tmp: PathBuf, dest: PathBuf, direct: Arc<AtomicBool>) -> LocalWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(BLOCKS_IN_FLIGHT);
        let usable = direct.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut file = BlockFile::new(file, usable);
            while let Some(block) = rx.blocking_recv() {
                file.write_block(&block)?;
            }
            Ok(file.into_file())
        });
        LocalWriter {
            blocks: Some(tx),
            task: Some(task),
            direct,
            buf: BytesMut::new(),
            tmp,
            dest,
            size: 0,
            finished: false,
        }
    }

    async fn send(&mut self, block: Bytes) -> Result<()> {
        let sent = match &self.blocks {
            Some(tx) => tx.send(block).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writing task stopped: its error says why.
        Err(match self.close().await {
            Err(err) => err,
            Ok(_) => StorageError::Backend("blob writer used after it was closed".into()),
        })
    }

    /// Ends the writing task and takes the file back.
    async fn close(&mut self) -> Result<File> {
        self.blocks.take();
        let task = self
            .task
            .take()
            .ok_or_else(|| StorageError::Backend("blob writer used after it was closed".into()))?;
        joined(task).await
    }
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, mut chunk: Bytes) -> Result<()> {
        self.size += chunk.len() as u64;
        while !chunk.is_empty() {
            if self.buf.is_empty() && chunk.len() >= WRITE_BLOCK && !self.direct.load(Ordering::Relaxed) {
                // A large chunk goes as it is, without a copy, when it need not be aligned.
                return self.send(chunk).await;
            }
            if self.buf.capacity() == 0 {
                self.buf = aligned_block(WRITE_BLOCK);
            }
            // Blocks are filled to exactly their size, each in an allocation of its own: a block
            // that grew past it would double (and copy what it held) for the next one's bytes.
            let take = (WRITE_BLOCK - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() == WRITE_BLOCK {
                let block = std::mem::take(&mut self.buf).freeze();
                self.send(block).await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<Written> {
        if !self.buf.is_empty() {
            let block = std::mem::take(&mut self.buf).freeze();
            self.send(block).await?;
        }
        let file = self.close().await?;
        let (tmp, dest) = (self.tmp.clone(), self.dest.clone());
        blocking(move || {
            file.sync_data()?;
            drop(file);
            publish(&tmp, &dest)
        })
        .await?;
        self.finished = true;
        Ok(Written {
            size: self.size,
            md5: None,
        })
    }

    async fn abort(mut self: Box<Self>) {
        let _ = self.close().await;
        let tmp = self.tmp.clone();
        self.finished = true;
        let _ = blocking(move || std::fs::remove_file(tmp)).await;
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
