//! Incremental downloads between real nodes: a new version moves only the
//! groups that changed (the rest is copied from the old version held
//! locally, verified against the new tree), zero groups never move and
//! stay holes, and a base damaged at rest is caught and its groups fetched.

mod common;

use std::{os::unix::fs::MetadataExt, path::Path};

use blixard_node::{DownloadRequest, Node, P2pConfig, TransferInfo};
use blixard_store::{Hash, ResourceKind};
use rand::{Rng, RngCore, SeedableRng};
use tempfile::TempDir;

const MIB: usize = 1 << 20;
const GROUP: usize = 16384;

async fn node(dir: &Path, id: u64) -> Node {
    common::node_in(dir, id, P2pConfig::default()).await
}

async fn pair(dir: &Path) -> (Node, Node) {
    let (a, b) = (node(dir, 1).await, node(dir, 2).await);
    b.connect_peer(&format!("{}@{}", a.node_id(), a.addr())).await.unwrap();
    (a, b)
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

async fn publish(n: &Node, dir: &Path, version: &str, data: &[u8]) -> Hash {
    let path = dir.join(format!("image-{version}.img"));
    std::fs::write(&path, data).unwrap();
    n.upload_resource(ResourceKind::VmImage, "ubuntu-server", version, &path).await.unwrap().hash
}

async fn download(n: &Node, version: &str) -> TransferInfo {
    let id = n.download(DownloadRequest::new(ResourceKind::VmImage, "ubuntu-server", version)).unwrap();
    n.wait(id).await.unwrap()
}

fn b3(data: &[u8]) -> Hash {
    Hash(*blake3::hash(data).as_bytes())
}

/// Version 2 of a 64 MiB image with 1% of its groups rewritten at random
/// moves those groups and the tree, within 1.1x of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_moves_only_the_changed_groups() {
    let dir = TempDir::new().unwrap();
    let (a, b) = pair(dir.path()).await;
    let v1 = random(64 * MIB, 1);
    publish(&a, dir.path(), "1", &v1).await;
    download(&b, "1").await;

    let mut v2 = v1.clone();
    let groups = v2.len() / GROUP;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut changed = std::collections::BTreeSet::new();
    while changed.len() < groups / 100 {
        changed.insert(rng.gen_range(0..groups));
    }
    for g in &changed {
        rng.fill_bytes(&mut v2[g * GROUP..g * GROUP + 4096]);
    }
    let h2 = publish(&a, dir.path(), "2", &v2).await;
    let t = download(&b, "2").await;
    let p = t.progress.unwrap();
    let changed_bytes = (changed.len() * GROUP) as u64;
    let tree = ((groups - 1) * 64 + 8) as u64;
    eprintln!(
        "changed {} groups ({changed_bytes} B), tree {tree} B: fetched {} B ({:.3}x), reused {} B",
        changed.len(),
        p.fetched_bytes,
        p.fetched_bytes as f64 / (changed_bytes + tree) as f64,
        p.reused_bytes
    );
    assert_eq!(p.reused_bytes, (v2.len() - changed.len() * GROUP) as u64);
    assert!(p.fetched_bytes as f64 <= 1.1 * (changed_bytes + tree) as f64, "fetched {}", p.fetched_bytes);
    assert_eq!(b.store().read_to_vec(&h2).unwrap(), v2);
    assert_eq!(t.hash, Some(b3(&v2)));
    let m = b.metrics().render();
    assert!(m.contains(&format!("blixard_p2p_reused_bytes_total {}", p.reused_bytes)), "{m}");
    assert_eq!(b.stats().reused_bytes, p.reused_bytes);
}

