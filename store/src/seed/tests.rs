//! Seeding against real stores: equal groups copied, changed ones left
//! missing, damage at rest caught, zeros as holes, moved chunks found by
//! content, and lying indexes and trees recording nothing.

use std::os::unix::fs::FileExt;

use super::*;
use blixard_tests::data::pseudo_random as image;

use crate::{outboard::outboard_of, BlobStatus};

async fn seed(store: &Store, new: &[u8], bases: &[Hash]) -> Result<SeedOutcome> {
    let (hash, tree) = outboard_of(new);
    let mut s = store.start_seed(hash, new.len() as u64, bases)?;
    for piece in tree.chunks(1000) {
        s.push(piece)?;
    }
    s.finish()
}

#[tokio::test]
async fn changed_groups_are_left_missing_and_the_rest_copied() {
    let store = Store::temporary().unwrap();
    let old = image(64 * 16384 + 100, 1);
    let base = store.import_bytes(old.clone()).await.unwrap();
    let mut new = old.clone();
    for g in [3usize, 40, 41] {
        new[g * 16384 + 5] ^= 0xff;
    }
    new.extend_from_slice(&image(20_000, 9));
    let (hash, _) = outboard_of(&new);
    let out = seed(&store, &new, &[base.hash]).await.unwrap();
    let size = new.len() as u64;
    // groups 0..64 except the three changed ones; group 64 (the base's
    // ragged last group) differs in length
    assert_eq!(out.reused_bytes, 61 * 16384);
    assert_eq!(out.damaged_bytes, 0);
    assert_eq!(out.tree_bytes, tree::outboard_size(size));
    let missing = store.missing(&hash).unwrap().unwrap();
    let want = ranges::from_bytes(3 * 16384..4 * 16384)
        | ranges::from_bytes(40 * 16384..42 * 16384)
        | ranges::from_bytes(64 * 16384..size);
    assert_eq!(missing, want);
    // the rest from a "peer": the result is the new blob
    let mut response = Vec::new();
    let peer = Store::temporary().unwrap();
    let full = peer.import_bytes(new.clone()).await.unwrap();
    assert_eq!(full.hash, hash);
    peer.write_encoded(&hash, &missing, &mut response).unwrap();
    store.receive_encoded(hash, &missing, &mut &response[..]).unwrap();
    assert_eq!(store.status(&hash).unwrap(), BlobStatus::Complete { size });
    assert_eq!(store.read_to_vec(&hash).unwrap(), new);
}

#[tokio::test]
async fn a_base_damaged_at_rest_is_caught_and_its_groups_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = image(32 * 16384, 2);
    let base = store.import_bytes(old.clone()).await.unwrap();
    let mut new = old.clone();
    new[0] ^= 1;
    // rot two groups of the base on disk
    let path = store.blob_path(&base.hash, "data");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"rot", 5 * 16384 + 10).unwrap();
    f.write_all_at(b"rot", 20 * 16384).unwrap();
    let (hash, _) = outboard_of(&new);
    let out = seed(&store, &new, &[base.hash]).await.unwrap();
    assert_eq!(out.damaged_bytes, 2 * 16384);
    assert_eq!(out.reused_bytes, 29 * 16384);
    let missing = store.missing(&hash).unwrap().unwrap();
    let want = ranges::from_bytes(0..16384)
        | ranges::from_bytes(5 * 16384..6 * 16384)
        | ranges::from_bytes(20 * 16384..21 * 16384);
    assert_eq!(missing, want);
    // what was recorded is the new blob's bytes, verified
    let mut r = store.reader(&hash).unwrap();
    let mut buf = vec![0u8; 16384];
    r.read_at(16384, &mut buf).unwrap();
    assert_eq!(&buf[..], &new[16384..32768]);
}

#[tokio::test]
async fn zero_groups_become_holes_without_a_base() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut new = vec![0u8; 256 * 16384];
    new[100 * 16384..101 * 16384].copy_from_slice(&image(16384, 4));
    let (hash, _) = outboard_of(&new);
    let out = seed(&store, &new, &[]).await.unwrap();
    assert_eq!(out.zero_bytes, 255 * 16384);
    assert_eq!(store.missing(&hash).unwrap().unwrap(), ranges::from_bytes(100 * 16384..101 * 16384));
    use std::os::unix::fs::MetadataExt;
    let physical = std::fs::metadata(store.partial_path(&hash, "data")).unwrap().blocks() * 512;
    assert!(physical < 64 * 1024, "the partial data file holds {physical} bytes on disk");
}

