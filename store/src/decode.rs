//! Verifying decoder for bao responses (pre-order, 16 KiB chunk groups).
//!
//! It follows bao-tree's `DecodeResponseIter` step for step (the same
//! traversal, [`bao_tree::iter::ResponseIterRef`], and the same BLAKE3
//! hazmat hashing) but reads every leaf into one reused, page-aligned buffer
//! instead of a fresh allocation per leaf. Writing a leaf to the page cache
//! from a page-aligned buffer is several times cheaper on these machines,
//! and this loop is the receiving hot path. A property test checks it
//! against bao-tree's encoder; the bit-flip tests check it rejects damage.

use std::io::{self, Read};

use bao_tree::{
    blake3::{
        self,
        hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode},
    },
    io::sync::truncate_ranges,
    iter::{BaoChunk, ResponseIterRef},
    TreeNode,
};

use crate::{ranges::ChunkRanges, tree, Error, Hash, Result};

/// One verified item of a response.
pub(crate) enum Verified<'a> {
    /// A parent's two child hashes (the outboard record of `node`).
    Parent { node: TreeNode, pair: [u8; 64] },
    /// Verified data at a byte offset (a whole group, or the last one).
    Leaf { offset: u64, data: &'a [u8] },
}

/// A buffer of one chunk group whose start is page aligned (without unsafe:
/// a larger allocation, used from its first page boundary).
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    const PAGE: usize = 4096;

    pub(crate) fn new() -> Self {
        let raw = vec![0u8; tree::BLOCK_BYTES as usize + Self::PAGE];
        let start = raw.as_ptr().align_offset(Self::PAGE).min(Self::PAGE);
        AlignedBuf { raw, start }
    }

    pub(crate) fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.start..self.start + len]
    }
}

/// Reads and verifies the response body for `ranges` of the blob `hash` of
/// `size` bytes (the size header already read), handing every verified item
/// to `sink` in order. Stops at the first error; what was handed over before
/// it was verified.
pub(crate) fn decode(
    hash: Hash,
    size: u64,
    ranges: &ChunkRanges,
    reader: &mut impl Read,
    buf: &mut AlignedBuf,
    mut sink: impl FnMut(Verified<'_>) -> Result<()>,
) -> Result<()> {
    let tree = tree::bao_tree(size);
    let ranges = truncate_ranges(ranges, size);
    let mut stack: Vec<blake3::Hash> = Vec::with_capacity(64);
    stack.push(hash.into());
    let truncated = |what: String, e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated { hash, reason: format!("the stream ended before {what}") },
        _ => Error::Stream(e),
    };
    let mismatch = |what: String| Error::Verification { hash, reason: format!("hash mismatch at {what}") };
    for chunk in ResponseIterRef::new(tree, ranges) {
        match chunk {
            BaoChunk::Parent { node, is_root, left, right, .. } => {
                let mut pair = [0u8; 64];
                reader.read_exact(&mut pair).map_err(|e| truncated(format!("parent {node:?}"), e))?;
                let l: ChainingValue = pair[..32].try_into().expect("32 bytes");
                let r: ChainingValue = pair[32..].try_into().expect("32 bytes");
                let expected = stack.pop().expect("the traversal pairs every item with a hash");
                let actual = if is_root {
                    merge_subtrees_root(&l, &r, Mode::Hash)
                } else {
                    blake3::Hash::from(merge_subtrees_non_root(&l, &r, Mode::Hash))
                };
                if actual != expected {
                    return Err(mismatch(format!("parent {node:?}")));
                }
                if right {
                    stack.push(blake3::Hash::from(r));
                }
                if left {
                    stack.push(blake3::Hash::from(l));
                }
                sink(Verified::Parent { node, pair })?;
            }
            BaoChunk::Leaf { start_chunk, size: len, is_root, .. } => {
                let data = buf.get(len);
                reader.read_exact(data).map_err(|e| truncated(format!("chunk {}", start_chunk.0), e))?;
                let actual = if is_root {
                    blake3::hash(data)
                } else {
                    let mut h = blake3::Hasher::new();
                    h.set_input_offset(start_chunk.0 * 1024);
                    h.update(data);
                    blake3::Hash::from(h.finalize_non_root())
                };
                let expected = stack.pop().expect("the traversal pairs every item with a hash");
                if actual != expected {
                    return Err(mismatch(format!("chunk {}", start_chunk.0)));
                }
                sink(Verified::Leaf { offset: start_chunk.to_bytes(), data })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_page_aligned() {
        let mut b = AlignedBuf::new();
        let p = b.get(tree::BLOCK_BYTES as usize).as_ptr() as usize;
        assert_eq!(p % AlignedBuf::PAGE, 0);
    }
}
