//! Chunk range sets: which 1 KiB chunks of a blob a request asks for or a
//! store holds.
//!
//! bao-tree speaks in [`ChunkNum`]s (1 KiB chunks) and [`ChunkRanges`]
//! (`RangeSet2<ChunkNum>`); the helpers here are the few conversions every
//! caller needs (byte ranges, the last chunk, counting bytes).

use std::ops::Range;

pub use bao_tree::{ChunkNum, ChunkRanges};

/// Bytes per chunk.
pub const CHUNK_BYTES: u64 = 1024;
/// Bytes per chunk group, the tree's leaves: what stores verify and record.
pub const GROUP_BYTES: u64 = crate::tree::BLOCK_BYTES;

/// Number of chunks in a blob of `size` bytes (a final partial chunk counts).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES)
}

/// All chunks of a blob of `size` bytes.
pub fn all(size: u64) -> ChunkRanges {
    ChunkRanges::from(ChunkNum(0)..ChunkNum(chunk_count(size)))
}

/// The last chunk of a blob of `size` bytes; fetching it verifies the size.
/// For an empty blob this is chunk 0 (an empty leaf still proves the size).
pub fn last_chunk(size: u64) -> ChunkRanges {
    let last = chunk_count(size).saturating_sub(1);
    ChunkRanges::from(ChunkNum(last)..ChunkNum(last + 1))
}

/// The chunks that cover the byte range `bytes`.
pub fn from_bytes(bytes: Range<u64>) -> ChunkRanges {
    if bytes.start >= bytes.end {
        return ChunkRanges::empty();
    }
    ChunkRanges::from(ChunkNum(bytes.start / CHUNK_BYTES)..ChunkNum(bytes.end.div_ceil(CHUNK_BYTES)))
}

/// Rounds `ranges` out to whole 16 KiB chunk groups. Request ranges in this
/// form: a store records verified data per whole group only.
pub fn round_to_groups(ranges: &ChunkRanges) -> ChunkRanges {
    bao_tree::io::round_up_to_chunks_groups(ranges.clone(), crate::tree::BLOCK_SIZE)
}

/// Clamps `ranges` to the chunks that exist in a blob of `size` bytes.
pub fn clamp(ranges: &ChunkRanges, size: u64) -> ChunkRanges {
    ranges & &all(size)
}

/// The chunks a request for `ranges` actually selects in a blob of `size`
/// bytes, by bao-tree's rule: chunks past the end are dropped, and a request
/// that reaches past the end also selects the last chunk (so `n..` with any
/// `n` at or beyond the end is a request for the size proof). The encoding of
/// this set is byte-identical to the encoding of `ranges`.
pub fn normalize(ranges: &ChunkRanges, size: u64) -> ChunkRanges {
    // An empty blob still has one (empty) chunk in bao's view.
    let end = ChunkNum(chunk_count(size).max(1));
    let mut selected = ranges & &ChunkRanges::from(ChunkNum(0)..end);
    if !(ranges & &ChunkRanges::from(end..)).is_empty() {
        selected |= last_chunk(size);
    }
    selected
}

/// The chunks a response for `requested` carries, once the blob's `size` is
/// known: the request normalised (chunks past the end dropped; a request
/// reaching past the end selects the last chunk) and rounded out to whole
/// 16 KiB chunk groups, since stores verify and record whole groups. Both
/// sides compute this: the encoder encodes it, the decoder expects it.
pub fn effective(requested: &ChunkRanges, size: u64) -> ChunkRanges {
    normalize(&round_to_groups(&normalize(requested, size)), size)
}

/// The finite ranges of a clamped set as plain `u64` chunk ranges.
pub fn to_vec(ranges: &ChunkRanges, size: u64) -> Vec<Range<u64>> {
    let end = chunk_count(size);
    ranges
        .iter()
        .filter_map(|r| {
            let (start, stop) = match r {
                range_collections::range_set::RangeSetRange::Range(r) => (r.start.0, r.end.0.min(end)),
                range_collections::range_set::RangeSetRange::RangeFrom(r) => (r.start.0, end),
            };
            (start < stop).then_some(start..stop)
        })
        .collect()
}

/// `ranges` of a blob of `size` bytes as byte ranges in text, e.g.
/// `0..16384, 65536..70000`.
pub fn byte_ranges_text(ranges: &ChunkRanges, size: u64) -> String {
    let each = to_vec(ranges, size).into_iter();
    each.map(|r| format!("{}..{}", r.start * CHUNK_BYTES, (r.end * CHUNK_BYTES).min(size)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes of a blob of `size` bytes that `ranges` cover.
pub fn byte_count(ranges: &ChunkRanges, size: u64) -> u64 {
    to_vec(ranges, size).into_iter().map(|r| (r.end * CHUNK_BYTES).min(size) - r.start * CHUNK_BYTES).sum()
}

/// Builds a range set from sorted, strictly increasing boundaries, as persisted.
/// Returns `None` if the boundaries are not strictly increasing.
pub fn from_boundaries(boundaries: &[u64]) -> Option<ChunkRanges> {
    if boundaries.windows(2).any(|w| w[0] >= w[1]) {
        return None;
    }
    let b: smallvec::SmallVec<[ChunkNum; 2]> = boundaries.iter().map(|&c| ChunkNum(c)).collect();
    ChunkRanges::new(b)
}

/// The boundaries of a range set (the persisted form).
pub fn boundaries(ranges: &ChunkRanges) -> Vec<u64> {
    ranges.boundaries().iter().map(|c| c.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(1024), 1);
        assert_eq!(chunk_count(1025), 2);
        assert_eq!(byte_count(&all(5000), 5000), 5000);
        assert_eq!(byte_count(&last_chunk(5000), 5000), 5000 - 4096);
        assert_eq!(byte_count(&ChunkRanges::all(), 5000), 5000);
        assert_eq!(from_bytes(1023..1025), ChunkRanges::from(ChunkNum(0)..ChunkNum(2)));
        assert!(from_bytes(5..5).is_empty());
    }

    #[test]
    fn normalize_selects_last_chunk_past_the_end() {
        let c = |a, b| ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
        assert_eq!(normalize(&c(0, 3), 5000), c(0, 3));
        assert_eq!(normalize(&ChunkRanges::from(ChunkNum(100)..), 5000), c(4, 5));
        assert_eq!(normalize(&(c(0, 2) | c(9, 12)), 5000), c(0, 2) | c(4, 5));
        assert_eq!(normalize(&ChunkRanges::all(), 0), c(0, 1));
        assert_eq!(normalize(&c(0, 1), 0), c(0, 1));
        assert!(normalize(&ChunkRanges::empty(), 5000).is_empty());
    }

    #[test]
    fn boundaries_round_trip() {
        let r = ChunkRanges::from(ChunkNum(1)..ChunkNum(4)) | ChunkRanges::from(ChunkNum(9)..ChunkNum(10));
        assert_eq!(from_boundaries(&boundaries(&r)).unwrap(), r);
        assert!(from_boundaries(&[3, 3]).is_none());
        assert!(from_boundaries(&[4, 3]).is_none());
    }
}
