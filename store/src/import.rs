//! Import: turning a file, bytes or an async stream into a complete blob.
//!
//! Files are hashed in windows on all cores, releasing what was hashed, so
//! memory stays constant whatever the size. Reference mode hashes through a
//! map of the file, as `b3sum` does (a [`SourceMap`], which turns a file
//! shrinking under it into an error instead of SIGBUS), in one parallel pass
//! per 256 MiB window; the task that finishes an 8 MiB block of the map
//! releases it. Copy mode writes each window into the store's file from
//! the map, on one thread (two writers of one file contend for its lock),
//! and hashes what landed there while the next window is written, so the
//! hash is always of the stored bytes. Where a file cannot be mapped, each
//! window's 256 KiB pieces are read into per-thread buffers instead.
//! Reference mode leaves the file in place; every read of it is re-verified.
//!
//! A copied blob is committed before its bytes are fsynced (so import runs at
//! page-cache speed) and marked not durable; a background thread syncs it and
//! flips the mark. A crash before that is caught at open, where such blobs are
//! re-hashed and dropped if their bytes did not survive.

use std::{
    fs::{self, File},
    io::Write,
    ops::Range,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, warn};

use crate::{
    entry::{DataLocation, EntryRecord, OutboardLocation},
    source_map::{self, SourceMap},
    tree::{self, OutboardBuilder, OutboardSink},
    Error, Hash, Lease, Result, Store, INLINE_MAX,
};

/// Outboards up to this size are built in memory; larger ones straight into
/// their file (64 MiB of outboard covers 16 GiB of data).
const OUTBOARD_IN_MEMORY_MAX: u64 = 16 * 1024 * 1024;

/// How a file is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Copy the bytes into the store.
    Copy,
    /// Leave the file where it is and reference it; it must not change.
    Reference,
}

impl std::str::FromStr for ImportMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "copy" => Ok(Self::Copy),
            "reference" | "ref" => Ok(Self::Reference),
            other => Err(Error::InvalidArgument(format!("import mode {other:?}: expected copy or reference"))),
        }
    }
}

/// The result of an import: the blob's hash and size, and a lease that keeps
/// it from garbage collection until it is tagged or dropped.
#[derive(Debug)]
pub struct ImportOutcome {
    /// BLAKE3 hash (bao root).
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Protects the new blob until it is reachable from a tag or resource.
    pub lease: Lease,
}

/// Hashes an open file of `size` bytes; returns the hash and, if it fits in
/// memory, the outboard (empty for single-group blobs); optionally copies it to `copy_to`.
pub(crate) fn hash_file(file: &File, size: u64, path: &Path, copy_to: Option<&File>) -> Result<(Hash, Vec<u8>)> {
    let ob_size = tree::outboard_size(size);
    if ob_size > OUTBOARD_IN_MEMORY_MAX {
        return Err(Error::Limit(format!("outboard of {size} bytes does not fit in memory")));
    }
    let mut ob = vec![0u8; ob_size as usize];
    let hash = hash_file_into(file, size, path, &mut OutboardSink::Memory(&mut ob), copy_to)?;
    Ok((hash, ob))
}

