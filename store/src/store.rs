//! The store: opening a data directory, its layout, recovery after a crash,
//! and the status of a blob.
//!
//! ```text
//! <dir>/meta/            sled: blobs, resources, tags, format version
//! <dir>/blobs/<hash>.data    owned data of complete blobs > 16 KiB
//! <dir>/blobs/<hash>.obao4   pre-order outboards > 16 KiB
//! <dir>/partial/<hash>.{data,obao4,ckpt}   partial blobs and their checkpoints
//! <dir>/tmp/             temp files, emptied at open
//! ```

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tracing::debug;

use crate::{
    entries::{Entries, Roots},
    entry::EntryRecord,
    metadata::open_or_set_aside,
    partial::PartialBlob,
    ranges::{self, ChunkRanges},
    recovery::Recovery,
    Error, Hash, Result,
};

/// On-disk format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Tunables of a store.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// // checkpoint partial blobs every 64 MiB verified, or every 5 s
/// let config = blixard_store::StoreConfig {
///     checkpoint_bytes: 64 << 20,
///     checkpoint_interval: std::time::Duration::from_secs(5),
/// };
/// let store = blixard_store::Store::open_with(dir.path(), config)?;
/// # Ok::<(), blixard_store::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Checkpoint a partial blob after this many newly verified bytes.
    pub checkpoint_bytes: u64,
    /// ... or after this long since the last checkpoint, whichever is first.
    pub checkpoint_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { checkpoint_bytes: 16 * 1024 * 1024, checkpoint_interval: Duration::from_secs(2) }
    }
}

/// What the store holds of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobStatus {
    /// Nothing.
    Absent,
    /// Some verified chunk ranges.
    Partial {
        /// Size from the first response; verified once the last chunk is held.
        size: u64,
        /// True once the last chunk verified, proving `size`.
        size_verified: bool,
        /// Verified chunk ranges.
        ranges: ChunkRanges,
    },
    /// Every byte, verified.
    Complete {
        /// Size in bytes.
        size: u64,
    },
}

/// A persistent content-addressed blob store. Cheap to clone; all clones share
/// one database and directory.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let store = blixard_store::Store::open(dir.path())?; // Store::temporary() for scratch
/// let same = store.clone(); // clones share one database
/// assert_eq!(same.dir(), dir.path());
/// # Ok::<(), blixard_store::Error>(())
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// A [`Store`] held without keeping it open (background work).
pub(crate) struct WeakStore(Weak<Inner>);

