//! The content-index decoder, as a client reads a peer's get index
//! response: arbitrary bytes for a size the input picks, fed in pieces.
//! It never panics or allocates beyond the entries it accepts; every
//! accepted index is consecutive, within the length bounds, adds up to the
//! size exactly, and re-encodes to the same bytes.
#![no_main]
use blixard_store::content_index::{encode_index, IndexDecoder, CDC_MAX, CDC_MIN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if input.len() < 4 {
        return;
    }
    // sizes up to 16 MiB, so valid indexes are reachable
    let size = u32::from_le_bytes(input[..4].try_into().unwrap()) as u64 & 0xff_ffff;
    let piece = (input[0] as usize % 61) + 1;
    let body = &input[4..];
    let mut d = IndexDecoder::new(size);
    let mut entries = Vec::new();
    let pushed = body.chunks(piece).try_for_each(|p| d.push(p, |e| entries.push(e)));
    if pushed.is_ok() && d.finish().is_ok() {
        let mut at = 0;
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.offset, at);
            assert!(e.len >= 1 && e.len <= CDC_MAX);
            assert!(e.len >= CDC_MIN || i + 1 == entries.len());
            at += e.len as u64;
        }
        assert_eq!(at, size);
        assert_eq!(encode_index(size, &entries), body);
    }
});
