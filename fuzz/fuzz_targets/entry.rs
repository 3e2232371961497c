//! Blob entries from the metadata database: decoding never panics or
//! over-allocates, and anything accepted round-trips.
#![no_main]
use blixard_store::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = codec::decode_entry(data) {
        assert_eq!(codec::decode_entry(&codec::encode_entry(&e).unwrap()).unwrap(), e);
    }
});
