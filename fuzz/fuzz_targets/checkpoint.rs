//! Checkpoint files: decoding arbitrary bytes never panics, and anything
//! accepted re-encodes to the same bytes.
#![no_main]
use blixard_store::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = codec::decode_checkpoint(data) {
        assert_eq!(codec::encode_checkpoint(&c).unwrap(), data);
    }
});
