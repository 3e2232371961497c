//! Bao tree geometry at 16 KiB chunk groups: sizes, pre-order positions of
//! parents, and the hashing of one leaf and one parent.
//!
//! Geometry is counted in *blocks* (chunk groups). A tree over `n` blocks is
//! left-balanced: the left child of a node over `c > 1` blocks covers the
//! largest power of two below `c`. In pre-order a node comes before its left
//! subtree, which comes before its right subtree; leaves are not stored, so a
//! subtree over `c` blocks holds `c - 1` parent records of 64 bytes each.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

/// log2 of chunks per block: 16 chunks of 1 KiB = 16 KiB groups.
pub const BLOCK_CHUNK_LOG: u8 = 4;
/// Bytes per block (chunk group).
pub const BLOCK_BYTES: u64 = 16 * 1024;
/// Bytes per parent record in a pre-order outboard.
pub const PARENT_BYTES: u64 = 64;
/// The bao-tree block size used everywhere in the store.
pub const BLOCK_SIZE: bao_tree::BlockSize = bao_tree::BlockSize::from_chunk_log(BLOCK_CHUNK_LOG);
/// The bao-tree geometry of a blob of `size` bytes.
pub fn bao_tree(size: u64) -> bao_tree::BaoTree {
    bao_tree::BaoTree::new(size, BLOCK_SIZE)
}

/// Number of blocks of a blob (at least one: an empty blob has one empty leaf).
pub fn blocks(size: u64) -> u64 {
    size.div_ceil(BLOCK_BYTES).max(1)
}

/// Size in bytes of the pre-order outboard of a blob of `size` bytes.
pub fn outboard_size(size: u64) -> u64 {
    (blocks(size) - 1) * PARENT_BYTES
}

/// Largest power of two strictly below `count` (`count >= 2`).
pub(crate) fn left_len(count: u64) -> u64 {
    debug_assert!(count >= 2);
    1 << (63 - (count - 1).leading_zeros())
}

/// A walk from the root of a tree towards one block: the node covering
/// blocks `start..start + count`, at pre-order position `index`.
struct Walk {
    start: u64,
    count: u64,
    index: u64,
}

impl Walk {
    fn root(n: u64) -> Self {
        Walk { start: 0, count: n, index: 0 }
    }

    /// Moves to the child covering `block` (the node must have children);
    /// true if it is the left child.
    fn down(&mut self, block: u64) -> bool {
        let l = left_len(self.count);
        let left = block < self.start + l;
        if left {
            self.index += 1;
            self.count = l;
        } else {
            self.index += l;
            self.start += l;
            self.count -= l;
        }
        left
    }
}

/// Pre-order index of the node covering blocks `start..start + count` in a tree
/// over `n` blocks. The node must exist in the tree.
pub fn preorder_index(n: u64, start: u64, count: u64) -> u64 {
    let mut w = Walk::root(n);
    while !(w.start == start && w.count == count) {
        debug_assert!(w.count >= 2, "node {start}+{count} not in tree of {n}");
        w.down(start);
    }
    w.index
}

/// Where the expected hash of leaf `block` is stored: the pre-order index of
/// its parent and whether the leaf is the parent's left child. `None` for a
/// single-block blob, whose leaf hash is the root.
pub fn leaf_parent(n: u64, block: u64) -> Option<(u64, bool)> {
    if n < 2 {
        return None;
    }
    let mut w = Walk::root(n);
    loop {
        let parent = w.index;
        let left = w.down(block);
        if w.count == 1 {
            return Some((parent, left));
        }
    }
}

/// Chaining value of one block, at block index `block`; `is_root` only for a
/// single-block blob.
pub fn leaf_hash(block: u64, data: &[u8], is_root: bool) -> ChainingValue {
    if is_root {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(block * BLOCK_BYTES);
    h.update(data);
    h.finalize_non_root()
}

pub(crate) fn merge(l: &ChainingValue, r: &ChainingValue, is_root: bool) -> ChainingValue {
    if is_root {
        *merge_subtrees_root(l, r, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(l, r, Mode::Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preorder_index_matches_bao_tree() {
        for n in [2u64, 3, 5, 7, 8, 13, 100] {
            let tree = bao_tree((n - 1) * BLOCK_BYTES + 1);
            // every leaf's parent position agrees with bao-tree's node numbering
            for b in 0..n {
                let (index, _) = leaf_parent(n, b).unwrap();
                assert!(index < n - 1);
            }
            assert_eq!(tree.blocks(), n);
        }
    }
}
