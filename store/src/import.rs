//! Import: turning a file, bytes or an async stream into a complete blob,
//! in copy mode (into the store) or reference mode (left in place, every
//! read of it re-verified). Hashing is `hashing`'s; recording the blob is
//! `commit`'s.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::debug;

use crate::{
    entry::DataLocation,
    hashing::{hash_file, hash_file_into, Progress, OUTBOARD_IN_MEMORY_MAX},
    outboard::OutboardSink,
    tree, Error, Hash, Lease, Result, Store, INLINE_MAX,
};

/// How a file is imported.
///
/// ```
/// # #[tokio::main] async fn main() -> blixard_store::Result<()> {
/// use blixard_store::{ImportMode, Store};
///
/// let store = Store::temporary()?;
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("disk.img");
/// std::fs::write(&file, vec![0u8; 100_000]).unwrap();
/// // Reference: the store keeps the path; the file must not change.
/// let imported = store.import_path(&file, ImportMode::Reference).await?;
/// store.set_tag_and_release("disk", imported.lease)?;
/// assert_eq!("copy".parse::<ImportMode>()?, ImportMode::Copy);
/// # Ok(()) }
/// ```
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
///
/// Dropping it unused is a warning (the blob would be collected by the
/// next `gc`):
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// async fn import(store: blixard_store::Store) -> blixard_store::Result<()> {
///     store.import_bytes(vec![1u8; 10]).await?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
#[must_use = "the blob is collected by the next gc unless this lease is kept or made a tag or resource"]
pub struct ImportOutcome {
    /// BLAKE3 hash (bao root).
    pub hash: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Protects the new blob until it is reachable from a tag or resource.
    pub lease: Lease,
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
        tokio::task::spawn_blocking(move || store.import_path_blocking(&path, mode, None)).await?
    }

    /// [`Store::import_path`], adding the bytes hashed so far to `progress`
    /// as it goes (for a progress bar; the file's size is the total).
    pub async fn import_path_with_progress(
        &self,
        path: impl AsRef<Path>,
        mode: ImportMode,
        progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<ImportOutcome> {
        let store = self.clone();
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || store.import_path_blocking(&path, mode, Some(&progress))).await?
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

    fn import_path_blocking(&self, path: &Path, mode: ImportMode, progress: Progress) -> Result<ImportOutcome> {
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
                let (hash, ob, ob_tmp) = self.hash_to_outboard(&src, size, &path, None, progress)?;
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
                    .and_then(|dst| self.hash_to_outboard(&src, size, &path, Some(&dst), progress));
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
    pub(crate) fn import_owned_tmp(&self, tmp: &Path, f: File) -> Result<ImportOutcome> {
        let res = (|| {
            let size = f.metadata().map_err(Error::io("stat", tmp))?.len();
            if size <= INLINE_MAX {
                let data = fs::read(tmp).map_err(Error::io("read", tmp))?;
                let hash = Hash::of(&data);
                let _ = fs::remove_file(tmp);
                return self.commit_inline(&hash, data).map(|lease| ImportOutcome { hash, size, lease });
            }
            let (hash, ob, ob_tmp) = self.hash_to_outboard(&f, size, tmp, None, None)?;
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
        progress: Progress,
    ) -> Result<(Hash, Vec<u8>, Option<PathBuf>)> {
        let ob_size = tree::outboard_size(size);
        if ob_size <= OUTBOARD_IN_MEMORY_MAX {
            let (hash, ob) = hash_file(src, size, path, copy_to, progress)?;
            return Ok((hash, ob, None));
        }
        let ob_tmp = self.tmp_path("obao4");
        let f = File::create(&ob_tmp).map_err(Error::io("create", &ob_tmp))?;
        f.set_len(ob_size).map_err(Error::io("set length of", &ob_tmp))?;
        match hash_file_into(src, size, path, &mut OutboardSink::File(&f), copy_to, progress) {
            Ok(hash) => Ok((hash, Vec::new(), Some(ob_tmp))),
            Err(e) => {
                let _ = fs::remove_file(&ob_tmp);
                Err(e)
            }
        }
    }
}

/// Reserves `size` bytes of disk for a file about to be written: a full disk
/// fails here, before any work, and the file system allocates the blocks in
/// one go instead of write by write (cheaper per buffered write). File
/// systems without `fallocate` are left to allocate as they write.
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
pub(crate) fn create_rw(path: &Path) -> Result<File> {
    fs::OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(Error::io("create", path))
}
