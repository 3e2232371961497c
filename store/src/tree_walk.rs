//! [`TreeWalk`]: a blob's tree (its pre-order outboard, `docs/PROTOCOL.md`
//! §5.4) verified top-down as it streams in: each parent must merge to the
//! value its own parent promised, starting from the blob hash, so a lying
//! or truncated tree fails before anything depends on it, and the lowest
//! parents yield every group's chaining value in group order. Memory is
//! O(depth of the tree). Seeding (`seed`) and serving a tree
//! (`tree_reader`) both use it.

use blake3::hazmat::ChainingValue;

use crate::{tree, Hash};

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

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_tests::data::pseudo_random as image;

    use crate::{outboard::outboard_of, tree::BLOCK_BYTES};

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
}
