//! A malicious client: garbage, oversized requests, huge range lists,
//! silent streams, thousands of streams. Each gets its documented error
//! code while the server goes on serving others in bounded memory.

mod common;

use std::time::Duration;

use blixard_protocol::{client, limits, wire, Connection, ErrorCode};

/// Sends raw bytes as a request; returns the code the server reset with.
async fn raw(conn: &Connection, bytes: &[u8]) -> Option<ErrorCode> {
    let (mut send, mut recv) = conn.quinn().open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    match recv.read_to_end(1 << 20).await {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => Some(ErrorCode::from_varint(code)),
        _ => None,
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_codes() {
    let server = common::server().await;
    let c = common::client(&server.endpoint).await;
    // Garbage bodies.
    assert_eq!(raw(&c.conn, &frame(&[0xff; 40])).await, Some(ErrorCode::UnknownRequest));
    assert_eq!(raw(&c.conn, &frame(&[0, 0, 0, 0, 1, 2])).await, Some(ErrorCode::BadRequest));
    assert_eq!(raw(&c.conn, &frame(&[])).await, Some(ErrorCode::BadRequest));
    assert_eq!(raw(&c.conn, &[1, 2]).await, Some(ErrorCode::BadRequest));
    assert_eq!(raw(&c.conn, &[]).await, Some(ErrorCode::BadRequest));
    // A frame that claims more than the limit is refused before it is read.
    let mut huge = (1u32 << 30).to_le_bytes().to_vec();
    huge.extend_from_slice(&[0; 1000]);
    assert_eq!(raw(&c.conn, &huge).await, Some(ErrorCode::RequestTooLarge));
    assert_eq!(
        raw(&c.conn, &frame(&vec![0; limits::MAX_REQUEST_BYTES as usize + 1])).await,
        Some(ErrorCode::RequestTooLarge)
    );
    // Huge and unsorted range lists.
    let many = wire::Request::Get(wire::GetRequest { hash: [0; 32], ranges: wire::RangeSpec((0..3000).collect()) });
    assert_eq!(raw(&c.conn, &wire::encode_frame(&many)).await, Some(ErrorCode::TooMany));
    let unsorted = wire::Request::Get(wire::GetRequest { hash: [0; 32], ranges: wire::RangeSpec(vec![10, 5]) });
    assert_eq!(raw(&c.conn, &wire::encode_frame(&unsorted)).await, Some(ErrorCode::BadRequest));
    let items = (0..1100).map(|_| wire::GetRequest { hash: [0; 32], ranges: wire::RangeSpec(vec![0]) }).collect();
    let many_items = wire::Request::GetMany(wire::GetManyRequest { items });
    assert_eq!(raw(&c.conn, &wire::encode_frame(&many_items)).await, Some(ErrorCode::TooMany));
    // A sequence claim that lies about its length.
    let mut lying_len = 1u32.to_le_bytes().to_vec();
    lying_len.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(raw(&c.conn, &frame(&lying_len)).await, Some(ErrorCode::BadRequest));
    // The connection still works.
    client::ping(&c.conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_streams_time_out_and_others_are_served() {
    let limits = limits::ServerLimits { request_timeout: Duration::from_millis(500), ..Default::default() };
    let server = common::server_with(limits).await;
    let hash = server.add(common::data(2 * 1024 * 1024, 1)).await;
    let attacker = common::client(&server.endpoint).await;
    // Fill every stream slot with a stream that never sends its request.
    let mut silent = Vec::new();
    for _ in 0..limits::MAX_STREAMS_PER_CONNECTION {
        let (mut send, recv) = attacker.conn.quinn().open_bi().await.unwrap();
        send.write_all(&[1]).await.unwrap(); // half a length, then silence
        silent.push((send, recv));
    }
    // Another client is served meanwhile.
    let good = common::client(&server.endpoint).await;
    let out = client::get(&good.conn, &good.store, hash, &Default::default()).await.unwrap();
    assert!(out.complete);
    for (_send, mut recv) in silent {
        match recv.read_to_end(100).await {
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                assert_eq!(ErrorCode::from_varint(code), ErrorCode::RequestTimeout)
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_streams_in_bounded_memory() {
    let server = common::server().await;
    let data = common::data(4 * 1024 * 1024, 2);
    let hash = server.add(data.clone()).await;
    let before = common::peak_rss_kib();
    // Attackers with small receive windows, so this process's growth is
    // the server's, not the attackers' buffers.
    let small =
        blixard_protocol::Tuning { stream_window: 64 * 1024, connection_window: 256 * 1024, ..Default::default() };
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let opts = blixard_protocol::EndpointOptions { tuning: small.clone(), ..Default::default() };
        attackers.push(common::client_with(&server.endpoint, opts).await);
    }
    // 8 connections x 500 streams: garbage, oversized claims, pings and
    // whole-blob gets that are never read, all at once.
    let mut tasks = Vec::new();
    for (i, a) in attackers.iter().enumerate() {
        for j in 0..500 {
            let conn = a.conn.clone();
            tasks.push(tokio::spawn(async move {
                let (mut send, mut recv) = conn.quinn().open_bi().await.ok()?;
                let req = match (i + j) % 4 {
                    0 => frame(&[0xee; 2000]),
                    1 => (u32::MAX).to_le_bytes().to_vec(),
                    2 => wire::encode_frame(&wire::Request::Ping),
                    _ => wire::encode_frame(&wire::Request::Get(wire::GetRequest {
                        hash: hash.0,
                        ranges: wire::RangeSpec(vec![0]),
                    })),
                };
                let _ = send.write_all(&req).await;
                let _ = send.finish();
                // Read a little and walk away from the rest.
                let mut buf = [0u8; 100];
                let _ = tokio::time::timeout(Duration::from_secs(20), recv.read(&mut buf)).await;
                Some(())
            }));
        }
    }
    // An honest client is served while the attack runs.
    let good = common::client(&server.endpoint).await;
    let out = client::get(&good.conn, &good.store, hash, &Default::default()).await.unwrap();
    assert!(out.complete);
    assert_eq!(good.store.read_to_vec(&hash).unwrap(), data);
    for t in tasks {
        let _ = t.await;
    }
    let after = common::peak_rss_kib();
    let growth = after.saturating_sub(before);
    println!("peak RSS {before} KiB before, {after} KiB after 4000 hostile streams (+{growth} KiB)");
    // Each connection may buffer at most its 1 MiB receive window; responses
    // are bounded by the send window and the response permit count.
    assert!(growth < 128 * 1024, "grew by {growth} KiB");
}
