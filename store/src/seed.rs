//! Seeding a download from what the store already holds: the new blob's
//! tree comes first, then every 16 KiB group that equals a group of a local
//! blob is copied from it, every group of zeros becomes a hole, and only
//! the rest is left missing for the network.
//!
//! The tree (the blob's pre-order outboard, `docs/PROTOCOL.md` §5.4) is
//! verified top-down as it streams in: each parent must merge to the value
//! its own parent promised, starting from the blob hash, so a lying or
//! truncated tree fails before anything depends on it, and the lowest
//! parents yield every group's chaining value in group order. A group's
//! chaining value depends on its position and bytes only (not on the
//! blob's size), so group `i` of a base blob can stand in for group `i` of
//! the new one exactly when their chaining values agree; and a group whose
//! value is that of 16 KiB of zeros at its position is zeros.
//!
//! Nothing is trusted that was not just verified: a base's own tree is
//! walked and checked against the base's hash as it is read, and every
//! copied group is hashed again and compared with the new tree before it
//! is recorded (bytes at rest can rot; a damaged base group is left for the
//! network and counted). Memory stays O(depth of the tree) plus one copy
//! run: chaining values are consumed as the walk yields them.

use std::{collections::VecDeque, sync::Arc};

use blake3::hazmat::ChainingValue;
use tracing::{debug, warn};

use crate::{
    content_index::ChunkLocation,
    opened::{Opened, Stored},
    partial::PartialBlob,
    ranges::{self, ChunkRanges},
    tree::{self, BLOCK_BYTES, PARENT_BYTES},
    Error, Hash, Result, Store,
};

/// Groups copied from a base in one read (1 MiB).
const COPY_RUN_GROUPS: u64 = 64;
/// Verified records written to the partial outboard in one write (1 MiB).
const RECORD_BATCH: usize = 1 << 20;
/// Seeded bytes after which the ranges seeded so far are recorded (and so
/// may be checkpointed); sooner if the store checkpoints more often.
const RECORD_EVERY: u64 = 256 << 20;
/// Bases compared with one new blob.
pub const MAX_SEED_BASES: usize = 8;

/// A node of the tree still to be expanded.
#[derive(Clone, Copy)]
struct Node {
    start: u64,
    count: u64,
    cv: ChainingValue,
    root: bool,
}

/// Why a tree walk failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// A parent does not merge to the value its parent promised.
    Mismatch {
        /// Pre-order index of the record.
        record: u64,
    },
    /// More records than the tree has.
    TooLong,
}

/// A top-down walk over a pre-order outboard (blobs of two groups or more),
/// fed one 64-byte parent record at a time, yielding each group's chaining
/// value in group order once it is proven.
pub struct TreeWalk {
    stack: Vec<Node>,
    records: u64,
}

impl TreeWalk {
    /// A walk of the tree of `hash` over `size` bytes, which must span at
    /// least two groups (`size > 16384`).
    pub fn new(hash: &Hash, size: u64) -> Self {
        let n = tree::blocks(size);
        debug_assert!(n >= 2);
        TreeWalk { stack: vec![Node { start: 0, count: n, cv: hash.0, root: true }], records: 0 }
    }

    /// True once every record was read.
    pub fn is_done(&self) -> bool {
        self.stack.is_empty()
    }

    /// Records consumed.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Checks the next record and hands each group chaining value it proves
    /// to `leaf`, in group order.
    pub fn push(
        &mut self,
        record: &[u8],
        mut leaf: impl FnMut(u64, &ChainingValue),
    ) -> std::result::Result<(), WalkError> {
        let node = self.stack.pop().ok_or(WalkError::TooLong)?;
        let (l, r): (ChainingValue, ChainingValue) =
            (record[..32].try_into().expect("64-byte record"), record[32..64].try_into().expect("64-byte record"));
        if tree::merge(&l, &r, node.root) != node.cv {
            return Err(WalkError::Mismatch { record: self.records });
        }
        self.records += 1;
        let left = tree::left_len(node.count);
        self.stack.push(Node { start: node.start + left, count: node.count - left, cv: r, root: false });
        self.stack.push(Node { start: node.start, count: left, cv: l, root: false });
        while let Some(top) = self.stack.last().filter(|n| n.count == 1) {
            leaf(top.start, &top.cv);
            self.stack.pop();
        }
        Ok(())
    }
}

