//! The embedded store's write-ahead log: what makes a commit durable.
//!
//! A redb commit that is durable by itself rewrites every page its B-trees touched (the rightmost
//! leaf and the branch path of each table, about thirty pages for a batch of creates) and
//! fsyncs them all: ~1 ms on this class of disk. Instead each group of batches is appended here
//! as one record and made durable with one `fdatasync` of a small sequential write, then
//! committed to redb without durability (visible to readers, pages kept in redb's write buffer),
//! one commit for the groups of a few milliseconds.
//! A checkpoint, a durable redb commit, happens every [`CHECKPOINT_AT`] bytes of log or when the
//! store falls idle; it writes each dirty page once for thousands of batches, and lets the log
//! start over.
//!
//! Records: `u32 payload length, u32 crc32 of (epoch ++ payload), u64 epoch, payload`. The
//! epoch is the number of checkpoints redb has durably recorded (in [`META_TABLE`]); each
//! checkpoint increments it and rewinds the log to offset 0. Recovery replays the records of the
//! current epoch from offset 0 and stops at the first one that is torn (bad checksum) or older
//! (a record of an earlier epoch that the new one has not overwritten yet).
//!
//! The file is preallocated with zeros, so an append rewrites blocks that already exist and
//! `fdatasync` has no file size or extent map to journal.
//!
//! Records are written past the page cache (`O_DIRECT`) where the filesystem allows it: each
//! starts on an [`ALIGN`] boundary and is padded with zeros to the next one. A buffered append
//! copied the record into the page cache and `fdatasync` then wrote those pages back, both on
//! the writer thread that every commit waits for; `fdatasync` now only flushes the disk's
//! cache. Logs written before records were aligned replay too: after a record, the next one is
//! looked for right after it, then at the next boundary.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::aligned::{ALIGN, aligned_block};

use crate::model::Op;

/// Where redb records the epoch of the log, in the same table scheme as every other row.
pub(crate) const META_TABLE: &str = "cocon_store_meta";
pub(crate) const EPOCH_KEY: &[u8] = b"wal_epoch";

/// The log's preallocated size; a group larger than what is left grows the file.
const PREALLOCATED: u64 = 16 << 20;
/// A checkpoint starts once this much is logged. Writes wait while it runs, so it is kept small:
/// at 4 MiB (~4,500 created documents) a checkpoint takes ~10-20 ms here, at 32 MiB ~100 ms.
/// Append-mostly B-trees write about the same pages either way.
pub(crate) const CHECKPOINT_AT: u64 = 4 << 20;

const HEADER: usize = 16;

/// One operation of a group, as logged. `Clear` empties a whole table (projection rebuilds).
pub(crate) enum LoggedOp<'a> {
    Op(&'a Op),
    Clear(&'static str),
}

/// An operation read back from the log.
#[derive(Debug, PartialEq)]
pub(crate) enum Replayed {
    Op(Op),
    Clear(&'static str),
}

impl Replayed {
    pub(crate) fn as_logged(&self) -> LoggedOp<'_> {
        match self {
            Replayed::Op(op) => LoggedOp::Op(op),
            Replayed::Clear(table) => LoggedOp::Clear(table),
        }
    }
}

pub(crate) struct Wal {
    file: File,
    /// The same file opened with `O_DIRECT`, for appends; `None` where the filesystem refuses it.
    direct: Option<File>,
    epoch: u64,
    /// Where the next record goes.
    offset: u64,
    /// Encoding buffer, reused by every append.
    buf: Vec<u8>,
    /// The record padded to a whole number of blocks, in memory that starts on an [`ALIGN`]
    /// boundary; reused while it is large enough.
    aligned: BytesMut,
}

pub(crate) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".wal");
    store.with_file_name(name)
}

impl Wal {
    /// Opens the log at `path`, creating and preallocating it if needed. Call [`Wal::replay`]
    /// then [`Wal::restart`] before appending.
    pub(crate) fn open(path: &Path) -> std::io::Result<Wal> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < PREALLOCATED {
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < PREALLOCATED {
                let n = (PREALLOCATED - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok();
        Ok(Wal {
            file,
            direct,
            epoch: 0,
            offset: 0,
            buf: Vec::new(),
            aligned: BytesMut::new(),
        })
    }

    /// The operations of every intact record of `epoch`, record by record, in log order.
    pub(crate) fn replay(&self, epoch: u64) -> std::io::Result<Vec<Vec<Replayed>>> {
        let size = self.file.metadata()?.len();
        let mut tables = Interner::default();
        let mut records = Vec::new();
        let mut at = 0u64;
        let mut body = Vec::new();
        loop {
            // Right after the previous record (logs written before alignment), else at the
            // next block boundary (the zeros between can never read as a record).
            let found = match self.read_record(at, size, epoch, &mut body)? {
                Some(len) => Some((at, len)),
                None if !at.is_multiple_of(ALIGN as u64) => {
                    let next = at.next_multiple_of(ALIGN as u64);
                    self.read_record(next, size, epoch, &mut body)?.map(|len| (next, len))
                }
                None => None,
            };
            let Some((start, len)) = found else { break };
            at = start;
            match decode(&body, &mut tables) {
                Some(ops) => records.push(ops),
                // The checksum matched: a record we cannot read is a bug, not a torn write.
                None => {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!("write-ahead log record at offset {at} is not readable"),
                    ));
                }
            }
            at += HEADER as u64 + len;
        }
        Ok(records)
    }

