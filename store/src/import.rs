//! Import: turning a file, bytes or an async stream into a complete blob.
//!
//! Files are hashed in 32 MiB windows, each window's 256 KiB pieces read
//! into per-thread buffers and hashed on all cores (what `b3sum` does, plus
//! the outboard), so memory stays constant whatever the size. Copy mode
//! writes each piece into the store's file right after hashing it, from the
//! same buffer, so one pass over the source serves both (and the copy runs
//! on all cores).
//! Reference mode leaves the file in place; every read of it is re-verified.
//!
//! A copied blob is committed before its bytes are fsynced (so import runs at
//! page-cache speed) and marked not durable; a background thread syncs it and
//! flips the mark. A crash before that is caught at open, where such blobs are
//! re-hashed and dropped if their bytes did not survive.

use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, warn};

use crate::{
    entry::{DataLocation, EntryRecord, OutboardLocation},
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

/// Hashes a file a window at a time, each window's pieces read and hashed on
/// all cores in per-thread buffers (see [`OutboardBuilder::add_window_read`]),
/// so memory stays constant whatever the size. In copy mode each hashing
/// thread writes the piece it just hashed to `copy_to` at the same offset,
/// from the same warm buffer, so both cores copy while they hash.
fn hash_file_into(
    file: &File,
    size: u64,
    path: &Path,
    sink: &mut OutboardSink<'_>,
    copy_to: Option<&File>,
) -> Result<Hash> {
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
}
