//! Property tests: range bookkeeping, write/serve round trips with random
//! range sets, and random bit flips in a response always rejected.

mod common;

use std::sync::OnceLock;

use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, Error, Hash, Store};
use proptest::prelude::*;

const SIZE: usize = 3 * 1024 * 1024 + 4321;

struct Source {
    _dir: tempfile::TempDir,
    store: Store,
    hash: Hash,
    data: Vec<u8>,
}

fn source() -> &'static Source {
    static S: OnceLock<Source> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = common::data(SIZE, 5);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(store.import_bytes(data.clone())).unwrap();
        let hash = out.hash;
        store.set_tag_and_release("src", out.lease).unwrap();
        Source { _dir: dir, store, hash, data }
    })
}

fn range_sets() -> impl Strategy<Value = Vec<(u64, u64)>> {
    let chunks = ranges::chunk_count(SIZE as u64);
    proptest::collection::vec((0..chunks, 1..600u64), 1..6)
}

fn to_set(v: &[(u64, u64)]) -> ChunkRanges {
    let chunks = ranges::chunk_count(SIZE as u64);
    v.iter().fold(ChunkRanges::empty(), |acc, &(a, len)| {
        acc | ChunkRanges::from(ChunkNum(a)..ChunkNum((a + len).min(chunks)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Receiving random range sets in order records exactly their union
    /// (rounded to groups), serves back verified bytes equal to the source,
    /// and completes exactly when everything is covered.
    #[test]
    fn bookkeeping_and_round_trip(
        sets in proptest::collection::vec(range_sets(), 1..5),
        pieces in proptest::option::of(proptest::collection::vec(1usize..70_000, 1..8)),
    ) {
        let src = source();
        let dir = tempfile::tempdir().unwrap();
        let dst = Store::open(dir.path()).unwrap();
        let mut expected = ChunkRanges::empty();
        for v in &sets {
            let r = ranges::round_to_groups(&to_set(v));
            let resp = common::response(&src.store, &src.hash, &r);
            // Through the blocking API, or pushed in random pieces.
            let out = match &pieces {
                None => common::receive(&dst, src.hash, &r, &resp).unwrap(),
                Some(p) => common::receive_pushed(&dst, src.hash, &r, &resp, p).unwrap(),
            };
            expected |= ranges::clamp(&r, SIZE as u64);
            let complete = expected.is_superset(&ranges::all(SIZE as u64));
            prop_assert_eq!(out.complete, complete);
            match dst.status(&src.hash).unwrap() {
                BlobStatus::Partial { ranges: held, .. } => prop_assert_eq!(held, expected.clone()),
                BlobStatus::Complete { .. } => prop_assert!(complete),
                BlobStatus::Absent => prop_assert!(false, "absent after receive"),
            }
        }
        // serve what is held to a third store: it verifies and matches the source
        let third_dir = tempfile::tempdir().unwrap();
        let third = Store::open(third_dir.path()).unwrap();
        let resp = common::response(&dst, &src.hash, &ChunkRanges::all());
        common::receive(&third, src.hash, &expected, &resp).unwrap();
        let file = match third.status(&src.hash).unwrap() {
            BlobStatus::Complete { .. } => third.read_to_vec(&src.hash).unwrap(),
            _ => std::fs::read(third_dir.path().join("partial").join(format!("{}.data", src.hash))).unwrap(),
        };
        for r in ranges::to_vec(&expected, SIZE as u64) {
            let (s, e) = ((r.start * 1024) as usize, ((r.end * 1024) as usize).min(SIZE));
            prop_assert!(file[s..e] == src.data[s..e]);
        }
    }

    /// A single flipped bit anywhere after the size header is rejected and
    /// no unverified byte is recorded.
    #[test]
    fn bit_flips_are_rejected(
        v in range_sets(),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
        pieces in proptest::option::of(proptest::collection::vec(1usize..70_000, 1..8)),
    ) {
        let src = source();
        let r = ranges::round_to_groups(&to_set(&v));
        let mut resp = common::response(&src.store, &src.hash, &r);
        let i = 8 + pos.index(resp.len() - 8);
        resp[i] ^= 1 << bit;
        let dir = tempfile::tempdir().unwrap();
        let dst = Store::open(dir.path()).unwrap();
        let err = match &pieces {
            None => common::receive(&dst, src.hash, &r, &resp).unwrap_err(),
            Some(p) => common::receive_pushed(&dst, src.hash, &r, &resp, p).unwrap_err(),
        };
        prop_assert!(matches!(err, Error::Verification { .. }), "unexpected error {err}");
        // whatever was recorded before the flip is the source's bytes
        if let BlobStatus::Partial { ranges: held, .. } = dst.status(&src.hash).unwrap() {
            let file = std::fs::read(dir.path().join("partial").join(format!("{}.data", src.hash))).unwrap();
            for r in ranges::to_vec(&held, SIZE as u64) {
                let (s, e) = ((r.start * 1024) as usize, ((r.end * 1024) as usize).min(SIZE));
                prop_assert!(file[s..e] == src.data[s..e]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// A request that reaches past the end is served as bao-tree encodes it:
    /// our normalised ranges give byte-identical responses to bao-tree's own
    /// encoder given the raw request.
    #[test]
    fn normalized_requests_encode_like_bao_tree(
        size in 0usize..200_000,
        starts in proptest::collection::vec(0u64..300, 1..4),
        open in any::<bool>(),
    ) {
        let data = common::data(size, 9);
        let ob = bao_tree::io::outboard::PreOrderMemOutboard::create(&data, bao_tree::BlockSize::from_chunk_log(4));
        let mut requested = ChunkRanges::empty();
        for (i, s) in starts.iter().enumerate() {
            let r = if open && i == starts.len() - 1 {
                ChunkRanges::from(ChunkNum(*s)..)
            } else {
                ChunkRanges::from(ChunkNum(*s)..ChunkNum(s + 7))
            };
            requested |= r;
        }
        let mut theirs = Vec::new();
        bao_tree::io::sync::encode_ranges_validated(&data[..], &ob, &requested, &mut theirs).unwrap();
        let mut ours = Vec::new();
        let normalized = ranges::normalize(&requested, size as u64);
        bao_tree::io::sync::encode_ranges_validated(&data[..], &ob, &normalized, &mut ours).unwrap();
        prop_assert_eq!(theirs, ours);
    }
}
