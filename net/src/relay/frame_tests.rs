//! Relay frames: round trips, pieces of any size, and bad frames named
//! before anything is allocated for them.

use super::*;

fn id(b: u8) -> NodeId {
    NodeId([b; 32])
}

fn every_kind() -> Vec<RelayFrame> {
    let batch = Datagrams { ecn: 2, segment_size: 1200, payload: Bytes::from(vec![0x41; 3000]) };
    vec![
        RelayFrame::Login { version: RELAY_VERSION },
        RelayFrame::LoginAck { version: RELAY_VERSION },
        RelayFrame::SendTo { dst: id(1), datagrams: batch.clone() },
        RelayFrame::RecvFrom { src: id(2), datagrams: Datagrams { segment_size: 0, ..batch } },
        RelayFrame::Ping(*b"12345678"),
        RelayFrame::Pong(*b"12345678"),
        RelayFrame::KeepAlive,
        RelayFrame::PeerGone(id(3)),
        RelayFrame::Error { code: 2, message: "rate limited".into() },
    ]
}

#[test]
fn every_frame_round_trips_whole_and_byte_by_byte() {
    let mut stream = BytesMut::new();
    for f in every_kind() {
        f.encode(&mut stream).unwrap();
    }
    let mut whole = FrameDecoder::default();
    whole.extend(&stream);
    let mut slow = FrameDecoder::default();
    let mut slow_frames = Vec::new();
    for b in stream.iter() {
        slow.extend(&[*b]);
        while let Some(f) = slow.next_frame().unwrap() {
            slow_frames.push(f);
        }
    }
    let frames: Vec<_> = std::iter::from_fn(|| whole.next_frame().unwrap()).collect();
    assert_eq!(frames, every_kind());
    assert_eq!(slow_frames, every_kind());
    assert_eq!(whole.pending(), 0);
}

#[test]
fn a_batch_splits_at_its_segment_size() {
    let d = Datagrams { ecn: 0, segment_size: 1200, payload: Bytes::from(vec![1; 3000]) };
    assert_eq!(d.packets().map(|p| p.len()).collect::<Vec<_>>(), [1200, 1200, 600]);
    let one = Datagrams { segment_size: 0, ..d };
    assert_eq!(one.packets().count(), 1);
}

#[test]
fn bad_frames_are_named_errors_before_allocation() {
    let mut d = FrameDecoder::default();
    d.extend(&[tag::SEND_TO, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(d.next_frame(), Err(Error::Limit { .. })), "a huge length is refused from the header");
    let cases: [(&[u8], &str); 6] = [
        (&[0x7f, 0, 0, 0, 0], "unknown frame type 0x7f"),
        (&[tag::LOGIN, 1, 0, 0, 0, 1], "login body is 2 bytes"),
        (&[tag::KEEP_ALIVE, 1, 0, 0, 0, 0], "keep-alive body is 0 bytes"),
        (&[tag::PING, 0, 0, 0, 0], "ping body is 8 bytes"),
        (&[tag::ERROR, 3, 0, 0, 0, 1, 0, 0xff], "not UTF-8"),
        (&[tag::SEND_TO, 3, 0, 0, 0, 1, 2, 3], "needs 35 bytes"),
    ];
    for (bytes, want) in cases {
        let mut d = FrameDecoder::default();
        d.extend(bytes);
        let e = d.next_frame().unwrap_err().to_string();
        assert!(e.contains(want), "{bytes:?}: {e}");
    }
    let big = Datagrams { ecn: 0, segment_size: 0, payload: Bytes::from(vec![0; MAX_PAYLOAD_BYTES + 1]) };
    assert!(RelayFrame::SendTo { dst: id(1), datagrams: big }.to_bytes().is_err());
    let odd = Datagrams { ecn: 4, segment_size: 0, payload: Bytes::from_static(b"x") };
    assert!(RelayFrame::SendTo { dst: id(1), datagrams: odd }.to_bytes().is_err());
    let wide = Datagrams { ecn: 0, segment_size: 2, payload: Bytes::from_static(b"x") };
    assert!(RelayFrame::RecvFrom { src: id(1), datagrams: wide }.to_bytes().is_err());
}

/// The vectors in `tests/vectors/relay/` decode to these frames and
/// these frames encode to them.
#[test]
fn vectors_match() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/relay");
    let named = [
        ("login.hex", RelayFrame::Login { version: 1 }),
        ("login-ack.hex", RelayFrame::LoginAck { version: 1 }),
        (
            "send-to-batch.hex",
            RelayFrame::SendTo {
                dst: id(0xab),
                datagrams: Datagrams { ecn: 2, segment_size: 4, payload: Bytes::from_static(b"abcdefghij") },
            },
        ),
        (
            "recv-from.hex",
            RelayFrame::RecvFrom {
                src: id(0xcd),
                datagrams: Datagrams { ecn: 0, segment_size: 0, payload: Bytes::from_static(b"\x40quic") },
            },
        ),
        ("ping.hex", RelayFrame::Ping(*b"\x01\x02\x03\x04\x05\x06\x07\x08")),
        ("pong.hex", RelayFrame::Pong(*b"\x01\x02\x03\x04\x05\x06\x07\x08")),
        ("keep-alive.hex", RelayFrame::KeepAlive),
        ("peer-gone.hex", RelayFrame::PeerGone(id(0xef))),
        ("error.hex", RelayFrame::Error { code: 3, message: "queue full".into() }),
    ];
    for (file, frame) in named {
        let bytes = frame.to_bytes().unwrap();
        let path = dir.join(file);
        if std::env::var_os("BLIXARD_WRITE_VECTORS").is_some() {
            std::fs::write(&path, hex::encode(&bytes) + "\n").unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let vector = hex::decode(text.trim()).unwrap();
        assert_eq!(hex::encode(&bytes), hex::encode(&vector), "{file}");
        let mut d = FrameDecoder::default();
        d.extend(&vector);
        assert_eq!(d.next_frame().unwrap(), Some(frame), "{file}");
    }
}
