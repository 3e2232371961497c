//! Partial blobs: the files of a blob being received, its verified ranges,
//! and the step that turns it complete.
//!
//! Data and outboard bytes are written with positioned writes into
//! `partial/<hash>.data` and `.obao4`. Runs of whole chunk groups come in
//! page-aligned batches and are written with one direct (`O_DIRECT`) write
//! where the file system allows it: a large download then costs no
//! page-cache copy and no page allocation per 4 KiB, and it does not push
//! other data out of the cache. The set of verified chunk ranges lives in
//! memory and is checkpointed (see `checkpoint`) only after both files are
//! fsynced, so a checkpoint never names a range whose bytes are not
//! durable. Nothing touches sled on the hot path: the entry is written once
//! when the partial blob is created and once when it completes.
//!
//! Several writers may fill one blob at once (multi-source downloads): they
//! share one [`PartialBlob`] and its range set, and their positioned writes of
//! verified bytes never conflict (the same position only ever gets the same
//! verified bytes).

use std::{
    fs::{self, File, OpenOptions},
    os::unix::fs::{FileExt, OpenOptionsExt},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Instant,
};

use tracing::{debug, warn};

use crate::{
    checkpoint::{load_checkpoint, write_checkpoint},
    commit::{Origin, Placed},
    entry::{DataLocation, EntryRecord, OutboardLocation},
    ranges::{self, ChunkNum, ChunkRanges},
    tree, Error, Hash, Result, Store, INLINE_MAX,
};

struct State {
    ranges: ChunkRanges,
    unsynced: u64,
    last_checkpoint: Instant,
    complete: bool,
}

/// An open partial blob shared by its writers.
pub(crate) struct PartialBlob {
    pub(crate) hash: Hash,
    pub(crate) size: u64,
    data: File,
    /// The data file opened for direct I/O, if the file system supports it.
    direct: Option<File>,
    /// Cleared if a direct write is refused (then writes go through `data`).
    direct_ok: AtomicBool,
    outboard: File,
    state: Mutex<State>,
    /// Serialises checkpoints and completion, so checkpoints only grow.
    checkpoint_lock: Mutex<()>,
    /// True while a background checkpoint runs.
    checkpointing: AtomicBool,
    /// This blob, for handing to the background checkpoint.
    me: Weak<PartialBlob>,
    store: Store,
}

impl PartialBlob {
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn ranges(&self) -> ChunkRanges {
        self.state.lock().unwrap().ranges.clone()
    }

    /// Forgets verified ranges found damaged at rest, and checkpoints at once.
    pub(crate) fn forget(&self, damaged: &ChunkRanges) -> Result<()> {
        let _g = self.checkpoint_lock.lock().unwrap();
        let snapshot = {
            let mut st = self.state.lock().unwrap();
            if st.complete {
                return Ok(());
            }
            st.ranges = st.ranges.clone() - damaged;
            st.ranges.clone()
        };
        write_checkpoint(&self.store, &self.hash, self.size, &snapshot)
    }

    /// True once the blob completed (its files moved to `blobs/`).
    pub(crate) fn is_complete(&self) -> bool {
        self.state.lock().unwrap().complete
    }

    pub(crate) fn data_file(&self) -> &File {
        &self.data
    }

    pub(crate) fn outboard_file(&self) -> &File {
        &self.outboard
    }

    /// Writes a verified run of whole chunk groups at `offset` (page aligned
    /// in memory, as direct I/O requires) and records it.
    pub(crate) fn write_groups(&self, offset: u64, data: &[u8]) -> Result<bool> {
        let path = || self.store.partial_path(&self.hash, "data");
        let direct = self.direct.as_ref().filter(|_| self.direct_ok.load(Ordering::Relaxed));
        let written = match direct.map(|f| f.write_all_at(data, offset)) {
            Some(Ok(())) => true,
            // Alignment rules differ between file systems: fall back for good.
            Some(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => {
                debug!(hash = %self.hash, "direct write refused ({e}); writing through the page cache");
                self.direct_ok.store(false, Ordering::Relaxed);
                false
            }
            Some(Err(e)) => return Err(Error::io("write", path())(e)),
            None => false,
        };
        if !written {
            self.data.write_all_at(data, offset).map_err(|e| Error::io("write", path())(e))?;
        }
        self.record(offset, data.len() as u64)
    }

    /// Records a verified leaf already written at `offset`.
    fn record(&self, offset: u64, len: u64) -> Result<bool> {
        let range = ChunkRanges::from(ChunkNum(offset / 1024)..ChunkNum((offset + len).div_ceil(1024)));
        self.record_ranges(range, len)
    }

    /// Writes verified bytes at `offset` through the page cache, without
    /// recording them (see [`PartialBlob::record_ranges`]).
    pub(crate) fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let path = || self.store.partial_path(&self.hash, "data");
        self.data.write_all_at(data, offset).map_err(|e| Error::io("write", path())(e))
    }

