//! A blob response received into a store the way the client does it: the
//! response state machine (`response::receive`) over bytes delivered in
//! pieces, each body verified through `IncomingBlob::push` and its batch
//! writes. Two modes, by the first byte:
//! - raw: the rest is a whole response (size header and encoding) for a
//!   known blob, requested whole;
//! - mutate: a valid response for a chosen range set, truncated and with
//!   bytes flipped as the input says.
//!
//! The first byte's upper bits also choose how the bytes are split into
//! pieces. Receiving never panics, and a blob that completes has exactly
//! the source's bytes. The blob is collected after every run, so runs are
//! independent.
#![no_main]
use std::sync::OnceLock;

use blixard_protocol::response::{self, ChunkSource, ResponseSequence};
use blixard_store::{ChunkNum, ChunkRanges, Hash, Store};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

/// The response's bytes in pieces of `size` (growing, so both tiny and
/// large pieces occur).
struct Pieces {
    data: Bytes,
    size: usize,
}

impl ChunkSource for Pieces {
    async fn next_chunk(&mut self) -> blixard_protocol::Result<Option<Bytes>> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let n = self.size.clamp(1, self.data.len());
        self.size = self.size * 3 / 2 + 1;
        Ok(Some(self.data.split_to(n)))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    dst: Store,
    data: Vec<u8>,
    hash: Hash,
    /// Valid responses (size header included) for each range selection.
    responses: Vec<(ChunkRanges, Vec<u8>)>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = Store::open(dir.path().join("src")).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let out = rt.block_on(src.import_bytes(data.clone())).unwrap();
        src.set_tag_and_release("source", out.lease).unwrap();
        let selections = [
            ChunkRanges::all(),
            ChunkRanges::from(ChunkNum(16)..ChunkNum(32)),
            ChunkRanges::from(ChunkNum(32)..),
            ChunkRanges::from(ChunkNum(5)..ChunkNum(70)),
            ChunkRanges::from(ChunkNum(0)..ChunkNum(16)) | ChunkRanges::from(ChunkNum(32)..),
        ];
        let responses = selections
            .into_iter()
            .map(|r| {
                let mut bytes = Vec::new();
                src.write_encoded(&out.hash, &r, &mut bytes).unwrap();
                (r, bytes)
            })
            .collect();
        let dst = Store::open(dir.path().join("dst")).unwrap();
        Fixture { _dir: dir, rt, dst, data, hash: out.hash, responses }
    })
}

fuzz_target!(|input: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = input.split_first() else { return };
    let (ranges, response) = if mode & 1 == 0 {
        (ChunkRanges::all(), rest.to_vec())
    } else {
        let Some((&pick, rest)) = rest.split_first() else { return };
        let (ranges, valid) = &f.responses[pick as usize % f.responses.len()];
        let mut bytes = valid.clone();
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
        (ranges.clone(), bytes)
    };
    let mut source = Pieces { data: Bytes::from(response), size: (mode >> 1) as usize * 97 + 1 };
    let sequence = ResponseSequence::new(vec![(f.hash, ranges)], None);
    let _ = f.rt.block_on(response::receive(&f.dst, &mut source, sequence));
    if let Ok(blixard_store::BlobStatus::Complete { .. }) = f.dst.status(&f.hash) {
        assert_eq!(f.dst.read_to_vec(&f.hash).unwrap(), f.data, "a complete blob with wrong bytes");
    }
    f.dst.gc().unwrap();
});
