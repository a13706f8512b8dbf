//! Writing a new blob's blocks past the page cache (`O_DIRECT`, Linux): the disk reads them from
//! the process's memory, where a buffered write first copies every byte into the page cache
//! (a quarter of both cores during a 1 GiB upload here, as much as the disk write itself), and
//! a large upload no longer evicts everything else the cache holds.
//!
//! `O_DIRECT` needs the memory, the file offset and the length aligned. Blocks are allocated
//! aligned ([`crate::aligned::aligned_block`]); a block that is not (the short last one, a large chunk passed
//! through as it came) is written through the page cache instead, the flag toggled with
//! `fcntl`. A filesystem that refuses the flag (tmpfs, some FUSE ones) turns it off for the
//! whole store. Durability is unchanged: `finish` still fsyncs, which also flushes the
//! buffered blocks and the file's size.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::aligned::{ALIGN, aligned};

/// A new file written block after block, directly where it can be.
pub(super) struct BlockFile {
    file: File,
    offset: u64,
    direct: bool,
    /// Shared by the store's writers: cleared when the filesystem refuses `O_DIRECT`.
    usable: Arc<AtomicBool>,
}

impl BlockFile {
    pub fn new(file: File, usable: Arc<AtomicBool>) -> BlockFile {
        BlockFile {
            file,
            offset: 0,
            direct: false,
            usable,
        }
    }

    pub fn write_block(&mut self, block: &[u8]) -> std::io::Result<()> {
        let direct = self.usable.load(Ordering::Relaxed) && self.offset.is_multiple_of(ALIGN as u64) && aligned(block);
        if direct != self.direct && !self.set_direct(direct) {
            self.usable.store(false, Ordering::Relaxed);
            tracing::info!("this filesystem refuses O_DIRECT: blobs are written through the page cache");
        }
        let mut rest = block;
        while !rest.is_empty() {
            match self.file.write(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    rest = &rest[n..];
                    self.offset += n as u64;
                    // A short direct write leaves the rest unaligned.
                    if !rest.is_empty() && self.direct {
                        self.set_direct(false);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Accepted at fcntl, refused at write: the same as refused.
                Err(e) if self.direct && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.usable.store(false, Ordering::Relaxed);
                    tracing::info!("this filesystem refuses O_DIRECT writes: blobs are written through the page cache");
                    if !self.set_direct(false) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Turns `O_DIRECT` on or off; false when the filesystem refuses it.
    #[cfg(target_os = "linux")]
    fn set_direct(&mut self, on: bool) -> bool {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let set = fcntl_getfl(&self.file).and_then(|flags| {
            let flags = if on {
                flags | OFlags::DIRECT
            } else {
                flags - OFlags::DIRECT
            };
            fcntl_setfl(&self.file, flags)
        });
        match set {
            Ok(()) => {
                self.direct = on;
                true
            }
            Err(_) => false,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn set_direct(&mut self, on: bool) -> bool {
        !on
    }

    pub fn into_file(self) -> File {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::aligned::aligned_block;

    #[test]
    fn test_blocks_aligned_or_not_make_the_same_file() {
        // Past the page cache where the filesystem allows it, and through it.
        for allowed in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("blob");
            let usable = Arc::new(AtomicBool::new(allowed));
            let mut file = BlockFile::new(File::create_new(&path).unwrap(), usable.clone());
            let mut expected = Vec::new();
            // Aligned, aligned, short (buffered), then aligned memory at an unaligned offset.
            for (i, (len, byte)) in [(1 << 20, 1u8), (ALIGN, 2), (1000, 3), (ALIGN, 4)]
                .into_iter()
                .enumerate()
            {
                let mut block = aligned_block(len);
                block.extend_from_slice(&vec![byte; len]);
                file.write_block(&block).unwrap();
                expected.extend_from_slice(&block);
                if i == 0 {
                    assert!(
                        file.direct == usable.load(Ordering::Relaxed),
                        "an aligned block goes direct unless the filesystem refused it"
                    );
                }
            }
            assert!(!file.direct, "an unaligned offset is written through the page cache");
            file.into_file().sync_data().unwrap();
            let mut read = Vec::new();
            File::open(&path).unwrap().read_to_end(&mut read).unwrap();
            assert!(read == expected, "the file holds every block in order");
        }
    }
}
