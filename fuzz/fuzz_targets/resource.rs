//! Resource records: decoding never panics, and anything accepted round-trips.
#![no_main]
use blixard_store::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = codec::decode_resource(data) {
        assert_eq!(codec::decode_resource(&codec::encode_resource(&r).unwrap()).unwrap(), r);
    }
});
