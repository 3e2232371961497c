//! Checking bytes at rest against a blob's tree: nothing leaves the store
//! for a user, and no partial blob resumes, on bytes that rotted on disk.
//!
//! The outboard is checked top-down first (each parent record must merge to
//! the chaining value its own parent, or the root hash, holds), so a
//! damaged record condemns exactly the groups below it. Then every group is
//! hashed, many at a time on all cores (`leaves::hash_groups`), and compared
//! with its parent's record. Damaged groups are reported as chunk ranges;
//! [`Store::forget_damaged`] turns them back into missing ranges (a complete
//! blob becomes partial), so the next download fetches them from peers.

use std::{fs::File, io, ops::Range, os::unix::fs::FileExt};

use blake3::hazmat::ChainingValue;
use rayon::prelude::*;
use tracing::warn;

use crate::{
    checkpoint::{load_checkpoint, write_checkpoint},
    entries::Roots,
    entry::{DataLocation, EntryRecord, OutboardLocation},
    leaves,
    opened::{Opened, Stored},
    ranges::{self, ChunkNum, ChunkRanges},
    tree::{self, BLOCK_BYTES, PARENT_BYTES},
    Error, Hash, Result, Store,
};

/// Bytes read and checked at a time: 8 MiB, split over the cores in pieces
/// of 16 groups.
const WINDOW_BYTES: u64 = 8 << 20;
const PIECE_BYTES: usize = leaves::WIDE_GROUPS * BLOCK_BYTES as usize;

/// What a check of one blob found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The blob.
    pub hash: Hash,
    /// Its size.
    pub size: u64,
    /// True if the blob was complete when checked.
    pub complete: bool,
    /// Chunk ranges checked (everything held).
    pub checked: ChunkRanges,
    /// Chunk ranges (whole 16 KiB groups) whose bytes do not match the tree.
    pub damaged: ChunkRanges,
    /// True if the damaged ranges were turned back into missing ones.
    pub repaired: bool,
}

impl VerifyReport {
    /// True if nothing checked was damaged.
    pub fn is_intact(&self) -> bool {
        self.damaged.is_empty()
    }
}

/// The chunk ranges of group indices `groups`, clamped to the blob.
fn group_chunks(groups: Range<u64>, size: u64) -> ChunkRanges {
    let per = BLOCK_BYTES / ranges::CHUNK_BYTES;
    let end = (groups.end * per).min(ranges::chunk_count(size).max(1));
    ChunkRanges::from(ChunkNum(groups.start * per)..ChunkNum(end))
}

/// The group indices covered by `check` (chunk ranges), merged into runs.
fn group_runs(check: &ChunkRanges, size: u64) -> Vec<Range<u64>> {
    let per = BLOCK_BYTES / ranges::CHUNK_BYTES;
    let mut runs: Vec<Range<u64>> = Vec::new();
    for r in ranges::to_vec(&ranges::round_to_groups(check), size) {
        let g = r.start / per..r.end.div_ceil(per);
        match runs.last_mut() {
            Some(last) if last.end >= g.start => last.end = last.end.max(g.end),
            _ => runs.push(g),
        }
    }
    runs
}

/// A blob's outboard in memory or mapped.
enum OutboardBytes<'a> {
    Slice(&'a [u8]),
    Map(memmap2::Mmap),
}

impl OutboardBytes<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            OutboardBytes::Slice(s) => s,
            OutboardBytes::Map(m) => m,
        }
    }
}

fn outboard_bytes(opened: &Opened) -> io::Result<OutboardBytes<'_>> {
    let len = tree::outboard_size(opened.size) as usize;
    let ob = match &opened.outboard {
        Stored::Memory(v) => OutboardBytes::Slice(v),
        Stored::File(_) if len == 0 => OutboardBytes::Slice(&[]),
        // SAFETY: a read-only map of one of the store's own files, which it
        // never truncates while the blob exists (removal unlinks, which
        // leaves a map valid).
        Stored::File(f) => OutboardBytes::Map(unsafe { memmap2::MmapOptions::new().len(len).map(f)? }),
    };
    if ob.bytes().len() < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the outboard is shorter than its blob needs"));
    }
    Ok(ob)
}

/// Checks one node's parent records top-down over the groups in `want`;
/// adds the groups under a record that does not merge to `expected`.
#[allow(clippy::too_many_arguments)]
fn check_parents(
    ob: &[u8],
    start: u64,
    count: u64,
    index: u64,
    expected: &ChainingValue,
    is_root: bool,
    want: &[Range<u64>],
    bad: &mut Vec<Range<u64>>,
) {
    // `want` is sorted and disjoint: the first run ending after `start`
    // is the only one that can begin inside this node.
    let next = want.partition_point(|w| w.end <= start);
    let overlaps = want.get(next).is_some_and(|w| w.start < start + count);
    if count < 2 || !overlaps {
        return;
    }
    let at = (index * PARENT_BYTES) as usize;
    let left: ChainingValue = ob[at..at + 32].try_into().expect("32 bytes");
    let right: ChainingValue = ob[at + 32..at + 64].try_into().expect("32 bytes");
    if &tree::merge(&left, &right, is_root) != expected {
        bad.push(start..start + count);
        return;
    }
    let l = tree::left_len(count);
    check_parents(ob, start, l, index + 1, &left, false, want, bad);
    check_parents(ob, start + l, count - l, index + l, &right, false, want, bad);
}

