//! Leaf hashing: the chaining values of many full 16 KiB chunk groups at once,
//! at full SIMD width.
//!
//! Hashing a group on its own (a `blake3::Hasher` per group) compresses its
//! 16 chunks in one wide SIMD call, but its 15 inner parents in ever narrower
//! ones (8, 4, 2, 1 lanes): about 5% more CPU than BLAKE3 spends on the same
//! bytes as one stream. Here the chunks of all groups of a piece are
//! compressed together, then each level of inner parents across all groups,
//! so every call is as wide as the CPU allows, as `update_rayon` does.
//!
//! That needs BLAKE3's compression-batch primitive, which the `blake3` crate
//! exposes only as an unstable, hidden API (`blake3::platform`). So the wide
//! path checks itself against the stable hazmat API once per process and
//! falls back to group-by-group hashing if the two ever disagree: a changed
//! hidden API can cost speed, never correctness.

use std::sync::OnceLock;

use blake3::{hazmat::ChainingValue, platform::Platform, IncrementCounter, BLOCK_LEN, CHUNK_LEN, OUT_LEN};

use crate::tree::{leaf_hash, BLOCK_BYTES};

/// BLAKE3's initialisation vector (the spec's constants; the crate keeps its own private).
const IV: [u32; 8] = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19];
/// Domain flags of the BLAKE3 spec.
const CHUNK_START: u8 = 1;
const CHUNK_END: u8 = 2;
const PARENT: u8 = 4;

/// Chunks per group.
const GROUP_CHUNKS: usize = BLOCK_BYTES as usize / CHUNK_LEN;
/// Groups hashed together: 16 groups = 256 KiB, the hashing piece size.
pub const WIDE_GROUPS: usize = 16;
const WIDE_CHUNKS: usize = WIDE_GROUPS * GROUP_CHUNKS;

/// The leaf hashes of the groups in `data`, which starts at group `first`:
/// full groups in wide batches, a ragged last group on its own. None is a
/// root: callers hash a single-group blob with [`leaf_hash`].
pub fn hash_groups(first: u64, data: &[u8]) -> Vec<ChainingValue> {
    let Some(p) = wide_platform() else { return one_by_one(first, data) };
    let full = data.len() / BLOCK_BYTES as usize;
    let mut cvs = Vec::with_capacity(data.len().div_ceil(BLOCK_BYTES as usize));
    for g in (0..full).step_by(WIDE_GROUPS) {
        let take = (full - g).min(WIDE_GROUPS);
        hash_full_groups(
            p,
            first + g as u64,
            &data[g * BLOCK_BYTES as usize..(g + take) * BLOCK_BYTES as usize],
            &mut cvs,
        );
    }
    let tail = &data[full * BLOCK_BYTES as usize..];
    if !tail.is_empty() {
        cvs.push(leaf_hash(first + full as u64, tail, false));
    }
    cvs
}

/// The leaf hashes of the groups in `data`, one group at a time (hazmat API).
fn one_by_one(first: u64, data: &[u8]) -> Vec<ChainingValue> {
    data.chunks(BLOCK_BYTES as usize).enumerate().map(|(j, b)| leaf_hash(first + j as u64, b, false)).collect()
}

/// Appends the leaf hashes of up to [`WIDE_GROUPS`] full groups, starting at group `first`.
fn hash_full_groups(p: Platform, first: u64, data: &[u8], cvs: &mut Vec<ChainingValue>) {
    debug_assert!(data.len().is_multiple_of(BLOCK_BYTES as usize) && data.len() <= WIDE_GROUPS * BLOCK_BYTES as usize);
    let chunks = data.len() / CHUNK_LEN;
    let mut inputs = [&[0u8; CHUNK_LEN]; WIDE_CHUNKS];
    for (slot, chunk) in inputs.iter_mut().zip(data.chunks_exact(CHUNK_LEN)) {
        *slot = chunk.try_into().expect("exact chunk");
    }
    // Chaining values of the current level, concatenated: pairs of them are
    // the next level's parent blocks. Each level is written into the other
    // half of the thread's scratch buffer (reused: zeroing 16 KiB per piece
    // showed up in profiles).
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let (mut from, mut to) = scratch.split_at_mut(WIDE_CHUNKS * OUT_LEN);
        let counter = first * GROUP_CHUNKS as u64;
        p.hash_many(&inputs[..chunks], &IV, counter, IncrementCounter::Yes, 0, CHUNK_START, CHUNK_END, from);
        // Each group's 16 chunks reduce in 4 levels of pairs; group
        // boundaries stay aligned because every level halves evenly.
        let mut count = chunks;
        while count > chunks / GROUP_CHUNKS {
            let mut parents = [&[0u8; BLOCK_LEN]; WIDE_CHUNKS / 2];
            for (slot, pair) in parents.iter_mut().zip(from[..count * OUT_LEN].chunks_exact(BLOCK_LEN)) {
                *slot = pair.try_into().expect("exact pair");
            }
            p.hash_many(&parents[..count / 2], &IV, 0, IncrementCounter::No, PARENT, 0, 0, to);
            std::mem::swap(&mut from, &mut to);
            count /= 2;
        }
        cvs.extend(
            from[..count * OUT_LEN].chunks_exact(OUT_LEN).map(|cv| ChainingValue::try_from(cv).expect("one hash")),
        );
    })
}

