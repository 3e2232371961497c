//! The parallel outboard builder: a blob's hash and pre-order outboard from
//! its data, fed a window at a time.
//!
//! bao-tree computes outboards on one thread. Here the leaves (16 KiB chunk
//! groups) of a window of the file are hashed on all cores, many at a time
//! (see `leaves`), and the parent nodes are merged and written straight to
//! their pre-order positions. The output is byte-identical to bao-tree's
//! `PreOrderMemOutboard` (tested), so every other part of the store uses
//! bao-tree for encoding and decoding.

use std::{fs::File, os::unix::fs::FileExt};

use blake3::hazmat::ChainingValue;
use rayon::prelude::*;

use crate::{
    aligned::AlignedBuf,
    tree::{blocks, leaf_hash, left_len, merge, preorder_index, BLOCK_BYTES, PARENT_BYTES},
    Hash,
};

/// Blocks per hashing window by default: 2048 × 16 KiB = 32 MiB. A power of
/// two, so windows are whole subtrees of the bao tree.
pub const WINDOW_BLOCKS: u64 = 2048;
/// Bytes hashed per parallel task: large enough to amortise scheduling,
/// small enough that a thread's buffer stays in its L2 cache.
pub const PIECE_BYTES: usize = 256 * 1024;
/// Bytes per hashing window.
#[cfg(test)]
pub const WINDOW_BYTES: u64 = WINDOW_BLOCKS * BLOCK_BYTES;

thread_local! {
    /// Each hashing thread's piece buffer (page aligned: reads into it run faster).
    static PIECE_BUF: std::cell::RefCell<AlignedBuf> =
        std::cell::RefCell::new(AlignedBuf::with_len(PIECE_BYTES));
}

/// Where parent records go while an outboard is built.
pub enum OutboardSink<'a> {
    /// A buffer of exactly [`outboard_size`](crate::tree::outboard_size) bytes.
    Memory(&'a mut [u8]),
    /// A file written with positioned writes.
    File(&'a File),
}

impl OutboardSink<'_> {
    fn put(&mut self, index: u64, l: &ChainingValue, r: &ChainingValue) -> std::io::Result<()> {
        let off = index * PARENT_BYTES;
        match self {
            OutboardSink::Memory(buf) => {
                let off = off as usize;
                buf[off..off + 32].copy_from_slice(l);
                buf[off + 32..off + 64].copy_from_slice(r);
                Ok(())
            }
            OutboardSink::File(f) => {
                let mut rec = [0u8; 64];
                rec[..32].copy_from_slice(l);
                rec[32..].copy_from_slice(r);
                f.write_all_at(&rec, off)
            }
        }
    }

    /// Writes consecutive records starting at pre-order index `index`.
    fn put_run(&mut self, index: u64, records: &[u8]) -> std::io::Result<()> {
        let off = index * PARENT_BYTES;
        match self {
            OutboardSink::Memory(buf) => {
                buf[off as usize..off as usize + records.len()].copy_from_slice(records);
                Ok(())
            }
            OutboardSink::File(f) => f.write_all_at(records, off),
        }
    }
}

/// Blocks per piece: pieces are whole, aligned subtrees of the tree (the
/// last one may be shorter).
const PIECE_BLOCKS: u64 = PIECE_BYTES as u64 / BLOCK_BYTES;

/// A hashed piece: its subtree's chaining value and, for a piece of more
/// than one block, its subtree's parent records and the first one's index.
struct HashedPiece {
    cv: ChainingValue,
    first_index: u64,
    records: Vec<u8>,
}

/// Merges the chaining values `roots` of consecutive subtrees of
/// `unit_blocks` blocks each (the last maybe fewer; `unit_blocks` a power of
/// two), together covering `blocks` blocks of a subtree whose node has
/// pre-order index `index`; writes the parents above the units and returns
/// the subtree's chaining value.
fn merge_units(
    roots: &[ChainingValue],
    blocks: u64,
    unit_blocks: u64,
    index: u64,
    is_root: bool,
    sink: &mut OutboardSink<'_>,
) -> std::io::Result<ChainingValue> {
    if roots.len() == 1 {
        return Ok(roots[0]);
    }
    // More than one unit, so the split falls on a unit boundary.
    let l = left_len(blocks);
    let lu = (l / unit_blocks) as usize;
    let left = merge_units(&roots[..lu], l, unit_blocks, index + 1, false, sink)?;
    let right = merge_units(&roots[lu..], blocks - l, unit_blocks, index + l, false, sink)?;
    sink.put(index, &left, &right)?;
    Ok(merge(&left, &right, is_root))
}

