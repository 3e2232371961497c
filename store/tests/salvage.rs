//! A damaged metadata database (deleted, emptied, randomised, a few bytes
//! flipped): the store opens, says what happened, and takes back every
//! large blob whose file survived, verified.

mod common;

use std::{fs, path::Path};

use blixard_store::{BlobStatus, Hash, ResourceKind, Store};
use common::*;
use rand::{RngCore, SeedableRng};

/// A store with two large blobs and one small one, each named; closed.
async fn populated(dir: &Path) -> Vec<(Hash, Vec<u8>)> {
    let store = Store::open(dir).unwrap();
    let mut blobs = Vec::new();
    for (i, len) in [1024 * 1024 + 7, 100_000, 1000].into_iter().enumerate() {
        let bytes = data(len, i as u64 + 10);
        let out = store.import_bytes(bytes.clone()).await.unwrap();
        store.put_resource_and_release(&ResourceKind::VmImage, &format!("img{i}"), "1", out.lease).unwrap();
        blobs.push((out.hash, bytes));
    }
    store.sync_all().unwrap();
    drop(store);
    blobs
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_in(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Deleted,
    Emptied,
    Randomised,
    Flipped,
}

fn damage(meta: &Path, how: Damage) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    match how {
        Damage::Deleted => fs::remove_dir_all(meta).unwrap(),
        Damage::Emptied => {
            for f in files_in(meta) {
                fs::write(f, b"").unwrap();
            }
        }
        Damage::Randomised => {
            for f in files_in(meta) {
                let mut junk = vec![0u8; fs::metadata(&f).unwrap().len().max(64) as usize];
                rng.fill_bytes(&mut junk);
                fs::write(f, junk).unwrap();
            }
        }
        Damage::Flipped => {
            for f in files_in(meta) {
                let mut bytes = fs::read(&f).unwrap();
                for _ in 0..4.min(bytes.len()) {
                    let at = (rng.next_u64() % bytes.len() as u64) as usize;
                    bytes[at] ^= 0x5a;
                }
                fs::write(f, bytes).unwrap();
            }
        }
    }
}

#[tokio::test]
async fn damaged_metadata_is_reported_and_surviving_blobs_recovered() {
    for how in [Damage::Deleted, Damage::Emptied, Damage::Randomised, Damage::Flipped] {
        let dir = tempfile::tempdir().unwrap();
        let blobs = populated(dir.path()).await;
        damage(&dir.path().join("meta"), how);

        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{how:?}: the store must open: {e}"));
        let recovery = store.recovery().clone();
        let names = store.resources(None).unwrap_or_default();
        eprintln!("{how:?}: {recovery:?}, {} names left", names.len());
        if names.len() < 3 {
            assert!(!recovery.is_clean(), "{how:?}: a loss must be reported");
            assert!(recovery.describe().contains("lost"), "{}", recovery.describe());
        }
        // Both large blobs are there, verified, whatever happened.
        for (hash, bytes) in &blobs[..2] {
            let size = bytes.len() as u64;
            assert_eq!(store.status(hash).unwrap(), BlobStatus::Complete { size }, "{how:?}");
            assert_eq!(&store.read_to_vec(hash).unwrap(), bytes, "{how:?}");
            let named = names.iter().any(|r| r.hash == *hash);
            assert!(
                named || recovery.recovered.contains(&(*hash, size)),
                "{how:?}: {hash} neither named nor recovered"
            );
        }
        // GC keeps what was recovered (tagged), so the operator can name it.
        store.gc().unwrap();
        for (hash, _) in &blobs[..2] {
            assert!(matches!(store.status(hash).unwrap(), BlobStatus::Complete { .. }), "{how:?}: GC took {hash}");
        }
        // A second open finds nothing more to do.
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert!(again.recovery().recovered.is_empty(), "{how:?}: {:?}", again.recovery());
    }
}

/// A data file whose bytes no longer match its name is not taken back.
#[tokio::test]
async fn a_damaged_orphan_is_not_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = populated(dir.path()).await;
    let (hash, _) = &blobs[0];
    let f = dir.path().join("blobs").join(format!("{hash}.data"));
    let mut bytes = fs::read(&f).unwrap();
    bytes[5000] ^= 1;
    fs::write(&f, bytes).unwrap();
    fs::remove_dir_all(dir.path().join("meta")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.recovery().discarded, 1);
    assert_eq!(store.status(hash).unwrap(), BlobStatus::Absent);
    assert_eq!(store.recovery().recovered.len(), 1, "the other large blob is recovered");
}