/// Hashes a file (and in copy mode copies it to `copy_to`) a window at a
/// time on all cores: through a guarded map, or by reads where it cannot be
/// mapped (see the module docs).
fn hash_file_into(
    file: &File,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    copy_to: Option<&File>,
) -> Result<Hash> {
    if size > 0 {
        match SourceMap::new(file, size as usize) {
            Ok(Some(map)) => {
                return match copy_to {
                    None => hash_mapped(&map, size, path, sink),
                    Some(dst) => copy_then_hash(&map, dst, size, path, sink),
                }
            }
            Ok(None) => debug!(path = %path.display(), "no free source-map slot; reading the file"),
            Err(e) => debug!(path = %path.display(), error = %e, "the file cannot be mapped; reading it"),
        }
    }
    hash_read(file, size, path, sink, copy_to)
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
fn hash_mapped(map: &SourceMap, size: u64, path: &Path, sink: &mut OutboardSink<'_>) -> Result<Hash> {
    hash_mapped_in_windows(map, size, path, sink, REFERENCE_WINDOW_BLOCKS)
}

fn hash_mapped_in_windows(
    map: &SourceMap,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    window_blocks: u64,
) -> Result<Hash> {
    const _: () =
        assert!(RELEASE_BYTES.is_multiple_of(tree::PIECE_BYTES as u64), "pieces must not straddle release blocks");
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
fn copy_then_hash(src: &SourceMap, dst: &File, size: u64, path: &Path, sink: &mut OutboardSink<'_>) -> Result<Hash> {
    let mut b = OutboardBuilder::with_window_blocks(size, MAPPED_WINDOW_BLOCKS);
    let source = src.bytes();
    // In 4 MiB steps, each mapped in at once (a write from pages not yet
    // mapped faults and retries page by page) and released after.
    let copy = |r: Range<usize>| -> std::io::Result<()> {
        for at in r.clone().step_by(COPY_STEP) {
            let step = at..(at + COPY_STEP).min(r.end);
            src.populate(step.clone());
            let written = dst.write_all_at(&source[step.clone()], at as u64);
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
    hash_windows(&mut b, &map, sink, beside).map_err(Error::io("hash", path))?.map_err(copy_failed)?;
    if src.faulted() {
        return Err(shrank(path));
    }
    b.finish(sink).map_err(Error::io("hash", path))
}

/// Reads the file with `pread` a piece at a time into per-thread buffers
/// (see [`OutboardBuilder::add_window_read`]), for when no guarded map is
/// available. In copy mode each hashing thread writes the piece it just
/// hashed to `copy_to`, from the same warm buffer.
fn hash_read(file: &File, size: u64, path: &Path, sink: &mut OutboardSink<'_>, copy_to: Option<&File>) -> Result<Hash> {
    let mut b = OutboardBuilder::new(size);
    let read = |offset: u64, buf: &mut [u8]| file.read_exact_at(buf, offset);
    let Some(dst) = copy_to else {
        for _ in 0..b.window_count() {
            b.add_window_read(read, |_, _| Ok(()), sink).map_err(Error::io("hash", path))?;
        }
        return b.finish(sink).map_err(Error::io("hash", path));
    };
    // The first write error, told apart from read errors for the message.
    let write_error = std::sync::Mutex::new(None::<std::io::Error>);
    let write = |offset: u64, buf: &[u8]| -> std::io::Result<()> {
        dst.write_all_at(buf, offset).map_err(|e| {
            let kind = e.kind();
            write_error.lock().unwrap().get_or_insert(e);
            std::io::Error::new(kind, "copy failed")
        })
    };
    for _ in 0..b.window_count() {
        if let Err(e) = b.add_window_read(read, write, sink) {
            return Err(match write_error.lock().unwrap().take() {
                Some(w) => Error::io("copy into store", path)(w),
                None => Error::io("hash", path)(e),
            });
        }
    }
    b.finish(sink).map_err(Error::io("hash", path))
}

fn file_identity(path: &Path) -> Result<(u64, i128)> {
    let m = fs::metadata(path).map_err(Error::io("stat", path))?;
    if !m.is_file() {
        return Err(Error::InvalidArgument(format!("{} is not a regular file", path.display())));
    }
    let mtime =
        m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as i128).unwrap_or(0);
    Ok((m.len(), mtime))
}

impl Store {
    /// Imports the file at `path`.
    pub async fn import_path(&self, path: impl AsRef<Path>, mode: ImportMode) -> Result<ImportOutcome> {
        let store = self.clone();
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || store.import_path_blocking(&path, mode)).await?
    }

    /// Imports bytes held in memory.
    pub async fn import_bytes(&self, data: impl Into<bytes::Bytes>) -> Result<ImportOutcome> {
        let data: bytes::Bytes = data.into();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            if data.len() as u64 <= INLINE_MAX {
                let hash = Hash::of(&data);
                return store.commit_inline(&hash, data.to_vec()).map(|lease| ImportOutcome {
                    hash,
                    size: data.len() as u64,
                    lease,
                });
            }
            let tmp = store.tmp_path("bytes");
            let mut f = create_rw(&tmp)?;
            f.write_all(&data).map_err(Error::io("write", &tmp))?;
            store.import_owned_tmp(&tmp, f)
        })
        .await?
    }

    /// Imports everything `reader` yields, streaming through a temp file in
    /// constant memory.
    pub async fn import_reader<R: AsyncRead + Unpin>(&self, mut reader: R) -> Result<ImportOutcome> {
        let tmp = self.tmp_path("stream");
        let mut f = tokio::fs::File::from_std(create_rw(&tmp)?);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = reader.read(&mut buf).await.map_err(Error::Stream)?;
            if n == 0 {
                break;
            }
            tokio::io::AsyncWriteExt::write_all(&mut f, &buf[..n]).await.map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io("write", &tmp)(e)
            })?;
        }
        let f = f.into_std().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.import_owned_tmp(&tmp, f)).await?
    }

    fn import_path_blocking(&self, path: &Path, mode: ImportMode) -> Result<ImportOutcome> {
        let path = fs::canonicalize(path).map_err(Error::io("resolve", path))?;
        let (size, mtime) = file_identity(&path)?;
        if size <= INLINE_MAX {
            let data = fs::read(&path).map_err(Error::io("read", &path))?;
            let hash = Hash::of(&data);
            let lease = self.commit_inline(&hash, data)?;
            return Ok(ImportOutcome { hash, size, lease });
        }
        let src = File::open(&path).map_err(Error::io("open", &path))?;
        let outcome = match mode {
            ImportMode::Reference => {
                let (hash, ob, ob_tmp) = self.hash_to_outboard(&src, size, &path, None)?;
                if file_identity(&path)? != (size, mtime) {
                    return Err(Error::InvalidArgument(format!("{} changed during import", path.display())));
                }
                let data =
                    DataLocation::External { path: path.to_string_lossy().into_owned(), len: size, mtime_ns: mtime };
                let lease = self.commit(&hash, size, data, None, ob, ob_tmp)?;
                ImportOutcome { hash, size, lease }
            }
            ImportMode::Copy => {
                let tmp = self.tmp_path("copy");
                let hashed = create_rw(&tmp)
                    .and_then(|dst| preallocate(&dst, size, &tmp).map(|_| dst))
                    .and_then(|dst| self.hash_to_outboard(&src, size, &path, Some(&dst)));
                let (hash, ob, ob_tmp) = hashed.inspect_err(|_| {
                    let _ = fs::remove_file(&tmp);
                })?;
                if file_identity(&path)? != (size, mtime) {
                    let _ = fs::remove_file(&tmp);
                    return Err(Error::InvalidArgument(format!("{} changed during import", path.display())));
                }
                let lease = self.commit(&hash, size, DataLocation::Owned, Some(tmp), ob, ob_tmp)?;
                ImportOutcome { hash, size, lease }
            }
        };
        debug!(hash = %outcome.hash, size, ?mode, "imported {}", path.display());
        Ok(outcome)
    }

    /// Imports a temp file the store already owns (moved, not copied).
    fn import_owned_tmp(&self, tmp: &Path, f: File) -> Result<ImportOutcome> {
        let res = (|| {
            let size = f.metadata().map_err(Error::io("stat", tmp))?.len();
            if size <= INLINE_MAX {
                let data = fs::read(tmp).map_err(Error::io("read", tmp))?;
                let hash = Hash::of(&data);
                let _ = fs::remove_file(tmp);
                return self.commit_inline(&hash, data).map(|lease| ImportOutcome { hash, size, lease });
            }
            let (hash, ob, ob_tmp) = self.hash_to_outboard(&f, size, tmp, None)?;
            let lease = self.commit(&hash, size, DataLocation::Owned, Some(tmp.to_path_buf()), ob, ob_tmp)?;
            Ok(ImportOutcome { hash, size, lease })
        })();
        if res.is_err() {
            let _ = fs::remove_file(tmp);
        }
        res
    }

    /// Hashes `src`, building the outboard in memory when small, else in a temp file.
    fn hash_to_outboard(
        &self,
        src: &File,
        size: u64,
        path: &Path,
        copy_to: Option<&File>,
    ) -> Result<(Hash, Vec<u8>, Option<PathBuf>)> {
        let ob_size = tree::outboard_size(size);
        if ob_size <= OUTBOARD_IN_MEMORY_MAX {
            let (hash, ob) = hash_file(src, size, path, copy_to)?;
            return Ok((hash, ob, None));
        }
        let ob_tmp = self.tmp_path("obao4");
        let f = File::create(&ob_tmp).map_err(Error::io("create", &ob_tmp))?;
        f.set_len(ob_size).map_err(Error::io("set length of", &ob_tmp))?;
        match hash_file_into(src, size, path, &mut OutboardSink::File(&f), copy_to) {
            Ok(hash) => Ok((hash, Vec::new(), Some(ob_tmp))),
            Err(e) => {
                let _ = fs::remove_file(&ob_tmp);
                Err(e)
            }
        }
    }

    /// Records a small blob inline.
    pub(crate) fn commit_inline(&self, hash: &Hash, data: Vec<u8>) -> Result<Lease> {
        let _roots = self.inner.roots.lock().unwrap();
        let lease = self.lease(*hash);
        if !matches!(self.entry(hash)?, Some(EntryRecord::Complete { .. })) {
            let size = data.len() as u64;
            let e = EntryRecord::Complete {
                size,
                data: DataLocation::Inline(data),
                outboard: OutboardLocation::None,
                durable: true,
            };
            self.put_entry(hash, &e)?;
            self.flush()?;
        }
        Ok(lease)
    }

    /// Moves temp files into place and records a complete blob; a blob already
    /// complete wins (its temp files are dropped).
    fn commit(
        &self,
        hash: &Hash,
        size: u64,
        data: DataLocation,
        data_tmp: Option<PathBuf>,
        ob: Vec<u8>,
        ob_tmp: Option<PathBuf>,
    ) -> Result<Lease> {
        let discard = || {
            for p in data_tmp.iter().chain(ob_tmp.iter()) {
                let _ = fs::remove_file(p);
            }
        };
        let _roots = self.inner.roots.lock().unwrap();
        let lease = self.lease(*hash);
        match self.entry(hash)? {
            Some(EntryRecord::Complete { .. }) => {
                discard();
                return Ok(lease);
            }
            // a complete import supersedes a partial download of the same blob
            Some(EntryRecord::Partial { .. }) => self.remove_blob(hash)?,
            None => {}
        }
        let outboard = match (ob_tmp.as_ref(), ob.len() as u64) {
            (Some(p), _) => {
                let dst = self.blob_path(hash, "obao4");
                fs::rename(p, &dst).map_err(Error::io("rename", p))?;
                OutboardLocation::Owned
            }
            (None, 0) => OutboardLocation::None,
            (None, n) if n <= INLINE_MAX => OutboardLocation::Inline(ob),
            (None, _) => {
                let dst = self.blob_path(hash, "obao4");
                fs::write(&dst, &ob).map_err(|e| {
                    discard();
                    Error::io("write", &dst)(e)
                })?;
                OutboardLocation::Owned
            }
        };
        let durable = data_tmp.is_none() && !matches!(outboard, OutboardLocation::Owned);
        if let Some(tmp) = &data_tmp {
            let dst = self.blob_path(hash, "data");
            fs::rename(tmp, &dst).map_err(Error::io("rename", tmp))?;
        }
        self.put_entry(hash, &EntryRecord::Complete { size, data, outboard, durable })?;
        if !durable {
            self.schedule_sync(*hash);
        }
        Ok(lease)
    }

    /// Makes a non-durable blob durable in the background.
    /// The thread holds the store weakly: a store being closed is not kept open,
    /// and whatever is left undone is re-verified at the next open.
    pub(crate) fn schedule_sync(&self, hash: Hash) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        std::thread::spawn(move || {
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = (Store { inner }).make_durable(&hash) {
                warn!(%hash, "background sync failed: {e}");
            }
        });
    }

    /// fsyncs a blob's owned files, then marks its entry durable.
    pub fn make_durable(&self, hash: &Hash) -> Result<()> {
        let Some(EntryRecord::Complete { size, data, outboard, durable: false }) = self.entry(hash)? else {
            return Ok(());
        };
        for (owned, ext) in
            [(matches!(data, DataLocation::Owned), "data"), (matches!(outboard, OutboardLocation::Owned), "obao4")]
        {
            if owned {
                let p = self.blob_path(hash, ext);
                File::open(&p).and_then(|f| f.sync_all()).map_err(Error::io("sync", &p))?;
            }
        }
        let dir = self.inner.dir.join("blobs");
        File::open(&dir).and_then(|f| f.sync_all()).map_err(Error::io("sync directory", &dir))?;
        let _roots = self.inner.roots.lock().unwrap();
        if let Some(EntryRecord::Complete { durable: false, .. }) = self.entry(hash)? {
            self.put_entry(hash, &EntryRecord::Complete { size, data, outboard, durable: true })?;
            self.flush()?;
        }
        Ok(())
    }

    /// Makes every blob durable now (waits for the disk).
    pub fn sync_all(&self) -> Result<()> {
        for (hash, _) in self.blobs()? {
            self.make_durable(&hash)?;
        }
        self.flush()
    }
}

