//! Buffers for `O_DIRECT` writes (local blobs, the write-ahead log): the memory, the file offset
//! and the length must all be aligned.

use bytes::{Buf, BytesMut};

/// Alignment of memory, offsets and lengths for `O_DIRECT`: a page, which covers the logical
/// block size of the disks we run on (512 B or 4 KiB).
pub(crate) const ALIGN: usize = 4096;

/// An empty buffer that holds `size` bytes starting on an [`ALIGN`] boundary, without growing.
pub(crate) fn aligned_block(size: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(size + ALIGN);
    let pad = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
    buf.resize(pad, 0);
    buf.advance(pad);
    buf
}

pub(crate) fn aligned(block: &[u8]) -> bool {
    (block.as_ptr() as usize).is_multiple_of(ALIGN) && block.len().is_multiple_of(ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_aligned_blocks_hold_their_size_without_moving() {
        for size in [ALIGN, 1 << 20] {
            let mut block = aligned_block(size);
            let start = block.as_ptr() as usize;
            assert!(start.is_multiple_of(ALIGN));
            assert!(block.capacity() >= size);
            block.extend_from_slice(&vec![7u8; size]);
            assert_eq!(block.as_ptr() as usize, start, "filling it did not reallocate");
            assert!(aligned(&block));
        }
    }
}
