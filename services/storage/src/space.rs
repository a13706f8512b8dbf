//! The free-space watermark: below it, writes that add data are refused with a clear reason
//! (HTTP 507) instead of running the disk full, which would fail a log append or a commit for
//! every tenant. Reads go on, and once space returns writes resume without a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::{Result, StorageError};

/// How long a free-space reading is trusted: a `statvfs` per write would cost more than the
/// precision it buys.
const FRESH_MS: u64 = 100;

pub struct FreeSpace {
    path: PathBuf,
    min_free: u64,
    born: Instant,
    /// Milliseconds since `born` of the last reading, +1 (0: never read).
    read_at: AtomicU64,
    free: AtomicU64,
}

impl FreeSpace {
    /// Watches the filesystem holding `path`; writes need `min_free` bytes left (0: no check).
    pub fn new(path: &Path, min_free: u64) -> FreeSpace {
        FreeSpace {
            path: path.to_path_buf(),
            min_free,
            born: Instant::now(),
            read_at: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
        }
    }

    /// Bytes an unprivileged writer may still use on the filesystem.
    pub fn available(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.path)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Ok while at least the watermark is free.
    pub fn check(&self) -> Result<()> {
        if self.min_free == 0 {
            return Ok(());
        }
        let now = self.born.elapsed().as_millis() as u64 + 1;
        let read_at = self.read_at.load(Ordering::Relaxed);
        let free = if read_at == 0 || now.saturating_sub(read_at) >= FRESH_MS {
            // A failed reading lets writes through: the store's own errors still stop them.
            let free = self.available().unwrap_or(u64::MAX);
            self.free.store(free, Ordering::Relaxed);
            self.read_at.store(now, Ordering::Relaxed);
            metrics::gauge!("cocon_disk_free_bytes", "path" => self.path.display().to_string()).set(free as f64);
            free
        } else {
            self.free.load(Ordering::Relaxed)
        };
        if free < self.min_free {
            metrics::counter!("cocon_disk_full_refusals_total").increment(1);
            return Err(StorageError::InsufficientStorage(format!(
                "the server's disk is nearly full ({} MiB left, {} MiB kept free): writes are refused until the operator frees space; reading still works",
                free >> 20,
                self.min_free >> 20
            )));
        }
        Ok(())
    }
}

/// Whether an I/O error means the disk (or the user's quota on it) is full.
pub fn is_full(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() || code == rustix::io::Errno::DQUOT.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_watermark_above_the_free_space_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let free = FreeSpace::new(dir.path(), 0).available().unwrap();
        assert!(FreeSpace::new(dir.path(), 0).check().is_ok(), "0 turns the check off");
        assert!(FreeSpace::new(dir.path(), 1).check().is_ok());
        let full = FreeSpace::new(dir.path(), free.saturating_add(1 << 40));
        assert!(matches!(full.check(), Err(StorageError::InsufficientStorage(m)) if m.contains("nearly full")));
        assert!(is_full(&std::io::Error::from_raw_os_error(
            rustix::io::Errno::NOSPC.raw_os_error()
        )));
        assert!(!is_full(&std::io::Error::from_raw_os_error(
            rustix::io::Errno::IO.raw_os_error()
        )));
    }
}
