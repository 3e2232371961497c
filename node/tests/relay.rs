//! Nodes and relays in one process on loopback: a download through a
//! relay while another client floods it, and a node whose relay is down
//! still working directly. (The relay across real NATs and firewalls is
//! in the lab, `tests/tests/relay_lab.rs`.)

mod common;

use std::time::Duration;

use blixard_net::{
    relay::{Incoming, RelayClient, RelayLimits, RelayServer},
    RelayAddr, SecretKey,
};
use blixard_node::{Node, NodeOptions, P2pConfig, PeerPath, TransferPriority};
use blixard_store::ResourceKind;
use bytes::Bytes;

async fn node(dir: &std::path::Path, id: u64, relays: Vec<RelayAddr>) -> Node {
    common::node_in(dir, id, P2pConfig { relays, ..Default::default() }).await
}

fn image(dir: &std::path::Path, size: usize) -> std::path::PathBuf {
    let path = dir.join("image.img");
    blixard_tests::data::write_file(&path, size as u64, 0x2545);
    path
}

async fn wait_home(n: &Node) {
    for _ in 0..200 {
        if n.node_addr().relay.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no home relay after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_through_a_relay_completes_while_a_flooder_is_held_at_its_rate() {
    let rate = 30_000_000u64;
    let limits = RelayLimits { rate_bytes_per_sec: Some(rate), ..Default::default() };
    let server = RelayServer::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), limits).await.unwrap();
    let relay = RelayAddr { id: server.node_id(), addr: server.addr() };
    let dir = tempfile::tempdir().unwrap();
    let seeder = node(dir.path(), 1, vec![relay]).await;
    let leecher = node(dir.path(), 2, Vec::new()).await;
    let size = 64 << 20;
    let uploaded = seeder.upload_resource(ResourceKind::VmImage, "img", "1", &image(dir.path(), size)).await.unwrap();
    wait_home(&seeder).await;
    leecher.connect_peer(&format!("{}@relay={relay}", seeder.node_id())).await.unwrap();

    // A client sending to another as fast as it can.
    let (f, s) = (SecretKey::generate(), SecretKey::generate());
    let flooder = RelayClient::connect(&f, relay).await.unwrap();
    let mut sink = RelayClient::connect(&s, relay).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let payload = Bytes::from(vec![7u8; 60_000]);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !flooder.send(s.node_id(), 0, 0, payload.clone()) {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let count = tokio::spawn(async move {
        let (mut got, start) = (0u64, std::time::Instant::now());
        while let Ok(Some(Incoming::Datagrams { datagrams, .. })) =
            tokio::time::timeout(Duration::from_millis(1500), sink.recv()).await
        {
            got += datagrams.payload.len() as u64;
        }
        (got, start.elapsed().as_secs_f64() - 1.5)
    });

    let t = leecher.request_download(ResourceKind::VmImage, "img", "1", TransferPriority::Normal).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(120), leecher.wait(t)).await.expect("stalled").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.await.unwrap();
    let (flooded, secs) = count.await.unwrap();
    assert_eq!(done.hash, Some(uploaded.hash));
    let path = leecher.peers().into_iter().find(|p| p.id == seeder.node_id()).and_then(|p| p.path);
    assert!(matches!(path, Some(PeerPath::Relay { .. })), "{path:?}");
    let per_sec = flooded as f64 / secs;
    let took = done.duration_secs.unwrap_or(0.0);
    eprintln!(
        "64 MiB through the relay in {took:.1} s ({:.1} MB/s) while the flooder relayed {per_sec:.0} B/s (limit {rate})",
        size as f64 / took / 1e6
    );
    assert!(per_sec < 1.5 * rate as f64, "flooder at {per_sec} B/s");
    assert!(leecher.stats().relay_bytes_received >= size as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_relay_is_unreachable_still_works_directly() {
    // A port nothing listens on (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let relay = RelayAddr { id: SecretKey::generate().node_id(), addr: dead };
    let dir = tempfile::tempdir().unwrap();
    let seeder = node(dir.path(), 1, vec![relay]).await;
    let leecher = node(dir.path(), 2, vec![relay]).await;
    let uploaded =
        seeder.upload_resource(ResourceKind::VmImage, "img", "1", &image(dir.path(), 4 << 20)).await.unwrap();
    leecher.connect_peer(&format!("{}@{}", seeder.node_id(), seeder.addr())).await.unwrap();
    let t = leecher.request_download(ResourceKind::VmImage, "img", "1", TransferPriority::Normal).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), leecher.wait(t)).await.expect("stalled").unwrap();
    assert_eq!(done.hash, Some(uploaded.hash));
    assert_eq!(seeder.stats().home_relay, None);
    let path = leecher.peers().into_iter().find(|p| p.id == seeder.node_id()).and_then(|p| p.path);
    assert_eq!(path, Some(PeerPath::Direct { addr: seeder.addr() }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_a_relay_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = P2pConfig { relay_server: Some("127.0.0.1:0".parse().unwrap()), ..Default::default() };
    let hub = Node::spawn(NodeOptions {
        id: 1,
        data_dir: dir.path().join("hub"),
        bind: "127.0.0.1:0".parse().unwrap(),
        config,
    })
    .await
    .unwrap();
    let relay = RelayAddr { id: hub.node_id(), addr: hub.relay_server_addr().expect("a relay runs") };
    let seeder = node(dir.path(), 2, vec![relay]).await;
    let leecher = node(dir.path(), 3, vec![relay]).await;
    wait_home(&seeder).await;
    wait_home(&leecher).await;
    let uploaded =
        seeder.upload_resource(ResourceKind::VmImage, "img", "1", &image(dir.path(), 2 << 20)).await.unwrap();
    // Known only by its relay: the leecher reaches it through the hub.
    leecher.connect_peer(&format!("{}@relay={relay}", seeder.node_id())).await.unwrap();
    let t = leecher.request_download(ResourceKind::VmImage, "img", "1", TransferPriority::Normal).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), leecher.wait(t)).await.expect("stalled").unwrap();
    assert_eq!(done.hash, Some(uploaded.hash));
    assert_eq!(seeder.stats().home_relay, Some(relay));
    let path = leecher.peers().into_iter().find(|p| p.id == seeder.node_id()).and_then(|p| p.path);
    assert_eq!(path, Some(PeerPath::Relay { relay }));
}
