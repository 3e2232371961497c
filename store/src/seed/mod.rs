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

mod base;

use self::base::Base;
use crate::{
    content_index::ChunkLocation,
    opened::{read_up_to, Opened},
    partial::PartialBlob,
    ranges::{self, ChunkRanges},
    tree::{self, BLOCK_BYTES, PARENT_BYTES},
    tree_walk::{TreeWalk, WalkError},
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
        // Entries come from a peer's index: sorted by offset here, but they
        // may overlap, reach past the blob or overflow. Each piece must move
        // forward from where the last ended, or it is passed over.
        let chunk_end = |(at, loc): &(u64, ChunkLocation)| at.saturating_add(u64::from(loc.len));
        let moved = &self.moved;
        while self.moved_next < moved.len() && chunk_end(&moved[self.moved_next]) <= start {
            self.moved_next += 1;
        }
        let mut pieces = Vec::new();
        let mut pos = start;
        for entry @ (at, loc) in &moved[self.moved_next..] {
            if pos == end || *at > pos {
                break;
            }
            let to = chunk_end(entry).min(end);
            if to <= pos {
                continue; // behind us: an overlapping entry
            }
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
            let offset = loc.offset.checked_add(from - at)?;
            let read = read_up_to(&source.data, offset, dst).ok()?;
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
        let every = RECORD_EVERY.min(self.partial.store().config().checkpoint_bytes.max(1 << 20));
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

#[cfg(test)]
mod tests;
