//! A node under pressure from anonymous peers: slow readers (slowloris), a
//! flood of idle connections, a thousand one-shot identities. Each test
//! times an honest download unattacked and attacked in the same run and
//! compares the two (the acceptance bar is 2x; a second of slack absorbs
//! scheduling noise on a 2-core machine).

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use blixard_node::{Node, P2pConfig, TransferPriority, TransferState};
use blixard_protocol::{
    wire::{self, GetRequest, RangeSpec, Request},
    Connection, Endpoint, EndpointOptions, NodeAddr, SecretKey,
};
use blixard_store::{ChunkRanges, Hash, ResourceKind};

const SIZE: usize = 64 << 20;

async fn node(dir: &Path, id: u64) -> Node {
    common::node_in(dir, id, P2pConfig::default()).await
}

/// A serving node holding one 64 MiB image; its hash.
async fn server(dir: &Path) -> (Node, Hash) {
    let a = node(dir, 1).await;
    let p = dir.join("image.img");
    let data: Vec<u8> = (0..SIZE as u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(&p, data).unwrap();
    a.upload_resource(ResourceKind::VmImage, "image", "1", &p).await.unwrap();
    let hash = a.local_resources().unwrap()[0].hash;
    (a, hash)
}

/// A fresh node `id` downloads the image from `a` (which names it): how long it took.
async fn honest_download(dir: &Path, a: &Node, id: u64) -> Duration {
    let b = node(dir, id).await;
    b.connect_peer(&format!("{}@{}", a.node_id(), a.addr())).await.unwrap();
    let took = timed_download(&b).await;
    b.shutdown().await;
    took
}

/// `b` downloads the image from its peers: how long it took.
async fn timed_download(b: &Node) -> Duration {
    let start = Instant::now();
    let t = b.request_download(ResourceKind::VmImage, "image", "1", TransferPriority::Normal).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(120), b.wait(t)).await.expect("download hung").unwrap();
    assert_eq!(done.state, TransferState::Completed, "{done:?}");
    start.elapsed()
}

/// An endpoint with a fresh, anonymous identity.
fn stranger() -> Endpoint {
    Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), EndpointOptions::default()).unwrap()
}

async fn dial(from: &Endpoint, to: &Node) -> Option<Connection> {
    let target = NodeAddr { id: Some(to.node_id()), direct_addrs: vec![to.addr()], relay: None };
    from.connect_node(&target).await.ok()
}

/// This test process's peak resident set (every node and attacker in it), MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    kib.unwrap_or(0) / 1024
}

fn assert_within(label: &str, unattacked: Duration, attacked: Duration) {
    eprintln!(
        "{label}: unattacked {unattacked:?}, attacked {attacked:?}, peak RSS of the whole test {} MiB",
        peak_rss_mib()
    );
    assert!(
        attacked <= unattacked * 2 + Duration::from_secs(1),
        "{label}: {attacked:?} attacked vs {unattacked:?} unattacked"
    );
}

/// One anonymous peer, two connections, 40 gets each reading 1 KiB every
/// 5 s: it holds at most its per-peer share of response slots, and each
/// response below the pace floor loses its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_do_not_starve_an_honest_download() {
    let dir = tempfile::tempdir().unwrap();
    let (a, hash) = server(dir.path()).await;
    let unattacked = honest_download(dir.path(), &a, 2).await;

    let attacker = stranger();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let conn = dial(&attacker, &a).await.expect("attacker connects");
        for _ in 0..20 {
            let conn = conn.clone();
            readers.push(tokio::spawn(async move {
                let Ok((mut send, mut recv)) = conn.quinn().open_bi().await else { return };
                let get = Request::Get(GetRequest { hash: hash.0, ranges: RangeSpec::new(&ChunkRanges::all()) });
                let _ = send.write_all(&wire::encode_frame(&get)).await;
                let _ = send.finish();
                let mut buf = [0u8; 1024];
                while let Ok(Some(_)) = recv.read(&mut buf).await {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // the attack takes its slots
    let attacked = honest_download(dir.path(), &a, 3).await;
    assert_within("slow readers", unattacked, attacked);
    for r in readers {
        r.abort();
    }
}

/// 300 idle connections from anonymous peers: refused past the per-IP cap,
/// closed when idle, and the room reserved for configured peers stays free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_out_a_configured_peer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = server(dir.path()).await;
    let unattacked = honest_download(dir.path(), &a, 2).await;

    let mut held = Vec::new();
    let strangers: Vec<Endpoint> = (0..10).map(|_| stranger()).collect();
    for s in &strangers {
        for _ in 0..30 {
            if let Some(c) = dial(s, &a).await {
                held.push(c);
            }
        }
    }
    // A configured peer: `a` dialed it, so `a` trusts it.
    let b = node(dir.path(), 3).await;
    a.connect_peer(&format!("{}@{}", b.node_id(), b.addr())).await.unwrap();
    b.connect_peer(&format!("{}@{}", a.node_id(), a.addr())).await.unwrap();
    assert_within("300 idle connections", unattacked, timed_download(&b).await);
    let open = held.iter().filter(|c| c.quinn().close_reason().is_none()).count();
    eprintln!("{open} of {} attacking connections still open", held.len());
    assert!(open <= 32, "the per-IP cap holds: {open} open");
    let refused = held.iter().filter_map(|c| c.quinn().close_reason()).find(|r| r.to_string().contains("refused"));
    assert!(refused.is_some(), "over-cap connections are told they were refused");
}

/// A thousand identities that each connect once to the downloader: it
/// neither keeps nor dials them, and its download keeps its speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_identities_do_not_fill_the_peer_book() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = server(dir.path()).await;
    let unattacked = honest_download(dir.path(), &a, 2).await;

    let b = node(dir.path(), 3).await;
    for _ in 0..1000 {
        let s = stranger();
        if let Some(c) = dial(&s, &b).await {
            let _ = blixard_protocol::client::ping(&c).await;
            c.close(blixard_protocol::ErrorCode::Ok, "bye");
        }
        s.close(blixard_protocol::ErrorCode::Ok, "bye");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let known = b.peers().len();
    eprintln!("peer book after 1000 one-shot identities: {known}");
    assert!(known <= blixard_node::config::DEFAULT_MAX_PEERS, "{known} peers kept");
    b.connect_peer(&format!("{}@{}", a.node_id(), a.addr())).await.unwrap();
    assert_within("1000 one-shot identities", unattacked, timed_download(&b).await);
}
