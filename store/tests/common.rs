//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use blixard_store::{ranges::ChunkRanges, Hash, Store};
use rand::{RngCore, SeedableRng};

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A bao response (size header + encoding) for `ranges` of a blob held by `src`.
pub fn response(src: &Store, hash: &Hash, ranges: &ChunkRanges) -> Vec<u8> {
    let mut out = Vec::new();
    src.write_encoded(hash, ranges, &mut out).unwrap();
    out
}

/// Feeds a response into `dst` through the sync API.
pub fn receive(
    dst: &Store,
    hash: Hash,
    ranges: &ChunkRanges,
    resp: &[u8],
) -> blixard_store::Result<blixard_store::ReceiveOutcome> {
    let size = u64::from_le_bytes(resp[..8].try_into().unwrap());
    dst.receive_encoded(hash, size, ranges, &mut &resp[8..])
}
