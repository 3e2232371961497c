//! The request decoder, on arbitrary request bodies: it never panics or
//! over-allocates, and anything it accepts re-encodes to the same bytes
//! (the encoding is canonical).
#![no_main]
use blixard_protocol::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = wire::decode_request(data) {
        assert_eq!(&wire::encode_frame(&req)[4..], data);
    }
});