thread_local! {
    /// Two levels of chaining values per hashing thread.
    static SCRATCH: std::cell::RefCell<Box<[u8; 2 * WIDE_CHUNKS * OUT_LEN]>> =
        std::cell::RefCell::new(Box::new([0; 2 * WIDE_CHUNKS * OUT_LEN]));
}

/// Merges the leaf hashes `cvs` of a whole subtree (a power of two of them,
/// at least two; not the blob's root) one level at a time, each level in one
/// wide call. Returns the subtree's chaining value and its parent records in
/// pre-order, or `None` where wide hashing is unavailable.
pub fn merge_subtree(cvs: &[ChainingValue]) -> Option<(ChainingValue, Vec<u8>)> {
    debug_assert!(cvs.len() >= 2 && cvs.len().is_power_of_two());
    let p = wide_platform()?;
    // levels[0] holds the leaf hashes, levels[k] the hashes of the nodes k
    // levels up; the record of a node is the pair of its children's hashes.
    let mut levels: Vec<Vec<u8>> = vec![cvs.concat()];
    while levels.last().expect("one level").len() > OUT_LEN {
        let below = levels.last().expect("one level");
        let blocks: Vec<&[u8; BLOCK_LEN]> =
            below.chunks_exact(BLOCK_LEN).map(|b| b.try_into().expect("exact pair")).collect();
        let mut up = vec![0u8; blocks.len() * OUT_LEN];
        p.hash_many(&blocks, &IV, 0, IncrementCounter::No, PARENT, 0, 0, &mut up);
        levels.push(up);
    }
    let mut records = Vec::with_capacity((cvs.len() - 1) * BLOCK_LEN);
    // Pre-order: a node's record, then its left subtree's, then its right's.
    fn emit(levels: &[Vec<u8>], level: usize, i: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&levels[level - 1][2 * i * OUT_LEN..(2 * i + 2) * OUT_LEN]);
        if level > 1 {
            emit(levels, level - 1, 2 * i, out);
            emit(levels, level - 1, 2 * i + 1, out);
        }
    }
    emit(&levels, levels.len() - 1, 0, &mut records);
    let root = ChainingValue::try_from(&levels.last().expect("one level")[..]).expect("one hash");
    Some((root, records))
}

/// The platform for wide hashing, if it agrees with the hazmat API on a
/// test input (checked once per process).
fn wide_platform() -> Option<Platform> {
    static CHECKED: OnceLock<Option<Platform>> = OnceLock::new();
    *CHECKED.get_or_init(|| {
        let p = Platform::detect();
        let data: Vec<u8> = (0..3 * BLOCK_BYTES as usize).map(|i| (i % 251) as u8).collect();
        let mut wide = Vec::new();
        hash_full_groups(p, 5, &data, &mut wide);
        if wide == one_by_one(5, &data) {
            Some(p)
        } else {
            tracing::warn!("blake3's wide hashing disagrees with its hazmat API; hashing groups one by one");
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wide hashing equals group-by-group hashing for every count of full
    /// groups, with and without a ragged tail, at several offsets.
    #[test]
    fn wide_equals_one_by_one() {
        assert!(wide_platform().is_some(), "the self-check failed on this CPU");
        let data: Vec<u8> = (0..(WIDE_GROUPS + 3) * BLOCK_BYTES as usize).map(|i| (i * 31 % 257) as u8).collect();
        for first in [0u64, 1, 17, 1 << 30] {
            for len in [
                BLOCK_BYTES as usize,
                3 * BLOCK_BYTES as usize + 100,
                WIDE_GROUPS * BLOCK_BYTES as usize,
                data.len() - 1,
            ] {
                let d = &data[..len];
                assert_eq!(hash_groups(first, d), one_by_one(first, d), "first {first}, len {len}");
            }
        }
    }

    /// Wide merging gives the same records and hash as merging pair by pair.
    #[test]
    fn wide_merge_equals_pairwise() {
        for count in [2usize, 4, 16, 64] {
            let cvs: Vec<ChainingValue> = (0..count).map(|i| [i as u8 * 3 + 1; 32]).collect();
            let mut expected = vec![0u8; (count - 1) * BLOCK_LEN];
            let cv = crate::outboard::merge_subtree(
                &cvs,
                0,
                false,
                &mut crate::outboard::OutboardSink::Memory(&mut expected),
            )
            .unwrap();
            assert_eq!(merge_subtree(&cvs), Some((cv, expected)), "{count} leaves");
        }
    }
}
