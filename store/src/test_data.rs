//! Test data for the crate's unit tests: deterministic pseudo-random bytes.

/// `size` bytes from an xorshift generator seeded with `seed`: the same
/// arguments always give the same bytes, different seeds different bytes.
pub(crate) fn image(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
