//! The hashing engine of import: a file becomes its BLAKE3 hash and
//! pre-order outboard, a window at a time on all cores, in constant memory.
//!
//! Reference mode hashes through a map of the file, as `b3sum` does (a
//! [`SourceMap`], which turns a file shrinking under it into an error
//! instead of SIGBUS), in one parallel pass per 256 MiB window; the task
//! that finishes an 8 MiB block of the map releases it. Copy mode writes
//! each window into the store's file from the map, on one thread (two
//! writers of one file contend for its lock), and hashes what landed there
//! while the next window is written, so the hash is always of the stored
//! bytes. Where a file cannot be mapped, each window's 256 KiB pieces are
//! read into per-thread buffers instead.

use std::{fs::File, ops::Range, os::unix::fs::FileExt, path::Path};

use tracing::debug;

use crate::{
    outboard,
    outboard::{OutboardBuilder, OutboardSink},
    source_map::{self, SourceMap},
    tree, Error, Hash, Result,
};

/// Where an import counts the bytes it has hashed, if anyone watches.
pub(crate) type Progress<'a> = Option<&'a std::sync::atomic::AtomicU64>;

fn count_progress<T: TryInto<u64> + Copy>(progress: Progress, window: &Range<T>) {
    if let (Some(p), Ok(start), Ok(end)) = (progress, window.start.try_into(), window.end.try_into()) {
        p.fetch_add(end - start, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Outboards up to this size are built in memory; larger ones straight into
/// their file (64 MiB of outboard covers 16 GiB of data).
pub(crate) const OUTBOARD_IN_MEMORY_MAX: u64 = 16 * 1024 * 1024;

/// Hashes an open file of `size` bytes; returns the hash and, if it fits in
/// memory, the outboard (empty for single-group blobs); optionally copies it to `copy_to`.
pub(crate) fn hash_file(
    file: &File,
    size: u64,
    path: &Path,
    copy_to: Option<&File>,
    progress: Progress,
) -> Result<(Hash, Vec<u8>)> {
    let ob_size = tree::outboard_size(size);
    if ob_size > OUTBOARD_IN_MEMORY_MAX {
        return Err(Error::Limit(format!("outboard of {size} bytes does not fit in memory")));
    }
    let mut ob = vec![0u8; ob_size as usize];
    let hash = hash_file_into(file, size, path, &mut OutboardSink::Memory(&mut ob), copy_to, progress)?;
    Ok((hash, ob))
}

/// Hashes a file (and in copy mode copies it to `copy_to`) a window at a
/// time on all cores: through a guarded map, or by reads where it cannot be
/// mapped (see the module docs).
pub(crate) fn hash_file_into(
    file: &File,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    copy_to: Option<&File>,
    progress: Progress,
) -> Result<Hash> {
    if let Some(dst) = copy_to {
        // Zero pages become holes punched with the size kept: the file must
        // have its length first (preallocation gives it, where supported).
        dst.set_len(size).map_err(Error::io("size", path))?;
    }
    if size > 0 {
        match SourceMap::new(file, size as usize) {
            Ok(Some(map)) => {
                return match copy_to {
                    None => hash_mapped(&map, size, path, sink, progress),
                    Some(dst) => copy_then_hash(&map, dst, size, path, sink, progress),
                }
            }
            Ok(None) => debug!(path = %path.display(), "no free source-map slot; reading the file"),
            Err(e) => debug!(path = %path.display(), error = %e, "the file cannot be mapped; reading it"),
        }
    }
    hash_read(file, size, path, sink, copy_to, progress)
}

/// Windows of 16 MiB for copy mode: the window being hashed and the one
/// being copied are resident together, 32 MiB at most.
const MAPPED_WINDOW_BLOCKS: u64 = 1024;

/// How much of the source a mapped copy holds resident at once.
const COPY_STEP: usize = 4 << 20;

fn shrank(path: &Path) -> Error {
    Error::io("hash", path)(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was read"))
}

/// Hashes `bytes` a window at a time on all cores, running `beside(done,
/// next)` on one core alongside each window: `done` is the window hashed
/// before it (to release), `next` the one after it (to prepare); a last call
/// after the loop gets the final window as `done`. The outer error is a
/// hashing failure, the inner one the first failure of `beside`, which stops
/// the loop.
fn hash_windows<F>(
    b: &mut OutboardBuilder,
    bytes: &[u8],
    sink: &mut OutboardSink<'_>,
    progress: Progress,
    beside: F,
) -> std::io::Result<std::io::Result<()>>
where
    F: Fn(Option<Range<usize>>, Option<Range<usize>>) -> std::io::Result<()> + Sync,
{
    let count = b.window_count();
    let window = |b: &OutboardBuilder, w: u64| {
        let r = b.window_range(w);
        r.start as usize..r.end as usize
    };
    // In a scope so the loop runs on a pool thread and each join needs no handoff.
    rayon::scope(|_| {
        let mut done = None;
        for w in 0..count {
            let r = window(b, w);
            let next = (w + 1 < count).then(|| window(b, w + 1));
            let (aside, hashed) = rayon::join(|| beside(done.take(), next), || b.add_window(&bytes[r.clone()], sink));
            hashed?;
            count_progress(progress, &r);
            if aside.is_err() {
                return Ok(aside);
            }
            done = Some(r);
        }
        Ok(beside(done, None))
    })
}

/// Windows of 256 MiB for reference mode: one parallel pass over each, as
/// `update_rayon` makes one over the whole file. Memory is bounded by
/// releasing the map in [`RELEASE_BYTES`] blocks as they are hashed, not by
/// the window, so the cores only meet at window ends.
const REFERENCE_WINDOW_BLOCKS: u64 = 16 * 1024;

/// The map is released in blocks of 8 MiB: each hashing thread holds about
/// one block resident (two at a steal boundary), and each release costs a
/// TLB flush on every core, so blocks are not made smaller.
const RELEASE_BYTES: u64 = 8 << 20;

/// Counts the hashed bytes of each release block of a window; the task that
/// completes a block releases it.
struct Releaser<'a> {
    map: &'a SourceMap,
    window: Range<u64>,
    hashed: Vec<std::sync::atomic::AtomicU64>,
}

impl<'a> Releaser<'a> {
    fn new(map: &'a SourceMap, window: Range<u64>) -> Self {
        let blocks = (window.end - window.start).div_ceil(RELEASE_BYTES) as usize;
        Self { map, window, hashed: (0..blocks).map(|_| Default::default()).collect() }
    }

    /// Records that `start..start + len` (inside one block) was hashed.
    fn hashed(&self, start: u64, len: u64) {
        let block = ((start - self.window.start) / RELEASE_BYTES) as usize;
        let block_start = self.window.start + block as u64 * RELEASE_BYTES;
        let block_end = (block_start + RELEASE_BYTES).min(self.window.end);
        let before = self.hashed[block].fetch_add(len, std::sync::atomic::Ordering::AcqRel);
        if before + len == block_end - block_start {
            self.map.release(block_start as usize..block_end as usize);
        }
    }
}

/// Reference mode: hashes the file through a guarded map, as `b3sum` does,
/// releasing each block of the map once it is hashed, so resident memory
/// stays bounded.
fn hash_mapped(
    map: &SourceMap,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    progress: Progress,
) -> Result<Hash> {
    hash_mapped_in_windows(map, size, path, sink, REFERENCE_WINDOW_BLOCKS, progress)
}

fn hash_mapped_in_windows(
    map: &SourceMap,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    window_blocks: u64,
    progress: Progress,
) -> Result<Hash> {
    const _: () =
        assert!(RELEASE_BYTES.is_multiple_of(outboard::PIECE_BYTES as u64), "pieces must not straddle release blocks");
    let mut b = OutboardBuilder::with_window_blocks(size, window_blocks);
    let bytes = map.bytes();
    for w in 0..b.window_count() {
        let releaser = Releaser::new(map, b.window_range(w));
        let piece = |start: u64, len: usize, hash: &mut dyn FnMut(&[u8])| {
            hash(&bytes[start as usize..start as usize + len]);
            releaser.hashed(start, len as u64);
            Ok(())
        };
        b.add_window_pieces(piece, sink).map_err(Error::io("hash", path))?;
        count_progress(progress, &b.window_range(w));
        if map.faulted() {
            return Err(shrank(path));
        }
    }
    b.finish(sink).map_err(Error::io("hash", path))
}

/// Copy mode: each window is written into the store's file from a guarded
/// map of the source (one copy, by one thread, so writers never contend for
/// the file), and what landed there is hashed through a map of that file
/// while the next window is written. So the hash is always of the stored
/// bytes, even if the source changes meanwhile.
fn copy_then_hash(
    src: &SourceMap,
    dst: &File,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    progress: Progress,
) -> Result<Hash> {
    let mut b = OutboardBuilder::with_window_blocks(size, MAPPED_WINDOW_BLOCKS);
    let source = src.bytes();
    // In 4 MiB steps, each mapped in at once (a write from pages not yet
    // mapped faults and retries page by page) and released after.
    let copy = |r: Range<usize>| -> std::io::Result<()> {
        for at in r.clone().step_by(COPY_STEP) {
            let step = at..(at + COPY_STEP).min(r.end);
            src.populate(step.clone());
            // Zero pages are punched out of the preallocated file: holes.
            let written = crate::sparse::write_sparse(dst, &source[step.clone()], at as u64, true);
            src.release(step);
            written?;
        }
        Ok(())
    };
    // A lost source page reads as zeros (and the kernel fails a write from it
    // with EFAULT): either way the source shrank.
    let copy_failed = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::EFAULT) => shrank(path),
        _ => Error::io("copy into store", path)(e),
    };
    copy(0..b.window_range(0).end as usize).map_err(copy_failed)?;
    // SAFETY: a read-only map of the store's own temp file, which only this
    // import writes and nothing truncates while it is mapped; only windows
    // already written into it are read.
    let map = unsafe { memmap2::MmapOptions::new().len(size as usize).map(dst) }.map_err(Error::io("map", path))?;
    let beside = |done: Option<Range<usize>>, next: Option<Range<usize>>| {
        done.into_iter().for_each(|r| source_map::release(&map, r));
        next.map(copy).transpose().map(drop)
    };
    hash_windows(&mut b, &map, sink, progress, beside).map_err(Error::io("hash", path))?.map_err(copy_failed)?;
    if src.faulted() {
        return Err(shrank(path));
    }
    b.finish(sink).map_err(Error::io("hash", path))
}

/// Reads the file with `pread` a piece at a time into per-thread buffers
/// (see [`OutboardBuilder::add_window_read`]), for when no guarded map is
/// available. In copy mode each hashing thread writes the piece it just
/// hashed to `copy_to`, from the same warm buffer.
fn hash_read(
    file: &File,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    copy_to: Option<&File>,
    progress: Progress,
) -> Result<Hash> {
    let mut b = OutboardBuilder::new(size);
    let read = |offset: u64, buf: &mut [u8]| file.read_exact_at(buf, offset);
    let Some(dst) = copy_to else {
        for w in 0..b.window_count() {
            b.add_window_read(read, |_, _| Ok(()), sink).map_err(Error::io("hash", path))?;
            count_progress(progress, &b.window_range(w));
        }
        return b.finish(sink).map_err(Error::io("hash", path));
    };
    // The first write error, told apart from read errors for the message.
    let write_error = std::sync::Mutex::new(None::<std::io::Error>);
    let write = |offset: u64, buf: &[u8]| -> std::io::Result<()> {
        crate::sparse::write_sparse(dst, buf, offset, true).map(drop).map_err(|e| {
            let kind = e.kind();
            write_error.lock().unwrap().get_or_insert(e);
            std::io::Error::new(kind, "copy failed")
        })
    };
    for w in 0..b.window_count() {
        if let Err(e) = b.add_window_read(read, write, sink) {
            return Err(match write_error.lock().unwrap().take() {
                Some(w) => Error::io("copy into store", path)(w),
                None => Error::io("hash", path)(e),
            });
        }
        count_progress(progress, &b.window_range(w));
    }
    b.finish(sink).map_err(Error::io("hash", path))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::import::create_rw;

    /// A file shorter than the size it was opened with (it shrank during the
    /// import) is a read error naming the file, in both modes.
    #[test]
    fn a_file_that_shrinks_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..3 * outboard::PIECE_BYTES).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data[..data.len() - 5000]).unwrap();
        let f = File::open(&src).unwrap();
        let size = data.len() as u64;
        let err = hash_file(&f, size, &src, None, None).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("src"), "{err}");
        let dst = create_rw(&dir.path().join("dst")).unwrap();
        let err = hash_file(&f, size, &src, Some(&dst), None).unwrap_err();
        assert!(err.to_string().contains("hash"), "{err}");
    }

    /// Copy mode writes exactly the source, and hashes it as BLAKE3 does.
    #[test]
    fn copy_mode_copies_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..(5 * outboard::PIECE_BYTES + 12345)).map(|i| (i * 7 % 253) as u8).collect();
        fs::write(&src, &data).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = create_rw(&dst_path).unwrap();
        let (hash, ob) = hash_file(&File::open(&src).unwrap(), data.len() as u64, &src, Some(&dst), None).unwrap();
        assert_eq!(hash, Hash::of(&data));
        assert_eq!((hash, ob), outboard::outboard_of(&data));
        assert_eq!(fs::read(&dst_path).unwrap(), data);
    }

    /// Over several mapped windows, the mapped, copied and read paths all
    /// give bao-tree's outboard, and the copy is exact.
    #[test]
    fn all_paths_agree_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let len = 2 * MAPPED_WINDOW_BLOCKS * tree::BLOCK_BYTES + 12345;
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        fs::write(&src, &data).unwrap();
        let expected = outboard::outboard_of(&data);
        let f = File::open(&src).unwrap();
        assert_eq!(hash_file(&f, len, &src, None, None).unwrap(), expected, "mapped");
        let dst_path = dir.path().join("dst");
        let dst = create_rw(&dst_path).unwrap();
        assert_eq!(hash_file(&f, len, &src, Some(&dst), None).unwrap(), expected, "copied");
        assert_eq!(fs::read(&dst_path).unwrap(), data);
        for copy_to in [None, Some(&create_rw(&dir.path().join("dst2")).unwrap())] {
            let mut ob = vec![0u8; tree::outboard_size(len) as usize];
            let hash = hash_read(&f, len, &src, &mut OutboardSink::Memory(&mut ob), copy_to, None).unwrap();
            assert_eq!((hash, ob), expected, "read, copy {}", copy_to.is_some());
        }
        assert_eq!(fs::read(dir.path().join("dst2")).unwrap(), data);
        // reference mode over windows smaller than, equal to and larger than a release block
        for window_blocks in [256, RELEASE_BYTES / tree::BLOCK_BYTES, 2048] {
            let map = SourceMap::new(&f, len as usize).unwrap().unwrap();
            let mut ob = vec![0u8; tree::outboard_size(len) as usize];
            let hash = hash_mapped_in_windows(&map, len, &src, &mut OutboardSink::Memory(&mut ob), window_blocks, None)
                .unwrap();
            assert_eq!((hash, ob), expected, "reference, windows of {window_blocks} blocks");
        }
    }
}
