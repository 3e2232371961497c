//! Readers: seeking, `read_at`, and the verified ranges of a partial blob,
//! blocking and async.

mod common;

use std::io::{Read, Seek, SeekFrom};

use blixard_store::{is_not_held, ranges, ChunkNum, ChunkRanges, Store};
use common::{data, receive, response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// A store holding chunks 32..96 and 200..(end) of a 300 KiB blob, and the
/// full bytes.
async fn partial() -> (Store, Store, blixard_store::Hash, Vec<u8>, ChunkRanges) {
    let (src, dst) = (Store::temporary().unwrap(), Store::temporary().unwrap());
    let bytes = data(300 * 1024 + 123, 7);
    let imported = src.import_bytes(bytes.clone()).await.unwrap();
    let hash = imported.hash;
    src.set_tag_and_release("t", imported.lease).unwrap();
    let want = ChunkRanges::from(ChunkNum(32)..ChunkNum(96)) | ChunkRanges::from(ChunkNum(200)..);
    receive(&dst, hash, &want, &response(&src, &hash, &want)).unwrap();
    (src, dst, hash, bytes, want)
}

#[tokio::test]
async fn a_complete_blob_seeks_and_reads_at_any_offset() {
    let (src, _dst, hash, bytes, _) = partial().await;
    let mut r = src.reader(&hash).unwrap();
    for at in [0u64, 1, 16383, 16384, 100_000, bytes.len() as u64 - 1] {
        r.seek(SeekFrom::Start(at)).unwrap();
        let mut buf = vec![0u8; 5000];
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0);
        assert_eq!(&buf[..n], &bytes[at as usize..at as usize + n], "at {at}");
    }
    assert_eq!(r.seek(SeekFrom::End(-10)).unwrap(), bytes.len() as u64 - 10);
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &bytes[bytes.len() - 10..]);
    assert!(r.seek(SeekFrom::Current(-(bytes.len() as i64) - 1)).is_err(), "before the start");
    let mut buf = [0u8; 3];
    assert_eq!(r.read_at(12345, &mut buf).unwrap(), 3);
    assert_eq!(&buf, &bytes[12345..12348]);
}

#[tokio::test]
async fn a_partial_blob_reads_what_it_holds_and_refuses_the_rest() {
    let (src, dst, hash, bytes, want) = partial().await;
    let mut r = dst.reader(&hash).unwrap();
    assert_eq!(r.held(), &ranges::effective(&want, bytes.len() as u64), "rounded to groups");
    // Held: chunks 32..96 are bytes 32 KiB..96 KiB.
    let mut buf = vec![0u8; 10_000];
    assert_eq!(r.read_at(40_000, &mut buf).unwrap(), 10_000);
    assert_eq!(&buf[..], &bytes[40_000..50_000]);
    // A read that runs into a hole stops at its edge.
    let n = r.read_at(96 * 1024 - 100, &mut buf).unwrap();
    assert_eq!(n, 100);
    assert_eq!(&buf[..100], &bytes[96 * 1024 - 100..96 * 1024]);
    // One that starts in a hole is "not held", and the position stays.
    r.seek(SeekFrom::Start(100 * 1024)).unwrap();
    let e = r.read(&mut buf).unwrap_err();
    assert!(is_not_held(&e), "{e}");
    assert_eq!(r.stream_position().unwrap(), 100 * 1024);
    // The tail is held.
    r.seek(SeekFrom::Start(250 * 1024)).unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, &bytes[250 * 1024..]);
    // Once the hole arrives, the same reader reads it.
    let rest = ranges::all(bytes.len() as u64) - &want;
    receive(&dst, hash, &rest, &response(&src, &hash, &rest)).unwrap();
    assert_eq!(r.read_at(100 * 1024, &mut buf).unwrap(), buf.len());
    assert_eq!(&buf[..], &bytes[100 * 1024..100 * 1024 + buf.len()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_reader_seeks_and_reads_a_partial_blob() {
    let (_src, dst, hash, bytes, _) = partial().await;
    let mut r = dst.async_reader(&hash).await.unwrap();
    assert_eq!(r.size(), bytes.len() as u64);
    r.seek(SeekFrom::Start(33 * 1024 + 7)).await.unwrap();
    let mut buf = vec![0u8; 20_000];
    r.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf[..], &bytes[33 * 1024 + 7..33 * 1024 + 7 + 20_000]);
    r.seek(SeekFrom::Start(120 * 1024)).await.unwrap();
    let e = r.read(&mut buf).await.unwrap_err();
    assert!(is_not_held(&e), "{e}");
    r.seek(SeekFrom::End(-5000)).await.unwrap();
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).await.unwrap();
    assert_eq!(tail, &bytes[bytes.len() - 5000..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_group_is_an_error_not_bytes() {
    let (src, _dst, hash, _bytes, _) = partial().await;
    let path = src.dir().join("blobs").join(format!("{hash}.data"));
    let mut on_disk = std::fs::read(&path).unwrap();
    on_disk[70_000] ^= 1;
    std::fs::write(&path, on_disk).unwrap();
    let mut r = src.async_reader(&hash).await.unwrap();
    let mut buf = vec![0u8; 1000];
    r.read_exact(&mut buf).await.unwrap(); // group 0 is intact
    r.seek(SeekFrom::Start(69_000)).await.unwrap();
    let e = r.read_exact(&mut vec![0u8; 2000]).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("damaged at rest"), "{e}");
}