    /// Makes `offset..offset + len` of the data file a hole (zeros that
    /// take no disk), or writes zeros where the file system cannot punch.
    pub(crate) fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        crate::sparse::punch_hole(&self.data, offset, len)
            .map_err(Error::io("punch a hole in", self.store.partial_path(&self.hash, "data")))
    }

    /// Records verified ranges (whole groups) whose bytes were written, or
    /// are holes of zeros; `bytes` counts toward the next checkpoint.
    pub(crate) fn record_ranges(&self, range: ChunkRanges, bytes: u64) -> Result<bool> {
        let cfg = &self.store.config();
        let (complete, due) = {
            let mut st = self.state.lock().unwrap();
            st.ranges |= range;
            st.unsynced += bytes;
            let complete = st.ranges.is_superset(&ranges::all(self.size));
            let due = st.unsynced >= cfg.checkpoint_bytes || st.last_checkpoint.elapsed() >= cfg.checkpoint_interval;
            (complete, due)
        };
        if complete {
            self.finalize()?;
        } else if due {
            self.checkpoint_in_background();
        }
        Ok(complete)
    }

    /// Starts a checkpoint on its own thread unless one is running, so
    /// receiving never waits for the disk (the fsyncs take as long as the
    /// disk needs to write the interval's data).
    fn checkpoint_in_background(&self) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        let spawned = std::thread::Builder::new().name("blixard-checkpoint".into()).spawn(move || {
            if let Some(p) = me.upgrade() {
                if let Err(e) = p.checkpoint() {
                    warn!(hash = %p.hash, "checkpoint failed: {e}");
                }
                p.checkpointing.store(false, Ordering::Release);
            }
        });
        if let Err(e) = spawned {
            warn!(hash = %self.hash, "cannot start a checkpoint thread: {e}");
            self.checkpointing.store(false, Ordering::Release);
        }
    }

    /// Writes consecutive outboard records starting at pre-order index `first`.
    pub(crate) fn write_parents(&self, first: u64, records: &[u8]) -> Result<()> {
        let path = || self.store.partial_path(&self.hash, "obao4");
        self.outboard.write_all_at(records, first * tree::PARENT_BYTES).map_err(|e| Error::io("write", path())(e))
    }

    pub(crate) fn write_leaf(&self, offset: u64, data: &[u8]) -> Result<bool> {
        // The outboard keeps hashes per 16 KiB group only, so a piece of a
        // group (sent when a request cuts through one) verifies but could not
        // be served again: it is not recorded. Requesters round ranges out to
        // whole groups (`ranges::round_to_groups`).
        let whole_group = offset.is_multiple_of(tree::BLOCK_BYTES)
            && (data.len() as u64 == tree::BLOCK_BYTES || offset + data.len() as u64 == self.size);
        if !whole_group {
            return Ok(false);
        }
        let path = || self.store.partial_path(&self.hash, "data");
        self.data.write_all_at(data, offset).map_err(|e| Error::io("write", path())(e))?;
        self.record(offset, data.len() as u64)
    }

    /// fsyncs data and outboard, then records the verified ranges.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let _g = self.checkpoint_lock.lock().unwrap();
        let snapshot = {
            let mut st = self.state.lock().unwrap();
            if st.complete {
                return Ok(());
            }
            st.unsynced = 0;
            st.last_checkpoint = Instant::now();
            st.ranges.clone()
        };
        let p = |ext| self.store.partial_path(&self.hash, ext);
        self.data.sync_data().map_err(Error::io("sync", p("data")))?;
        self.outboard.sync_data().map_err(Error::io("sync", p("obao4")))?;
        write_checkpoint(&self.store, &self.hash, self.size, &snapshot)?;
        debug!(hash = %self.hash, bytes = ranges::byte_count(&snapshot, self.size), "checkpoint");
        Ok(())
    }

    /// Turns the partial blob into a complete one (`Store::complete`): its
    /// files move into `blobs/`, the entry is recorded not yet durable and
    /// synced in the background, as an import's is; then the checkpoint
    /// goes.
    fn finalize(&self) -> Result<()> {
        let _g = self.checkpoint_lock.lock().unwrap();
        if self.state.lock().unwrap().complete {
            return Ok(());
        }
        let s = &self.store;
        let h = &self.hash;
        let io = |op, p: &std::path::Path| Error::io(op, p.to_path_buf());
        let (pd, po) = (s.partial_path(h, "data"), s.partial_path(h, "obao4"));
        let place = || {
            let ob_size = tree::outboard_size(self.size);
            let outboard = if ob_size <= INLINE_MAX {
                let mut buf = vec![0u8; ob_size as usize];
                self.outboard.read_exact_at(&mut buf, 0).map_err(io("read", &po))?;
                OutboardLocation::Inline(buf)
            } else {
                fs::rename(&po, s.blob_path(h, "obao4")).map_err(io("rename", &po))?;
                OutboardLocation::Owned
            };
            fs::rename(&pd, s.blob_path(h, "data")).map_err(io("rename", &pd))?;
            Ok(Placed { data: DataLocation::Owned, outboard, durable: false })
        };
        let discard = || drop(fs::remove_file(&pd));
        drop(s.complete(h, self.size, Origin::Download, place, discard)?);
        let _ = fs::remove_file(s.partial_path(h, "ckpt"));
        let _ = fs::remove_file(&po);
        self.state.lock().unwrap().complete = true;
        s.partials().lock().unwrap().remove(h);
        {
            let mut fresh = s.fresh().lock().unwrap();
            if fresh.len() >= 64 {
                fresh.clear();
            }
            fresh.insert(*h);
        }
        debug!(hash = %h, size = self.size, "blob complete");
        Ok(())
    }
}

