//! Holes: runs of zero pages are kept as holes in the store's data files
//! and in exports, so a mostly empty disk image costs the disk its data,
//! not its size. Reading a hole yields zeros without touching the disk, so
//! serving and hashing zeros is free too.
//!
//! Files are written a page (4 KiB) at a time as far as holes go: a page
//! that is all zeros is not written (a new file reads zeros there) or is
//! punched out of an allocated one.

use std::{fs::File, io, os::fd::AsRawFd, os::unix::fs::FileExt};

/// The granularity of holes.
pub(crate) const PAGE: usize = 4096;
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

/// True if every byte is zero (a memcmp against a zero page, page by page).
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes.chunks(PAGE).all(|c| c == &ZERO_PAGE[..c.len()])
}

/// Writes `buf` at `offset`, leaving whole zero pages (counted from the
/// start of the file) unwritten. With `punch`, those pages are punched out
/// (the file was allocated ahead); without, the file must read zeros there
/// already (it is new and sized). Returns the bytes that became holes.
pub(crate) fn write_sparse(file: &File, buf: &[u8], offset: u64, punch: bool) -> io::Result<u64> {
    let mut holes = 0;
    let mut at = 0usize;
    while at < buf.len() {
        // the page boundary after `at`, in file terms
        let page_end = |from: usize| ((offset as usize + from) / PAGE + 1) * PAGE - offset as usize;
        let first_end = page_end(at).min(buf.len());
        let zero = first_end - at == PAGE && is_zero(&buf[at..first_end]);
        let mut end = first_end;
        while end < buf.len() {
            let next = page_end(end).min(buf.len());
            let next_zero = next - end == PAGE && is_zero(&buf[end..next]);
            if next_zero != zero {
                break;
            }
            end = next;
        }
        if zero {
            if punch {
                punch_hole(file, offset + at as u64, (end - at) as u64)?;
            }
            holes += (end - at) as u64;
        } else {
            file.write_all_at(&buf[at..end], offset + at as u64)?;
        }
        at = end;
    }
    Ok(holes)
}

/// Makes `offset..offset + len` a hole (reads zeros, takes no disk), or
/// writes zeros where the file system cannot punch holes.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on a file descriptor we own, with plain integers.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, len as i64) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e);
    }
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + at)?;
        at += n as u64;
    }
    Ok(())
}

/// Bytes of disk a file takes (its allocated blocks).
pub(crate) fn physical_size(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(m) * 512
}

/// How much the store's blobs hold and how much disk their data takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreUsage {
    /// Blobs, complete and partial.
    pub blobs: u64,
    /// Their sizes added up (partial blobs at their full size).
    pub logical_bytes: u64,
    /// Disk their data files in the store take (holes take none; blobs
    /// referenced in place take none of the store's; small blobs kept in
    /// the metadata database count their size). Outboards are not counted.
    pub physical_bytes: u64,
}

impl crate::Store {
    /// Logical and physical size of the store's blob data. Blocking (one
    /// `stat` per blob).
    pub fn usage(&self) -> crate::Result<StoreUsage> {
        use crate::entry::{DataLocation, EntryRecord};
        let mut u = StoreUsage::default();
        let stat = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| physical_size(&m)).unwrap_or(0);
        for (hash, _) in self.blobs()? {
            let (size, physical) = match self.entry(&hash)? {
                Some(EntryRecord::Complete { size, data: DataLocation::Owned, .. }) => {
                    (size, stat(self.blob_path(&hash, "data")))
                }
                Some(EntryRecord::Complete { size, data: DataLocation::Inline(_), .. }) => (size, size),
                Some(EntryRecord::Complete { size, data: DataLocation::External { .. }, .. }) => (size, 0),
                Some(EntryRecord::Partial { size }) => (size, stat(self.partial_path(&hash, "data"))),
                None => continue,
            };
            u.blobs += 1;
            u.logical_bytes += size;
            u.physical_bytes += physical;
        }
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_become_holes_and_the_bytes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        for (offset, punch) in [(0u64, false), (4096, true), (1000, false), (1000, true)] {
            let path = dir.path().join(format!("f-{offset}-{punch}"));
            let f = std::fs::OpenOptions::new().create_new(true).read(true).write(true).open(&path).unwrap();
            let mut buf = vec![0u8; 64 * PAGE + 123];
            buf[5 * PAGE + 7] = 1;
            buf[40 * PAGE..44 * PAGE].fill(9);
            buf[64 * PAGE + 100] = 3;
            f.set_len(offset + buf.len() as u64).unwrap();
            if punch {
                f.write_all_at(&vec![0xee; buf.len()], offset).unwrap();
                f.sync_all().unwrap();
            }
            let holes = write_sparse(&f, &buf, offset, punch).unwrap();
            let mut back = vec![0u8; buf.len()];
            f.read_exact_at(&mut back, offset).unwrap();
            assert_eq!(back, buf, "offset {offset} punch {punch}");
            assert!(holes >= 56 * PAGE as u64, "offset {offset}: {holes}");
            f.sync_all().unwrap();
            let physical = physical_size(&f.metadata().unwrap());
            assert!(physical <= 10 * PAGE as u64, "offset {offset} punch {punch}: {physical} bytes on disk");
        }
    }

    /// A mostly zero file imported in copy mode is stored with holes, and
    /// exported with holes, byte for byte equal.
    #[tokio::test]
    async fn import_and_export_keep_zero_pages_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path().join("store")).unwrap();
        let mut img = vec![0u8; 8 << 20];
        img[..100_000].fill(7);
        img[5 << 20..(5 << 20) + 3000].fill(1);
        let src = dir.path().join("disk.img");
        std::fs::write(&src, &img).unwrap();
        let out = store.import_path(&src, crate::ImportMode::Copy).await.unwrap();
        let usage = store.usage().unwrap();
        assert_eq!(usage.logical_bytes, img.len() as u64);
        assert!(usage.physical_bytes <= 128 << 10, "{usage:?}");
        let target = dir.path().join("out.img");
        store.export(out.hash, &target, Default::default()).await.unwrap();
        let physical = physical_size(&std::fs::metadata(&target).unwrap());
        assert!(physical <= 128 << 10, "exported file takes {physical} bytes");
        assert_eq!(std::fs::read(&target).unwrap(), img);
        store.set_tag_and_release("img", out.lease).unwrap();
    }
}
