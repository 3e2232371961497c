//! Bytes damaged at rest: nothing leaves the store unverified, damaged
//! groups become missing again and are fetched anew, a resumed partial blob
//! re-checks what it holds, and an export never writes through a planted
//! link or over an existing file unless asked.

mod common;

use std::{fs, os::unix::fs::FileExt};

use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, Error, ExportOptions, ImportMode, Store};
use common::*;

fn flip(path: &std::path::Path, at: u64) {
    let f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, at).unwrap();
}

/// A bit flip in a complete blob's data file: the reader and the export fail
/// naming the blob and the damaged bytes, `verify_blob` finds it, the group
/// is missing again, and receiving it from a source makes the blob whole.
#[tokio::test]
async fn a_flip_in_a_complete_blob_is_caught_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(dir.path().join("src")).unwrap();
    let dst = Store::open(dir.path().join("dst")).unwrap();
    let bytes = data(3 * 1024 * 1024 + 100, 1);
    let h = src.import_bytes(bytes.clone()).await.unwrap().hash;
    let all = ChunkRanges::all();
    receive(&dst, h, &all, &response(&src, &h, &all)).unwrap();
    let size = bytes.len() as u64;
    assert_eq!(dst.status(&h).unwrap(), BlobStatus::Complete { size });
    let at = 1_000_000;
    flip(&dst.dir().join("blobs").join(format!("{h}.data")), at);

    let e = dst.read_to_vec(&h).unwrap_err();
    assert!(e.to_string().contains("damaged at rest"), "{e}");
    let report = dst.verify_blob(&h, false).unwrap();
    let group = at / 16384 * 16;
    assert_eq!(report.damaged, ChunkRanges::from(ChunkNum(group)..ChunkNum(group + 16)));

    let out = dir.path().join("out.img");
    let e = dst.export(h, &out, ExportOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::Damaged { .. }), "{e}");
    let (start, end) = (group * 1024, group * 1024 + 16384);
    assert!(e.to_string().contains(&format!("{start}..{end}")), "names the range: {e}");
    assert!(!out.exists(), "nothing is left at the target");
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).collect();
    assert!(leftovers.iter().all(|e| !e.file_name().to_string_lossy().ends_with(".blixard-part")), "no temp file left");

    match dst.status(&h).unwrap() {
        BlobStatus::Partial { ranges: held, .. } => assert_eq!(ranges::all(size) - held, report.damaged),
        s => panic!("the damaged group must be missing again, got {s:?}"),
    }
    let missing = dst.missing(&h).unwrap().unwrap();
    receive(&dst, h, &missing, &response(&src, &h, &missing)).unwrap();
    assert_eq!(dst.status(&h).unwrap(), BlobStatus::Complete { size });
    dst.export(h, &out, ExportOptions::default()).await.unwrap();
    assert_eq!(fs::read(&out).unwrap(), bytes);
    assert!(dst.verify_blob(&h, false).unwrap().is_intact());
}

/// A damaged outboard record condemns the groups under it.
#[tokio::test]
async fn a_flip_in_the_outboard_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let file = dir.path().join("image");
    fs::write(&file, data(8 * 1024 * 1024, 2)).unwrap(); // an outboard over 16 KiB is a file
    let h = store.import_path(&file, ImportMode::Copy).await.unwrap().hash;
    store.set_tag("keep", h).unwrap();
    flip(&dir.path().join("blobs").join(format!("{h}.obao4")), 64 * 10 + 3);
    let report = store.verify_blob(&h, true).unwrap();
    assert!(!report.is_intact() && report.repaired);
    assert!(matches!(store.status(&h).unwrap(), BlobStatus::Partial { .. }));
}

/// A partial blob whose verified range took a flip at rest: when it is
/// opened again (a resumed download), the damaged group is re-checked and
/// dropped, so receiving the rest re-fetches it and the blob is right.
#[tokio::test]
async fn a_resumed_partial_rechecks_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(dir.path().join("src")).unwrap();
    let bytes = data(2 * 1024 * 1024, 3);
    let size = bytes.len() as u64;
    let h = src.import_bytes(bytes.clone()).await.unwrap().hash;
    let first = ChunkRanges::from(ChunkNum(0)..ChunkNum(1024));
    {
        let dst = Store::open(dir.path().join("dst")).unwrap();
        receive(&dst, h, &first, &response(&src, &h, &first)).unwrap();
    }
    flip(&dir.path().join("dst/partial").join(format!("{h}.data")), 20_000);
    let dst = Store::open(dir.path().join("dst")).unwrap();
    let verified = dst.verify_blob(&h, false).unwrap();
    assert_eq!(verified.damaged, ChunkRanges::from(ChunkNum(16)..ChunkNum(32)));
    // The resume: whatever is missing, asked for as a downloader would.
    dst.check_resumed(&h).unwrap();
    let missing = dst.missing(&h).unwrap().unwrap();
    assert!(missing.contains(&ChunkNum(16)), "the damaged group is missing again");
    receive(&dst, h, &missing, &response(&src, &h, &missing)).unwrap();
    assert_eq!(dst.status(&h).unwrap(), BlobStatus::Complete { size });
    assert_eq!(dst.read_to_vec(&h).unwrap(), bytes);
}

/// The export target: an existing file or link is refused unless
/// overwriting is asked for; a link is then replaced, never written
/// through; a missing directory is an error naming it.
#[tokio::test]
async fn export_never_writes_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let bytes = data(100_000, 4);
    let h = store.import_bytes(bytes.clone()).await.unwrap().hash;
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    let out = dir.path().join("out.img");
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    // The old fixed temp name, planted as a link: never used.
    std::os::unix::fs::symlink(&victim, dir.path().join("out.img.blixard-part")).unwrap();

    let e = store.export(h, &out, ExportOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::Exists(_)), "{e}");
    store.export(h, &out, ExportOptions { overwrite: true, ..Default::default() }).await.unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "the link's target is untouched");
    assert!(!fs::symlink_metadata(&out).unwrap().file_type().is_symlink(), "the link itself was replaced");
    assert_eq!(fs::read(&out).unwrap(), bytes);

    let e = store.export(h, dir.path().join("no/such/dir/x"), ExportOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("no/such/dir"), "{e}");
}