/// What seeding did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedOutcome {
    /// Tree bytes received (parent records).
    pub tree_bytes: u64,
    /// Bytes copied from local blobs, each group verified first.
    pub reused_bytes: u64,
    /// Of `reused_bytes`, those found by content elsewhere (at another
    /// offset, or in another blob) through the new blob's content index.
    pub moved_bytes: u64,
    /// Bytes of zero groups, kept as holes.
    pub zero_bytes: u64,
    /// Bytes of base groups whose tree promised a match but whose data at
    /// rest did not verify: left for the network.
    pub damaged_bytes: u64,
}

/// A local blob compared with the new one.
struct Base {
    hash: Hash,
    opened: Opened,
    walk: TreeWalk,
    /// Group chaining values proven and not yet compared.
    leaves: VecDeque<(u64, ChainingValue)>,
    /// Damaged at rest (its tree did not verify): no longer used.
    broken: bool,
    groups: u64,
}

impl Base {
    /// The chaining value of group `i` of this base, reading its tree as far
    /// as needed. `None` past its end or once it is broken.
    fn cv_at(&mut self, i: u64) -> Option<ChainingValue> {
        if self.broken || i >= self.groups {
            return None;
        }
        loop {
            while self.leaves.front().is_some_and(|(g, _)| *g < i) {
                self.leaves.pop_front();
            }
            if let Some((g, cv)) = self.leaves.front() {
                return (*g == i).then_some(*cv);
            }
            if self.walk.is_done() {
                return None;
            }
            let mut buf = [0u8; 64 * 1024];
            let at = self.walk.records() * PARENT_BYTES;
            let read = read_up_to(&self.opened.outboard, at, &mut buf);
            let n = match read {
                Ok(n) if n >= PARENT_BYTES as usize => n / PARENT_BYTES as usize * PARENT_BYTES as usize,
                other => {
                    warn!(base = %self.hash, "its tree cannot be read ({other:?}); not used as a base");
                    self.broken = true;
                    return None;
                }
            };
            for rec in buf[..n].chunks_exact(PARENT_BYTES as usize) {
                if self.walk.is_done() {
                    break;
                }
                let leaves = &mut self.leaves;
                if let Err(e) = self.walk.push(rec, |g, cv| leaves.push_back((g, *cv))) {
                    warn!(base = %self.hash, "its tree is damaged at rest ({e:?}); not used as a base");
                    self.broken = true;
                    return None;
                }
            }
        }
    }
}

