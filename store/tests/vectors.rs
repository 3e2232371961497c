//! Import produces the same hash as b3sum and the same outboard bytes as
//! bao-tree's `PreOrderMemOutboard` at 16 KiB chunk groups.

mod common;

use bao_tree::{io::outboard::PreOrderMemOutboard, BlockSize};
use blixard_store::{Hash, ImportMode, Store};
use common::data;
use rand::Rng;

async fn check(store: &Store, dir: &std::path::Path, size: usize, seed: u64) {
    let bytes = data(size, seed);
    let path = dir.join(format!("input-{size}"));
    std::fs::write(&path, &bytes).unwrap();
    let expected = Hash::from(blake3::hash(&bytes));
    let reference = PreOrderMemOutboard::create(&bytes, BlockSize::from_chunk_log(4));
    for mode in [ImportMode::Copy, ImportMode::Reference] {
        let out = store.import_path(&path, mode).await.unwrap();
        assert_eq!(out.hash, expected, "hash of {size} bytes ({mode:?})");
        assert_eq!(out.size, size as u64);
        assert!(store.outboard_bytes(&out.hash).unwrap() == reference.data, "outboard of {size} bytes ({mode:?})");
        assert_eq!(store.read_to_vec(&out.hash).unwrap(), bytes);
        // start the next mode from scratch
        drop(out);
        store.gc().unwrap();
    }
    let out = store.import_bytes(bytes.clone()).await.unwrap();
    assert_eq!(out.hash, expected);
    if let Some(b3) = b3sum(&path) {
        assert_eq!(b3, expected.to_hex(), "b3sum of {size} bytes");
    }
}

/// `b3sum` of a file, if the tool is installed (CI installs it and
/// requires it).
fn b3sum(path: &std::path::Path) -> Option<String> {
    if !blixard_tests::tools::available("b3sum check of our hashes", "b3sum", "cargo install b3sum") {
        return None;
    }
    let out = std::process::Command::new("b3sum").arg("--no-names").arg(path).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn hashes_and_outboards_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    for size in [0, 1, 1024, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, (1 << 20) + 7] {
        check(&store, dir.path(), size, size as u64).await;
    }
    let large = rand::thread_rng().gen_range(20 << 20..40 << 20);
    check(&store, dir.path(), large, 42).await;
}