    /// Reads the record of `epoch` at `at` into `body`: its payload length, or `None` if there is
    /// none there (past the end, another epoch, torn).
    fn read_record(&self, at: u64, size: u64, epoch: u64, body: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
        let mut header = [0u8; HEADER];
        if at + HEADER as u64 > size {
            return Ok(None);
        }
        self.file.read_exact_at(&mut header, at)?;
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if header[8..16] != epoch.to_le_bytes() || at + HEADER as u64 + len > size {
            return Ok(None);
        }
        body.resize(len as usize, 0);
        self.file.read_exact_at(body, at + HEADER as u64)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..16]);
        hasher.update(body);
        Ok((hasher.finalize() == crc).then_some(len))
    }

    /// Starts `epoch` at the beginning of the log: redb has durably recorded everything before.
    pub(crate) fn restart(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.offset = 0;
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn len(&self) -> u64 {
        self.offset
    }

    /// Appends one record holding `ops` (not yet durable: see [`Wal::sync`]).
    pub(crate) fn append<'a>(&mut self, ops: impl Iterator<Item = LoggedOp<'a>>) -> std::io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 8]);
        self.buf.extend_from_slice(&self.epoch.to_le_bytes());
        for op in ops {
            encode(&mut self.buf, &op);
        }
        let len = u32::try_from(self.buf.len() - HEADER)
            .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "a commit larger than 4 GiB"))?;
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let padded = self.buf.len().next_multiple_of(ALIGN);
        if self.aligned.capacity() < padded {
            self.aligned = aligned_block(padded);
        }
        // Within its capacity the buffer does not move off the boundary.
        self.aligned.clear();
        self.aligned.extend_from_slice(&self.buf);
        self.aligned.resize(padded, 0);
        let record = &self.aligned[..];
        debug_assert!(crate::aligned::aligned(record), "a record is whole aligned blocks");
        match &self.direct {
            Some(direct) => match direct.write_all_at(record, self.offset) {
                Ok(()) => {}
                // Accepted at open, refused at write (some FUSE filesystems): through the cache.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    tracing::info!(
                        "this filesystem refuses O_DIRECT writes: the write-ahead log goes through the page cache"
                    );
                    self.direct = None;
                    self.file.write_all_at(record, self.offset)?;
                }
                Err(e) => return Err(e),
            },
            None => self.file.write_all_at(record, self.offset)?,
        }
        self.offset += padded as u64;
        Ok(())
    }

    /// Forgets a record appended at `offset` that could not be made durable (the disk was
    /// full): the next one is written in its place, and its header is cleared where possible so
    /// a restart before that does not replay what was refused.
    pub(crate) fn forget_from(&mut self, offset: u64) {
        self.offset = offset;
        let mut zeros = aligned_block(ALIGN);
        zeros.resize(ALIGN, 0);
        let cleared = match &self.direct {
            Some(direct) => direct.write_all_at(&zeros, offset),
            None => self.file.write_all_at(&zeros, offset),
        };
        if let Err(e) = cleared.and_then(|()| self.file.sync_data()) {
            tracing::debug!(error = %e, "cannot clear a refused write-ahead log record");
        }
    }

    /// Makes every appended record durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

const PUT: u8 = 0;
const DELETE: u8 = 1;
const DELETE_PARTITION: u8 = 2;
const CLEAR: u8 = 3;

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

fn encode(buf: &mut Vec<u8>, op: &LoggedOp<'_>) {
    match op {
        LoggedOp::Op(Op::Put {
            table,
            partition,
            sort,
            value,
        }) => {
            buf.push(PUT);
            put_bytes(buf, table.as_bytes());
            put_bytes(buf, partition);
            put_bytes(buf, sort);
            put_bytes(buf, value);
        }
        LoggedOp::Op(Op::Delete { table, partition, sort }) => {
            buf.push(DELETE);
            put_bytes(buf, table.as_bytes());
            put_bytes(buf, partition);
            put_bytes(buf, sort);
        }
        LoggedOp::Op(Op::DeletePartition { table, partition }) => {
            buf.push(DELETE_PARTITION);
            put_bytes(buf, table.as_bytes());
            put_bytes(buf, partition);
        }
        LoggedOp::Clear(table) => {
            buf.push(CLEAR);
            put_bytes(buf, table.as_bytes());
        }
    }
}

