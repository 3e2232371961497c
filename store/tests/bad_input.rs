//! Bad input gets a clear error and loses nothing.

mod common;

use std::{fs, time::Duration};

use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, Error, ImportMode, Store};

async fn source(size: usize) -> (tempfile::TempDir, Store, blixard_store::Hash, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = common::data(size, 11);
    let out = store.import_bytes(data.clone()).await.unwrap();
    store.set_tag_and_release("src", out.lease).unwrap();
    (dir, store, out.hash, data)
}

#[tokio::test]
async fn truncated_response_keeps_only_verified_prefix() {
    let (_d, src, h, data) = source(2 * 1024 * 1024).await;
    let resp = common::response(&src, &h, &ChunkRanges::all());
    let dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dir.path()).unwrap();
    let err = common::receive(&dst, h, &ChunkRanges::all(), &resp[..resp.len() / 2]).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
    let BlobStatus::Partial { ranges: held, .. } = dst.status(&h).unwrap() else { panic!("expected partial") };
    assert!(!held.is_empty() && !held.is_superset(&ranges::all(data.len() as u64)));
    // the rest arrives later and completes the blob
    let rest = ranges::all(data.len() as u64) - &held;
    common::receive(&dst, h, &rest, &common::response(&src, &h, &rest)).unwrap();
    assert_eq!(dst.read_to_vec(&h).unwrap(), data);
}

#[tokio::test]
async fn lying_size_header_is_rejected() {
    let (_d, src, h, data) = source(1024 * 1024 + 100).await;
    let size = data.len() as u64;
    for lie in [size + 1, size - 200, size * 2, 5, 0] {
        let mut resp = common::response(&src, &h, &ChunkRanges::all());
        resp[..8].copy_from_slice(&lie.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let dst = Store::open(dir.path()).unwrap();
        let err = common::receive(&dst, h, &ChunkRanges::all(), &resp).unwrap_err();
        assert!(matches!(err, Error::Verification { .. } | Error::Truncated { .. }), "size {lie}: {err}");
        assert!(!matches!(dst.status(&h).unwrap(), BlobStatus::Complete { .. }), "completed with a lying size {lie}");
    }
    // a size header above the store's maximum is refused before anything is written
    let mut resp = common::response(&src, &h, &ChunkRanges::all());
    resp[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dir.path()).unwrap();
    assert!(matches!(common::receive(&dst, h, &ChunkRanges::all(), &resp), Err(Error::Limit(_))));
    // once the size is verified, a response with another size is refused
    let last = ranges::round_to_groups(&ranges::last_chunk(size));
    common::receive(&dst, h, &last, &common::response(&src, &h, &last)).unwrap();
    let mut resp = common::response(&src, &h, &ChunkRanges::all());
    resp[..8].copy_from_slice(&(size + 16384).to_le_bytes());
    assert!(matches!(common::receive(&dst, h, &ChunkRanges::all(), &resp), Err(Error::SizeMismatch { .. })));
}

#[tokio::test]
async fn trailing_garbage_is_an_error() {
    let (_d, src, h, _) = source(100_000).await;
    let mut resp = common::response(&src, &h, &ChunkRanges::all());
    resp.extend_from_slice(b"garbage");
    let dir = tempfile::tempdir().unwrap();
    let dst = Store::open(dir.path()).unwrap();
    let err = common::receive(&dst, h, &ChunkRanges::all(), &resp).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
}

#[tokio::test]
async fn referenced_file_changed_or_truncated_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let path = dir.path().join("image.img");
    let data = common::data(300_000, 3);
    fs::write(&path, &data).unwrap();
    let h = store.import_path(&path, ImportMode::Reference).await.unwrap().hash;
    // The first serve finds the change and fails; the blob then holds
    // nothing, so later ones serve nothing.
    let check_refused = |what: &str| {
        match store.write_encoded(&h, &ChunkRanges::all(), Vec::new()) {
            Err(err) => assert!(matches!(err, Error::ReferenceChanged { .. }), "{what}: {err}"),
            Ok(out) => assert!(out.served.is_empty(), "{what}: served {:?}", out.served),
        }
        assert!(store.read_to_vec(&h).is_err(), "{what}: reader served changed bytes");
    };
    // same length, one byte changed, modification time restored
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut changed = data.clone();
    changed[200_000] ^= 1;
    fs::write(&path, &changed).unwrap();
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    check_refused("bytes changed");
    // truncated
    fs::write(&path, &data[..1000]).unwrap();
    check_refused("truncated");
    // removed
    fs::remove_file(&path).unwrap();
    check_refused("removed");
}

