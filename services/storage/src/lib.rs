//! The storage trait every service keeps its state behind, and its backends.
//!
//! The model is Scylla's: a table holds partitions, a partition holds rows ordered by a sort key.
//! Every access path of a service is a partition key plus a sort-key range, so the same code runs
//! on the embedded store (one redb file on local disk, the default) and on ScyllaDB.
//!
//! Backends: [`EmbeddedStore`] (redb, the default) and [`ScyllaStore`].
//! A [`Batch`] applies atomically and is durable when [`Store::apply`] returns: the embedded
//! backend commits concurrent batches together with one fsync (group commit).

mod aligned;
pub mod blob;
mod embedded;
mod error;
mod model;
mod scylla_store;
pub mod space;
pub mod table;
/// The conformance suite every store backend passes (tests only: `--features testsuite`).
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;
mod wal;

pub use blob::{BlobEntry, BlobStore, BlobWriter, ByteStream, LocalBlobs, S3Blobs, S3Config, Written};
/// For [`json_table!`] and tables' codecs.
pub use bytes;
pub use embedded::{DEFAULT_CACHE_BYTES, EmbeddedStore};
pub use error::StorageError;
pub use model::{Batch, Op, Row, ScanRange, TableRow, prefix_end};
pub use scylla_store::{ScyllaConfig, ScyllaStore};
pub use table::{Schema, Table};

use async_trait::async_trait;
use bytes::Bytes;

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One row, by partition and sort key.
    async fn get(&self, table: &'static str, partition: &[u8], sort: &[u8]) -> Result<Option<Bytes>>;

    /// Rows of one partition within a sort-key range, in order (or reverse order), at most `range.limit`.
    async fn scan(&self, table: &'static str, partition: &[u8], range: ScanRange) -> Result<Vec<Row>>;

    /// Applies every operation of the batch atomically; durable once this returns `Ok`.
    async fn apply(&self, batch: Batch) -> Result<()>;

    /// Applies the batch atomically, but a crash may lose it until a later [`Store::apply`]
    /// makes it durable. For writes whose loss only repeats work, such as deleting outbox rows
    /// already published (a re-publish is de-duplicated downstream): they cost no fsync.
    async fn apply_relaxed(&self, batch: Batch) -> Result<()> {
        self.apply(batch).await
    }

    /// Rows of a whole table across partitions, after `after` (exclusive), at most `limit`.
    /// Partition order is backend-defined but stable; used by rebuilds and maintenance, not requests.
    async fn scan_table(
        &self,
        table: &'static str,
        after: Option<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> Result<Vec<TableRow>>;

    /// Removes every row of a table (projection rebuilds).
    async fn clear_table(&self, table: &'static str) -> Result<()>;
}
