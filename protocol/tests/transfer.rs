//! Transfers between two endpoints on 127.0.0.1: full, ranged, resumed,
//! many, sequences; and the small requests.

mod common;

use std::sync::{atomic::AtomicU64, Arc};

use blixard_protocol::{client, Error, ErrorCode};
use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, Hash, ResourceKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_get_verifies_and_reports_progress() {
    let server = common::server().await;
    let data = common::data(5 * 1024 * 1024 + 123, 1);
    let hash = server.add(data.clone()).await;
    let c = common::client(&server.endpoint).await;
    let progress = Arc::new(AtomicU64::new(0));
    let opts = client::GetOptions { progress: Some(progress.clone()), ..Default::default() };
    let out = client::get(&c.conn, &c.store, hash, &opts).await.unwrap();
    assert!(out.complete);
    assert_eq!(out.data_bytes, data.len() as u64);
    assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), out.wire_bytes);
    assert_eq!(c.store.read_to_vec(&hash).unwrap(), data);
    assert_eq!(Hash::of(&data), hash);
    // A second get sends nothing.
    let again = client::get(&c.conn, &c.store, hash, &opts).await.unwrap();
    assert_eq!(again.wire_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_get_asks_only_for_missing_ranges() {
    let server = common::server().await;
    let data = common::data(4 * 1024 * 1024, 2);
    let hash = server.add(data.clone()).await;
    let c = common::client(&server.endpoint).await;
    let first = ChunkRanges::from(ChunkNum(0)..ChunkNum(1024)) | ChunkRanges::from(ChunkNum(2048)..ChunkNum(2560));
    let out = client::get_ranges(&c.conn, &c.store, hash, first.clone(), &Default::default()).await.unwrap();
    assert_eq!(out.data_bytes, 1536 * 1024);
    assert!(!out.complete);
    let missing = c.store.missing(&hash).unwrap().unwrap();
    let missing_bytes = ranges::byte_count(&missing, data.len() as u64);
    assert_eq!(missing_bytes, data.len() as u64 - 1536 * 1024);
    let rest = client::get(&c.conn, &c.store, hash, &Default::default()).await.unwrap();
    assert!(rest.complete);
    assert_eq!(rest.data_bytes, missing_bytes, "re-sent only the missing data");
    // Wire overhead over the missing data: the size header and parent hashes.
    assert!(rest.wire_bytes < missing_bytes + missing_bytes / 100, "{} wire bytes", rest.wire_bytes);
    assert_eq!(c.store.read_to_vec(&hash).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_chunk_and_ranges_past_the_end_prove_the_size() {
    let server = common::server().await;
    let data = common::data(300_000, 3);
    let hash = server.add(data.clone()).await;
    let c = common::client(&server.endpoint).await;
    let out = client::get_ranges(&c.conn, &c.store, hash, ChunkRanges::from(ChunkNum(1 << 40)..), &Default::default())
        .await
        .unwrap();
    assert_eq!(out.size, 300_000);
    match c.store.status(&hash).unwrap() {
        BlobStatus::Partial { size_verified, ranges, .. } => {
            assert!(size_verified, "{ranges:?} {out:?}");
            assert_eq!(out.data_bytes, 300_000 - 288 * 1024, "the whole last chunk group");
            assert_eq!(ranges, ChunkRanges::from(ChunkNum(288)..ChunkNum(293)));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_blob_and_unheld_ranges_get_codes() {
    let server = common::server().await;
    let c = common::client(&server.endpoint).await;
    let e = client::get(&c.conn, &c.store, Hash([9; 32]), &Default::default()).await.unwrap_err();
    assert!(matches!(e, Error::Remote(ErrorCode::NotFound)), "{e}");
    assert_eq!(c.store.status(&Hash([9; 32])).unwrap(), BlobStatus::Absent);

    // A partial provider refuses ranges it lacks, and serves those it has.
    let data = common::data(1024 * 1024, 4);
    let src = server.add(data.clone()).await;
    let mid = common::client(&server.endpoint).await;
    let half = ChunkRanges::from(ChunkNum(0)..ChunkNum(512));
    client::get_ranges(&mid.conn, &mid.store, src, half.clone(), &Default::default()).await.unwrap();
    let mid_server = blixard_protocol::server::ServerContext::new(mid.store.clone(), Default::default());
    tokio::spawn(blixard_protocol::server::accept_loop(mid.endpoint.clone(), mid_server));
    let c2 = common::client(&mid.endpoint).await;
    let e = client::get(&c2.conn, &c2.store, src, &Default::default()).await.unwrap_err();
    assert!(matches!(e, Error::Remote(ErrorCode::NotHeld)), "{e}");
    let avail = client::observe(&c2.conn, src).await.unwrap();
    assert_eq!(avail.ranges.to_ranges().unwrap(), half);
    let out = client::get_ranges(&c2.conn, &c2.store, src, half, &Default::default()).await.unwrap();
    assert_eq!(out.data_bytes, 512 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_and_hash_sequences() {
    let server = common::server().await;
    let blobs: Vec<Vec<u8>> = (0..5).map(|i| common::data(10_000 + i * 40_000, 10 + i as u64)).collect();
    let mut hashes = Vec::new();
    for b in &blobs {
        hashes.push(server.add(b.clone()).await);
    }
    let seq_bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
    let seq = server.add(seq_bytes).await;
    let c = common::client(&server.endpoint).await;
    let items = hashes[..3].iter().map(|h| (*h, ChunkRanges::all())).collect();
    let outs = client::get_many(&c.conn, &c.store, items, &Default::default()).await.unwrap();
    assert!(outs.iter().all(|o| o.complete));
    let c2 = common::client(&server.endpoint).await;
    let outs = client::get_seq(&c2.conn, &c2.store, seq, ChunkRanges::all(), &Default::default()).await.unwrap();
    assert_eq!(outs.len(), 6);
    for (h, b) in hashes.iter().zip(&blobs) {
        assert_eq!(&c2.store.read_to_vec(h).unwrap(), b);
    }
    // An unknown item stops a get-many after the items before it.
    let c3 = common::client(&server.endpoint).await;
    let items = vec![(hashes[0], ChunkRanges::all()), (Hash([1; 32]), ChunkRanges::all())];
    let e = client::get_many(&c3.conn, &c3.store, items, &Default::default()).await.unwrap_err();
    assert!(matches!(e, Error::Remote(ErrorCode::NotFound)), "{e}");
    assert_eq!(c3.store.status(&hashes[0]).unwrap(), BlobStatus::Absent, "refused whole, before any byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_requests() {
    let server = common::server().await;
    let hash = server.add(common::data(50_000, 5)).await;
    server.store.put_resource(&ResourceKind::VmImage, "ubuntu-server", "22.04", hash).unwrap();
    let c = common::client(&server.endpoint).await;
    let pong = client::ping(&c.conn).await.unwrap();
    assert_eq!(pong.observed, c.endpoint.local_addr());
    let found = client::lookup(&c.conn, "vm-image", "ubuntu-server", "22.04").await.unwrap().unwrap();
    assert_eq!(found.hash, hash.0);
    assert_eq!(found.size, 50_000);
    assert!(client::lookup(&c.conn, "vm-image", "nope", "1").await.unwrap().is_none());
    let e = client::lookup(&c.conn, "no-such-kind", "a", "b").await.unwrap_err();
    assert!(matches!(e, Error::Remote(ErrorCode::BadRequest)), "{e}");
    let list = client::list(&c.conn, None).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(client::list(&c.conn, Some("logs")).await.unwrap().items.is_empty());
    assert!(client::peers(&c.conn).await.unwrap().is_empty());
    let avail = client::observe(&c.conn, hash).await.unwrap();
    assert!(avail.complete && avail.size == Some(50_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_growth_until_complete() {
    let server = common::server().await;
    let data = common::data(1024 * 1024, 6);
    let hash = server.add(data.clone()).await;
    let mid = common::client(&server.endpoint).await;
    let mid_ctx = blixard_protocol::server::ServerContext::new(mid.store.clone(), Default::default());
    tokio::spawn(blixard_protocol::server::accept_loop(mid.endpoint.clone(), mid_ctx));
    let watcher = common::client(&mid.endpoint).await;
    let mut obs = client::watch(&watcher.conn, hash).await.unwrap();
    let first = obs.next().await.unwrap().unwrap();
    assert!(first.size.is_none() && !first.complete);
    client::get_ranges(&mid.conn, &mid.store, hash, ChunkRanges::from(ChunkNum(0)..ChunkNum(256)), &Default::default())
        .await
        .unwrap();
    let second = obs.next().await.unwrap().unwrap();
    assert_eq!(second.ranges.to_ranges().unwrap(), ChunkRanges::from(ChunkNum(0)..ChunkNum(256)));
    client::get(&mid.conn, &mid.store, hash, &Default::default()).await.unwrap();
    let mut last = second;
    while let Some(a) = obs.next().await.unwrap() {
        last = a;
    }
    assert!(last.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_checked_and_learned() {
    let server = common::server().await;
    let ep = common::endpoint();
    // Trust on first use: the id seen is returned.
    let conn = ep.connect(server.endpoint.local_addr(), None).await.unwrap();
    assert_eq!(conn.remote_id(), server.endpoint.node_id());
    // The wrong expected id is refused, naming both.
    let wrong = blixard_protocol::SecretKey::generate().node_id();
    match ep.connect(server.endpoint.local_addr(), Some(wrong)).await {
        Err(blixard_net::Error::WrongIdentity { expected, actual, .. }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, server.endpoint.node_id());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_refuses_other_nodes_at_the_handshake() {
    let allowed = blixard_protocol::SecretKey::generate();
    let allowed_id = allowed.node_id();
    let opts = blixard_protocol::EndpointOptions {
        client_filter: Some(Arc::new(move |id: &blixard_protocol::NodeId| *id == allowed_id)),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = blixard_store::Store::open(dir.path()).unwrap();
    let server =
        blixard_protocol::Endpoint::bind(blixard_protocol::SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), opts)
            .unwrap();
    tokio::spawn(blixard_protocol::server::accept_loop(
        server.clone(),
        blixard_protocol::server::ServerContext::new(store, Default::default()),
    ));
    let good = blixard_protocol::Endpoint::bind(allowed, "127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let conn = good.connect(server.local_addr(), Some(server.node_id())).await.unwrap();
    client::ping(&conn).await.unwrap();
    let bad = common::endpoint();
    // TLS 1.3 client auth fails after the client's handshake completes, so
    // the refusal shows on connect or on the first request.
    let refused = match bad.connect(server.local_addr(), Some(server.node_id())).await {
        Err(_) => true,
        Ok(conn) => client::ping(&conn).await.is_err(),
    };
    assert!(refused);
}

/// A new version is seeded from the old one: after the tree, only the
/// changed groups are missing, and the get fetches only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_seeds_a_new_version_from_the_old_one() {
    let server = common::server().await;
    let old = common::data(256 * 16384, 7);
    let mut new = old.clone();
    for g in [0usize, 99, 200, 201] {
        new[g * 16384 + 100] ^= 0x55;
    }
    new[150 * 16384..160 * 16384].fill(0);
    let hash = server.add(new.clone()).await;
    let c = common::client(&server.endpoint).await;
    let base = c.store.import_bytes(old.clone()).await.unwrap();
    let size = new.len() as u64;
    let tree = client::get_tree(&c.conn, &c.store, hash, size, &sources(base.hash), &Default::default()).await.unwrap();
    assert_eq!(tree.wire_bytes, 8 + 255 * 64);
    assert_eq!(tree.seed.zero_bytes, 10 * 16384);
    assert_eq!(tree.seed.reused_bytes, (256 - 4 - 10) * 16384);
    let got = client::get(&c.conn, &c.store, hash, &Default::default()).await.unwrap();
    assert!(got.complete);
    assert_eq!(got.data_bytes, 4 * 16384);
    assert_eq!(c.store.read_to_vec(&hash).unwrap(), new);
    // unknown and partial blobs have no tree to give
    let unknown =
        client::get_tree(&c.conn, &c.store, Hash::of(b"nothing"), size, &Default::default(), &Default::default()).await;
    assert!(matches!(unknown, Err(Error::Remote(ErrorCode::NotFound))), "{unknown:?}");
}

fn sources(base: Hash) -> client::SeedSources {
    client::SeedSources { bases: vec![base], ..Default::default() }
}
