//! The server's planning of a blob request, without sockets: which blobs a
//! get, get-many or get-seq answers with, in order, and which ranges of
//! each (the effective ranges), checked against the store before the first
//! byte is sent, so a request is answered whole or refused with a code.

use blixard_store::{ranges, BlobStatus, ChunkRanges, Hash, Store};

use crate::{
    limits::MAX_SEQ_CHILDREN,
    wire::{self, ErrorCode, RangeSpec, Request},
};

/// The blobs and effective ranges that answer `request`, or the code to
/// refuse it with. Ranges were checked when the request was decoded.
pub fn blob_items(store: &Store, request: &Request) -> Result<Vec<(Hash, ChunkRanges)>, ErrorCode> {
    let ranges = |r: &RangeSpec| r.to_ranges().unwrap_or_default();
    let items: Vec<(Hash, ChunkRanges)> = match request {
        Request::Get(g) => vec![(wire::hash(&g.hash), ranges(&g.ranges))],
        Request::GetMany(m) => m.items.iter().map(|i| (wire::hash(&i.hash), ranges(&i.ranges))).collect(),
        Request::GetSeq(s) => {
            let seq = wire::hash(&s.hash);
            let children = read_sequence(store, &seq)?;
            let child_ranges = ranges(&s.children);
            std::iter::once((seq, ChunkRanges::all()))
                .chain(children.into_iter().map(|h| (h, child_ranges.clone())))
                .collect()
        }
        _ => return Err(ErrorCode::BadRequest),
    };
    items.iter().map(|(hash, requested)| Ok((*hash, check_blob(store, hash, requested)?))).collect()
}

/// The children of a complete hash-sequence blob, within the limits.
fn read_sequence(store: &Store, seq: &Hash) -> Result<Vec<Hash>, ErrorCode> {
    let size = match store.status(seq).map_err(|_| ErrorCode::Internal)? {
        BlobStatus::Complete { size } => size,
        _ => return Err(ErrorCode::NotFound),
    };
    if !size.is_multiple_of(32) {
        return Err(ErrorCode::BadSequence);
    }
    if size / 32 > MAX_SEQ_CHILDREN {
        return Err(ErrorCode::TooMany);
    }
    let bytes = store.read_to_vec(seq).map_err(|_| ErrorCode::Internal)?;
    Ok(bytes.chunks_exact(32).map(|c| Hash(c.try_into().expect("32-byte chunks"))).collect())
}

/// Checks that the store can answer `requested` of `hash` whole; returns
/// the effective ranges (see [`ranges::effective`]).
fn check_blob(store: &Store, hash: &Hash, requested: &ChunkRanges) -> Result<ChunkRanges, ErrorCode> {
    match store.status(hash).map_err(|_| ErrorCode::Internal)? {
        BlobStatus::Absent => Err(ErrorCode::NotFound),
        BlobStatus::Partial { size, ranges: held, .. } => {
            let effective = ranges::effective(requested, size);
            if (effective.clone() - held).is_empty() {
                Ok(effective)
            } else {
                Err(ErrorCode::NotHeld)
            }
        }
        BlobStatus::Complete { size } => Ok(ranges::effective(requested, size)),
    }
}

#[cfg(test)]
mod tests {
    use blixard_store::ChunkNum;

    use super::*;
    use crate::wire::{GetManyRequest, GetRequest, GetSeqRequest};

    #[tokio::test]
    async fn plans_every_blob_request_or_refuses_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.import_bytes(vec![1u8; 100_000]).await.unwrap();
        let b = store.import_bytes(vec![2u8; 10]).await.unwrap();
        let seq = store.import_bytes([a.hash.0, b.hash.0].concat()).await.unwrap();
        let odd = store.import_bytes(vec![3u8; 33]).await.unwrap();
        let get = |h: Hash, r: ChunkRanges| GetRequest { hash: h.0, ranges: RangeSpec::new(&r) };
        let cut = ChunkRanges::from(ChunkNum(3)..ChunkNum(5));

        let plan = blob_items(&store, &Request::Get(get(a.hash, cut.clone()))).unwrap();
        assert_eq!(plan, vec![(a.hash, ranges::effective(&cut, 100_000))]);
        assert_eq!(plan[0].1, ChunkRanges::from(ChunkNum(0)..ChunkNum(16)), "rounded to a group");

        let many = Request::GetMany(GetManyRequest { items: vec![get(b.hash, ChunkRanges::all()), get(a.hash, cut)] });
        assert_eq!(blob_items(&store, &many).unwrap().iter().map(|i| i.0).collect::<Vec<_>>(), [b.hash, a.hash]);

        let gs = |h: Hash| Request::GetSeq(GetSeqRequest { hash: h.0, children: RangeSpec::all() });
        let plan = blob_items(&store, &gs(seq.hash)).unwrap();
        assert_eq!(plan.iter().map(|i| i.0).collect::<Vec<_>>(), [seq.hash, a.hash, b.hash]);
        assert_eq!(blob_items(&store, &gs(odd.hash)), Err(ErrorCode::BadSequence));

        let absent = Hash::of(b"absent");
        let with_absent = Request::GetMany(GetManyRequest {
            items: vec![get(a.hash, ChunkRanges::all()), get(absent, ChunkRanges::all())],
        });
        assert_eq!(blob_items(&store, &with_absent), Err(ErrorCode::NotFound), "refused whole");
        assert_eq!(blob_items(&store, &Request::Ping), Err(ErrorCode::BadRequest));
    }
}