/// Merges the leaf hashes `cvs` of a subtree whose node has pre-order index
/// `index`, writing its parents; returns the subtree's chaining value.
pub(crate) fn merge_subtree(
    cvs: &[ChainingValue],
    index: u64,
    is_root: bool,
    sink: &mut OutboardSink<'_>,
) -> std::io::Result<ChainingValue> {
    merge_units(cvs, cvs.len() as u64, 1, index, is_root, sink)
}

/// Builds a blob's hash and pre-order outboard from its data, fed in order one
/// window ([`WINDOW_BLOCKS`] groups by default) at a time. Memory use is the window's
/// leaf hashes plus one hash per window.
pub struct OutboardBuilder {
    size: u64,
    n: u64,
    window_blocks: u64,
    next_window: u64,
    window_roots: Vec<ChainingValue>,
}

impl OutboardBuilder {
    /// Starts a builder for a blob of exactly `size` bytes.
    pub fn new(size: u64) -> Self {
        Self::with_window_blocks(size, WINDOW_BLOCKS)
    }

    /// Starts a builder fed in windows of `window_blocks` blocks (a power of two).
    pub fn with_window_blocks(size: u64, window_blocks: u64) -> Self {
        assert!(window_blocks.is_power_of_two(), "window_blocks must be a power of two");
        Self { size, n: blocks(size), window_blocks, next_window: 0, window_roots: Vec::new() }
    }

    /// Number of windows the data must be fed in.
    pub fn window_count(&self) -> u64 {
        self.n.div_ceil(self.window_blocks)
    }

    /// Byte range of window `w`.
    pub fn window_range(&self, w: u64) -> std::ops::Range<u64> {
        let bytes = self.window_blocks * BLOCK_BYTES;
        let start = w * bytes;
        start..(start + bytes).min(self.size)
    }

    /// Hashes the next window (exactly the bytes of [`Self::window_range`]) on
    /// all cores and writes its parent records.
    pub fn add_window(&mut self, data: &[u8], sink: &mut OutboardSink<'_>) -> std::io::Result<()> {
        let range = self.window_range(self.next_window);
        assert_eq!(data.len() as u64, range.end - range.start, "window {} has the wrong length", self.next_window);
        self.add_window_pieces(
            |start, len, hash| {
                let at = (start - range.start) as usize;
                hash(&data[at..at + len]);
                Ok(())
            },
            sink,
        )
    }

    /// Like [`Self::add_window_pieces`], with each piece read by
    /// `read(offset, buf)` into the hashing thread's own reused, page-aligned
    /// buffer, hashed while it is in the CPU cache, then handed to
    /// `hashed(offset, buf)`.
    pub fn add_window_read<R, H>(&mut self, read: R, hashed: H, sink: &mut OutboardSink<'_>) -> std::io::Result<()>
    where
        R: Fn(u64, &mut [u8]) -> std::io::Result<()> + Sync,
        H: Fn(u64, &[u8]) -> std::io::Result<()> + Sync,
    {
        self.add_window_pieces(
            |start, len, hash| {
                PIECE_BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    let buf = b.slice_mut(0, len);
                    read(start, buf)?;
                    hash(buf);
                    hashed(start, buf)
                })
            },
            sink,
        )
    }

    /// Hashes the next window on all cores in pieces of [`PIECE_BYTES`]:
    /// `piece(offset, len, hash)` must call `hash` once with the piece's bytes
    /// (from wherever it keeps them), then may do more with them while they
    /// are in the CPU cache. Writes the window's parent records.
    pub fn add_window_pieces<P>(&mut self, piece: P, sink: &mut OutboardSink<'_>) -> std::io::Result<()>
    where
        P: Fn(u64, usize, &mut dyn FnMut(&[u8])) -> std::io::Result<()> + Sync,
    {
        let w = self.next_window;
        let range = self.window_range(w);
        let first_block = w * self.window_blocks;
        let n = self.n;
        // Each task hashes its piece's leaves and merges them into the
        // piece's subtree (whose records are contiguous in pre-order), so
        // only the merges above the pieces run on one thread.
        let hash_piece = |start: u64| -> std::io::Result<HashedPiece> {
            let len = (range.end - start).min(PIECE_BYTES as u64) as usize;
            let first = start / BLOCK_BYTES;
            let mut cvs = Vec::new();
            piece(start, len, &mut |data: &[u8]| {
                cvs = if data.len() as u64 <= BLOCK_BYTES {
                    vec![leaf_hash(first, data, n == 1)]
                } else {
                    crate::leaves::hash_groups(first, data)
                };
            })?;
            if cvs.is_empty() {
                return Err(std::io::Error::other(format!("the piece at {start} was not hashed")));
            }
            let count = cvs.len() as u64;
            if count == 1 {
                return Ok(HashedPiece { cv: cvs[0], first_index: 0, records: Vec::new() });
            }
            let first_index = preorder_index(n, first, count);
            if count < n && count.is_power_of_two() {
                if let Some((cv, records)) = crate::leaves::merge_subtree(&cvs) {
                    return Ok(HashedPiece { cv, first_index, records });
                }
            }
            let mut records = vec![0u8; ((count - 1) * PARENT_BYTES) as usize];
            let cv = merge_subtree(&cvs, 0, count == n, &mut OutboardSink::Memory(&mut records))?;
            Ok(HashedPiece { cv, first_index, records })
        };
        let starts: Vec<u64> = (range.start..range.end.max(range.start + 1)).step_by(PIECE_BYTES).collect();
        let pieces: Vec<HashedPiece> = if starts.len() == 1 {
            vec![hash_piece(starts[0])?]
        } else {
            starts.into_par_iter().map(hash_piece).collect::<std::io::Result<_>>()?
        };
        let mut roots = Vec::with_capacity(pieces.len());
        for p in pieces {
            if !p.records.is_empty() {
                sink.put_run(p.first_index, &p.records)?;
            }
            roots.push(p.cv);
        }
        let blocks = (range.end - range.start).div_ceil(BLOCK_BYTES).max(1);
        let index = preorder_index(n, first_block, blocks);
        let root = merge_units(&roots, blocks, PIECE_BLOCKS, index, n <= self.window_blocks, sink)?;
        self.window_roots.push(root);
        self.next_window += 1;
        Ok(())
    }

    /// Merges the windows' hashes into the root, writing the upper parents.
    pub fn finish(self, sink: &mut OutboardSink<'_>) -> std::io::Result<Hash> {
        assert_eq!(self.next_window, self.window_count(), "not all windows were added");
        let root = merge_units(&self.window_roots, self.n, self.window_blocks, 0, true, sink)?;
        Ok(Hash(root))
    }
}