/// The chaining value group `g` must have, from its parent's record.
fn expected_leaf(ob: &[u8], hash: &Hash, n: u64, g: u64) -> ChainingValue {
    match tree::leaf_parent(n, g) {
        None => *hash.as_bytes(),
        Some((index, left)) => {
            let at = (index * PARENT_BYTES) as usize + if left { 0 } else { 32 };
            ob[at..at + 32].try_into().expect("32 bytes")
        }
    }
}

/// Checks the groups `check` (chunk ranges) of an opened blob against its
/// tree and calls `verified(offset, bytes)` with each window of intact data
/// in order (for export; windows with damage are not passed on). Returns
/// the damaged chunk ranges (whole groups).
pub(crate) fn check(
    hash: &Hash,
    opened: &Opened,
    check: &ChunkRanges,
    mut verified: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<ChunkRanges> {
    let size = opened.size;
    let n = tree::blocks(size);
    let want = group_runs(check, size);
    let ob = outboard_bytes(opened)?;
    let ob = ob.bytes();
    let mut bad_groups = Vec::new();
    if n > 1 {
        check_parents(ob, 0, n, 0, hash.as_bytes(), true, &want, &mut bad_groups);
    }
    let mut damaged = ChunkRanges::empty();
    for g in &bad_groups {
        damaged |= group_chunks(g.clone(), size);
    }
    if n == 1 {
        let mut buf = vec![0u8; size as usize];
        read_exact_at(&opened.data, &mut buf, 0)?;
        if tree::leaf_hash(0, &buf, true) == *hash.as_bytes() {
            verified(0, &buf)?;
        } else {
            damaged |= group_chunks(0..1, size);
        }
        return Ok(damaged);
    }
    let mut buf = Vec::new();
    for run in want {
        let mut at = run.start * BLOCK_BYTES;
        let end = (run.end * BLOCK_BYTES).min(size);
        while at < end {
            let len = (end - at).min(WINDOW_BYTES) as usize;
            buf.resize(len, 0);
            read_exact_at(&opened.data, &mut buf, at)?;
            let wrong = damaged_in_window(hash, ob, n, at / BLOCK_BYTES, &buf);
            let under_bad_parent =
                bad_groups.iter().any(|b| b.start * BLOCK_BYTES < at + len as u64 && at < b.end * BLOCK_BYTES);
            for &g in &wrong {
                damaged |= group_chunks(g..g + 1, size);
            }
            if wrong.is_empty() && !under_bad_parent {
                verified(at, &buf)?;
            }
            at += len as u64;
        }
    }
    Ok(damaged)
}

fn read_exact_at(data: &Stored, buf: &mut [u8], at: u64) -> io::Result<()> {
    match data {
        Stored::Memory(v) => {
            let src = v.get(at as usize..at as usize + buf.len());
            buf.copy_from_slice(src.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "short inline data"))?);
            Ok(())
        }
        Stored::File(f) => f.read_exact_at(buf, at),
    }
}