/// Table names read back from the log are leaked once each: the store's API takes `&'static str`
/// and a deployment has a few dozen tables.
#[derive(Default)]
struct Interner(HashMap<Vec<u8>, &'static str>);

impl Interner {
    fn get(&mut self, name: &[u8]) -> Option<&'static str> {
        if let Some(s) = self.0.get(name) {
            return Some(s);
        }
        let s: &'static str = String::from_utf8(name.to_vec()).ok()?.leak();
        self.0.insert(name.to_vec(), s);
        Some(s)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let b = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(b)
    }
}

fn decode(payload: &[u8], tables: &mut Interner) -> Option<Vec<Replayed>> {
    let mut r = Reader(payload);
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = r.0.split_first() {
        r.0 = rest;
        let table = tables.get(r.bytes()?)?;
        ops.push(match tag {
            PUT => Replayed::Op(Op::Put {
                table,
                partition: r.bytes()?.to_vec(),
                sort: r.bytes()?.to_vec(),
                value: Bytes::copy_from_slice(r.bytes()?),
            }),
            DELETE => Replayed::Op(Op::Delete {
                table,
                partition: r.bytes()?.to_vec(),
                sort: r.bytes()?.to_vec(),
            }),
            DELETE_PARTITION => Replayed::Op(Op::DeletePartition {
                table,
                partition: r.bytes()?.to_vec(),
            }),
            CLEAR => Replayed::Clear(table),
            _ => return None,
        });
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> Op {
        Op::Put {
            table: "t",
            partition: b"p".to_vec(),
            sort: k.as_bytes().to_vec(),
            value: Bytes::from(k.to_string()),
        }
    }

    fn replayed_put(k: &str) -> Replayed {
        Replayed::Op(put(k))
    }

    #[test]
    fn test_records_of_the_current_epoch_replay_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let mut wal = Wal::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOCATED);
        wal.restart(7);
        let del = Op::DeletePartition {
            table: "u",
            partition: b"q".to_vec(),
        };
        wal.append([LoggedOp::Op(&put("a")), LoggedOp::Op(&del)].into_iter())
            .unwrap();
        wal.append([LoggedOp::Clear("v"), LoggedOp::Op(&put("b"))].into_iter())
            .unwrap();
        wal.sync().unwrap();
        let wal = Wal::open(&path).unwrap();
        let records = wal.replay(7).unwrap();
        assert_eq!(
            records,
            vec![
                vec![
                    replayed_put("a"),
                    Replayed::Op(Op::DeletePartition {
                        table: "u",
                        partition: b"q".to_vec()
                    })
                ],
                vec![Replayed::Clear("v"), replayed_put("b")],
            ]
        );
        // Another epoch's records are already covered by a checkpoint.
        assert!(wal.replay(8).unwrap().is_empty());
    }

    #[test]
    fn test_replay_stops_at_a_torn_record_and_at_older_records_after_a_rewind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let mut wal = Wal::open(&path).unwrap();
        wal.restart(1);
        for k in ["a", "b", "c"] {
            wal.append([LoggedOp::Op(&put(k))].into_iter()).unwrap();
        }
        let end = wal.len();
        assert_eq!(end, 3 * ALIGN as u64, "each record starts on a block boundary");
        // Tear the last record: flip a byte of its payload.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"X", end - ALIGN as u64 + HEADER as u64).unwrap();
        assert_eq!(
            wal.replay(1).unwrap(),
            vec![vec![replayed_put("a")], vec![replayed_put("b")]]
        );
        // A checkpoint rewinds: the new epoch's record overwrites "a"; "b" is of the old epoch.
        wal.restart(2);
        wal.append([LoggedOp::Op(&put("z"))].into_iter()).unwrap();
        assert_eq!(wal.replay(2).unwrap(), vec![vec![replayed_put("z")]]);
    }

    #[test]
    fn test_a_log_written_before_records_were_aligned_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let wal = Wal::open(&path).unwrap();
        // Three records back to back, as logs were written before: header, then payload.
        let mut old = Vec::new();
        for k in ["a", "b", "c"] {
            let mut payload = Vec::new();
            encode(&mut payload, &LoggedOp::Op(&put(k)));
            let mut crc = crc32fast::Hasher::new();
            crc.update(&5u64.to_le_bytes());
            crc.update(&payload);
            old.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            old.extend_from_slice(&crc.finalize().to_le_bytes());
            old.extend_from_slice(&5u64.to_le_bytes());
            old.extend_from_slice(&payload);
        }
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&old, 0)
            .unwrap();
        assert_eq!(
            wal.replay(5).unwrap(),
            vec![
                vec![replayed_put("a")],
                vec![replayed_put("b")],
                vec![replayed_put("c")]
            ]
        );
    }
}
