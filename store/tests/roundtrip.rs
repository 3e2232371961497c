//! Serving from one store and receiving into another: full and partial
//! ranges, concurrent writers, and the async stream API.

mod common;

use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, ImportMode, Store};
use common::*;

#[tokio::test]
async fn full_transfer_round_trip() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, dst) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
    for (i, size) in
        [0usize, 1, 1024, 16383, 16384, 16385, (1 << 20) + 7, 3 * 1024 * 1024 + 12345].into_iter().enumerate()
    {
        let bytes = data(size, i as u64);
        let imp = src.import_bytes(bytes.clone()).await.unwrap();
        let resp = response(&src, &imp.hash, &ChunkRanges::all());
        let out = receive(&dst, imp.hash, &ChunkRanges::all(), &resp).unwrap();
        assert!(out.complete, "size {size} not complete");
        assert_eq!(dst.status(&imp.hash).unwrap(), BlobStatus::Complete { size: size as u64 });
        assert_eq!(dst.read_to_vec(&imp.hash).unwrap(), bytes, "size {size}");
        assert_eq!(dst.outboard_bytes(&imp.hash).unwrap(), src.outboard_bytes(&imp.hash).unwrap());
    }
}

#[tokio::test]
async fn partial_ranges_then_rest() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, dst) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
    let bytes = data(2 * 1024 * 1024 + 500, 7);
    let h = src.import_bytes(bytes.clone()).await.unwrap().hash;
    let first = ChunkRanges::from(ChunkNum(16)..ChunkNum(64)) | ranges::last_chunk(bytes.len() as u64);
    let out = receive(&dst, h, &first, &response(&src, &h, &first)).unwrap();
    assert!(!out.complete);
    match dst.status(&h).unwrap() {
        BlobStatus::Partial { size, size_verified, ranges } => {
            assert_eq!(size, bytes.len() as u64);
            assert!(size_verified);
            assert!(ranges.is_superset(&first));
        }
        s => panic!("unexpected {s:?}"),
    }
    // a partial blob serves what it has, and that verifies
    let (c, _) = (tempfile::tempdir().unwrap(), ());
    let third = Store::open(c.path()).unwrap();
    let resp = response(&dst, &h, &ChunkRanges::all());
    let served = ChunkRanges::from(ChunkNum(16)..ChunkNum(64));
    let mut r = &resp[..];
    // the partial store serves exactly what it holds; decode with that set
    let held = match dst.status(&h).unwrap() {
        BlobStatus::Partial { ranges, .. } => ranges,
        _ => unreachable!(),
    };
    third.receive_encoded(h, &held, &mut r).unwrap();
    assert!(held.is_superset(&served));
    // then the rest completes the blob
    let rest = ranges::all(bytes.len() as u64) - &held;
    let out = receive(&dst, h, &rest, &response(&src, &h, &rest)).unwrap();
    assert!(out.complete);
    assert_eq!(dst.read_to_vec(&h).unwrap(), bytes);
}

#[tokio::test]
async fn two_writers_fill_one_blob() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, dst) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
    let bytes = data(8 * 1024 * 1024, 3);
    let h = src.import_bytes(bytes.clone()).await.unwrap().hash;
    let n = ranges::chunk_count(bytes.len() as u64);
    let halves = [ChunkRanges::from(ChunkNum(0)..ChunkNum(n / 2)), ChunkRanges::from(ChunkNum(n / 2)..ChunkNum(n))];
    std::thread::scope(|s| {
        for r in &halves {
            let resp = response(&src, &h, r);
            let dst = dst.clone();
            s.spawn(move || receive(&dst, h, r, &resp).unwrap());
        }
    });
    assert_eq!(dst.status(&h).unwrap(), BlobStatus::Complete { size: bytes.len() as u64 });
    assert_eq!(dst.read_to_vec(&h).unwrap(), bytes);
}

#[tokio::test]
async fn async_streams_and_export() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, dst) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
    let bytes = data(5 * 1024 * 1024 + 3, 9);
    let h = src.import_reader(&bytes[..]).await.unwrap().hash;
    let (tx, rx) = tokio::io::duplex(64 * 1024);
    let serve = tokio::spawn({
        let src = src.clone();
        async move { src.write_response(h, ChunkRanges::all(), tx).await.0 }
    });
    let (out, _) = dst.receive_response(h, ChunkRanges::all(), rx).await.unwrap();
    let served = serve.await.unwrap().unwrap();
    assert!(out.complete);
    assert_eq!(served.size, bytes.len() as u64);
    let target = b.path().join("export.img");
    assert_eq!(dst.export(h, &target, Default::default()).await.unwrap(), bytes.len() as u64);
    assert_eq!(std::fs::read(&target).unwrap(), bytes);
    // reference-mode import of the exported file serves the same hash
    let again = src.import_path(&target, ImportMode::Reference).await.unwrap();
    assert_eq!(again.hash, h);
}

