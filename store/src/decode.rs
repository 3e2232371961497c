//! Verifying decoder for bao responses (pre-order, 16 KiB chunk groups).
//!
//! A sans-I/O state machine: bytes are pushed in whatever pieces the
//! network delivers, and every parent and leaf is verified as soon as it is
//! whole. It follows bao-tree's `DecodeResponseIter` step for step (the same
//! traversal, [`bao_tree::iter::ResponseIter`], and the same BLAKE3 hazmat
//! hashing) but puts every leaf in a buffer its [`Sink`] chooses instead of a
//! fresh allocation: a reused, page-aligned batch where consecutive leaves
//! lie side by side, so the receiver writes them out in one direct write.
//! Being sans-I/O, it runs inline in the task that reads the stream (the
//! data is verified while still in the CPU cache) and is fuzzed alone. A
//! property test checks it against bao-tree's encoder; the bit-flip tests
//! check it rejects damage.

use std::io::{self, Read};

use bao_tree::{
    blake3::{
        self,
        hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode},
    },
    io::sync::truncate_ranges,
    iter::{BaoChunk, ResponseIter},
    TreeNode,
};

use crate::{ranges::ChunkRanges, tree, Error, Hash, Result};

/// Where the decoder puts what it reads and verifies.
///
/// The decoder asks the sink for the buffer each leaf is read into and
/// verified in, so a sink can place consecutive leaves side by side and write
/// them out in one large (direct) write.
pub(crate) trait Sink {
    /// The buffer for the leaf of `len` bytes at byte `offset`, or `None`
    /// if there is no room for it now. Asked again with every push the leaf
    /// spans, it must return the same buffer, holding what was put there.
    fn leaf_buf(&mut self, offset: u64, len: usize) -> Result<Option<&mut [u8]>>;
    /// The leaf last handed a buffer verified.
    fn leaf(&mut self, offset: u64, len: usize) -> Result<()>;
    /// A parent verified: the two child hashes of `node` (its outboard record).
    fn parent(&mut self, node: TreeNode, pair: &[u8; 64]) -> Result<()>;
}

/// How far a [`Decoder::push`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Every item of the response was verified.
    Done,
    /// All input was used; push more.
    NeedData,
    /// The sink has no room for the next leaf; make room, then push again.
    NeedRoom,
}

/// Verifies one response body for `ranges` of the blob `hash` of `size`
/// bytes (the size header already read).
pub(crate) struct Decoder {
    hash: Hash,
    items: ResponseIter,
    /// Hashes the coming items must have, the next on top.
    stack: Vec<blake3::Hash>,
    /// The item being filled, and its bytes so far.
    current: Option<BaoChunk>,
    filled: usize,
    pair: [u8; 64],
}

impl Decoder {
    /// A decoder for the response to `requested` (its effective ranges:
    /// see [`crate::ranges::effective`]).
    pub(crate) fn new(hash: Hash, size: u64, requested: &ChunkRanges) -> Self {
        let ranges = crate::ranges::effective(requested, size);
        let truncated = truncate_ranges(&ranges, size).boundaries().iter().copied();
        let ranges = ChunkRanges::new(truncated.collect()).expect("a range set's boundaries are valid");
        let mut stack = Vec::with_capacity(64);
        stack.push(hash.into());
        Decoder {
            hash,
            items: ResponseIter::new(tree::bao_tree(size), ranges),
            stack,
            current: None,
            filled: 0,
            pair: [0; 64],
        }
    }

    /// The blob being decoded.
    pub(crate) fn hash(&self) -> Hash {
        self.hash
    }

    /// The item the decoder waits for, for error messages.
    pub(crate) fn expecting(&self) -> String {
        match &self.current {
            Some(BaoChunk::Parent { node, .. }) => format!("parent {node:?}"),
            Some(BaoChunk::Leaf { start_chunk, .. }) => format!("chunk {}", start_chunk.0),
            None => "the next item".into(),
        }
    }