/// 100 bytes inserted at 1 MiB shift every later group: position finds
/// nothing after it, the content index finds nearly all of it.
#[tokio::test]
async fn shifted_bytes_are_found_by_content() {
    let store = Store::temporary().unwrap();
    let old = image(8 << 20, 6);
    let base = store.import_bytes(old.clone()).await.unwrap();
    store.build_content_index(&base.hash).unwrap();
    let mut new = old[..1 << 20].to_vec();
    new.extend_from_slice(&[1u8; 100]);
    new.extend_from_slice(&old[1 << 20..]);
    let (hash, tree) = outboard_of(&new);
    let moved: Vec<_> = crate::content_index::chunk_bytes(&new)
        .into_iter()
        .filter_map(|e| store.find_chunk(&e.hash, &hash).unwrap().map(|l| (e.offset, l)))
        .collect();
    let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap().with_moved_chunks(moved);
    s.push(&tree).unwrap();
    let out = s.finish().unwrap();
    let missing = ranges::byte_count(&store.missing(&hash).unwrap().unwrap(), new.len() as u64);
    assert!(out.moved_bytes > 0 && out.reused_bytes >= out.moved_bytes);
    assert!(missing < 600 << 10, "{missing} bytes still missing: {out:?}");
    let peer = Store::temporary().unwrap();
    let _kept = peer.import_bytes(new.clone()).await.unwrap();
    let want = store.missing(&hash).unwrap().unwrap();
    let mut response = Vec::new();
    peer.write_encoded(&hash, &want, &mut response).unwrap();
    store.receive_encoded(hash, &want, &mut &response[..]).unwrap();
    assert_eq!(store.read_to_vec(&hash).unwrap(), new);
}

/// A content index that lies (chunks said to be where other bytes lie)
/// costs reads, never a wrong byte: nothing it points at is recorded.
#[tokio::test]
async fn a_lying_content_index_records_nothing() {
    let store = Store::temporary().unwrap();
    let other = image(4 << 20, 7);
    let local = store.import_bytes(other.clone()).await.unwrap();
    let new = image(2 << 20, 8);
    let (hash, tree) = outboard_of(&new);
    // every chunk of the new blob "found" somewhere in the other blob
    let moved = crate::content_index::chunk_bytes(&new)
        .into_iter()
        .map(|e| (e.offset, ChunkLocation { blob: local.hash, offset: e.offset + 12345, len: e.len }))
        .collect();
    let mut s = store.start_seed(hash, new.len() as u64, &[]).unwrap().with_moved_chunks(moved);
    s.push(&tree).unwrap();
    let out = s.finish().unwrap();
    assert_eq!(out.moved_bytes, 0);
    assert_eq!(store.missing(&hash).unwrap(), Some(ranges::all(new.len() as u64)));
}

#[tokio::test]
async fn a_lying_or_short_tree_records_nothing() {
    let store = Store::temporary().unwrap();
    let old = image(16 * 16384, 5);
    let base = store.import_bytes(old.clone()).await.unwrap();
    let mut new = old.clone();
    new[7 * 16384] ^= 1;
    let (hash, tree) = outboard_of(&new);
    // a tree whose lowest parents claim the base's groups but whose
    // root is the new hash: fails at the first record that lies
    let mut lie = tree.clone();
    let (_, base_tree) = outboard_of(&old);
    lie[64..].copy_from_slice(&base_tree[64..]);
    let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap();
    assert!(matches!(s.push(&lie), Err(Error::Verification { .. })));
    drop(s);
    assert_eq!(store.missing(&hash).unwrap(), Some(ranges::all(new.len() as u64)));
    let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap();
    s.push(&tree[..tree.len() - 10]).unwrap();
    assert!(matches!(s.finish(), Err(Error::Truncated { .. })));
    let mut s = store.start_seed(hash, new.len() as u64, &[base.hash]).unwrap();
    let mut long = tree.clone();
    long.extend_from_slice(&[0u8; 64]);
    assert!(s.push(&long).is_err());
}

/// Index entries that overlap, run past either blob or overflow (a hostile
/// peer's index, as the `seed_moved` fuzz target found) never panic or
/// move backwards; the honest entries among them still place their bytes.
#[tokio::test]
async fn overlapping_and_overflowing_index_entries_are_passed_over() {
    let store = Store::temporary().unwrap();
    let new = image(1 << 20, 9);
    // The local blob holds the new one's bytes shifted by 1000.
    let mut shifted = vec![7u8; 1000];
    shifted.extend_from_slice(&new);
    let local = store.import_bytes(shifted).await.unwrap();
    let (hash, tree) = outboard_of(&new);
    let at = |at: u64, offset: u64, len: u32| (at, ChunkLocation { blob: local.hash, offset, len });
    let moved = vec![
        at(0, 1000, 40_000),                // honest: groups 0 and 1 and part of 2
        at(100, 1100, 10),                  // inside the one before: behind the position
        at(40_000, 41_000, 600_000),        // honest, overlapping the next
        at(39_000, u64::MAX - 5, u32::MAX), // overflowing offset
        at(u64::MAX - 3, 0, u32::MAX),      // overflowing position
    ];
    let mut s = store.start_seed(hash, new.len() as u64, &[]).unwrap().with_moved_chunks(moved);
    s.push(&tree).unwrap();
    let out = s.finish().unwrap();
    assert!(out.moved_bytes >= 2 * 16384, "{out:?}");
    let BlobStatus::Partial { ranges: held, .. } = store.status(&hash).unwrap() else { panic!("partial") };
    for r in ranges::to_vec(&held, new.len() as u64) {
        let (start, end) = (r.start * 1024, (r.end * 1024).min(new.len() as u64));
        let mut buf = vec![0u8; (end - start) as usize];
        let mut reader = store.reader(&hash).unwrap();
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(start)).unwrap();
        std::io::Read::read_exact(&mut reader, &mut buf).unwrap();
        assert!(buf == new[start as usize..end as usize], "recorded wrong bytes at {start}");
    }
}