/// Reserves `size` bytes of disk for a file about to be written: a full disk
/// fails here, before any work, and the file system allocates the blocks in
/// one go instead of write by write (a third cheaper per buffered write on
/// these machines). File systems without `fallocate` are left to allocate
/// as they write.
pub(crate) fn preallocate(f: &File, size: u64, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(len) = libc::off_t::try_from(size) else { return Ok(()) };
    // SAFETY: fallocate on a descriptor this `File` owns; no memory is passed.
    match unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) } {
        0 => Ok(()),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            e => Err(Error::io("reserve space for", path)(e)),
        },
    }
}

/// Creates a temp file open for reading (hashing maps it) and writing.
fn create_rw(path: &Path) -> Result<File> {
    fs::OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(Error::io("create", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file shorter than the size it was opened with (it shrank during the
    /// import) is a read error naming the file, in both modes.
    #[test]
    fn a_file_that_shrinks_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..3 * tree::PIECE_BYTES).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &data[..data.len() - 5000]).unwrap();
        let f = File::open(&src).unwrap();
        let size = data.len() as u64;
        let err = hash_file(&f, size, &src, None).unwrap_err();
        assert!(matches!(err, Error::Io { .. }) && err.to_string().contains("src"), "{err}");
        let dst = create_rw(&dir.path().join("dst")).unwrap();
        let err = hash_file(&f, size, &src, Some(&dst)).unwrap_err();
        assert!(err.to_string().contains("hash"), "{err}");
    }

    /// Copy mode writes exactly the source, and hashes it as BLAKE3 does.
    #[test]
    fn copy_mode_copies_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..(5 * tree::PIECE_BYTES + 12345)).map(|i| (i * 7 % 253) as u8).collect();
        fs::write(&src, &data).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = create_rw(&dst_path).unwrap();
        let (hash, ob) = hash_file(&File::open(&src).unwrap(), data.len() as u64, &src, Some(&dst)).unwrap();
        assert_eq!(hash, Hash::of(&data));
        assert_eq!((hash, ob), tree::outboard_of(&data));
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
        let expected = tree::outboard_of(&data);
        let f = File::open(&src).unwrap();
        assert_eq!(hash_file(&f, len, &src, None).unwrap(), expected, "mapped");
        let dst_path = dir.path().join("dst");
        let dst = create_rw(&dst_path).unwrap();
        assert_eq!(hash_file(&f, len, &src, Some(&dst)).unwrap(), expected, "copied");
        assert_eq!(fs::read(&dst_path).unwrap(), data);
        for copy_to in [None, Some(&create_rw(&dir.path().join("dst2")).unwrap())] {
            let mut ob = vec![0u8; tree::outboard_size(len) as usize];
            let hash = hash_read(&f, len, &src, &mut OutboardSink::Memory(&mut ob), copy_to).unwrap();
            assert_eq!((hash, ob), expected, "read, copy {}", copy_to.is_some());
        }
        assert_eq!(fs::read(dir.path().join("dst2")).unwrap(), data);
        // reference mode over windows smaller than, equal to and larger than a release block
        for window_blocks in [256, RELEASE_BYTES / tree::BLOCK_BYTES, 2048] {
            let map = SourceMap::new(&f, len as usize).unwrap().unwrap();
            let mut ob = vec![0u8; tree::outboard_size(len) as usize];
            let hash =
                hash_mapped_in_windows(&map, len, &src, &mut OutboardSink::Memory(&mut ob), window_blocks).unwrap();
            assert_eq!((hash, ob), expected, "reference, windows of {window_blocks} blocks");
        }
    }
}
