//! Partial blobs: receiving verified bao data, tracking verified ranges, and
//! checkpointing them so a crash loses at most one checkpoint interval.
//!
//! Data and outboard bytes are written with positioned writes into
//! `partial/<hash>.data` and `.obao4`; the set of verified chunk ranges lives
//! in memory and is checkpointed to `partial/<hash>.ckpt` only after both
//! files are fsynced. So a checkpoint never names a range whose bytes are not
//! durable. Nothing touches sled on the hot path: the entry is written once
//! when the partial blob is created and once when it completes.
//!
//! Several writers may fill one blob at once (multi-source downloads): they
//! share one [`PartialBlob`] and its range set, and their positioned writes of
//! verified bytes never conflict (the same position only ever gets the same
//! verified bytes).

use std::{
    fs::{self, File, OpenOptions},
    io::Read,
    os::unix::fs::FileExt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Instant,
};

use bao_tree::io::BaoContentItem;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, warn};

use crate::{
    bridge::BlockingRead,
    codec,
    decode::{self, AlignedBuf, Verified},
    entry::{CheckpointRecord, DataLocation, EntryRecord, OutboardLocation},
    ranges::{self, ChunkNum, ChunkRanges},
    tree, Error, Hash, Result, Store, INLINE_MAX, MAX_BLOB_SIZE,
};

/// What a received response changed.
#[derive(Debug, Clone)]
pub struct ReceiveOutcome {
    /// Size from the response header.
    pub size: u64,
    /// Verified data bytes written by this response.
    pub data_bytes: u64,
    /// Chunk ranges the store now holds of the blob.
    pub held: ChunkRanges,
    /// True if the blob is now complete.
    pub complete: bool,
}

struct State {
    ranges: ChunkRanges,
    unsynced: u64,
    last_checkpoint: Instant,
    complete: bool,
}

/// An open partial blob shared by its writers.
pub(crate) struct PartialBlob {
    hash: Hash,
    size: u64,
    data: File,
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
    pub(crate) fn ranges(&self) -> ChunkRanges {
        self.state.lock().unwrap().ranges.clone()
    }

    pub(crate) fn data_file(&self) -> &File {
        &self.data
    }

    pub(crate) fn outboard_file(&self) -> &File {
        &self.outboard
    }

    /// Reads a partial blob's checkpoint. Errors if missing or damaged.
    pub(crate) fn load_checkpoint(store: &Store, hash: &Hash, size: u64) -> Result<ChunkRanges> {
        let path = store.partial_path(hash, "ckpt");
        let bytes = fs::read(&path).map_err(Error::io("read", &path))?;
        let c = codec::decode_checkpoint(&bytes)?;
        if c.hash != *hash || c.size != size {
            return Err(Error::CorruptRecord { what: "checkpoint", reason: "belongs to another blob or size".into() });
        }
        Ok(ranges::from_boundaries(&c.boundaries).expect("validated by decode"))
    }

    /// At open: keep a valid checkpoint; otherwise rebuild the ranges by
    /// re-verifying the files against the outboard; if even that is
    /// impossible, drop the blob.
    pub(crate) fn recover(store: &Store, hash: &Hash, size: u64) -> Result<()> {
        match Self::load_checkpoint(store, hash, size) {
            Ok(_) => return Ok(()),
            Err(e) => warn!(%hash, "partial blob checkpoint unusable ({e}); re-verifying its files"),
        }
        let data_path = store.partial_path(hash, "data");
        let ob_path = store.partial_path(hash, "obao4");
        let rebuilt = (|| -> Option<ChunkRanges> {
            let data = File::open(&data_path).ok()?;
            let ob = File::open(&ob_path).ok()?;
            if data.metadata().ok()?.len() != size || ob.metadata().ok()?.len() != tree::outboard_size(size) {
                return None;
            }
            let outboard = bao_tree::io::outboard::PreOrderOutboard {
                root: blake3::Hash::from(*hash),
                tree: tree::bao_tree(size),
                data: ob,
            };
            let mut found = ChunkRanges::empty();
            for r in bao_tree::io::sync::valid_ranges(outboard, data, &ChunkRanges::all()) {
                found |= ChunkRanges::from(r.ok()?);
            }
            Some(found)
        })();
        match rebuilt {
            Some(found) => {
                write_checkpoint(store, hash, size, &found)?;
                warn!(%hash, bytes = ranges::byte_count(&found, size), "rebuilt partial blob checkpoint");
                Ok(())
            }
            None => {
                warn!(%hash, "partial blob files are missing or damaged; dropping it");
                store.remove_blob(hash)
            }
        }
    }

