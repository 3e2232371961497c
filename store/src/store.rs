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
    fs::{self, File},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use tracing::{debug, info, warn};

use crate::{
    codec,
    entry::{DataLocation, EntryRecord, OutboardLocation},
    partial::PartialBlob,
    ranges::{self, ChunkRanges},
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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) blobs: sled::Tree,
    pub(crate) resources: sled::Tree,
    pub(crate) tags: sled::Tree,
    pub(crate) config: StoreConfig,
    /// Open partial blobs, shared by concurrent writers of one hash.
    pub(crate) partials: Mutex<HashMap<Hash, Weak<PartialBlob>>>,
    /// Lease counts per hash (in memory: leases die with the process).
    pub(crate) leases: Mutex<HashMap<Hash, usize>>,
    /// Held while roots (tags, resources, new blobs) change and during GC.
    pub(crate) roots: Mutex<()>,
    /// Blobs a download of this process completed (verified as they
    /// arrived), for `ExportOptions::hand_over`; at most `FRESH_MAX`.
    pub(crate) fresh: Mutex<std::collections::HashSet<Hash>>,
    /// Partial blobs from disk whose held ranges were re-verified by this
    /// process (see `Store::check_resumed`).
    pub(crate) checked_partials: Mutex<std::collections::HashSet<Hash>>,
    /// What opening found wrong with the metadata.
    pub(crate) recovery: std::sync::OnceLock<crate::salvage::Recovery>,
    /// The directory of a [`Store::temporary`] store, removed when the last
    /// clone goes (after the fields above, the database among them).
    pub(crate) _temporary: Option<tempfile::TempDir>,
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
        let mut recovery = crate::salvage::Recovery::default();
        let (db, moved_aside) = crate::salvage::open_or_set_aside(&meta)?;
        recovery.moved_aside = moved_aside;
        let fresh = check_version(&db, &meta)?;
        let has_blob_files = fs::read_dir(dir.join("blobs")).map(|mut d| d.next().is_some()).unwrap_or(false);
        recovery.metadata_lost = fresh && has_blob_files && recovery.moved_aside.is_none();
        let inner = Inner {
            blobs: db.open_tree("blobs")?,
            resources: db.open_tree("resources")?,
            tags: db.open_tree("tags")?,
            db,
            dir,
            config,
            partials: Mutex::new(HashMap::new()),
            checked_partials: Mutex::new(Default::default()),
            fresh: Mutex::new(Default::default()),
            leases: Mutex::new(HashMap::new()),
            roots: Mutex::new(()),
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
    pub fn recovery(&self) -> &crate::salvage::Recovery {
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
        match self.inner.blobs.get(hash.as_bytes())? {
            None => Ok(None),
            Some(v) => codec::decode_entry(&v).map(Some),
        }
    }

    pub(crate) fn put_entry(&self, hash: &Hash, e: &EntryRecord) -> Result<()> {
        self.inner.blobs.insert(hash.as_bytes(), codec::encode_entry(e)?)?;
        Ok(())
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
        for kv in self.inner.blobs.iter() {
            let (k, _) = kv?;
            let Ok(bytes) = <[u8; 32]>::try_from(&k[..]) else { continue };
            let h = Hash(bytes);
            out.push((h, self.status(&h)?));
        }
        Ok(out)
    }

    pub(crate) fn live_partial(&self, hash: &Hash) -> Option<Arc<PartialBlob>> {
        self.inner.partials.lock().unwrap().get(hash).and_then(Weak::upgrade)
    }

    /// Crash recovery at open.
    fn recover(&self) -> Result<()> {
        let mut entries = Vec::new();
        for kv in self.inner.blobs.iter() {
            let (k, v) = kv?;
            let Ok(bytes) = <[u8; 32]>::try_from(&k[..]) else {
                warn!("dropping blob entry with malformed key");
                self.inner.blobs.remove(k)?;
                continue;
            };
            entries.push((Hash(bytes), codec::decode_entry(&v)));
        }
        for (hash, entry) in entries {
            match entry {
                Err(e) => {
                    // Only the record: an owned data file is re-verified
                    // and taken back by `adopt_orphans`.
                    warn!(%hash, "dropping an undecodable record: {e}");
                    self.inner.blobs.remove(hash.as_bytes())?;
                }
                Ok(EntryRecord::Complete { durable: false, size, data, outboard }) => {
                    if self.reverify_complete(&hash, size, &data, &outboard) {
                        info!(%hash, "re-verified blob that was not yet durable");
                        self.put_entry(&hash, &EntryRecord::Complete { size, data, outboard, durable: true })?;
                    } else {
                        warn!(%hash, "dropping blob whose data did not survive a crash");
                        self.remove_blob(&hash)?;
                    }
                }
                Ok(EntryRecord::Complete { .. }) => {}
                Ok(EntryRecord::Partial { size }) => crate::checkpoint::recover(self, &hash, size)?,
            }
        }
        self.flush()
    }

    /// Re-hashes owned files of a blob and syncs them; true if they match.
    fn reverify_complete(&self, hash: &Hash, size: u64, data: &DataLocation, ob: &OutboardLocation) -> bool {
        let data_path = match data {
            DataLocation::Owned => self.blob_path(hash, "data"),
            _ => return true,
        };
        let result = (|| -> Result<bool> {
            let f = File::open(&data_path).map_err(Error::io("open", &data_path))?;
            if f.metadata().map_err(Error::io("stat", &data_path))?.len() != size {
                return Ok(false);
            }
            let (h, outboard) = crate::hashing::hash_file(&f, size, &data_path, None, None)?;
            if h != *hash {
                return Ok(false);
            }
            if let OutboardLocation::Owned = ob {
                let p = self.blob_path(hash, "obao4");
                fs::write(&p, &outboard).map_err(Error::io("write", &p))?;
                File::open(&p).and_then(|f| f.sync_all()).map_err(Error::io("sync", &p))?;
            }
            f.sync_all().map_err(Error::io("sync", &data_path))?;
            Ok(true)
        })();
        result.unwrap_or_else(|e| {
            warn!(%hash, "re-verification failed: {e}");
            false
        })
    }

    /// Removes a blob's entry and every file it has.
    pub(crate) fn remove_blob(&self, hash: &Hash) -> Result<()> {
        self.remove_content_index(hash)?;
        self.inner.blobs.remove(hash.as_bytes())?;
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

/// How long `open` waits for sled's lock on the metadata directory. sled's
/// flusher thread releases the lock of a dropped database up to one flush
/// interval later, so an immediate reopen in the same process can find it held.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

pub(crate) fn open_sled(path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        let p = path.to_path_buf();
        // sled may panic on some kinds of damage; turn that into an error naming the path.
        let res = std::panic::catch_unwind(move || sled::Config::new().path(&p).open());
        match res {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(sled::Error::Io(e)))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(Err(e)) => {
                let reason = match &e {
                    sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                        format!("{e} (is another process using this store?)")
                    }
                    _ => e.to_string(),
                };
                return Err(Error::OpenMetadata { path: path.to_path_buf(), reason });
            }
            Err(_) => {
                return Err(Error::OpenMetadata { path: path.to_path_buf(), reason: "database is damaged".into() })
            }
        }
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