fn read_up_to(stored: &Stored, at: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = positioned_io::ReadAt::read_at(stored, at + filled as u64, &mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// A run of consecutive groups to copy from one base.
struct CopyRun {
    base: usize,
    first: u64,
    cvs: Vec<ChainingValue>,
}

/// Seeds a partial blob from its tree and local blobs; see the module docs.
/// Created by [`Store::start_seed`]; fed the tree's bytes with
/// [`Seeder::push`] (blocking: it reads bases and writes the blob), ended
/// with [`Seeder::finish`].
pub struct Seeder {
    hash: Hash,
    size: u64,
    partial: Arc<PartialBlob>,
    walk: TreeWalk,
    /// Bytes of a record split between pushes.
    pending: Vec<u8>,
    /// Verified records not yet written, and the index of the first.
    records: Vec<u8>,
    records_first: u64,
    bases: Vec<Base>,
    held: ChunkRanges,
    copy: Option<CopyRun>,
    /// Seeded ranges not yet recorded, as increasing group runs.
    seeded: Vec<std::ops::Range<u64>>,
    seeded_bytes: u64,
    zeros: Vec<u8>,
    outcome: SeedOutcome,
    /// Group chaining values proven by the last push, in order.
    proven: Vec<(u64, ChainingValue)>,
    /// Chunks of the new blob found in local blobs by content: offset in
    /// the new blob and where the same bytes lie, by offset.
    moved: Vec<(u64, ChunkLocation)>,
    moved_next: usize,
    /// Local blobs opened for `moved`.
    sources: std::collections::HashMap<Hash, Option<Opened>>,
}

impl Store {
    /// Starts seeding the download of `hash` (`size` bytes, at least two
    /// groups) from the local blobs `bases` (complete ones; others, and
    /// more than [`MAX_SEED_BASES`], are ignored). Groups the partial blob
    /// already holds are left as they are.
    ///
    /// Blocking.
    pub fn start_seed(&self, hash: Hash, size: u64, bases: &[Hash]) -> Result<Seeder> {
        if tree::blocks(size) < 2 {
            return Err(Error::InvalidArgument(format!("{hash}: a blob of {size} bytes has no tree to seed from")));
        }
        let partial = self.open_partial(&hash, size)?;
        let held = partial.ranges();
        let mut used = Vec::new();
        for b in bases.iter().filter(|b| **b != hash) {
            if used.len() == MAX_SEED_BASES {
                break;
            }
            let opened = match self.open_blob(b) {
                Ok(o) if o.held == ranges::all(o.size) && tree::blocks(o.size) >= 2 => o,
                Ok(_) => continue,
                Err(e) => {
                    debug!(base = %b, "not used as a base: {e}");
                    continue;
                }
            };
            let groups = tree::blocks(opened.size);
            let walk = TreeWalk::new(b, opened.size);
            used.push(Base { hash: *b, opened, walk, leaves: VecDeque::new(), broken: false, groups });
        }
        Ok(Seeder {
            hash,
            size,
            partial,
            walk: TreeWalk::new(&hash, size),
            pending: Vec::new(),
            records: Vec::new(),
            records_first: 0,
            bases: used,
            held,
            copy: None,
            seeded: Vec::new(),
            seeded_bytes: 0,
            zeros: vec![0u8; BLOCK_BYTES as usize],
            outcome: SeedOutcome::default(),
            proven: Vec::new(),
            moved: Vec::new(),
            moved_next: 0,
            sources: Default::default(),
        })
    }
}

impl Seeder {
    /// Adds chunks of the new blob that local blobs hold (found through its
    /// content index, see `content_index`): each as its offset in the new
    /// blob and where the same bytes lie. A group of the new blob that
    /// these cover completely is assembled from them and copied if it
    /// verifies against the new tree. Hints only: wrong ones cost a read.
    pub fn with_moved_chunks(mut self, mut chunks: Vec<(u64, ChunkLocation)>) -> Self {
        chunks.sort_by_key(|(at, _)| *at);
        chunks.dedup_by_key(|(at, _)| *at);
        self.moved = chunks;
        self
    }

    /// Bytes of tree still expected.
    pub fn remaining(&self) -> u64 {
        tree::outboard_size(self.size) - self.walk.records() * PARENT_BYTES - self.pending.len() as u64
    }

    /// Takes the next bytes of the tree: verifies them, and seeds each group
    /// they prove. Blocking.
    pub fn push(&mut self, mut data: &[u8]) -> Result<()> {
        if data.len() as u64 > self.remaining() {
            return Err(Error::Verification {
                hash: self.hash,
                reason: format!("the tree is longer than the {} bytes of its size", tree::outboard_size(self.size)),
            });
        }
        let rec = PARENT_BYTES as usize;
        if !self.pending.is_empty() {
            let take = (rec - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == rec {
                let record = std::mem::take(&mut self.pending);
                self.take_records(&record)?;
            }
        }
        let whole = data.len() / rec * rec;
        self.take_records(&data[..whole])?;
        self.pending.extend_from_slice(&data[whole..]);
        Ok(())
    }

    fn take_records(&mut self, records: &[u8]) -> Result<()> {
        for record in records.chunks_exact(PARENT_BYTES as usize) {
            let proven = &mut self.proven;
            self.walk.push(record, |g, cv| proven.push((g, *cv))).map_err(|e| Error::Verification {
                hash: self.hash,
                reason: match e {
                    WalkError::Mismatch { record } => format!("tree record {record} does not match its parent"),
                    WalkError::TooLong => "the tree is longer than its size".into(),
                },
            })?;
            self.records.extend_from_slice(record);
            self.outcome.tree_bytes += PARENT_BYTES;
            if self.records.len() >= RECORD_BATCH {
                self.write_records()?;
            }
            for (g, cv) in std::mem::take(&mut self.proven) {
                self.seed_group(g, cv)?;
            }
        }
        Ok(())
    }

    fn write_records(&mut self) -> Result<()> {
        if !self.records.is_empty() {
            self.partial.write_parents(self.records_first, &self.records)?;
            self.records_first += (self.records.len() as u64) / PARENT_BYTES;
            self.records.clear();
        }
        Ok(())
    }

    fn group_len(&self, g: u64) -> u64 {
        (self.size - g * BLOCK_BYTES).min(BLOCK_BYTES)
    }

    fn seed_group(&mut self, g: u64, cv: ChainingValue) -> Result<()> {
        let chunk = g * (BLOCK_BYTES / 1024);
        if self.held.contains(&ranges::ChunkNum(chunk)) {
            return Ok(());
        }
        for b in 0..self.bases.len() {
            if self.bases[b].cv_at(g) == Some(cv) {
                let extends = self.copy.as_ref().is_some_and(|c| {
                    c.base == b && c.first + c.cvs.len() as u64 == g && (c.cvs.len() as u64) < COPY_RUN_GROUPS
                });
                if !extends {
                    self.flush_copy()?;
                    self.copy = Some(CopyRun { base: b, first: g, cvs: Vec::new() });
                }
                self.copy.as_mut().expect("just set").cvs.push(cv);
                return Ok(());
            }
        }
        let len = self.group_len(g) as usize;
        if tree::leaf_hash(g, &self.zeros[..len], false) == cv {
            self.flush_copy()?;
            self.partial.punch_hole(g * BLOCK_BYTES, len as u64)?;
            self.outcome.zero_bytes += len as u64;
            self.add_seeded(g, 1, len as u64)?;
            return Ok(());
        }
        if let Some(bytes) = self.assemble_moved(g, len as u64) {
            if tree::leaf_hash(g, &bytes, false) == cv {
                self.flush_copy()?;
                self.partial.write_at(g * BLOCK_BYTES, &bytes)?;
                self.outcome.reused_bytes += len as u64;
                self.outcome.moved_bytes += len as u64;
                self.add_seeded(g, 1, len as u64)?;
            }
        }
        Ok(())
    }

    /// Group `g`'s bytes from the moved chunks that cover it, if they cover
    /// all of it and every piece can be read.
    fn assemble_moved(&mut self, g: u64, len: u64) -> Option<Vec<u8>> {
        let (start, end) = (g * BLOCK_BYTES, g * BLOCK_BYTES + len);
        let moved = &self.moved;
        while self.moved_next < moved.len() && moved[self.moved_next].0 + moved[self.moved_next].1.len as u64 <= start {
            self.moved_next += 1;
        }
        let mut pieces = Vec::new();
        let mut pos = start;
        for (at, loc) in &moved[self.moved_next..] {
            if pos == end || *at > pos {
                break;
            }
            let to = (at + loc.len as u64).min(end);
            pieces.push((pos, to, *loc, *at));
            pos = to;
        }
        if pos < end {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        for (from, to, loc, at) in pieces {
            let store = self.partial.store();
            let source = self.sources.entry(loc.blob).or_insert_with(|| store.open_blob(&loc.blob).ok()).as_ref()?;
            let dst = &mut buf[(from - start) as usize..(to - start) as usize];
            let read = read_up_to(&source.data, loc.offset + (from - at), dst).ok()?;
            if read < dst.len() {
                return None;
            }
        }
        Some(buf)
    }

    /// Reads a copy run from its base, keeps the groups that verify against
    /// the new tree, writes them.
    fn flush_copy(&mut self) -> Result<()> {
        let Some(run) = self.copy.take() else { return Ok(()) };
        let offset = run.first * BLOCK_BYTES;
        let end = (offset + run.cvs.len() as u64 * BLOCK_BYTES).min(self.size);
        let base = self.bases[run.base].hash;
        let mut buf = vec![0u8; (end - offset) as usize];
        let read = read_up_to(&self.bases[run.base].opened.data, offset, &mut buf).unwrap_or(0);
        buf.truncate(read);
        let cvs = crate::leaves::hash_groups(run.first, &buf);
        let mut g = 0usize;
        while g < run.cvs.len() {
            // the longest stretch from g that verifies
            let good = (g..run.cvs.len()).take_while(|&k| cvs.get(k) == Some(&run.cvs[k])).count();
            if good == 0 {
                let len = self.group_len(run.first + g as u64);
                if self.outcome.damaged_bytes == 0 {
                    warn!(%base, group = run.first + g as u64, "a base group does not match its tree (damaged at rest?); fetching it instead");
                }
                self.outcome.damaged_bytes += len;
                g += 1;
                continue;
            }
            let from = g * BLOCK_BYTES as usize;
            let to = ((g + good) * BLOCK_BYTES as usize).min(buf.len());
            self.partial.write_at(offset + from as u64, &buf[from..to])?;
            self.outcome.reused_bytes += (to - from) as u64;
            self.add_seeded(run.first + g as u64, good as u64, (to - from) as u64)?;
            g += good;
        }
        Ok(())
    }

    fn add_seeded(&mut self, first: u64, count: u64, bytes: u64) -> Result<()> {
        match self.seeded.last_mut() {
            Some(last) if last.end == first => last.end += count,
            _ => self.seeded.push(first..first + count),
        }
        self.seeded_bytes += bytes;
        let every = RECORD_EVERY.min(self.partial.store().inner.config.checkpoint_bytes.max(1 << 20));
        if self.seeded_bytes >= every {
            self.record_seeded()?;
        }
        Ok(())
    }

    /// Records what was seeded so far; the records proving it are written
    /// first (every group's ancestors precede it in pre-order).
    fn record_seeded(&mut self) -> Result<()> {
        self.write_records()?;
        if self.seeded.is_empty() {
            return Ok(());
        }
        let per = BLOCK_BYTES / 1024;
        let chunks = ranges::chunk_count(self.size);
        let mut set = ChunkRanges::empty();
        let mut bounds = Vec::with_capacity(self.seeded.len() * 2);
        for r in self.seeded.drain(..) {
            bounds.push(r.start * per);
            bounds.push((r.end * per).min(chunks));
        }
        if let Some(s) = ranges::from_boundaries(&bounds) {
            set = s;
        }
        let bytes = std::mem::take(&mut self.seeded_bytes);
        self.partial.record_ranges(set, bytes)?;
        Ok(())
    }

    /// Ends seeding: the whole tree must have arrived. Records what was
    /// seeded; the rest is missing, for the network.
    pub fn finish(mut self) -> Result<SeedOutcome> {
        if !self.walk.is_done() || !self.pending.is_empty() {
            return Err(Error::Truncated {
                hash: self.hash,
                reason: format!("the tree ended {} bytes early", self.remaining()),
            });
        }
        self.flush_copy()?;
        self.record_seeded()?;
        self.partial.checkpoint_if_dirty()?;
        debug!(hash = %self.hash, ?self.outcome, "seeded");
        Ok(self.outcome.clone())
    }
}

/// A complete blob's tree (its pre-order outboard) read in pieces, each
/// checked against the blob's hash as it is read, so a tree damaged at
/// rest is never served. See [`Store::tree_reader`].
pub struct TreeReader {
    hash: Hash,
    size: u64,
    opened: Opened,
    walk: Option<TreeWalk>,
    at: u64,
}

impl Store {
    /// The tree of a complete blob, for serving it (`GetTree`). A blob of
    /// one group has an empty tree. Errors: [`Error::NotFound`] if absent,
    /// [`Error::Incomplete`] if partial.
    ///
    /// Blocking.
    pub fn tree_reader(&self, hash: &Hash) -> Result<TreeReader> {
        let opened = self.open_blob(hash)?;
        if opened.held != ranges::all(opened.size) {
            return Err(Error::Incomplete(*hash));
        }
        let size = opened.size;
        let walk = (tree::blocks(size) >= 2).then(|| TreeWalk::new(hash, size));
        Ok(TreeReader { hash: *hash, size, opened, walk, at: 0 })
    }
}

impl TreeReader {
    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next verified piece of at most `max` bytes (rounded down to whole
    /// records, at least one), or `None` at the end. A record that does not
    /// verify is [`Error::Damaged`].
    pub fn next_piece(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let total = tree::outboard_size(self.size);
        let Some(walk) = self.walk.as_mut().filter(|_| self.at < total) else { return Ok(None) };
        let records = (max as u64 / PARENT_BYTES).max(1);
        let len = (records * PARENT_BYTES).min(total - self.at) as usize;
        let mut buf = vec![0u8; len];
        let read = read_up_to(&self.opened.outboard, self.at, &mut buf).map_err(Error::Stream)?;
        let damaged = |why: String| Error::Damaged { hash: self.hash, ranges: format!("its tree ({why})") };
        if read < len {
            return Err(damaged(format!("{} bytes where {total} were expected", self.at + read as u64)));
        }
        for rec in buf.chunks_exact(PARENT_BYTES as usize) {
            walk.push(rec, |_, _| {}).map_err(|e| damaged(format!("{e:?}")))?;
        }
        self.at += len as u64;
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::{outboard::outboard_of, BlobStatus};

    fn image(size: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    async fn seed(store: &Store, new: &[u8], bases: &[Hash]) -> Result<SeedOutcome> {
        let (hash, tree) = outboard_of(new);
        let mut s = store.start_seed(hash, new.len() as u64, bases)?;
        for piece in tree.chunks(1000) {
            s.push(piece)?;
        }
        s.finish()
    }

    #[test]
    fn walk_yields_every_group_in_order_and_rejects_a_changed_record() {
        for size in [16385usize, 3 * 16384, 5 * 16384 + 7, 100 * 16384] {
            let data = image(size, 3);
            let (hash, tree) = outboard_of(&data);
            let mut walk = TreeWalk::new(&hash, size as u64);
            let mut got = Vec::new();
            for rec in tree.chunks(64) {
                walk.push(rec, |g, cv| got.push((g, *cv))).unwrap();
            }
            assert!(walk.is_done());
            let want: Vec<_> = (0..tree::blocks(size as u64))
                .map(|g| {
                    let end = ((g + 1) * BLOCK_BYTES).min(size as u64);
                    (g, tree::leaf_hash(g, &data[(g * BLOCK_BYTES) as usize..end as usize], false))
                })
                .collect();
            assert_eq!(got, want, "size {size}");
            let mut bad = tree.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let mut walk = TreeWalk::new(&hash, size as u64);
            let r: std::result::Result<(), _> = bad.chunks(64).try_for_each(|rec| walk.push(rec, |_, _| {}));
            assert!(matches!(r, Err(WalkError::Mismatch { .. })), "size {size}");
        }
    }

    #[tokio::test]
    async fn changed_groups_are_left_missing_and_the_rest_copied() {
        let store = Store::temporary().unwrap();
        let old = image(64 * 16384 + 100, 1);
        let base = store.import_bytes(old.clone()).await.unwrap();
        let mut new = old.clone();
        for g in [3usize, 40, 41] {
            new[g * 16384 + 5] ^= 0xff;
        }
        new.extend_from_slice(&image(20_000, 9));
        let (hash, _) = outboard_of(&new);
        let out = seed(&store, &new, &[base.hash]).await.unwrap();
        let size = new.len() as u64;
        // groups 0..64 except the three changed ones; group 64 (the base's
        // ragged last group) differs in length
        assert_eq!(out.reused_bytes, 61 * 16384);
        assert_eq!(out.damaged_bytes, 0);
        assert_eq!(out.tree_bytes, tree::outboard_size(size));
        let missing = store.missing(&hash).unwrap().unwrap();
        let want = ranges::from_bytes(3 * 16384..4 * 16384)
            | ranges::from_bytes(40 * 16384..42 * 16384)
            | ranges::from_bytes(64 * 16384..size);
        assert_eq!(missing, want);
        // the rest from a "peer": the result is the new blob
        let mut response = Vec::new();
        let peer = Store::temporary().unwrap();
        let full = peer.import_bytes(new.clone()).await.unwrap();
        assert_eq!(full.hash, hash);
        peer.write_encoded(&hash, &missing, &mut response).unwrap();
        store.receive_encoded(hash, &missing, &mut &response[..]).unwrap();
        assert_eq!(store.status(&hash).unwrap(), BlobStatus::Complete { size });
        assert_eq!(store.read_to_vec(&hash).unwrap(), new);
    }

    #[tokio::test]
    async fn a_base_damaged_at_rest_is_caught_and_its_groups_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = image(32 * 16384, 2);
        let base = store.import_bytes(old.clone()).await.unwrap();
        let mut new = old.clone();
        new[0] ^= 1;
        // rot two groups of the base on disk
        let path = store.blob_path(&base.hash, "data");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"rot", 5 * 16384 + 10).unwrap();
        f.write_all_at(b"rot", 20 * 16384).unwrap();
        let (hash, _) = outboard_of(&new);
        let out = seed(&store, &new, &[base.hash]).await.unwrap();
        assert_eq!(out.damaged_bytes, 2 * 16384);
        assert_eq!(out.reused_bytes, 29 * 16384);
        let missing = store.missing(&hash).unwrap().unwrap();
        let want = ranges::from_bytes(0..16384)
            | ranges::from_bytes(5 * 16384..6 * 16384)
            | ranges::from_bytes(20 * 16384..21 * 16384);
        assert_eq!(missing, want);
        // what was recorded is the new blob's bytes, verified
        let mut r = store.reader(&hash).unwrap();
        let mut buf = vec![0u8; 16384];
        r.read_at(16384, &mut buf).unwrap();
        assert_eq!(&buf[..], &new[16384..32768]);
    }

    #[tokio::test]
    async fn zero_groups_become_holes_without_a_base() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut new = vec![0u8; 256 * 16384];
        new[100 * 16384..101 * 16384].copy_from_slice(&image(16384, 4));
        let (hash, _) = outboard_of(&new);
        let out = seed(&store, &new, &[]).await.unwrap();
        assert_eq!(out.zero_bytes, 255 * 16384);
        assert_eq!(store.missing(&hash).unwrap().unwrap(), ranges::from_bytes(100 * 16384..101 * 16384));
        use std::os::unix::fs::MetadataExt;
        let physical = std::fs::metadata(store.partial_path(&hash, "data")).unwrap().blocks() * 512;
        assert!(physical < 64 * 1024, "the partial data file holds {physical} bytes on disk");
    }

    /// 100 bytes inserted at 1 MiB shift every later group: position finds
    /// nothing after it, the content index finds nearly all of it.
    #[tokio::test]
    async fn shifted_bytes_are_found_by_content() {
        let store = Store::temporary().unwrap();
        let old = image(8 << 20, 6);
        let base = store.import_bytes(old.clone()).await.unwrap();
        store.build_content_index(&base.hash).unwrap();
        let mut new = old[..1 << 20].to_vec();
        new.extend_from_slice(&[1u8; 100]);
        new.extend_from_slice(&old[1 << 20..]);
        let (hash, tree) = outboard_of(&new);
        let moved: Vec<_> = crate::content_index::chunk_bytes(&new)
            .into_iter()
            .filter_map(|e| store.find_chunk(&e.hash, &hash).unwrap().map(|l| (e.offset, l)))
            .collect();
        let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap().with_moved_chunks(moved);
        s.push(&tree).unwrap();
        let out = s.finish().unwrap();
        let missing = ranges::byte_count(&store.missing(&hash).unwrap().unwrap(), new.len() as u64);
        assert!(out.moved_bytes > 0 && out.reused_bytes >= out.moved_bytes);
        assert!(missing < 600 << 10, "{missing} bytes still missing: {out:?}");
        let peer = Store::temporary().unwrap();
        let _kept = peer.import_bytes(new.clone()).await.unwrap();
        let want = store.missing(&hash).unwrap().unwrap();
        let mut response = Vec::new();
        peer.write_encoded(&hash, &want, &mut response).unwrap();
        store.receive_encoded(hash, &want, &mut &response[..]).unwrap();
        assert_eq!(store.read_to_vec(&hash).unwrap(), new);
    }

    /// A content index that lies (chunks said to be where other bytes lie)
    /// costs reads, never a wrong byte: nothing it points at is recorded.
    #[tokio::test]
    async fn a_lying_content_index_records_nothing() {
        let store = Store::temporary().unwrap();
        let other = image(4 << 20, 7);
        let local = store.import_bytes(other.clone()).await.unwrap();
        let new = image(2 << 20, 8);
        let (hash, tree) = outboard_of(&new);
        // every chunk of the new blob "found" somewhere in the other blob
        let moved = crate::content_index::chunk_bytes(&new)
            .into_iter()
            .map(|e| (e.offset, ChunkLocation { blob: local.hash, offset: e.offset + 12345, len: e.len }))
            .collect();
        let mut s = store.start_seed(hash, new.len() as u64, &[]).unwrap().with_moved_chunks(moved);
        s.push(&tree).unwrap();
        let out = s.finish().unwrap();
        assert_eq!(out.moved_bytes, 0);
        assert_eq!(store.missing(&hash).unwrap(), Some(ranges::all(new.len() as u64)));
    }

    #[tokio::test]
    async fn a_lying_or_short_tree_records_nothing() {
        let store = Store::temporary().unwrap();
        let old = image(16 * 16384, 5);
        let base = store.import_bytes(old.clone()).await.unwrap();
        let mut new = old.clone();
        new[7 * 16384] ^= 1;
        let (hash, tree) = outboard_of(&new);
        // a tree whose lowest parents claim the base's groups but whose
        // root is the new hash: fails at the first record that lies
        let mut lie = tree.clone();
        let (_, base_tree) = outboard_of(&old);
        lie[64..].copy_from_slice(&base_tree[64..]);
        let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap();
        assert!(matches!(s.push(&lie), Err(Error::Verification { .. })));
        drop(s);
        assert_eq!(store.missing(&hash).unwrap(), Some(ranges::all(new.len() as u64)));
        let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap();
        s.push(&tree[..tree.len() - 10]).unwrap();
        assert!(matches!(s.finish(), Err(Error::Truncated { .. })));
        let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap();
        let mut long = tree.clone();
        long.extend_from_slice(&[0u8; 64]);
        assert!(s.push(&long).is_err());
    }
}
