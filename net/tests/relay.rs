//! The relay server and client in process: forwarding, identities, and
//! every limit against a misbehaving client while others keep working.

use std::{net::SocketAddr, time::Duration};

use blixard_net::{
    relay::frame::{RelayFrame, MAX_BODY_BYTES},
    relay::{code, probe, Incoming, RelayClient, RelayLimits, RelayServer},
    NodeId, RelayAddr, SecretKey,
};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn relay(limits: RelayLimits) -> (RelayServer, RelayAddr) {
    let server = RelayServer::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), limits).await.unwrap();
    let addr = RelayAddr { id: server.node_id(), addr: server.addr() };
    (server, addr)
}

async fn next(c: &mut RelayClient) -> Incoming {
    tokio::time::timeout(Duration::from_secs(5), c.recv()).await.expect("nothing from the relay").expect("closed")
}

#[tokio::test]
async fn datagrams_and_batches_go_to_the_named_node_from_the_proven_one() {
    let (_server, addr) = relay(RelayLimits::default()).await;
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let alice = RelayClient::connect(&a, addr).await.unwrap();
    let mut bob = RelayClient::connect(&b, addr).await.unwrap();
    assert!(alice.send(b.node_id(), 2, 4, Bytes::from_static(b"abcdefghij")));
    match next(&mut bob).await {
        Incoming::Datagrams { src, datagrams } => {
            assert_eq!(src, a.node_id());
            assert_eq!((datagrams.ecn, datagrams.segment_size), (2, 4));
            let packets: Vec<Bytes> = datagrams.packets().collect();
            assert_eq!(packets, vec![Bytes::from("abcd"), Bytes::from("efgh"), Bytes::from("ij")]);
        }
        other => panic!("{other:?}"),
    }
    // To a node that is not here: a PeerGone notice.
    let mut alice = alice;
    let nobody = NodeId([9; 32]);
    assert!(alice.send(nobody, 0, 0, Bytes::from_static(b"x")));
    assert_eq!(next(&mut alice).await, Incoming::PeerGone(nobody));
}

#[tokio::test]
async fn a_wrong_relay_identity_is_refused() {
    let (_server, addr) = relay(RelayLimits::default()).await;
    let wrong = RelayAddr { id: NodeId([1; 32]), addr: addr.addr };
    let e = RelayClient::connect(&SecretKey::generate(), wrong).await.unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
}

#[tokio::test]
async fn a_second_login_of_one_node_replaces_the_first() {
    let (server, addr) = relay(RelayLimits::default()).await;
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let mut first = RelayClient::connect(&b, addr).await.unwrap();
    let mut second = RelayClient::connect(&b, addr).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), first.recv()).await.unwrap().is_none(), "the first is closed");
    let alice = RelayClient::connect(&a, addr).await.unwrap();
    alice.send(b.node_id(), 0, 0, Bytes::from_static(b"to the newest"));
    assert!(matches!(next(&mut second).await, Incoming::Datagrams { .. }));
    assert_eq!(server.stats().clients.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// A raw TLS client logged in as `key`, for sending what our client never would.
async fn raw_login(key: &SecretKey, addr: RelayAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = blixard_net::relay::client_tls_config(key, addr.id).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.addr.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.write_all(&RelayFrame::Login { version: 1 }.to_bytes().unwrap()).await.unwrap();
    let mut ack = [0u8; 7];
    tls.read_exact(&mut ack).await.unwrap();
    assert_eq!(ack[0], 0x02, "LoginAck");
    tls
}

/// Reads until the relay closes; returns the error code it sent, if any.
async fn closed_with(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Option<u16> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut all)).await.expect("not closed");
    let mut d = blixard_net::relay::frame::FrameDecoder::default();
    d.extend(&all);
    let mut code = None;
    while let Ok(Some(f)) = d.next_frame() {
        if let RelayFrame::Error { code: c, .. } = f {
            code = Some(c);
        }
    }
    code
}