#[tokio::test]
async fn damaged_or_missing_checkpoint_is_rebuilt_by_reverifying() {
    let (_d, src, h, data) = source(4 * 1024 * 1024).await;
    let r = ranges::round_to_groups(&ChunkRanges::from(ChunkNum(0)..ChunkNum(1024)));
    let dir = tempfile::tempdir().unwrap();
    {
        let dst = Store::open(dir.path()).unwrap();
        common::receive(&dst, h, &r, &common::response(&src, &h, &r)).unwrap();
    }
    let ckpt = dir.path().join("partial").join(format!("{h}.ckpt"));
    for damage in ["flip", "missing"] {
        match damage {
            "flip" => {
                let mut b = fs::read(&ckpt).unwrap();
                b[10] ^= 0xff;
                fs::write(&ckpt, b).unwrap();
            }
            _ => fs::remove_file(&ckpt).unwrap(),
        }
        let dst = Store::open(dir.path()).unwrap();
        let BlobStatus::Partial { ranges: held, .. } = dst.status(&h).unwrap() else { panic!("{damage}: not partial") };
        assert_eq!(held, r, "{damage}: rebuilt ranges differ");
    }
    // corrupt data in the partial file and lose the checkpoint: the bad group is dropped
    let data_path = dir.path().join("partial").join(format!("{h}.data"));
    let mut file = fs::read(&data_path).unwrap();
    file[20_000] ^= 1;
    fs::write(&data_path, file).unwrap();
    fs::remove_file(&ckpt).unwrap();
    let dst = Store::open(dir.path()).unwrap();
    let BlobStatus::Partial { ranges: held, .. } = dst.status(&h).unwrap() else { panic!("not partial") };
    assert!(!held.contains(&ChunkNum(19)), "a corrupt group survived re-verification");
    assert!(held.contains(&ChunkNum(100)));
    // and the blob still completes correctly
    let rest = ranges::all(data.len() as u64) - &held;
    common::receive(&dst, h, &rest, &common::response(&src, &h, &rest)).unwrap();
    assert_eq!(dst.read_to_vec(&h).unwrap(), data);
}

/// Damaged metadata no longer keeps the store closed: it is moved aside,
/// and the report names where (salvage.rs tests what is recovered).
#[test]
fn damaged_metadata_is_moved_aside_and_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let meta = dir.path().join("meta");
    for e in fs::read_dir(&meta).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            fs::write(&p, common::data(4096, 1)).unwrap();
        }
    }
    let store = Store::open(dir.path()).unwrap();
    let aside = store.recovery().moved_aside.clone().expect("moved aside");
    assert!(aside.exists() && aside.to_string_lossy().contains("meta.damaged-"), "{aside:?}");
    assert!(store.recovery().describe().contains(&aside.display().to_string()));
}

#[test]
fn other_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    {
        // sled releases a dropped database's lock from its flusher thread, a moment later.
        let meta = dir.path().join("meta");
        let started = std::time::Instant::now();
        let db = loop {
            match sled::open(&meta) {
                Ok(db) => break db,
                Err(e) if started.elapsed() < std::time::Duration::from_secs(3) => {
                    eprintln!("retrying: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        db.insert("format_version", &99u32.to_le_bytes()).unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::FormatVersion { found: 99, .. }), "{err}");
}

/// Disk full, on a small tmpfs. Mounting needs root: ignored by default,
/// run by CI (as root) with `--ignored`, where a failed mount fails the test.
#[tokio::test]
#[ignore = "needs root to mount a tmpfs; CI runs it with --ignored"]
async fn disk_full_gives_an_error_and_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cannot mount a tmpfs at {} (this test needs root)", mnt.display());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let store = Store::open(mnt.join("store")).unwrap();
    // import larger than the disk
    let big = dir.path().join("big.img");
    fs::write(&big, common::data(8 * 1024 * 1024, 2)).unwrap();
    let err = store.import_path(&big, ImportMode::Copy).await.unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(store.blobs().unwrap().is_empty(), "a failed import left an entry");
    assert_eq!(fs::read_dir(mnt.join("store/tmp")).unwrap().count(), 0, "temp files left behind");
    // download larger than the disk
    let (_d, src, h, _) = source(8 * 1024 * 1024).await;
    let err =
        common::receive(&store, h, &ChunkRanges::all(), &common::response(&src, &h, &ChunkRanges::all())).unwrap_err();
    assert!(err.is_disk_full(), "{err}");
    assert!(!matches!(store.status(&h).unwrap(), BlobStatus::Complete { .. }));
    // the store still works once space is freed
    store.gc().unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let small = store.import_bytes(common::data(100_000, 3)).await.unwrap();
    assert!(matches!(store.status(&small.hash).unwrap(), BlobStatus::Complete { .. }));
    let small_hash = small.hash;
    drop((small, store));
    let mut reopened = Store::open(mnt.join("store"));
    for _ in 0..50 {
        // a background sync may still hold the store for a moment
        if reopened.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        reopened = Store::open(mnt.join("store"));
    }
    let reopened = reopened.unwrap();
    assert!(matches!(reopened.status(&small_hash).unwrap(), BlobStatus::Complete { .. }));
}

/// A referenced file that changed is reported as what it is: the export
/// error names that file (not the export target), and the blob is no
/// longer "complete": it holds nothing, so the next download fetches it.
#[tokio::test]
async fn a_changed_reference_is_named_and_no_longer_complete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    for restore_mtime in [true, false] {
        let path = dir.path().join(format!("image-{restore_mtime}.img"));
        let data = common::data(300_000, restore_mtime as u64);
        fs::write(&path, &data).unwrap();
        let imported = store.import_path(&path, ImportMode::Reference).await.unwrap();
        let h = imported.hash;
        store.set_tag_and_release(&format!("t{restore_mtime}"), imported.lease).unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let mut changed = data.clone();
        changed[200_000] ^= 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&path, &changed).unwrap();
        if restore_mtime {
            fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        }
        let target = dir.path().join(format!("out-{restore_mtime}.img"));
        let err = store.export(h, &target, Default::default()).await.unwrap_err();
        let text = err.to_string();
        eprintln!("{text}");
        assert!(text.contains(&path.display().to_string()), "names the referenced file: {text}");
        assert!(!text.contains(&target.display().to_string()) && !text.contains("blixard-part"), "{text}");
        assert!(!target.exists());
        match store.status(&h).unwrap() {
            blixard_store::BlobStatus::Partial { ranges, .. } => {
                assert!(ranges.is_empty() || restore_mtime, "{ranges:?}");
            }
            other => panic!("a changed reference is still {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), changed, "the user's file is never touched");
    }
}
