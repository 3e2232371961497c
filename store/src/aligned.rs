//! Page-aligned buffers, as direct I/O needs: receive batches and the
//! hashing threads' piece buffers.

/// A buffer whose start is page aligned, as direct I/O needs. Buffers of
/// 2 MiB and more are anonymous maps aligned to 2 MiB and asked for
/// transparent huge pages: the kernel then pins one page per 2 MiB for a
/// direct write instead of 512.
pub(crate) struct AlignedBuf {
    mem: Memory,
    start: usize,
    len: usize,
}

enum Memory {
    Heap(Vec<u8>),
    Map(memmap2::MmapMut),
}

impl AlignedBuf {
    const PAGE: usize = 4096;
    const HUGE_PAGE: usize = 2 * 1024 * 1024;

    /// A buffer of `len` bytes, zeroed.
    pub(crate) fn with_len(len: usize) -> Self {
        if len >= Self::HUGE_PAGE {
            if let Ok(map) = memmap2::MmapOptions::new().len(len + Self::HUGE_PAGE).map_anon() {
                let start = map.as_ptr().align_offset(Self::HUGE_PAGE).min(Self::HUGE_PAGE);
                // Only a hint: without huge pages the buffer still works.
                let _ = map.advise_range(memmap2::Advice::HugePage, start, len);
                return AlignedBuf { mem: Memory::Map(map), start, len };
            }
        }
        // Zeroed here, so touched: first writes are not page faults.
        let raw = vec![0u8; len + Self::PAGE];
        let start = raw.as_ptr().align_offset(Self::PAGE).min(Self::PAGE);
        AlignedBuf { mem: Memory::Heap(raw), start, len }
    }

    /// Its length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `len` bytes from `at`.
    pub(crate) fn slice(&self, at: usize, len: usize) -> &[u8] {
        let all: &[u8] = match &self.mem {
            Memory::Heap(v) => v,
            Memory::Map(m) => m,
        };
        &all[self.start + at..self.start + at + len]
    }

    /// `len` bytes from `at`, writable.
    pub(crate) fn slice_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        let all: &mut [u8] = match &mut self.mem {
            Memory::Heap(v) => v,
            Memory::Map(m) => m,
        };
        &mut all[self.start + at..self.start + at + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_page_aligned() {
        let mut b = AlignedBuf::with_len(3 * crate::tree::BLOCK_BYTES as usize);
        let p = b.slice_mut(0, b.len()).as_ptr() as usize;
        assert_eq!(p % AlignedBuf::PAGE, 0);
        let mut huge = AlignedBuf::with_len(AlignedBuf::HUGE_PAGE);
        let p = huge.slice_mut(0, huge.len()).as_ptr() as usize;
        assert_eq!(p % AlignedBuf::HUGE_PAGE, 0);
    }
}
