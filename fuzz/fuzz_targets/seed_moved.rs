//! Seeding a download from chunks a peer's content index says moved: the
//! honest tree of the new blob, with arbitrary chunk entries (offset in the
//! new blob, offset and length in a local blob: overlapping, out of order,
//! past either end, overflowing) as `Seeder::with_moved_chunks` takes them
//! from a download. Seeding never panics, and whatever it records reads
//! back as exactly the new blob's bytes. Runs are independent: the partial
//! blob is collected after each.
#![no_main]
use std::{
    io::{Read, Seek, SeekFrom},
    sync::OnceLock,
};

use blixard_store::{content_index::ChunkLocation, BlobStatus, Hash, Store};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    _dir: tempfile::TempDir,
    dst: Store,
    local: Hash,
    new: Vec<u8>,
    hash: Hash,
    tree: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // The local blob holds the new one's bytes shifted by 1000: every
        // group of the new blob can be assembled from it, by content only.
        let new: Vec<u8> = (0..24 * 16384u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let mut local = vec![7u8; 1000];
        local.extend_from_slice(&new);
        let src = Store::open(dir.path().join("src")).unwrap();
        let out = rt.block_on(src.import_bytes(new.clone())).unwrap();
        src.set_tag_and_release("new", out.lease).unwrap();
        let tree = src.outboard_bytes(&out.hash).unwrap();
        let dst = Store::open(dir.path().join("dst")).unwrap();
        let l = rt.block_on(dst.import_bytes(local)).unwrap();
        dst.set_tag_and_release("local", l.lease).unwrap();
        Fixture { _dir: dir, dst, local: l.hash, new, hash: out.hash, tree }
    })
}

fuzz_target!(|input: &[u8]| {
    let f = fixture();
    // Each 12 bytes: at (u32, scaled), offset (u32), len (u32), as a peer's
    // index would place a chunk; values near the ends are likely.
    let moved: Vec<(u64, ChunkLocation)> = input
        .chunks_exact(12)
        .map(|c| {
            let word = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
            let at = match word(0) >> 30 {
                0 => u64::from(word(0) & 0x7_ffff),
                1 => u64::MAX - u64::from(word(0) & 0xffff),
                _ => u64::from(word(0)),
            };
            let offset = if word(4) >> 31 == 0 { u64::from(word(4) & 0x7_ffff) } else { u64::MAX - u64::from(word(4)) };
            (at, ChunkLocation { blob: f.local, offset, len: word(8) })
        })
        .collect();
    let mut seeder = f.dst.start_seed(f.hash, f.new.len() as u64, &[]).unwrap().with_moved_chunks(moved);
    if f.tree.chunks(4096).try_for_each(|p| seeder.push(p)).is_ok() {
        let _ = seeder.finish();
    }
    match f.dst.status(&f.hash).unwrap() {
        BlobStatus::Partial { ranges, .. } => {
            for r in blixard_store::ranges::to_vec(&ranges, f.new.len() as u64) {
                let mut reader = f.dst.reader(&f.hash).unwrap();
                let mut buf = vec![0u8; (r.end - r.start) as usize];
                reader.seek(SeekFrom::Start(r.start)).unwrap();
                reader.read_exact(&mut buf).unwrap();
                assert_eq!(&buf[..], &f.new[r.start as usize..r.end as usize], "recorded wrong bytes");
            }
        }
        BlobStatus::Complete { .. } => {
            let mut buf = Vec::new();
            f.dst.reader(&f.hash).unwrap().read_to_end(&mut buf).unwrap();
            assert_eq!(buf, f.new, "completed with wrong bytes");
        }
        BlobStatus::Absent => {}
    }
    f.dst.gc().unwrap();
});