/// A base damaged at rest (bytes flipped in its data file) does not leak
/// into the new version: the groups whose bytes no longer match their tree
/// are fetched instead, and the result verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_damaged_at_rest_is_caught_and_its_groups_fetched() {
    let dir = TempDir::new().unwrap();
    let (a, b) = pair(dir.path()).await;
    let v1 = random(16 * MIB, 3);
    let h1 = publish(&a, dir.path(), "1", &v1).await;
    download(&b, "1").await;
    let mut v2 = v1.clone();
    v2[5 * MIB] ^= 1;
    let h2 = publish(&a, dir.path(), "2", &v2).await;

    // rot 3 groups of b's copy of version 1, in place
    let data = b.store().dir().join("blobs").join(format!("{}.data", h1.to_hex()));
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap_or_else(|e| panic!("{data:?}: {e}"));
    for g in [10u64, 200, 700] {
        std::os::unix::fs::FileExt::write_all_at(&file, b"rot", g * GROUP as u64 + 99).unwrap();
    }
    drop(file);

    let t = download(&b, "2").await;
    let p = t.progress.unwrap();
    assert_eq!(p.reused_bytes, (v2.len() - 4 * GROUP) as u64, "3 damaged groups and 1 changed one are fetched");
    assert!(p.fetched_bytes >= 4 * GROUP as u64);
    assert_eq!(b.store().read_to_vec(&h2).unwrap(), v2);
}

/// A fresh image that is mostly zeros: the zero groups are never fetched,
/// the stored copy keeps them as holes, and it reads back equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_groups_are_never_fetched_and_stay_holes() {
    let dir = TempDir::new().unwrap();
    let (a, b) = pair(dir.path()).await;
    let mut img = vec![0u8; 32 * MIB];
    // 30% data in a few regions, the rest zeros
    for (at, len) in [(0, 3 * MIB), (10 * MIB, 4 * MIB + 100), (29 * MIB, 3 * MIB - 100)] {
        img[at..at + len].copy_from_slice(&random(len, at as u64));
    }
    let nonzero = img.chunks(GROUP).filter(|g| g.iter().any(|b| *b != 0)).count() * GROUP;
    let h = publish(&a, dir.path(), "1", &img).await;
    let t = download(&b, "1").await;
    let p = t.progress.unwrap();
    eprintln!("non-zero {nonzero} B: fetched {} B, zeros {} B", p.fetched_bytes, p.zero_bytes);
    assert_eq!(p.zero_bytes, (img.len() - nonzero) as u64);
    assert!(p.fetched_bytes as f64 <= 1.05 * nonzero as f64, "fetched {}", p.fetched_bytes);
    let data = b.store().dir().join("blobs").join(format!("{}.data", h.to_hex()));
    let physical = std::fs::metadata(&data).unwrap().blocks() * 512;
    eprintln!("stored {} B logical, {physical} B physical", img.len());
    assert!(physical as f64 <= 1.05 * nonzero as f64, "{physical} bytes on disk");
    assert_eq!(b.store().read_to_vec(&h).unwrap(), img);
}

async fn indexed(n: &Node, hash: Hash) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while n.store().content_index(&hash).unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no content index of {hash}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// 100 bytes inserted at 1 MiB shift every later group: positions match
/// nothing past it, but the new blob's content index finds the shifted
/// chunks in the old version, so little more than the tree, the index and
/// the groups around the insertion moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shifted_image_reuses_chunks_found_by_content() {
    let dir = TempDir::new().unwrap();
    let (a, b) = pair(dir.path()).await;
    let v1 = random(32 * MIB, 5);
    let h1 = publish(&a, dir.path(), "1", &v1).await;
    download(&b, "1").await;
    indexed(&b, h1).await;
    let mut v2 = v1[..MIB].to_vec();
    v2.extend_from_slice(&[0x5a; 100]);
    v2.extend_from_slice(&v1[MIB..]);
    let h2 = publish(&a, dir.path(), "2", &v2).await;
    indexed(&a, h2).await;
    let t = download(&b, "2").await;
    let p = t.progress.unwrap();
    eprintln!("shifted 32 MiB: fetched {} B, reused {} B", p.fetched_bytes, p.reused_bytes);
    assert!(p.reused_bytes as usize >= v2.len() - MIB, "reused {}", p.reused_bytes);
    assert!(p.fetched_bytes < 2 * MIB as u64, "fetched {}", p.fetched_bytes);
    assert_eq!(b.store().read_to_vec(&h2).unwrap(), v2);
}