    /// Records a verified leaf already written at `offset`.
    fn record(&self, offset: u64, len: u64) -> Result<bool> {
        let range = ChunkRanges::from(ChunkNum(offset / 1024)..ChunkNum((offset + len).div_ceil(1024)));
        let cfg = &self.store.inner.config;
        let (complete, due) = {
            let mut st = self.state.lock().unwrap();
            st.ranges |= range;
            st.unsynced += len;
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

    fn write_parent(&self, node: bao_tree::TreeNode, rec: &[u8; 64]) -> Result<()> {
        let Some(index) = tree::bao_tree(self.size).pre_order_offset(node) else { return Ok(()) };
        let path = || self.store.partial_path(&self.hash, "obao4");
        self.outboard.write_all_at(rec, index * tree::PARENT_BYTES).map_err(|e| Error::io("write", path())(e))
    }

    fn write_leaf(&self, offset: u64, data: &[u8]) -> Result<bool> {
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

    /// Turns the partial blob into a complete one: move into `blobs/`, record
    /// the entry as not yet durable, drop the checkpoint, and sync in the
    /// background (as an import does). A crash before that sync ends is
    /// caught at open, which re-verifies non-durable blobs.
    fn finalize(&self) -> Result<()> {
        let _g = self.checkpoint_lock.lock().unwrap();
        if self.state.lock().unwrap().complete {
            return Ok(());
        }
        let s = &self.store;
        let h = &self.hash;
        let io = |op, p: &std::path::Path| Error::io(op, p.to_path_buf());
        let (pd, po) = (s.partial_path(h, "data"), s.partial_path(h, "obao4"));
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
        {
            let _roots = s.inner.roots.lock().unwrap();
            s.put_entry(
                h,
                &EntryRecord::Complete { size: self.size, data: DataLocation::Owned, outboard, durable: false },
            )?;
            s.flush()?;
        }
        s.schedule_sync(*h);
        let _ = fs::remove_file(s.partial_path(h, "ckpt"));
        let _ = fs::remove_file(&po);
        self.state.lock().unwrap().complete = true;
        s.inner.partials.lock().unwrap().remove(h);
        debug!(hash = %h, size = self.size, "blob complete");
        Ok(())
    }
}

impl PartialBlob {
    /// Checkpoints now if anything was verified since the last checkpoint:
    /// a receive that returns has everything it verified made durable.
    fn checkpoint_if_dirty(&self) -> Result<()> {
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

fn write_checkpoint(store: &Store, hash: &Hash, size: u64, r: &ChunkRanges) -> Result<()> {
    let bytes = codec::encode_checkpoint(&CheckpointRecord { hash: *hash, size, boundaries: ranges::boundaries(r) })?;
    let path = store.partial_path(hash, "ckpt");
    let tmp = store.partial_path(hash, "ckpt.tmp");
    let mut f = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    std::io::Write::write_all(&mut f, &bytes).map_err(Error::io("write", &tmp))?;
    f.sync_data().map_err(Error::io("sync", &tmp))?;
    fs::rename(&tmp, &path).map_err(Error::io("rename", &tmp))?;
    Ok(())
}

/// Where received items go.
enum Target {
    /// Already complete: verify and discard.
    Complete,
    /// A single-group blob, committed inline once its leaf verifies.
    Small,
    /// A partial blob on disk.
    Partial(Arc<PartialBlob>),
}

impl Store {
    /// Opens (or creates) the shared partial blob of `hash` with `size`.
    pub(crate) fn open_partial(&self, hash: &Hash, size: u64) -> Result<Arc<PartialBlob>> {
        let mut map = self.inner.partials.lock().unwrap();
        if let Some(p) = map.get(hash).and_then(std::sync::Weak::upgrade) {
            if p.size != size {
                return Err(Error::SizeMismatch { hash: *hash, claimed: size, known: p.size });
            }
            return Ok(p);
        }
        let mut ranges = ChunkRanges::empty();
        let existing = match self.entry(hash)? {
            Some(EntryRecord::Partial { size: known }) => {
                let r = PartialBlob::load_checkpoint(self, hash, known).unwrap_or_default();
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
        if !existing {
            // Record the partial entry before any data lands, so a crash never
            // orphans verified bytes (iroh-blobs#254).
            write_checkpoint(self, hash, size, &ChunkRanges::empty())?;
            self.put_entry(hash, &EntryRecord::Partial { size })?;
            self.flush()?;
        }
        let p = Arc::new_cyclic(|me| PartialBlob {
            hash: *hash,
            size,
            data,
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

    fn target(&self, hash: &Hash, size: u64) -> Result<Target> {
        if size > MAX_BLOB_SIZE {
            return Err(Error::Limit(format!("size header {size} exceeds the maximum blob size {MAX_BLOB_SIZE}")));
        }
        match self.entry(hash)? {
            Some(EntryRecord::Complete { size: known, .. }) if known != size => {
                Err(Error::SizeMismatch { hash: *hash, claimed: size, known })
            }
            Some(EntryRecord::Complete { .. }) => Ok(Target::Complete),
            _ if size <= INLINE_MAX => Ok(Target::Small),
            _ => Ok(Target::Partial(self.open_partial(hash, size)?)),
        }
    }

    fn apply(
        &self,
        hash: &Hash,
        size: u64,
        target: &Target,
        item: BaoContentItem,
        out: &mut ReceiveOutcome,
    ) -> Result<()> {
        match (target, item) {
            (_, BaoContentItem::Parent(parent)) => {
                let mut rec = [0u8; 64];
                rec[..32].copy_from_slice(parent.pair.0.as_bytes());
                rec[32..].copy_from_slice(parent.pair.1.as_bytes());
                self.apply_verified(hash, size, target, Verified::Parent { node: parent.node, pair: rec }, out)
            }
            (_, BaoContentItem::Leaf(leaf)) => {
                self.apply_verified(hash, size, target, Verified::Leaf { offset: leaf.offset, data: &leaf.data }, out)
            }
        }
    }

    fn apply_verified(
        &self,
        hash: &Hash,
        size: u64,
        target: &Target,
        item: Verified<'_>,
        out: &mut ReceiveOutcome,
    ) -> Result<()> {
        match (target, item) {
            (Target::Partial(p), Verified::Parent { node, pair }) => p.write_parent(node, &pair)?,
            (Target::Partial(p), Verified::Leaf { offset, data }) => {
                out.complete = p.write_leaf(offset, data)?;
                out.data_bytes += data.len() as u64;
            }
            (Target::Small, Verified::Leaf { data, .. }) if data.len() as u64 == size => {
                drop(self.commit_inline(hash, data.to_vec())?);
                out.data_bytes += size;
                out.complete = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn held(&self, hash: &Hash, target: &Target, size: u64) -> ChunkRanges {
        match (target, self.status(hash)) {
            (Target::Partial(p), _) if !p.state.lock().unwrap().complete => p.ranges(),
            (_, Ok(crate::BlobStatus::Complete { .. })) => ranges::all(size),
            _ => ChunkRanges::empty(),
        }
    }

    /// Receives one bao response (size header, u64 LE, then the pre-order
    /// encoding of `requested` at 16 KiB groups) for `hash` from `reader`.
    ///
    /// Every item is verified against `hash` before it is written; only
    /// verified data is ever recorded. On a verification failure or a stream
    /// that ends early, what verified before the failure is kept and the error
    /// returned. Either way, everything verified is checkpointed before this
    /// returns (one fsync per response; checkpoints during a long response
    /// run in the background). The reader must end where the response ends:
    /// trailing bytes are an error. The reader is handed back.
    pub async fn receive_response<R>(
        &self,
        hash: Hash,
        requested: ChunkRanges,
        mut reader: R,
    ) -> Result<(ReceiveOutcome, R)>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let mut header = [0u8; 8];
        reader
            .read_exact(&mut header)
            .await
            .map_err(|e| Error::Truncated { hash, reason: format!("size header: {e}") })?;
        let size = u64::from_le_bytes(header);
        let store = self.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut r = std::io::BufReader::with_capacity(256 * 1024, BlockingRead::new(handle, reader));
            let res = store.receive_encoded(hash, size, &requested, &mut r);
            (res, r.into_inner().inner)
        })
        .await
        .map_err(Error::from)
        .and_then(|(res, reader)| res.map(|o| (o, reader)))
    }

    /// Synchronous form of [`Store::receive_response`] for the encoding only,
    /// with the size already read from the header.
    pub fn receive_encoded(
        &self,
        hash: Hash,
        size: u64,
        requested: &ChunkRanges,
        reader: &mut impl Read,
    ) -> Result<ReceiveOutcome> {
        let out = self.receive_encoded_part(hash, size, requested, reader)?;
        let mut extra = [0u8; 1];
        if reader.read(&mut extra).map_err(Error::Stream)? != 0 {
            return Err(Error::Verification { hash, reason: "trailing bytes after the response".into() });
        }
        Ok(out)
    }

    /// Like [`Store::receive_encoded`], but reads only the encoding and
    /// leaves what follows it in `reader` (for streams that carry several
    /// responses one after another).
    pub fn receive_encoded_part(
        &self,
        hash: Hash,
        size: u64,
        requested: &ChunkRanges,
        reader: &mut impl Read,
    ) -> Result<ReceiveOutcome> {
        let _lease = self.lease(hash);
        let target = self.target(&hash, size)?;
        let mut out = ReceiveOutcome { size, data_bytes: 0, held: ChunkRanges::empty(), complete: false };
        let mut buf = AlignedBuf::new();
        let decoded = decode::decode(hash, size, requested, reader, &mut buf, |item| {
            self.apply_verified(&hash, size, &target, item, &mut out)
        });
        // What verified is kept, whether or not the response ended well.
        let checkpointed = match &target {
            Target::Partial(p) => p.checkpoint_if_dirty(),
            _ => Ok(()),
        };
        decoded?;
        checkpointed?;
        if size == 0 && matches!(target, Target::Small) && hash == Hash::of(&[]) {
            drop(self.commit_inline(&hash, Vec::new())?);
            out.complete = true;
        }
        out.held = self.held(&hash, &target, size);
        out.complete = out.complete || matches!(target, Target::Complete);
        Ok(out)
    }

    /// Writes items that the caller has already verified against `hash` with
    /// the tree of `size` (as yielded by bao-tree's decoders).
    pub fn receive_verified_items(
        &self,
        hash: Hash,
        size: u64,
        items: impl IntoIterator<Item = BaoContentItem>,
    ) -> Result<ReceiveOutcome> {
        let _lease = self.lease(hash);
        let target = self.target(&hash, size)?;
        let mut out = ReceiveOutcome { size, data_bytes: 0, held: ChunkRanges::empty(), complete: false };
        let applied = items.into_iter().try_for_each(|item| self.apply(&hash, size, &target, item, &mut out));
        let checkpointed = match &target {
            Target::Partial(p) => p.checkpoint_if_dirty(),
            _ => Ok(()),
        };
        applied?;
        checkpointed?;
        out.held = self.held(&hash, &target, size);
        Ok(out)
    }
}
