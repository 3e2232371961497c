//! Partial blobs: receiving verified bao data, tracking verified ranges, and
//! checkpointing them so a crash loses at most one checkpoint interval.
//!
//! Data and outboard bytes are written with positioned writes into
//! `partial/<hash>.data` and `.obao4`. Runs of whole chunk groups are
//! gathered in a page-aligned batch of up to [`BATCH_BYTES`] and written with
//! one direct (`O_DIRECT`) write where the file system allows it: a large
//! download then costs no page-cache copy and no page allocation per 4 KiB
//! (on these virtual machines, first use of a fresh page is what makes
//! buffered writes slow), and it does not push other data out of the cache.
//! The set of verified chunk ranges lives
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
    os::unix::fs::{FileExt, OpenOptionsExt},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Instant,
};

use bao_tree::io::BaoContentItem;
use bytes::Buf;
use std::collections::VecDeque;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::{
    bridge::BlockingRead,
    codec,
    decode::{AlignedBuf, Decoder, Progress, Sink},
    entry::{CheckpointRecord, DataLocation, EntryRecord, OutboardLocation},
    ranges::{self, ChunkNum, ChunkRanges},
    tree, Error, Hash, Result, Store, INLINE_MAX, MAX_BLOB_SIZE,
};

/// The largest run of verified chunk groups gathered for one write (per
/// receive in progress, so it also bounds a receive's buffer).
pub const BATCH_BYTES: usize = 2 * 1024 * 1024;

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

    /// Writes a verified run of whole chunk groups at `offset` (page aligned
    /// in memory, as direct I/O requires) and records it.
    fn write_groups(&self, offset: u64, data: &[u8]) -> Result<bool> {
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
        self.write_parents(index, rec)
    }

    /// Writes consecutive outboard records starting at pre-order index `first`.
    fn write_parents(&self, first: u64, records: &[u8]) -> Result<()> {
        let path = || self.store.partial_path(&self.hash, "obao4");
        self.outboard.write_all_at(records, first * tree::PARENT_BYTES).map_err(|e| Error::io("write", path())(e))
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
        let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&pd).ok();
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
        match item {
            BaoContentItem::Parent(parent) => {
                let mut rec = [0u8; 64];
                rec[..32].copy_from_slice(parent.pair.0.as_bytes());
                rec[32..].copy_from_slice(parent.pair.1.as_bytes());
                apply_parent(target, parent.node, &rec)
            }
            BaoContentItem::Leaf(leaf) => self.apply_leaf(hash, size, target, leaf.offset, &leaf.data, out),
        }
    }

    /// Writes one verified leaf (not part of a batch).
    fn apply_leaf(
        &self,
        hash: &Hash,
        size: u64,
        target: &Target,
        offset: u64,
        data: &[u8],
        out: &mut ReceiveOutcome,
    ) -> Result<()> {
        match target {
            Target::Partial(p) => {
                out.complete = p.write_leaf(offset, data)?;
                out.data_bytes += data.len() as u64;
            }
            Target::Small if data.len() as u64 == size => {
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
        let mut sink = Receiving::new(self, hash, size, true)?;
        let decoded = Decoder::new(hash, size, requested).read_from(reader, &mut sink);
        // What verified is kept, whether or not the response ended well.
        let finished = sink.finish();
        decoded?;
        sink.after_success()?;
        finished
    }

    /// Starts receiving a response body pushed in pieces as they arrive (the
    /// async fast path; see [`IncomingBlob`]). `size` is from the response's
    /// size header.
    pub fn start_receive(&self, hash: Hash, size: u64, requested: &ChunkRanges) -> Result<IncomingBlob> {
        let sink = Receiving::new(self, hash, size, false)?;
        Ok(IncomingBlob {
            decoder: Decoder::new(hash, size, requested),
            sink: Some(sink),
            writes: VecDeque::new(),
            spare: Vec::new(),
        })
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

fn apply_parent(target: &Target, node: bao_tree::TreeNode, pair: &[u8; 64]) -> Result<()> {
    match target {
        Target::Partial(p) => p.write_parent(node, pair),
        _ => Ok(()),
    }
}

/// The longest run of consecutive parents gathered for one outboard write.
const PARENT_RUN_BYTES: usize = 64 * 1024;

/// Batch writes in flight per receive; with the batch being filled, a
/// receive holds at most this plus one [`BATCH_BYTES`] buffers.
const WRITES_IN_FLIGHT: usize = 4;

/// The decoder's sink for one receive: whole chunk groups that follow one
/// another are put side by side in the batch and written in one go;
/// anything else (a piece of a group, the short last group, a blob that is
/// not a partial file) is handled leaf by leaf. Parents arrive in pre-order,
/// the outboard's own order, so runs of them are gathered and written in
/// one go too; a run is written before any leaf after it is recorded, so a
/// checkpoint never names data whose parents are not on disk.
struct Receiving {
    store: Store,
    hash: Hash,
    size: u64,
    tree: bao_tree::BaoTree,
    target: Target,
    /// Verified parent records not yet written, and the pre-order index of
    /// the first.
    parents: Vec<u8>,
    parents_first: u64,
    out: ReceiveOutcome,
    buf: AlignedBuf,
    /// Blob offset of the batch's first byte and the verified bytes in it.
    batch_start: u64,
    batch_len: usize,
    /// The current leaf sits at the buffer's start, outside the batch.
    loose: bool,
    /// Writes a full batch itself (blocking use) instead of asking for room.
    blocking: bool,
    _lease: crate::Lease,
}

impl Receiving {
    fn new(store: &Store, hash: Hash, size: u64, blocking: bool) -> Result<Self> {
        let lease = store.lease(hash);
        let target = store.target(&hash, size)?;
        let buf = AlignedBuf::with_len(Self::batch_cap(&target, size));
        let out = ReceiveOutcome { size, data_bytes: 0, held: ChunkRanges::empty(), complete: false };
        Ok(Receiving {
            store: store.clone(),
            hash,
            size,
            tree: tree::bao_tree(size),
            target,
            parents: Vec::new(),
            parents_first: 0,
            out,
            buf,
            batch_start: 0,
            batch_len: 0,
            loose: false,
            blocking,
            _lease: lease,
        })
    }

    fn batch_cap(target: &Target, size: u64) -> usize {
        let group = tree::BLOCK_BYTES as usize;
        match target {
            Target::Partial(_) => BATCH_BYTES.min((tree::blocks(size) * tree::BLOCK_BYTES) as usize).max(group),
            _ => group,
        }
    }

    /// Writes out the gathered parents.
    fn flush_parents(&mut self) -> Result<()> {
        if let (Target::Partial(p), false) = (&self.target, self.parents.is_empty()) {
            p.write_parents(self.parents_first, &self.parents)?;
        }
        self.parents.clear();
        Ok(())
    }

    /// Writes out the gathered parents and swaps in an empty buffer; returns
    /// the batch it held, if any.
    fn take_batch(&mut self, fresh: AlignedBuf) -> Result<Option<(u64, AlignedBuf, usize)>> {
        self.flush_parents()?;
        if self.batch_len == 0 {
            return Ok(None);
        }
        let len = std::mem::take(&mut self.batch_len);
        Ok(Some((self.batch_start, std::mem::replace(&mut self.buf, fresh), len)))
    }

    /// Writes out the gathered parents, then writes and records the
    /// verified leaves of the batch, here.
    fn flush(&mut self) -> Result<()> {
        self.flush_parents()?;
        if self.batch_len == 0 {
            return Ok(());
        }
        let len = std::mem::take(&mut self.batch_len);
        if let Target::Partial(p) = &self.target {
            self.out.complete |= p.write_groups(self.batch_start, self.buf.slice(0, len))?;
            self.out.data_bytes += len as u64;
        }
        Ok(())
    }

    /// Writes what is left in the batch, checkpoints what verified and
    /// returns the outcome. Blocks (fsync).
    fn finish(&mut self) -> Result<ReceiveOutcome> {
        let flushed = self.flush();
        let checkpointed = match &self.target {
            Target::Partial(p) => p.checkpoint_if_dirty(),
            _ => Ok(()),
        };
        flushed?;
        checkpointed?;
        self.out.held = self.store.held(&self.hash, &self.target, self.size);
        self.out.complete = self.out.complete || matches!(self.target, Target::Complete);
        Ok(self.out.clone())
    }

    /// After a response decoded whole: an empty blob has no leaf to commit.
    fn after_success(&mut self) -> Result<()> {
        if self.size == 0 && matches!(self.target, Target::Small) && self.hash == Hash::of(&[]) {
            drop(self.store.commit_inline(&self.hash, Vec::new())?);
            self.out.complete = true;
        }
        Ok(())
    }
}

impl Sink for Receiving {
    fn leaf_buf(&mut self, offset: u64, len: usize) -> Result<Option<&mut [u8]>> {
        let group = tree::BLOCK_BYTES as usize;
        let batchable =
            matches!(self.target, Target::Partial(_)) && offset.is_multiple_of(group as u64) && len == group;
        let fits = if batchable {
            self.batch_len == 0
                || (offset == self.batch_start + self.batch_len as u64 && self.batch_len + len <= self.buf.len())
        } else {
            self.batch_len == 0
        };
        if !fits {
            if !self.blocking {
                return Ok(None);
            }
            self.flush()?;
        }
        self.loose = !batchable;
        if self.loose {
            return Ok(Some(self.buf.slice_mut(0, len)));
        }
        if self.batch_len == 0 {
            self.batch_start = offset;
        }
        let at = self.batch_len;
        Ok(Some(self.buf.slice_mut(at, len)))
    }

    fn leaf(&mut self, offset: u64, len: usize) -> Result<()> {
        if !self.loose {
            self.batch_len += len;
            return Ok(());
        }
        self.flush_parents()?;
        let data = self.buf.slice(0, len);
        self.store.apply_leaf(&self.hash, self.size, &self.target, offset, data, &mut self.out)
    }

    fn parent(&mut self, node: bao_tree::TreeNode, pair: &[u8; 64]) -> Result<()> {
        if !matches!(self.target, Target::Partial(_)) {
            return Ok(());
        }
        let Some(index) = self.tree.pre_order_offset(node) else { return Ok(()) };
        let next = self.parents_first + self.parents.len() as u64 / tree::PARENT_BYTES;
        if self.parents.is_empty() || index != next || self.parents.len() >= PARENT_RUN_BYTES {
            self.flush_parents()?;
            self.parents_first = index;
        }
        self.parents.extend_from_slice(pair);
        Ok(())
    }
}

/// A response being received: push the body's bytes as they arrive with
/// [`IncomingBlob::push`], then [`IncomingBlob::close`] it.
///
/// Bytes are verified in the pushing task, while still in the CPU cache;
/// full batches of chunk groups are written on the blocking pool, at most
/// [`WRITES_IN_FLIGHT`] at a time, so a slow disk slows the pushing task
/// down (and, through QUIC flow control, the sender). Dropped without
/// `close` (a cancelled transfer), it still writes out and checkpoints what
/// it verified, on the blocking pool.
pub struct IncomingBlob {
    decoder: Decoder,
    sink: Option<Receiving>,
    writes: VecDeque<JoinHandle<Result<(AlignedBuf, usize, bool)>>>,
    spare: Vec<AlignedBuf>,
}

impl IncomingBlob {
    /// Verifies and takes bytes from the front of `data`; true once the
    /// response body is complete (what is left of `data` follows it).
    /// After an error, what verified before it is kept (see `close`).
    pub async fn push(&mut self, data: &mut bytes::Bytes) -> Result<bool> {
        loop {
            let sink = self.sink.as_mut().expect("present until closed");
            let mut rest: &[u8] = data;
            let progress = self.decoder.push(&mut rest, sink);
            let used = data.len() - rest.len();
            data.advance(used);
            match progress? {
                Progress::Done => return Ok(true),
                Progress::NeedData => return Ok(false),
                Progress::NeedRoom => self.make_room().await?,
            }
        }
    }

    /// The error for a stream that ended before the response did.
    pub fn truncated(&self) -> Error {
        let hash = self.decoder.hash();
        Error::Truncated { hash, reason: format!("the stream ended before {}", self.decoder.expecting()) }
    }

    /// Sends the full batch to be written and installs an empty buffer.
    async fn make_room(&mut self) -> Result<()> {
        let fresh = match self.spare.pop() {
            Some(b) => b,
            None if self.writes.len() < WRITES_IN_FLIGHT => {
                let s = self.sink.as_ref().expect("present until closed");
                AlignedBuf::with_len(Receiving::batch_cap(&s.target, s.size))
            }
            None => self.wait_oldest().await?,
        };
        let sink = self.sink.as_mut().expect("present until closed");
        let Some((start, full, len)) = sink.take_batch(fresh)? else { return Ok(()) };
        let Target::Partial(p) = &sink.target else { unreachable!("only partial blobs batch") };
        let write = BatchWrite { partial: p.clone(), start, buf: Some(full), len };
        self.writes.push_back(tokio::task::spawn_blocking(move || write.run()));
        Ok(())
    }

    /// Waits for the oldest write; returns its buffer.
    async fn wait_oldest(&mut self) -> Result<AlignedBuf> {
        let write = self.writes.pop_front().expect("a write in flight");
        let (buf, len, complete) = write.await??;
        let sink = self.sink.as_mut().expect("present until closed");
        sink.out.data_bytes += len as u64;
        sink.out.complete |= complete;
        Ok(buf)
    }

    /// Writes out everything verified, waits for the writes, checkpoints and
    /// returns what the response changed. Call it whether or not the pushes
    /// succeeded (what verified is kept), and after a successful one check
    /// that the last push returned true.
    pub async fn close(mut self) -> Result<ReceiveOutcome> {
        let mut first_error = None;
        while !self.writes.is_empty() {
            match self.wait_oldest().await {
                Ok(buf) => self.spare.push(buf),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        let mut sink = self.sink.take().expect("present until closed");
        let done = matches!(self.decoder.wanted(), 0);
        let finished = tokio::task::spawn_blocking(move || {
            let out = sink.finish();
            if done && out.is_ok() {
                sink.after_success()?;
                return Ok(sink.out.clone());
            }
            out
        })
        .await?;
        match first_error {
            Some(e) => Err(e),
            None => finished,
        }
    }
}

impl Drop for IncomingBlob {
    fn drop(&mut self) {
        let Some(sink) = self.sink.take() else { return };
        let finish = FinishOnDrop(sink);
        // On the blocking pool if there is one. A task the runtime cancels at
        // shutdown before it starts still drops its closure, and so the
        // guard, which then writes out here.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(finish))),
            Err(_) => drop(finish),
        }
    }
}

/// A verified batch on its way to the disk: written by [`BatchWrite::run`],
/// or when dropped unrun (a runtime shutting down drops blocking tasks that
/// have not started), so a cancelled receive keeps every batch it verified.
struct BatchWrite {
    partial: Arc<PartialBlob>,
    start: u64,
    buf: Option<AlignedBuf>,
    len: usize,
}

impl BatchWrite {
    /// Writes and records the batch; returns its buffer for reuse.
    fn run(mut self) -> Result<(AlignedBuf, usize, bool)> {
        let buf = self.buf.take().expect("a batch is written once");
        let complete = self.partial.write_groups(self.start, buf.slice(0, self.len))?;
        Ok((buf, self.len, complete))
    }
}

impl Drop for BatchWrite {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            if let Err(e) = self.partial.write_groups(self.start, buf.slice(0, self.len)) {
                warn!(hash = %self.partial.hash, "writing out a cancelled receive's batch failed: {e}");
            }
        }
    }
}

/// Writes out and checkpoints what a cancelled receive verified when
/// dropped, wherever that happens.
struct FinishOnDrop(Receiving);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.finish() {
            warn!(hash = %self.0.hash, "writing out a cancelled receive failed: {e}");
        }
    }
}