#[tokio::test]
async fn oversized_garbage_and_forbidden_frames_close_only_that_client() {
    let (server, addr) = relay(RelayLimits::default()).await;
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let alice = RelayClient::connect(&a, addr).await.unwrap();
    let mut bob = RelayClient::connect(&b, addr).await.unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized", {
            let mut f = vec![0x03];
            f.extend_from_slice(&(MAX_BODY_BYTES as u32 + 1).to_le_bytes());
            f
        }),
        ("garbage", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("unknown type", vec![0x7f, 0, 0, 0, 0]),
        ("a relay-only frame", RelayFrame::PeerGone(NodeId([1; 32])).to_bytes().unwrap().to_vec()),
    ];
    for (what, bytes) in cases {
        let mut bad = raw_login(&SecretKey::generate(), addr).await;
        bad.write_all(&bytes).await.unwrap();
        assert_eq!(closed_with(&mut bad).await, Some(code::BAD_FRAME), "{what}");
        // The others never noticed.
        alice.send(b.node_id(), 0, 0, Bytes::from(what.to_string()));
        assert!(matches!(next(&mut bob).await, Incoming::Datagrams { .. }), "{what}");
    }
    assert_eq!(server.stats().bad_frames.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[tokio::test]
async fn idle_tcp_connections_are_capped_per_ip_and_timed_out() {
    let limits = RelayLimits { max_per_ip: 34, handshake_timeout: Duration::from_millis(500), ..Default::default() };
    let (server, addr) = relay(limits).await;
    let (a, b) = (SecretKey::generate(), SecretKey::generate());
    let alice = RelayClient::connect(&a, addr).await.unwrap();
    let mut bob = RelayClient::connect(&b, addr).await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(addr.addr).await.unwrap());
    }
    // All but 32 are closed at once; those 32 when the handshake time is up.
    let mut open = 0;
    for s in &mut idle {
        let mut byte = [0u8; 1];
        // A closed one reads end of stream (or a reset) at once.
        if tokio::time::timeout(Duration::from_millis(5), s.read(&mut byte)).await.is_err() {
            open += 1;
        }
    }
    assert!(open <= 40, "{open} idle connections stayed open");
    alice.send(b.node_id(), 0, 0, Bytes::from_static(b"still served"));
    assert!(matches!(next(&mut bob).await, Incoming::Datagrams { .. }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in &mut idle {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut byte)).await.expect("still open").unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert!(server.stats().refused.load(std::sync::atomic::Ordering::Relaxed) >= 466);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_held_at_its_rate_while_others_flow() {
    let rate = 4_000_000u64;
    let (_server, addr) = relay(RelayLimits { rate_bytes_per_sec: Some(rate), ..Default::default() }).await;
    let (f, s, a, b) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
    let flooder = RelayClient::connect(&f, addr).await.unwrap();
    let mut sink = RelayClient::connect(&s, addr).await.unwrap();
    let alice = RelayClient::connect(&a, addr).await.unwrap();
    let mut bob = RelayClient::connect(&b, addr).await.unwrap();
    let secs = 3.0;
    let flood = tokio::spawn(async move {
        let payload = Bytes::from(vec![7u8; 60_000]);
        let start = std::time::Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            if !flooder.send(s.node_id(), 0, 0, payload.clone()) {
                tokio::task::yield_now().await;
            }
        }
        // Gone: what it still had queued is dropped with it.
        drop(flooder);
    });
    let count = tokio::spawn(async move {
        let mut got = 0u64;
        let start = std::time::Instant::now();
        while let Ok(Some(Incoming::Datagrams { datagrams, .. })) =
            tokio::time::timeout(Duration::from_millis(1500), sink.recv()).await
        {
            got += datagrams.payload.len() as u64;
        }
        (got, start.elapsed().as_secs_f64())
    });
    // Meanwhile another pair moves 8 MB through the same relay.
    let chunk = Bytes::from(vec![1u8; 8000]);
    let mut received = 0;
    for _ in 0..1000 {
        while !alice.send(b.node_id(), 0, 0, chunk.clone()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        while let Some(Incoming::Datagrams { datagrams, .. }) = bob.try_recv() {
            received += datagrams.payload.len();
        }
    }
    while received < 1000 * 8000 {
        match tokio::time::timeout(Duration::from_secs(5), bob.recv()).await {
            Ok(Some(Incoming::Datagrams { datagrams, .. })) => received += datagrams.payload.len(),
            other => panic!("the other pair stalled at {received} bytes: {other:?}"),
        }
    }
    flood.await.unwrap();
    let (got, took) = count.await.unwrap();
    let per_sec = got as f64 / took;
    eprintln!("flooder relayed at {per_sec:.0} B/s (limit {rate}); the other pair moved {received} bytes");
    // Over the whole span the bucket's burst counts too: well under 2x.
    assert!(per_sec < 1.5 * rate as f64, "{per_sec} B/s");
}

#[tokio::test]
async fn the_udp_probe_answers_with_the_address_it_saw() {
    let (_server, addr) = relay(RelayLimits::default()).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me: SocketAddr = udp.local_addr().unwrap();
    udp.send_to(&probe::request([5; 12]), addr.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(probe::parse_answer(&buf[..n]), Some(([5; 12], me)));
    // Anything else gets nothing back.
    udp.send_to(b"\x40hello", addr.addr).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), udp.recv_from(&mut buf)).await.is_err());
}