impl PartialBlob {
    /// Checkpoints now if anything was verified since the last checkpoint:
    /// a receive that returns has everything it verified made durable.
    pub(crate) fn checkpoint_if_dirty(&self) -> Result<()> {
        let dirty = {
            let st = self.state.lock().unwrap();
            !st.complete && st.unsynced > 0
        };
        if dirty {
            self.checkpoint()?;
        }
        Ok(())
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint_if_dirty() {
            warn!(hash = %self.hash, "final checkpoint failed: {e}");
        }
    }
}

impl Store {
    /// Opens (or creates) the shared partial blob of `hash` with `size`.
    pub(crate) fn open_partial(&self, hash: &Hash, size: u64) -> Result<Arc<PartialBlob>> {
        self.check_resumed(hash)?;
        let mut map = self.partials().lock().unwrap();
        if let Some(p) = map.get(hash).and_then(std::sync::Weak::upgrade) {
            if p.size != size {
                return Err(Error::SizeMismatch { hash: *hash, claimed: size, known: p.size });
            }
            return Ok(p);
        }
        let mut ranges = ChunkRanges::empty();
        let existing = match self.entry(hash)? {
            Some(EntryRecord::Partial { size: known }) => {
                let r = load_checkpoint(self, hash, known).unwrap_or_default();
                if known != size && !r.is_empty() {
                    return Err(Error::SizeMismatch { hash: *hash, claimed: size, known });
                }
                ranges = r;
                known == size
            }
            Some(EntryRecord::Complete { .. }) => return Err(Error::InvalidArgument(format!("{hash} is complete"))),
            None => false,
        };
        let (pd, po) = (self.partial_path(hash, "data"), self.partial_path(hash, "obao4"));
        let open = |p: &std::path::Path, len: u64| -> Result<File> {
            let f = OpenOptions::new().read(true).write(true).create(true).truncate(!existing).open(p);
            let f = f.map_err(Error::io("open", p))?;
            f.set_len(len).map_err(Error::io("set length of", p))?;
            Ok(f)
        };
        let data = open(&pd, size)?;
        let outboard = open(&po, tree::outboard_size(size))?;
        let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&pd).ok();
        if !existing {
            // Record the partial entry before any data lands, so a crash never
            // orphans verified bytes (iroh-blobs#254).
            write_checkpoint(self, hash, size, &ChunkRanges::empty())?;
            self.entries().begin_partial(hash, size)?;
            self.flush()?;
        }
        let p = Arc::new_cyclic(|me| PartialBlob {
            hash: *hash,
            size,
            data,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
            outboard,
            state: Mutex::new(State { ranges, unsynced: 0, last_checkpoint: Instant::now(), complete: false }),
            checkpoint_lock: Mutex::new(()),
            checkpointing: AtomicBool::new(false),
            me: me.clone(),
            store: self.clone(),
        });
        map.insert(*hash, Arc::downgrade(&p));
        Ok(p)
    }
}
