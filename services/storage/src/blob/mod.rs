//! Blob storage: file contents, kept apart from metadata. A blob is written once under a key and
//! never changed afterwards (a new version of a file is a new blob), so readers never see a
//! half-written blob and backends need no locking.
//!
//! Backends: [`LocalBlobs`] (a directory on local disk, the embedded default) and [`S3Blobs`]
//! (any S3-compatible server). [`testsuite`] is the conformance suite both pass.

mod direct;
mod local;
mod s3;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use local::LocalBlobs;
pub use s3::{S3Blobs, S3Config};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::{Result, StorageError};

/// The chunks of a blob being read.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob under `key`. Nothing is visible under the key until
    /// [`BlobWriter::finish`] returns; a writer dropped before that leaves nothing behind.
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>>;

    /// Starts a new blob of `size` bytes, as [`BlobStore::create`] does, for a writer that knows
    /// the size in advance: a backend may then send it in one go (S3: one streamed `PutObject`
    /// rather than a multipart upload). `md5`, when given, is what the content's MD5 should be;
    /// a backend may have its server check it. Writing more than `size`, or finishing with
    /// less, fails and leaves nothing.
    async fn create_sized(&self, key: &str, size: u64, md5: Option<[u8; 16]>) -> Result<Box<dyn BlobWriter>> {
        let _ = md5;
        Ok(SizedWriter::wrap(self.create(key).await?, size))
    }

    /// The bytes `range` (start inclusive, end exclusive) of a blob, or all of it.
    /// [`StorageError::NotFound`] when there is no such blob.
    async fn read(&self, key: &str, range: Option<(u64, u64)>) -> Result<ByteStream>;

    /// The size of a blob, if it exists.
    async fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Removes a blob; removing one that is not there is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Copies a blob to a new key, durably.
    async fn copy(&self, from: &str, to: &str) -> Result<()>;

    /// Joins the blobs `parts`, in order, into a new blob `to`, durably; as with
    /// [`BlobStore::create`], nothing is visible under `to` until it is whole. Returns its size;
    /// [`StorageError::NotFound`] when a part is missing. The parts stream through this
    /// process: on the local store, a kernel copy (`copy_file_range`) was measured slower, as it
    /// reads the parts, written past the page cache, back through it.
    async fn concat(&self, parts: &[String], to: &str) -> Result<u64> {
        let mut writer = self.create(to).await?;
        for part in parts {
            let mut data = match self.read(part, None).await {
                Ok(data) => data,
                Err(err) => {
                    writer.abort().await;
                    return Err(err);
                }
            };
            while let Some(chunk) = data.next().await {
                let written = match chunk {
                    Ok(chunk) => writer.write(chunk).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = written {
                    writer.abort().await;
                    return Err(err);
                }
            }
        }
        Ok(writer.finish().await?.size)
    }

    /// Every blob whose key starts with `prefix` (`""`, or whole key segments ending with `/`),
    /// in no particular order, with its size and when it was written: what a sweeper compares
    /// with the blobs the metadata references.
    async fn list(&self, prefix: &str) -> Result<BoxStream<'static, Result<BlobEntry>>>;
}

/// One stored blob, as [`BlobStore::list`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub key: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

/// A listing prefix: empty, or segments that could start a key, ending with `/`.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    match prefix.strip_suffix('/') {
        Some(segments) => check_key(segments),
        None => Err(StorageError::Backend(format!(
            "a listing prefix ends with '/': {prefix:?}"
        ))),
    }
}

/// What [`BlobWriter::finish`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    /// The content's MD5, from a writer that [`BlobWriter::computes_md5`].
    pub md5: Option<[u8; 16]>,
}

#[async_trait]
pub trait BlobWriter: Send {
    /// Appends a chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;

    /// Makes the blob durable and visible under its key.
    async fn finish(self: Box<Self>) -> Result<Written>;

    /// Whether [`BlobWriter::finish`] gives the content's MD5: the backend's server computes
    /// it anyway (S3's ETag of one `PutObject`), so the caller need not hash every byte again.
    /// Such a writer has its server refuse a content whose MD5 differs from the one announced
    /// ([`StorageError::Mismatch`]).
    fn computes_md5(&self) -> bool {
        false
    }

    /// Drops everything written (what dropping the writer does, but waited for).
    async fn abort(self: Box<Self>);
}

/// A writer that refuses to go past, or finish short of, the size announced.
pub(crate) struct SizedWriter {
    writer: Box<dyn BlobWriter>,
    size: u64,
    written: u64,
}

impl SizedWriter {
    pub(crate) fn wrap(writer: Box<dyn BlobWriter>, size: u64) -> Box<dyn BlobWriter> {
        Box::new(SizedWriter {
            writer,
            size,
            written: 0,
        })
    }
}

pub(crate) fn size_error(written: u64, size: u64) -> StorageError {
    StorageError::Backend(format!("the blob is {written} bytes, {size} were announced"))
}

#[async_trait]
impl BlobWriter for SizedWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.written += chunk.len() as u64;
        if self.written > self.size {
            return Err(size_error(self.written, self.size));
        }
        self.writer.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<Written> {
        if self.written != self.size {
            self.writer.abort().await;
            return Err(size_error(self.written, self.size));
        }
        self.writer.finish().await
    }

    async fn abort(self: Box<Self>) {
        self.writer.abort().await;
    }

    fn computes_md5(&self) -> bool {
        self.writer.computes_md5()
    }
}

/// Keys are made by the services (`<instance>/<shard>/<id>`), never by clients; this refuses
/// anything that could leave a backend's namespace all the same.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && !key.starts_with('/')
        && !key.ends_with('/')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && key.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if ok {
        Ok(())
    } else {
        Err(StorageError::Backend(format!("invalid blob key {key:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn test_keys_cannot_escape() {
        for good in ["a", "inst/ab/abcdef-01", "x.y_z-1/2"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", "a\\b", "a b", "é", "a\0b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