/// A receive dropped mid-way (a cancelled transfer) still writes out and
/// checkpoints what it verified.
#[test]
fn a_dropped_receive_keeps_what_it_verified() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = Store::open(a.path()).unwrap();
    let dst = Store::open(b.path()).unwrap();
    let data = common::data(5 * 1024 * 1024, 11);
    let hash = rt.block_on(src.import_bytes(data.clone())).unwrap().hash;
    let resp = common::response(&src, &hash, &ChunkRanges::all());
    rt.block_on(async {
        let mut incoming = dst.start_receive(hash, data.len() as u64, &ChunkRanges::all()).unwrap();
        let mut half = bytes::Bytes::copy_from_slice(&resp[8..resp.len() / 2]);
        assert!(!incoming.push(&mut half).await.unwrap());
        drop(incoming);
    });
    drop(rt); // waits for the blocking pool, where the drop wrote and checkpointed
              // All of the ~2.5 MiB pushed but the leaf cut in half, including the
              // batch that was still in memory when the receive was dropped. The last
              // checkpoint may still be landing on a background checkpoint thread.
    let want = 24 * 1024 * 1024 / 10;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (ranges, held) = loop {
        let BlobStatus::Partial { ranges, .. } = dst.status(&hash).unwrap() else { panic!("not partial") };
        let held = blixard_store::ranges::byte_count(&ranges, data.len() as u64);
        if held >= want || std::time::Instant::now() > deadline {
            break (ranges, held);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(held >= want, "only {held} bytes kept");
    let file = std::fs::read(b.path().join("partial").join(format!("{hash}.data"))).unwrap();
    for r in blixard_store::ranges::to_vec(&ranges, data.len() as u64) {
        let (s, e) = ((r.start * 1024) as usize, ((r.end * 1024) as usize).min(data.len()));
        assert_eq!(file[s..e], data[s..e]);
    }
}

/// Ranges that cut through 16 KiB groups are rounded to whole groups by
/// the store, on both sides, for copied, referenced and inline blobs: they
/// are served and kept, never refused as "damaged".
#[tokio::test]
async fn unaligned_ranges_round_trip_from_every_kind_of_blob() {
    let dir = tempfile::tempdir().unwrap();
    let src = Store::open(dir.path().join("src")).unwrap();
    let bytes = data(3 * 1024 * 1024 + 777, 11);
    let file = dir.path().join("image");
    std::fs::write(&file, &bytes).unwrap();
    let copied = src.import_path(&file, ImportMode::Copy).await.unwrap();
    let other = dir.path().join("other");
    let mut other_bytes = bytes.clone();
    other_bytes[0] ^= 1;
    std::fs::write(&other, &other_bytes).unwrap();
    let referenced = src.import_path(&other, ImportMode::Reference).await.unwrap();
    let small = data(9000, 12);
    let inline = src.import_bytes(small.clone()).await.unwrap();
    for (blob, content) in [(&copied, &bytes), (&referenced, &other_bytes), (&inline, &small)] {
        let size = content.len() as u64;
        for (i, want) in [0..1u64, 3..40, 17..18, 100..3073].into_iter().enumerate() {
            let want = ChunkRanges::from(ChunkNum(want.start)..ChunkNum(want.end));
            let dst = Store::open(dir.path().join(format!("dst-{}-{i}", blob.hash))).unwrap();
            let resp = response(&src, &blob.hash, &want);
            let out = receive(&dst, blob.hash, &want, &resp).unwrap();
            let expected = ranges::effective(&want, size);
            assert!(out.held.is_superset(&ranges::clamp(&expected, size)), "{want:?} of {size}: held {:?}", out.held);
            let third = Store::open(dir.path().join(format!("third-{}-{i}", blob.hash))).unwrap();
            let again = response(&dst, &blob.hash, &want);
            assert_eq!(again, resp, "the receiver serves what it kept, byte for byte");
            receive(&third, blob.hash, &want, &again).unwrap();
        }
    }
}

/// An import counts every byte it hashed, in both modes, window by window.
#[tokio::test]
async fn import_progress_counts_every_byte() {
    use std::sync::{atomic::AtomicU64, Arc};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    for (i, mode) in [ImportMode::Copy, ImportMode::Reference].into_iter().enumerate() {
        let file = dir.path().join(format!("f{i}"));
        let len = 40 * 1024 * 1024 + 123;
        std::fs::write(&file, common::data(len, i as u64)).unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let out = store.import_path_with_progress(&file, mode, progress.clone()).await.unwrap();
        assert_eq!(out.size, len as u64);
        assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), len as u64, "{mode:?}");
    }
}
