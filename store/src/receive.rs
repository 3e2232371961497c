//! Receiving bao responses into the store: where a response's items go
//! (a partial blob, an inline blob, or nowhere when already complete), the
//! decoder's sink that batches verified groups and parent runs, and the
//! blocking receive entry points. The async push path is `incoming`.

use std::{io::Read, sync::Arc};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    aligned::AlignedBuf,
    bridge::BlockingRead,
    decode::{Decoder, Sink},
    entry::EntryRecord,
    partial::PartialBlob,
    ranges::{self, ChunkRanges},
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

/// Where received items go.
pub(crate) enum Target {
    /// Already complete: verify and discard.
    Complete,
    /// A single-group blob, committed inline once its leaf verifies.
    Small,
    /// A partial blob on disk.
    Partial(Arc<PartialBlob>),
}

impl Store {
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
            (Target::Partial(p), _) if !p.is_complete() => p.ranges(),
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
            let res = store.receive_body(hash, size, &requested, &mut r);
            (res, r.into_inner().inner)
        })
        .await
        .map_err(Error::from)
        .and_then(|(res, reader)| res.map(|o| (o, reader)))
    }

    /// The blocking form of [`Store::receive_response`]: one response, size
    /// header included (as [`Store::write_encoded`] writes it), from
    /// `reader`, which must end where the response ends (trailing bytes are
    /// an error).
    ///
    /// Blocking (disk writes and an fsync): call it from `spawn_blocking` in
    /// async code.
    pub fn receive_encoded(
        &self,
        hash: Hash,
        requested: &ChunkRanges,
        reader: &mut impl Read,
    ) -> Result<ReceiveOutcome> {
        let mut header = [0u8; 8];
        reader.read_exact(&mut header).map_err(|e| Error::Truncated { hash, reason: format!("size header: {e}") })?;
        self.receive_body(hash, u64::from_le_bytes(header), requested, reader)
    }

    /// A response's body (the encoding after the size header).
    fn receive_body(
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
        let out = finished?;
        let mut extra = [0u8; 1];
        if reader.read(&mut extra).map_err(Error::Stream)? != 0 {
            return Err(Error::Verification { hash, reason: "trailing bytes after the response".into() });
        }
        Ok(out)
    }
}

/// The longest run of consecutive parents gathered for one outboard write.
const PARENT_RUN_BYTES: usize = 64 * 1024;

/// Batch writes in flight per receive; with the batch being filled, a
/// receive holds at most this plus one [`BATCH_BYTES`] buffers.
pub(crate) const WRITES_IN_FLIGHT: usize = 4;

/// The decoder's sink for one receive: whole chunk groups that follow one
/// another are put side by side in the batch and written in one go;
/// anything else (a piece of a group, the short last group, a blob that is
/// not a partial file) is handled leaf by leaf. Parents arrive in pre-order,
/// the outboard's own order, so runs of them are gathered and written in
/// one go too; a run is written before any leaf after it is recorded, so a
/// checkpoint never names data whose parents are not on disk.
pub(crate) struct Receiving {
    pub(crate) store: Store,
    pub(crate) hash: Hash,
    pub(crate) size: u64,
    tree: bao_tree::BaoTree,
    pub(crate) target: Target,
    /// Verified parent records not yet written, and the pre-order index of
    /// the first.
    parents: Vec<u8>,
    parents_first: u64,
    pub(crate) out: ReceiveOutcome,
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
    pub(crate) fn new(store: &Store, hash: Hash, size: u64, blocking: bool) -> Result<Self> {
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

    pub(crate) fn batch_cap(target: &Target, size: u64) -> usize {
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
    pub(crate) fn take_batch(&mut self, fresh: AlignedBuf) -> Result<Option<(u64, AlignedBuf, usize)>> {
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
    pub(crate) fn finish(&mut self) -> Result<ReceiveOutcome> {
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
    pub(crate) fn after_success(&mut self) -> Result<()> {
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