/// The groups of `window` (starting at group `first`) whose hash is wrong.
fn damaged_in_window(hash: &Hash, ob: &[u8], n: u64, first: u64, window: &[u8]) -> Vec<u64> {
    window
        .par_chunks(PIECE_BYTES)
        .enumerate()
        .flat_map_iter(|(i, piece)| {
            let piece_first = first + (i * leaves::WIDE_GROUPS) as u64;
            let cvs = leaves::hash_groups(piece_first, piece);
            cvs.into_iter()
                .enumerate()
                .filter_map(move |(j, cv)| {
                    let g = piece_first + j as u64;
                    (cv != expected_leaf(ob, hash, n, g)).then_some(g)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

impl Store {
    /// Checks every held byte of `hash` against its tree. With `repair`,
    /// damaged groups become missing (see [`Store::forget_damaged`]).
    /// Blocks: reads the whole blob.
    pub fn verify_blob(&self, hash: &Hash, repair: bool) -> Result<VerifyReport> {
        let opened = self.open_blob(hash)?;
        let complete = opened.held == ranges::all(opened.size);
        let path = if complete { self.blob_path(hash, "data") } else { self.partial_path(hash, "data") };
        let damaged = check(hash, &opened, &opened.held, |_, _| Ok(())).map_err(Error::io("verify", path))?;
        let repaired = repair && !damaged.is_empty() && {
            self.forget_damaged(hash, &damaged)?;
            true
        };
        Ok(VerifyReport { hash: *hash, size: opened.size, complete, checked: opened.held, damaged, repaired })
    }

    /// Before a partial blob left on disk (by an earlier run, or by a
    /// receive that ended) takes new data, re-verifies what it holds, once
    /// per process, and forgets what rotted: a resumed download then
    /// re-fetches those groups instead of completing with them. Blocks.
    pub fn check_resumed(&self, hash: &Hash) -> Result<()> {
        if self.live_partial(hash).is_some() || self.checked_partials().lock().unwrap().contains(hash) {
            return Ok(());
        }
        if matches!(self.entry(hash)?, Some(EntryRecord::Partial { .. })) {
            let report = self.verify_blob(hash, true)?;
            if !report.is_intact() {
                warn!(%hash, damaged = ?report.damaged, "a resumed partial blob had damaged groups; fetching them again");
            }
        }
        self.checked_partials().lock().unwrap().insert(*hash);
        Ok(())
    }

    /// [`Store::verify_blob`] for every blob, complete or partial. Blocks.
    pub fn verify_all(&self, repair: bool) -> Result<Vec<VerifyReport>> {
        let mut out = Vec::new();
        for (hash, _) in self.blobs()? {
            match self.verify_blob(&hash, repair) {
                Ok(r) => out.push(r),
                Err(e @ Error::ReferenceChanged { .. }) => warn!(%hash, "{e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A referenced file changed: the blob becomes a partial blob holding
    /// nothing (an empty, sparse data file beside its outboard), so the
    /// next download fetches it into a copy the store owns. The file itself
    /// is the user's and is left alone. Returns `error` for the caller.
    pub(crate) fn reference_changed(&self, error: Error) -> Error {
        if let Error::ReferenceChanged { hash, .. } = &error {
            if let Err(e) = self.forget_reference(hash) {
                warn!(%hash, "could not mark a changed reference missing: {e}");
            }
        }
        error
    }

    fn forget_reference(&self, hash: &Hash) -> Result<()> {
        let roots = self.lock_roots();
        let Some(EntryRecord::Complete { size, data: DataLocation::External { path, .. }, outboard, .. }) =
            self.entry(hash)?
        else {
            return Ok(());
        };
        let pd = self.partial_path(hash, "data");
        File::create(&pd).and_then(|f| f.set_len(size)).map_err(Error::io("create", &pd))?;
        self.become_partial(&roots, hash, size, outboard, &ChunkRanges::empty())?;
        warn!(%hash, path, "a referenced file changed: its blob holds nothing now and is fetched again by the next download");
        Ok(())
    }

    /// Makes a complete blob whose partial data file is in place a partial
    /// blob holding `held`: its outboard moves (or is written) beside the
    /// data, then the checkpoint and the entry, flushed. Under the roots lock.
    fn become_partial(
        &self,
        roots: &Roots,
        hash: &Hash,
        size: u64,
        outboard: OutboardLocation,
        held: &ChunkRanges,
    ) -> Result<()> {
        let po = self.partial_path(hash, "obao4");
        match outboard {
            OutboardLocation::Owned => {
                let bo = self.blob_path(hash, "obao4");
                std::fs::rename(&bo, &po).map_err(Error::io("rename", &bo))?;
            }
            OutboardLocation::Inline(v) => std::fs::write(&po, v).map_err(Error::io("write", &po))?,
            OutboardLocation::None => drop(File::create(&po).map_err(Error::io("create", &po))?),
        }
        write_checkpoint(self, hash, size, held)?;
        self.entries().demote_to_partial(roots, hash, size)?;
        self.flush()
    }

    /// Turns `damaged` chunk ranges of `hash` back into missing ones: a
    /// complete blob the store owns becomes a partial blob holding the
    /// rest; a partial blob forgets them. A referenced file is the user's
    /// and is left alone (serving it fails until it is imported again).
    ///
    /// Blocking (database writes and fsync): from async code, call it in `spawn_blocking`.
    pub fn forget_damaged(&self, hash: &Hash, damaged: &ChunkRanges) -> Result<()> {
        let roots = self.lock_roots();
        match self.entry(hash)? {
            Some(EntryRecord::Complete { size, data: DataLocation::Owned, outboard, .. }) => {
                let (bd, pd) = (self.blob_path(hash, "data"), self.partial_path(hash, "data"));
                std::fs::rename(&bd, &pd).map_err(Error::io("rename", &bd))?;
                self.become_partial(&roots, hash, size, outboard, &(ranges::all(size) - damaged))?;
                warn!(%hash, ?damaged, "damaged groups of a complete blob are missing again");
            }
            Some(EntryRecord::Partial { size }) => {
                // A live partial blob takes its checkpoint lock before the
                // roots lock when it completes: never the other way round.
                drop(roots);
                match self.live_partial(hash) {
                    Some(p) => p.forget(damaged)?,
                    None => {
                        let held = load_checkpoint(self, hash, size).unwrap_or_default();
                        write_checkpoint(self, hash, size, &(held - damaged))?;
                    }
                }
                warn!(%hash, ?damaged, "damaged groups of a partial blob are missing again");
            }
            Some(EntryRecord::Complete { .. }) => {
                warn!(%hash, "damage in a blob the store does not own as a file; not repaired");
            }
            None => return Err(Error::NotFound(*hash)),
        }
        Ok(())
    }
}
