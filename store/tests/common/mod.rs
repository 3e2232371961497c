//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use blixard_store::{ranges::ChunkRanges, Hash, Store};
/// Deterministic pseudo-random bytes (the one generator of every test).
#[allow(unused_imports)] // not every test crate uses it
pub use blixard_tests::data::pseudo_random as data;

/// A bao response (size header + encoding) for `ranges` of a blob held by `src`.
pub fn response(src: &Store, hash: &Hash, ranges: &ChunkRanges) -> Vec<u8> {
    let mut out = Vec::new();
    src.write_encoded(hash, ranges, &mut out).unwrap();
    out
}

/// Feeds a response into `dst` through the sync API.
pub fn receive(
    dst: &Store,
    hash: Hash,
    ranges: &ChunkRanges,
    resp: &[u8],
) -> blixard_store::Result<blixard_store::ReceiveOutcome> {
    dst.receive_encoded(hash, ranges, &mut &resp[..])
}

/// Feeds a response into `dst` through the async push API, in pieces of the
/// sizes given (cycled), as a network stream would deliver them. Bytes after
/// the response are an error, as they are for the sync API.
pub fn receive_pushed(
    dst: &Store,
    hash: Hash,
    ranges: &ChunkRanges,
    resp: &[u8],
    pieces: &[usize],
) -> blixard_store::Result<blixard_store::ReceiveOutcome> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let size = u64::from_le_bytes(resp[..8].try_into().unwrap());
        let mut incoming = dst.start_receive(hash, size, ranges)?;
        let mut rest = bytes::Bytes::copy_from_slice(&resp[8..]);
        let mut sizes = pieces.iter().copied().cycle();
        let mut piece = bytes::Bytes::new();
        let pushed = async {
            loop {
                if incoming.push(&mut piece).await? {
                    break;
                }
                if rest.is_empty() {
                    return Err(incoming.truncated());
                }
                let n = sizes.next().unwrap().clamp(1, rest.len());
                piece = rest.split_to(n);
            }
            if !piece.is_empty() || !rest.is_empty() {
                return Err(blixard_store::Error::Verification {
                    hash,
                    reason: "trailing bytes after the response".into(),
                });
            }
            Ok(())
        }
        .await;
        let closed = incoming.close().await;
        pushed?;
        closed
    })
}
