//! A tree response (get tree) seeded into a store the way the client does
//! it: `Seeder::push` over bytes in pieces, then `Seeder::finish`, with a
//! base blob that shares most groups with the new one and zero groups in
//! it. Two modes, by the first byte: raw (the rest is the tree), or mutate
//! (the honest tree truncated and with bytes flipped as the input says).
//! Seeding never panics, and whatever it records reads back as exactly
//! the new blob's bytes. Runs are independent: the partial blob is
//! collected after each.
#![no_main]
use std::{
    io::{Read, Seek, SeekFrom},
    sync::OnceLock,
};

use blixard_store::{BlobStatus, Hash, Store};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    _dir: tempfile::TempDir,
    dst: Store,
    base: Hash,
    new: Vec<u8>,
    hash: Hash,
    tree: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let old: Vec<u8> = (0..40 * 16384u32).map(|i| (i % 251) as u8).collect();
        let mut new = old.clone();
        new[3 * 16384] ^= 1;
        new[10 * 16384..14 * 16384].fill(0);
        let src = Store::open(dir.path().join("src")).unwrap();
        let out = rt.block_on(src.import_bytes(new.clone())).unwrap();
        src.set_tag_and_release("new", out.lease).unwrap();
        let tree = src.outboard_bytes(&out.hash).unwrap();
        let dst = Store::open(dir.path().join("dst")).unwrap();
        let b = rt.block_on(dst.import_bytes(old)).unwrap();
        dst.set_tag_and_release("base", b.lease).unwrap();
        Fixture { _dir: dir, dst, base: b.hash, new, hash: out.hash, tree }
    })
}

fuzz_target!(|input: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = input.split_first() else { return };
    let tree = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut bytes = f.tree.clone();
        if rest.len() >= 2 {
            let keep = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            if keep < bytes.len() {
                bytes.truncate(keep);
            }
        }
        for flip in rest.get(2..).unwrap_or_default().chunks_exact(3) {
            if bytes.is_empty() {
                break;
            }
            let at = u16::from_le_bytes([flip[0], flip[1]]) as usize % bytes.len();
            bytes[at] ^= flip[2];
        }
        bytes
    };
    let mut seeder = f.dst.start_seed(f.hash, f.new.len() as u64, &[f.base]).unwrap();
    let piece = (mode >> 1) as usize * 37 + 1;
    let pushed = tree.chunks(piece).try_for_each(|p| seeder.push(p));
    if pushed.is_ok() {
        let _ = seeder.finish();
    } else {
        drop(seeder);
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
        BlobStatus::Complete { .. } => panic!("seeding cannot complete a blob that changed a group"),
        BlobStatus::Absent => {}
    }
    f.dst.gc().unwrap();
});