impl WeakStore {
    /// The store, if some clone still holds it.
    pub(crate) fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

/// The state every clone of a [`Store`] shares. Private: the modules of
/// the crate reach it through the accessors below, and blob entries only
/// through their one writer, [`Entries`].
struct Inner {
    dir: PathBuf,
    db: sled::Db,
    entries: Entries,
    resources: sled::Tree,
    tags: sled::Tree,
    config: StoreConfig,
    /// Open partial blobs, shared by concurrent writers of one hash.
    partials: Mutex<HashMap<Hash, Weak<PartialBlob>>>,
    /// Lease counts per hash (in memory: leases die with the process).
    leases: Mutex<HashMap<Hash, usize>>,
    /// Blobs a download of this process completed (verified as they
    /// arrived), for `ExportOptions::hand_over`; at most `FRESH_MAX`.
    fresh: Mutex<std::collections::HashSet<Hash>>,
    /// Partial blobs from disk whose held ranges were re-verified by this
    /// process (see `Store::check_resumed`).
    checked_partials: Mutex<std::collections::HashSet<Hash>>,
    /// What opening found wrong with the metadata.
    recovery: std::sync::OnceLock<Recovery>,
    /// The directory of a [`Store::temporary`] store, removed when the last
    /// clone goes (after the fields above, the database among them).
    _temporary: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.dir).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with default settings.
    ///
    /// Blocking: it takes the directory's lock (waiting up to 3 s for
    /// another store in this process to let go) and may re-verify blobs a
    /// crash left unsynced; call it from `spawn_blocking` in async code.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, StoreConfig::default())
    }

    /// A new, empty store in a temporary directory that is removed when the
    /// last clone of the store is dropped: for tests and scratch work.
    ///
    /// ```
    /// let store = blixard_store::Store::temporary()?;
    /// let dir = store.dir().to_path_buf();
    /// assert!(dir.exists());
    /// drop(store);
    /// assert!(!dir.exists());
    /// # Ok::<(), blixard_store::Error>(())
    /// ```
    pub fn temporary() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("blixard-store-")
            .tempdir()
            .map_err(Error::io("create directory", std::env::temp_dir()))?;
        Self::open_in(dir.path().to_path_buf(), StoreConfig::default(), Some(dir))
    }

    /// Opens the store in `dir`. Recovers from a crash: temp files are removed,
    /// complete blobs not yet fsynced are re-verified, and partial blobs
    /// resume from their last valid checkpoint (or are re-verified from disk
    /// when the checkpoint is damaged or missing).
    pub fn open_with(dir: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        Self::open_in(dir.as_ref().to_path_buf(), config, None)
    }

    fn open_in(dir: PathBuf, config: StoreConfig, temporary: Option<tempfile::TempDir>) -> Result<Self> {
        for sub in ["blobs", "partial", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(Error::io("create directory", &p))?;
        }
        let meta = dir.join("meta");
        let mut recovery = Recovery::default();
        let (db, moved_aside) = open_or_set_aside(&meta)?;
        recovery.moved_aside = moved_aside;
        let fresh = check_version(&db, &meta)?;
        let has_blob_files = fs::read_dir(dir.join("blobs")).map(|mut d| d.next().is_some()).unwrap_or(false);
        recovery.metadata_lost = fresh && has_blob_files && recovery.moved_aside.is_none();
        let inner = Inner {
            entries: Entries::open(&db)?,
            resources: db.open_tree("resources")?,
            tags: db.open_tree("tags")?,
            db,
            dir,
            config,
            partials: Mutex::new(HashMap::new()),
            checked_partials: Mutex::new(Default::default()),
            fresh: Mutex::new(Default::default()),
            leases: Mutex::new(HashMap::new()),
            recovery: std::sync::OnceLock::new(),
            _temporary: temporary,
        };
        let store = Store { inner: Arc::new(inner) };
        store.clear_tmp()?;
        store.recover()?;
        store.adopt_orphans(&mut recovery)?;
        if !recovery.is_clean() {
            tracing::error!("store {}: {}", store.inner.dir.display(), recovery.describe());
        }
        let _ = store.inner.recovery.set(recovery);
        Ok(store)
    }

    /// What opening this store found wrong with its metadata database and
    /// recovered ([`Recovery::is_clean`](crate::Recovery::is_clean) if
    /// nothing).
    pub fn recovery(&self) -> &Recovery {
        self.inner.recovery.get_or_init(Default::default)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub(crate) fn tmp_path(&self, tag: &str) -> PathBuf {
        let n: u64 = rand_u64();
        self.inner.dir.join("tmp").join(format!("{tag}-{n:016x}"))
    }

    pub(crate) fn blob_path(&self, hash: &Hash, ext: &str) -> PathBuf {
        self.inner.dir.join("blobs").join(format!("{}.{ext}", hash.to_hex()))
    }

    pub(crate) fn partial_path(&self, hash: &Hash, ext: &str) -> PathBuf {
        self.inner.dir.join("partial").join(format!("{}.{ext}", hash.to_hex()))
    }

    fn clear_tmp(&self) -> Result<()> {
        let tmp = self.inner.dir.join("tmp");
        for e in fs::read_dir(&tmp).map_err(Error::io("read directory", &tmp))? {
            let p = e.map_err(Error::io("read directory", &tmp))?.path();
            let _ = fs::remove_file(&p);
        }
        Ok(())
    }

    pub(crate) fn entry(&self, hash: &Hash) -> Result<Option<EntryRecord>> {
        self.inner.entries.get(hash)
    }

    /// This store, held weakly.
    pub(crate) fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    /// The blob entries' one writer.
    pub(crate) fn entries(&self) -> &Entries {
        &self.inner.entries
    }

    /// Takes the roots lock (see [`Roots`]).
    pub(crate) fn lock_roots(&self) -> Roots<'_> {
        self.inner.entries.lock_roots()
    }

    /// The metadata database (for trees of other modules: content indexes).
    pub(crate) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    /// The resources tree.
    pub(crate) fn resources_tree(&self) -> &sled::Tree {
        &self.inner.resources
    }

    /// The tags tree.
    pub(crate) fn tags_tree(&self) -> &sled::Tree {
        &self.inner.tags
    }

    /// The store's settings.
    pub(crate) fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Lease counts per hash.
    pub(crate) fn leases(&self) -> &Mutex<HashMap<Hash, usize>> {
        &self.inner.leases
    }

    /// Open partial blobs by hash.
    pub(crate) fn partials(&self) -> &Mutex<HashMap<Hash, Weak<PartialBlob>>> {
        &self.inner.partials
    }

    /// Blobs a download of this process completed.
    pub(crate) fn fresh(&self) -> &Mutex<std::collections::HashSet<Hash>> {
        &self.inner.fresh
    }

    /// Partial blobs whose held ranges this process re-verified.
    pub(crate) fn checked_partials(&self) -> &Mutex<std::collections::HashSet<Hash>> {
        &self.inner.checked_partials
    }

    /// Flushes the metadata database to disk.
    ///
    /// Blocking (fsync).
    pub fn flush(&self) -> Result<()> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// What the store holds of `hash`. A blob imported by reference whose
    /// file's length or modification time changed holds nothing any more
    /// (see [`Store::import_path`]); a change that kept both is found when
    /// the bytes are next read or served. Blocking (a metadata read, a
    /// `stat` for a referenced file).
    pub fn status(&self, hash: &Hash) -> Result<BlobStatus> {
        match self.entry(hash)? {
            None => Ok(BlobStatus::Absent),
            Some(EntryRecord::Complete {
                size,
                data: crate::entry::DataLocation::External { path, len, mtime_ns },
                ..
            }) => {
                let checked = std::fs::metadata(&path)
                    .map_err(|e| format!("cannot stat: {e}"))
                    .and_then(|m| crate::opened::reference_unchanged(&m, len, mtime_ns));
                let Err(reason) = checked else { return Ok(BlobStatus::Complete { size }) };
                let e = self.reference_changed(Error::ReferenceChanged { hash: *hash, path: path.into(), reason });
                match self.entry(hash)? {
                    // Made partial by the check: report that.
                    Some(EntryRecord::Partial { .. }) => self.status(hash),
                    _ => Err(e),
                }
            }
            Some(EntryRecord::Complete { size, .. }) => Ok(BlobStatus::Complete { size }),
            Some(EntryRecord::Partial { size }) => {
                let ranges = match self.live_partial(hash) {
                    Some(p) => p.ranges(),
                    None => crate::checkpoint::load_checkpoint(self, hash, size).unwrap_or_default(),
                };
                let size_verified = ranges.is_superset(&ranges::last_chunk(size));
                Ok(BlobStatus::Partial { size, size_verified, ranges })
            }
        }
    }

    /// The chunk ranges of `hash` the store lacks; `None` if it is complete.
    /// For an absent blob that is everything (`0..`), size unknown.
    pub fn missing(&self, hash: &Hash) -> Result<Option<ChunkRanges>> {
        Ok(match self.status(hash)? {
            BlobStatus::Absent => Some(ChunkRanges::all()),
            BlobStatus::Partial { size, ranges: held, .. } => Some(ranges::all(size) - held),
            BlobStatus::Complete { .. } => None,
        })
    }

    /// Hashes of every blob in the store, complete or partial.
    pub fn blobs(&self) -> Result<Vec<(Hash, BlobStatus)>> {
        let mut out = Vec::new();
        for h in self.inner.entries.hashes()? {
            out.push((h, self.status(&h)?));
        }
        Ok(out)
    }

    pub(crate) fn live_partial(&self, hash: &Hash) -> Option<Arc<PartialBlob>> {
        self.inner.partials.lock().unwrap().get(hash).and_then(Weak::upgrade)
    }

    /// Removes a blob's entry and every file it has.
    pub(crate) fn remove_blob(&self, hash: &Hash) -> Result<()> {
        self.remove_content_index(hash)?;
        self.inner.entries.remove(hash)?;
        self.inner.partials.lock().unwrap().remove(hash);
        for p in [
            self.blob_path(hash, "data"),
            self.blob_path(hash, "obao4"),
            self.partial_path(hash, "data"),
            self.partial_path(hash, "obao4"),
            self.partial_path(hash, "ckpt"),
        ] {
            match fs::remove_file(&p) {
                Ok(()) => debug!(path = %p.display(), "removed"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &p)(e)),
            }
        }
        Ok(())
    }
}

/// Checks the format record; true if there was none (a new database).
fn check_version(db: &sled::Db, path: &Path) -> Result<bool> {
    const KEY: &[u8] = b"format_version";
    match db.get(KEY)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(&v[..]).map(u32::from_le_bytes).unwrap_or(u32::MAX);
            if found != FORMAT_VERSION {
                return Err(Error::FormatVersion { path: path.to_path_buf(), found, expected: FORMAT_VERSION });
            }
            Ok(false)
        }
        None => {
            db.insert(KEY, &FORMAT_VERSION.to_le_bytes())?;
            db.flush()?;
            Ok(true)
        }
    }
}

pub(crate) fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}