    /// Bytes still needed to complete the current or next item (0 when
    /// done): reading no more than this never reads past the response.
    pub(crate) fn wanted(&mut self) -> usize {
        if self.current.is_none() {
            self.current = self.items.next();
            self.filled = 0;
        }
        match &self.current {
            Some(BaoChunk::Parent { .. }) => 64 - self.filled,
            Some(BaoChunk::Leaf { size, .. }) => size - self.filled,
            None => 0,
        }
    }

    /// Consumes bytes from the front of `data`, handing every item to `sink`
    /// as it verifies. Stops at the first error; what was handed over before
    /// it was verified.
    pub(crate) fn push(&mut self, data: &mut &[u8], sink: &mut impl Sink) -> Result<Progress> {
        let hash = self.hash;
        let mismatch = |what: String| Error::Verification { hash, reason: format!("hash mismatch at {what}") };
        loop {
            if self.wanted() == 0 && self.current.is_none() {
                return Ok(Progress::Done);
            }
            match self.current.expect("wanted() set it") {
                BaoChunk::Parent { node, is_root, left, right, .. } => {
                    let n = (64 - self.filled).min(data.len());
                    self.pair[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    *data = &data[n..];
                    self.filled += n;
                    if self.filled < 64 {
                        return Ok(Progress::NeedData);
                    }
                    let pair = self.pair;
                    let l: ChainingValue = pair[..32].try_into().expect("32 bytes");
                    let r: ChainingValue = pair[32..].try_into().expect("32 bytes");
                    let expected = self.stack.pop().expect("the traversal pairs every item with a hash");
                    let actual = if is_root {
                        merge_subtrees_root(&l, &r, Mode::Hash)
                    } else {
                        blake3::Hash::from(merge_subtrees_non_root(&l, &r, Mode::Hash))
                    };
                    if actual != expected {
                        return Err(mismatch(format!("parent {node:?}")));
                    }
                    if right {
                        self.stack.push(blake3::Hash::from(r));
                    }
                    if left {
                        self.stack.push(blake3::Hash::from(l));
                    }
                    self.current = None;
                    sink.parent(node, &pair)?;
                }
                BaoChunk::Leaf { start_chunk, size: len, is_root, .. } => {
                    if data.is_empty() && self.filled < len {
                        return Ok(Progress::NeedData);
                    }
                    let offset = start_chunk.to_bytes();
                    let Some(buf) = sink.leaf_buf(offset, len)? else { return Ok(Progress::NeedRoom) };
                    let n = (len - self.filled).min(data.len());
                    buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    *data = &data[n..];
                    self.filled += n;
                    if self.filled < len {
                        return Ok(Progress::NeedData);
                    }
                    let actual = if is_root {
                        blake3::hash(buf)
                    } else {
                        let mut h = blake3::Hasher::new();
                        h.set_input_offset(start_chunk.0 * 1024);
                        h.update(buf);
                        blake3::Hash::from(h.finalize_non_root())
                    };
                    let expected = self.stack.pop().expect("the traversal pairs every item with a hash");
                    if actual != expected {
                        return Err(mismatch(format!("chunk {}", start_chunk.0)));
                    }
                    self.current = None;
                    sink.leaf(offset, len)?;
                }
            }
        }
    }

    /// Decodes the response from a blocking reader, reading no byte past it.
    /// A sink that answers `NeedRoom` here is a bug: blocking sinks make room
    /// themselves.
    pub(crate) fn read_from(&mut self, reader: &mut impl Read, sink: &mut impl Sink) -> Result<()> {
        let hash = self.hash;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let want = self.wanted().min(buf.len());
            if want == 0 {
                // Done, or the empty leaf of an empty blob still to verify.
                match self.push(&mut &[][..], sink)? {
                    Progress::Done => return Ok(()),
                    _ => continue,
                }
            }
            reader.read_exact(&mut buf[..want]).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    Error::Truncated { hash, reason: format!("the stream ended before {}", self.expecting()) }
                }
                _ => Error::Stream(e),
            })?;
            let mut data = &buf[..want];
            while !data.is_empty() {
                match self.push(&mut data, sink)? {
                    Progress::NeedRoom => unreachable!("a blocking sink makes room itself"),
                    Progress::Done | Progress::NeedData => {}
                }
            }
        }
    }
}
