//! Relay frames: decoding arbitrary bytes (fed in arbitrary pieces) never
//! panics or over-allocates, and every frame accepted re-encodes to the
//! bytes it came from.
#![no_main]
use blixard_net::relay::frame::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(1, |b| *b as usize + 1);
    let mut decoder = FrameDecoder::default();
    let mut accepted = Vec::new();
    let mut consumed = 0usize;
    'feed: for piece in data.chunks(split) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let bytes = frame.to_bytes().expect("a decoded frame encodes");
                    accepted.extend_from_slice(&bytes);
                    consumed += bytes.len();
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(&accepted[..], &data[..consumed], "decoded frames re-encode to their bytes");
});
