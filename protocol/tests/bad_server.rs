//! A malicious server: flipped bits, a truncated stream, a lying size
//! header, trailing garbage, a slow drip. The client fails with a clear
//! error, stores nothing unverified, and does not hang past its deadline.

mod common;

use std::time::{Duration, Instant};

use blixard_protocol::{client, frame, watched, wire, Error};
use blixard_store::{BlobStatus, Hash, Store};

#[derive(Clone, Copy, Debug)]
enum Lie {
    FlipBit(usize),
    Truncate(usize),
    SizeHeader(u64),
    TrailingGarbage,
    SlowDrip,
}

/// Serves one connection, answering every get with `lie` applied to the
/// honest response.
async fn lying_server(store: Store, lie: Lie) -> blixard_protocol::Endpoint {
    let ep = common::endpoint();
    let ep2 = ep.clone();
    tokio::spawn(async move {
        while let Some(Ok(conn)) = ep2.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.quinn().accept_bi().await {
                    let body = frame::read_frame_body(&mut recv, 65536).await.unwrap().unwrap();
                    let mut honest = Vec::new();
                    match wire::decode_request(&body).unwrap() {
                        wire::Request::Get(g) => {
                            let hash = Hash(g.hash);
                            let size = match store.status(&hash).unwrap() {
                                BlobStatus::Complete { size } => size,
                                s => panic!("{s:?}"),
                            };
                            let effective = wire::effective_ranges(&g.ranges.to_ranges().unwrap(), size);
                            store.write_encoded(&hash, &effective, &mut honest).unwrap();
                        }
                        wire::Request::GetTree(t) => {
                            let hash = Hash(t.hash);
                            let Ok(BlobStatus::Complete { size }) = store.status(&hash) else { panic!() };
                            honest.extend_from_slice(&size.to_le_bytes());
                            honest.extend_from_slice(&store.outboard_bytes(&hash).unwrap());
                        }
                        wire::Request::GetIndex(_) => {
                            // a well-formed start, then a chunk of length 0
                            honest.push(1);
                            honest.extend_from_slice(&(64u64 * 16384).to_le_bytes());
                            honest.extend_from_slice(&3u32.to_le_bytes());
                            honest.extend_from_slice(&[0u8; 36]);
                        }
                        other => panic!("{other:?}"),
                    }
                    match lie {
                        Lie::FlipBit(at) => honest[at] ^= 0x10,
                        Lie::Truncate(len) => honest.truncate(len),
                        Lie::SizeHeader(s) => honest[..8].copy_from_slice(&s.to_le_bytes()),
                        Lie::TrailingGarbage => honest.extend_from_slice(b"garbage"),
                        Lie::SlowDrip => {
                            for b in std::mem::take(&mut honest) {
                                if send.write_all(&[b]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    let _ = send.write_all(&honest).await;
                    let _ = send.finish();
                }
            });
        }
    });
    ep
}

async fn fetch_from_liar(lie: Lie, data: &[u8]) -> (Result<client::GetOutcome, Error>, common::Client, Hash, Duration) {
    let honest = common::server().await;
    let hash = honest.add(data.to_vec()).await;
    let liar = lying_server(honest.store.clone(), lie).await;
    let c = common::client(&liar).await;
    let opts = client::GetOptions {
        deadlines: watched::Deadlines { total: Some(Duration::from_secs(3)), stall: Duration::from_secs(2) },
        ..Default::default()
    };
    let start = Instant::now();
    let r = client::get(&c.conn, &c.store, hash, &opts).await;
    let took = start.elapsed();
    std::mem::forget(honest); // keep the source store's files for the liar
    (r, c, hash, took)
}

/// Nothing the store holds may differ from the source.
fn assert_only_verified(store: &Store, hash: &Hash, data: &[u8]) {
    match store.status(hash).unwrap() {
        BlobStatus::Absent => {}
        BlobStatus::Partial { ranges, .. } => {
            // Serve what is held back into a fresh store: it must verify.
            let mut buf = Vec::new();
            store.write_encoded(hash, &ranges, &mut buf).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let check = Store::open(dir.path()).unwrap();
            check.receive_encoded(*hash, &ranges, &mut &buf[..]).unwrap();
        }
        BlobStatus::Complete { .. } => assert_eq!(store.read_to_vec(hash).unwrap(), data),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bits_fail_verification_and_store_nothing_bad() {
    let data = common::data(600_000, 1);
    for at in [9, 8 + 64 + 3, 300_000, 600_000] {
        let (r, c, hash, _) = fetch_from_liar(Lie::FlipBit(at), &data).await;
        let store = &c.store;
        let e = r.unwrap_err();
        assert!(e.is_peer_misbehaving(), "flip at {at}: {e}");
        assert!(e.to_string().contains("verification"), "{e}");
        assert_only_verified(store, &hash, &data);
        assert!(!matches!(store.status(&hash).unwrap(), BlobStatus::Complete { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_stream_keeps_what_verified() {
    let data = common::data(600_000, 2);
    for len in [4, 8, 100, 300_000] {
        let (r, c, hash, _) = fetch_from_liar(Lie::Truncate(len), &data).await;
        let store = &c.store;
        let e = r.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("ended") || msg.contains("truncated") || msg.contains("size header"), "{len}: {msg}");
        assert_only_verified(store, &hash, &data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_size_header_is_caught() {
    let data = common::data(600_000, 3);
    for size in [1, 599_999, 600_001, 1 << 40, u64::MAX] {
        let before = common::peak_rss_kib() * 1024;
        let (r, c, hash, _) = fetch_from_liar(Lie::SizeHeader(size), &data).await;
        // Nor memory: the peak grew by about what an honest fetch costs
        // (new stores and endpoints), nothing proportional to the claim.
        let grew = common::peak_rss_kib() * 1024 - before;
        eprintln!("size {size}: peak RSS grew {} KiB", grew >> 10);
        assert!(grew < 32 << 20, "size {size}: peak RSS grew {grew}");
        let store = &c.store;
        let e = r.unwrap_err();
        // A size just over the truth makes the stream end early; others fail verification.
        let truncated = matches!(e, Error::Store(blixard_store::Error::Truncated { .. }));
        assert!(e.is_peer_misbehaving() || truncated, "size {size}: {e}");
        assert_only_verified(store, &hash, &data);
        assert!(!matches!(store.status(&hash).unwrap(), BlobStatus::Complete { .. }));
        // The claim cost no disk: partial files are sparse until verified.
        let used = disk_used(c._dir.path());
        assert!(used < 4 << 20, "size {size}: {used} bytes on disk");
    }
}

/// Bytes of disk blocks allocated under `dir`.
fn disk_used(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { disk_used(&e.path()) } else { m.blocks() * 512 };
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_garbage_is_an_error() {
    let data = common::data(100_000, 4);
    let (r, c, hash, _) = fetch_from_liar(Lie::TrailingGarbage, &data).await;
    let store = &c.store;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("trailing"), "{e}");
    // The blob itself verified completely before the garbage.
    assert_only_verified(store, &hash, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drip_times_out() {
    let data = common::data(100_000, 5);
    let (r, c, hash, took) = fetch_from_liar(Lie::SlowDrip, &data).await;
    let store = &c.store;
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(took < Duration::from_secs(6), "gave up after {took:?}");
    assert_only_verified(store, &hash, &data);
}

/// A peer that answers a lookup and a list with a claim it altered (the hash
/// swapped after signing) or signed with another key than the publisher's is
/// refused: the client reports a forged claim, a protocol violation.
#[tokio::test]
async fn a_forged_claim_is_refused() {
    let publisher = blixard_protocol::SecretKey::from_seed(&[1; 32]);
    let resource = blixard_store::Resource {
        kind: blixard_store::ResourceKind::VmImage,
        name: "ubuntu-server".into(),
        version: "22.04".into(),
        hash: Hash::of(b"the real image"),
        size: 14,
        created_unix_ms: 1,
    };
    let mut altered = wire::ResourceInfo::sign(&resource, &publisher);
    altered.hash = Hash::of(b"another image").0;
    let mut impostor = wire::ResourceInfo::sign(&resource, &blixard_protocol::SecretKey::from_seed(&[2; 32]));
    impostor.publisher = publisher.node_id();
    for forged in [altered, impostor] {
        let ep = common::endpoint();
        let server = ep.clone();
        let answer = forged.clone();
        tokio::spawn(async move {
            while let Some(Ok(conn)) = server.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    while let Ok((mut send, mut recv)) = conn.quinn().accept_bi().await {
                        let body = frame::read_frame_body(&mut recv, 65536).await.unwrap().unwrap();
                        match wire::decode_request(&body).unwrap() {
                            wire::Request::Lookup(_) => {
                                frame::write_frame(&mut send, &wire::LookupResponse(Some(answer.clone())))
                                    .await
                                    .unwrap()
                            }
                            _ => {
                                let list = wire::ListResponse { items: vec![answer.clone()], truncated: false };
                                frame::write_frame(&mut send, &list).await.unwrap()
                            }
                        }
                        let _ = send.finish();
                    }
                });
            }
        });
        let client_ep = common::endpoint();
        let conn = client_ep.connect(ep.local_addr(), Some(ep.node_id())).await.unwrap();
        let e = client::lookup(&conn, "vm-image", "ubuntu-server", "22.04").await.unwrap_err();
        assert!(matches!(e, Error::BadClaim(_)) && e.is_peer_misbehaving(), "{e}");
        let e = client::list(&conn, None).await.unwrap_err();
        assert!(matches!(e, Error::BadClaim(_)), "{e}");
    }
}

/// A lying tree (a flipped bit anywhere, cut short, a wrong size, bytes
/// after it) fails, and seeding records nothing: the base's groups are not
/// copied on the word of a tree that did not verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_tree_is_caught_and_seeds_nothing() {
    let old = common::data(64 * 16384, 6);
    let mut new = old.clone();
    new[20 * 16384] ^= 1;
    let tree_len = 63 * 64;
    for lie in [
        Lie::FlipBit(8),
        Lie::FlipBit(8 + 64 * 10 + 40),
        Lie::FlipBit(8 + tree_len - 1),
        Lie::Truncate(8 + tree_len - 64),
        Lie::Truncate(5),
        Lie::SizeHeader(new.len() as u64 + 1),
        Lie::TrailingGarbage,
    ] {
        let honest = common::server().await;
        let hash = honest.add(new.clone()).await;
        let liar = lying_server(honest.store.clone(), lie).await;
        let c = common::client(&liar).await;
        let base = c.store.import_bytes(old.clone()).await.unwrap();
        let r =
            client::get_tree(&c.conn, &c.store, hash, new.len() as u64, &sources(base.hash), &Default::default()).await;
        let e = r.unwrap_err();
        let truncated = matches!(e, Error::Store(blixard_store::Error::Truncated { .. }) | Error::Malformed { .. });
        assert!(e.is_peer_misbehaving() || truncated, "{lie:?}: {e}");
        let held = match c.store.status(&hash).unwrap() {
            BlobStatus::Partial { ranges, .. } => ranges,
            BlobStatus::Absent => Default::default(),
            s => panic!("{lie:?}: {s:?}"),
        };
        assert!(held.is_empty(), "{lie:?}: recorded {held:?}");
        std::mem::forget(honest);
    }
}

fn sources(base: Hash) -> client::SeedSources {
    client::SeedSources { bases: vec![base], ..Default::default() }
}

/// A malformed content index is refused as the peer's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_index_is_refused() {
    let honest = common::server().await;
    let hash = honest.add(common::data(64 * 16384, 8)).await;
    let liar = lying_server(honest.store.clone(), Lie::TrailingGarbage).await;
    let c = common::client(&liar).await;
    let e = client::get_index(&c.conn, hash, 64 * 16384, &Default::default()).await.unwrap_err();
    assert!(e.is_peer_misbehaving() && e.to_string().contains("content index"), "{e}");
    std::mem::forget(honest);
}