/// Hash and outboard of bytes in memory (tests).
#[cfg(test)]
pub fn outboard_of(data: &[u8]) -> (Hash, Vec<u8>) {
    let mut ob = vec![0u8; crate::tree::outboard_size(data.len() as u64) as usize];
    let mut b = OutboardBuilder::new(data.len() as u64);
    let mut sink = OutboardSink::Memory(&mut ob);
    for w in 0..b.window_count() {
        let r = b.window_range(w);
        b.add_window(&data[r.start as usize..r.end as usize], &mut sink).expect("memory sink");
    }
    let hash = b.finish(&mut sink).expect("memory sink");
    (hash, ob)
}

#[cfg(test)]
mod tests {
    use bao_tree::io::outboard::PreOrderMemOutboard;

    use crate::tree::{bao_tree, BLOCK_SIZE};

    use super::*;

    fn check(size: usize) {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4099) as u8).collect();
        let (hash, ob) = outboard_of(&data);
        assert_eq!(hash, Hash::of(&data), "hash for size {size}");
        let reference = PreOrderMemOutboard::create(&data, BLOCK_SIZE);
        assert_eq!(Hash::from(reference.root), hash);
        assert!(ob == reference.data, "outboard bytes for size {size}");
        assert_eq!(ob.len() as u64, bao_tree(size as u64).outboard_size());
    }

    #[test]
    fn matches_bao_tree_small() {
        for size in [0, 1, 1024, 16383, 16384, 16385, 32768, 49153, 1 << 20, (1 << 20) + 7] {
            check(size);
        }
    }

    #[test]
    fn matches_bao_tree_across_windows() {
        // more than two windows, last one ragged
        check((2 * WINDOW_BYTES + 5 * BLOCK_BYTES + 123) as usize);
    }

    #[test]
    fn small_windows_give_the_same_outboard() {
        let data: Vec<u8> = (0..(5 * BLOCK_BYTES as usize + 99)).map(|i| (i % 251) as u8).collect();
        let (hash, ob) = outboard_of(&data);
        let mut ob2 = vec![0u8; ob.len()];
        let mut b = OutboardBuilder::with_window_blocks(data.len() as u64, 2);
        let mut sink = OutboardSink::Memory(&mut ob2);
        for w in 0..b.window_count() {
            let r = b.window_range(w);
            b.add_window(&data[r.start as usize..r.end as usize], &mut sink).unwrap();
        }
        assert_eq!(b.finish(&mut sink).unwrap(), hash);
        assert_eq!(ob2, ob);
    }
}
