//! Test data every crate's tests share: deterministic pseudo-random bytes
//! (xorshift64), in memory or written to a file, so no test keeps a
//! generator of its own.

use std::{io::Write, path::Path};

/// `len` bytes from an xorshift64 generator seeded with `seed`: the same
/// arguments always give the same bytes; different seeds, different bytes.
///
/// ```
/// let a = blixard_tests::data::pseudo_random(100, 1);
/// assert_eq!(a, blixard_tests::data::pseudo_random(100, 1));
/// assert_ne!(a, blixard_tests::data::pseudo_random(100, 2));
/// ```
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill(&mut out, &mut state(seed));
    out
}

/// Writes `len` bytes of [`pseudo_random`]`(len, seed)` to `path`, a MiB
/// at a time (images of many MiB never sit in memory whole).
pub fn write_file(path: &Path, len: u64, seed: u64) {
    let mut f = std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut x = state(seed);
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        fill(&mut block[..n], &mut x);
        f.write_all(&block[..n]).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
}

/// The generator's starting state: the seed mixed by splitmix64, so seeds
/// that differ in one bit start far apart (xorshift needs a nonzero state).
fn state(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

fn fill(buf: &mut [u8], x: &mut u64) {
    for c in buf.chunks_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_holds_the_same_bytes_as_memory_across_block_edges() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let len = (1 << 20) + 13;
        write_file(&p, len as u64, 7);
        // Block edges fall on multiples of 8 bytes, so the stream is one.
        assert_eq!(std::fs::read(&p).unwrap(), pseudo_random(len, 7));
    }

    #[test]
    fn neighbouring_seeds_give_different_bytes() {
        for seed in 0..64u64 {
            assert_ne!(pseudo_random(64, seed), pseudo_random(64, seed + 1), "seed {seed}");
            assert_ne!(pseudo_random(64, seed), pseudo_random(64, seed ^ 1), "seed {seed}");
        }
    }
}
