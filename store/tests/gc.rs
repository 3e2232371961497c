//! GC never removes a blob reachable from a resource, tag or lease, even while
//! tags change concurrently and a download is running.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, ResourceKind, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_respects_roots_under_concurrency() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = Store::open(a.path()).unwrap();
    let store = Store::open(b.path()).unwrap();
    // blobs reachable from a resource, a tag, a lease, and one from nothing
    let res = store.import_bytes(common::data(100_000, 1)).await.unwrap();
    store.put_resource_and_release(&ResourceKind::VmImage, "ubuntu", "22.04", res.lease).unwrap();
    let tagged = store.import_bytes(common::data(50_000, 2)).await.unwrap();
    let tagged_hash = tagged.hash;
    store.set_tag_and_release("keep", tagged.lease).unwrap();
    let leased = store.import_bytes(common::data(70_000, 3)).await.unwrap();
    let orphan = store.import_bytes(common::data(60_000, 4)).await.unwrap().hash;

    // a download in progress, protected by its lease
    let big = common::data(4 * 1024 * 1024, 5);
    let big_hash = src.import_bytes(big.clone()).await.unwrap().hash;
    let download_lease = store.lease(big_hash);

    // tags flip between blobs while GC runs in a loop
    let flips: Vec<_> = (0..20).map(|i| common::data(20_000 + i, 100 + i as u64)).collect();
    let mut flip_hashes = Vec::new();
    for f in &flips {
        let out = store.import_bytes(f.clone()).await.unwrap();
        flip_hashes.push(out.hash);
        store.set_tag_and_release(&format!("flip-{}", flip_hashes.len()), out.lease).unwrap();
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                store.gc().unwrap();
            }
        });
        s.spawn(|| {
            // move a tag across blobs: whichever it points at must survive
            for round in 0..200 {
                let h = flip_hashes[round % flip_hashes.len()];
                let lease = store.lease(h);
                if store.status(&h).unwrap() != BlobStatus::Absent {
                    store.set_tag_and_release("moving", lease).unwrap();
                    let now = store.tag("moving").unwrap().unwrap();
                    assert!(
                        matches!(store.status(&now).unwrap(), BlobStatus::Complete { .. }),
                        "tagged blob collected"
                    );
                }
            }
        });
        // the download writes its ranges while GC runs
        let n = ranges::chunk_count(big.len() as u64);
        for i in 0..8 {
            let r = ChunkRanges::from(ChunkNum(i * n / 8)..ChunkNum((i + 1) * n / 8));
            let r = ranges::round_to_groups(&r);
            common::receive(&store, big_hash, &r, &common::response(&src, &big_hash, &r)).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(matches!(store.status(&big_hash).unwrap(), BlobStatus::Complete { .. }));
    assert_eq!(store.read_to_vec(&big_hash).unwrap(), big);
    store.gc().unwrap();
    for h in [res.hash, tagged_hash, leased.hash, big_hash] {
        assert!(matches!(store.status(&h).unwrap(), BlobStatus::Complete { .. }), "{h} was collected");
    }
    assert_eq!(store.status(&orphan).unwrap(), BlobStatus::Absent, "unreachable blob survived");
    drop(download_lease);
    drop(leased);
    store.gc().unwrap();
    assert_eq!(store.status(&big_hash).unwrap(), BlobStatus::Absent, "released download survived");
    assert!(matches!(store.status(&res.hash).unwrap(), BlobStatus::Complete { .. }));
}
