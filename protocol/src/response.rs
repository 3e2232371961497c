//! The client's side of one blob response, without sockets: for each
//! requested item in order, a size header (`u64` LE) then the item's bao
//! encoding; for a hash-sequence request, the sequence's children follow
//! its own blob; nothing after the last item.
//!
//! [`ResponseSequence`] is the state machine (bytes in, steps out): it reads
//! headers, says which blob body comes next and for which ranges, learns a
//! sequence's children once the sequence blob is complete, and checks the
//! end. [`receive`] drives it over any [`ChunkSource`], verifying each body
//! into the store through [`blixard_store::IncomingBlob`] (the production
//! receive path); the QUIC client is one such source, tests and the fuzzer
//! feed it bytes from memory in any split.

use std::collections::VecDeque;

use blixard_store::{ranges, ChunkRanges, Hash, ReceiveOutcome, Store};
use bytes::Bytes;

use crate::{limits::MAX_SEQ_CHILDREN, Error, Result};

/// What one blob of a response did.
#[derive(Debug, Clone)]
pub struct GetOutcome {
    /// The blob.
    pub hash: Hash,
    /// Its size (from the response; verified if the last chunk was received).
    pub size: u64,
    /// The ranges received: the request as the server answers it (see
    /// [`ranges::effective`]); empty if the blob was already complete.
    pub requested: ChunkRanges,
    /// Response bytes read: size header, parents and data.
    pub wire_bytes: u64,
    /// Verified data bytes written.
    pub data_bytes: u64,
    /// What the store holds now.
    pub held: ChunkRanges,
    /// True if the blob is complete in the store.
    pub complete: bool,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More bytes are needed for the next size header.
    NeedData,
    /// A blob's body follows: receive `ranges` of `hash`, `size` bytes
    /// long by the header, then report with [`ResponseSequence::blob_done`].
    Blob {
        /// The blob.
        hash: Hash,
        /// Its size by the header.
        size: u64,
        /// The ranges the body carries ([`ranges::effective`] of the request).
        ranges: ChunkRanges,
    },
    /// Every item was received; the stream must end here.
    End,
}

/// The sequence of items in one response.
#[derive(Debug)]
pub struct ResponseSequence {
    queue: VecDeque<(Hash, ChunkRanges)>,
    /// For a hash-sequence request: the ranges of each child, until the
    /// sequence blob (the first item) is done.
    seq_children: Option<ChunkRanges>,
    header: [u8; 8],
    got: usize,
    current: Option<(Hash, u64, ChunkRanges)>,
    outcomes: Vec<GetOutcome>,
}

impl ResponseSequence {
    /// A response to `items` in order; with `seq_children`, the first item is
    /// a hash sequence whose children follow with those ranges.
    pub fn new(items: Vec<(Hash, ChunkRanges)>, seq_children: Option<ChunkRanges>) -> Self {
        ResponseSequence {
            queue: items.into(),
            seq_children,
            header: [0; 8],
            got: 0,
            current: None,
            outcomes: Vec::new(),
        }
    }

    /// Takes header bytes from the front of `data` and says what comes next.
    /// Must not be called while a blob's body is being received.
    pub fn advance(&mut self, data: &mut Bytes) -> Result<Step> {
        assert!(self.current.is_none(), "advance called inside a blob body");
        let Some((hash, requested)) = self.queue.front() else { return Ok(Step::End) };
        let n = (8 - self.got).min(data.len());
        self.header[self.got..self.got + n].copy_from_slice(&data.split_to(n));
        self.got += n;
        if self.got < 8 {
            return Ok(Step::NeedData);
        }
        self.got = 0;
        let size = u64::from_le_bytes(self.header);
        let (hash, effective) = (*hash, ranges::effective(requested, size));
        self.queue.pop_front();
        self.current = Some((hash, size, effective.clone()));
        Ok(Step::Blob { hash, size, ranges: effective })
    }

    /// Records that the current blob's body was received. For the sequence
    /// blob of a hash-sequence request, `read_sequence` is asked for its
    /// bytes (it is complete and verified now), and its children are queued.
    pub fn blob_done(
        &mut self,
        out: ReceiveOutcome,
        read_sequence: impl FnOnce(&Hash) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let (hash, size, requested) = self.current.take().expect("blob_done follows Step::Blob");
        if let Some(children) = self.seq_children.take() {
            if !size.is_multiple_of(32) || size / 32 > MAX_SEQ_CHILDREN {
                return Err(Error::Malformed { what: "hash sequence", reason: format!("{size} bytes") });
            }
            let bytes = read_sequence(&hash)?;
            let child = |c: &[u8]| (Hash(c.try_into().expect("32-byte chunks")), children.clone());
            self.queue.extend(bytes.chunks_exact(32).map(child));
        }
        self.outcomes.push(GetOutcome {
            hash,
            size,
            requested,
            wire_bytes: 0,
            data_bytes: out.data_bytes,
            held: out.held,
            complete: out.complete,
        });
        Ok(())
    }

    /// The outcomes, once [`Step::End`] was reached and the stream ended.
    pub fn finish(self) -> Vec<GetOutcome> {
        self.outcomes
    }
}

/// Where a response's bytes come from.
#[allow(async_fn_in_trait)]
pub trait ChunkSource {
    /// The next bytes of the stream; `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>>;
}

/// Receives one whole response from `src` into `store`, verifying each
/// blob as its bytes arrive. What verified is kept even when it fails.
pub async fn receive(store: &Store, src: &mut impl ChunkSource, mut seq: ResponseSequence) -> Result<Vec<GetOutcome>> {
    let mut pending = Bytes::new();
    loop {
        let step = seq.advance(&mut pending)?;
        let (hash, size, ranges) = match step {
            Step::NeedData => {
                pending = src.next_chunk().await?.ok_or_else(|| Error::Malformed {
                    what: "response",
                    reason: "the stream ended before a size header".into(),
                })?;
                continue;
            }
            Step::End => break,
            Step::Blob { hash, size, ranges } => (hash, size, ranges),
        };
        let mut incoming = store.start_receive(hash, size, &ranges)?;
        let received = async {
            while !incoming.push(&mut pending).await? {
                match src.next_chunk().await? {
                    Some(more) => pending = more,
                    None => return Err(incoming.truncated().into()),
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        // What verified is kept either way.
        let closed = incoming.close().await;
        received?;
        seq.blob_done(closed?, |h| Ok(store.read_to_vec(h)?))?;
    }
    if !pending.is_empty() || src.next_chunk().await?.is_some_and(|b| !b.is_empty()) {
        return Err(Error::Malformed { what: "response", reason: "trailing bytes after the last blob".into() });
    }
    Ok(seq.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from memory, in pieces of the given sizes (cycled).
    struct Pieces {
        data: Bytes,
        sizes: Vec<usize>,
        next: usize,
    }

    impl ChunkSource for Pieces {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
            if self.data.is_empty() {
                return Ok(None);
            }
            let n = self.sizes[self.next % self.sizes.len()].clamp(1, self.data.len());
            self.next += 1;
            Ok(Some(self.data.split_to(n)))
        }
    }

    use blixard_tests::data::pseudo_random as data;

    /// A get-many response of three blobs (one partial range), and a
    /// hash-sequence response, received whole, byte by byte and in random
    /// splits: the same outcomes and the same stored bytes every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_split_gives_the_same_items() {
        let dir = tempfile::tempdir().unwrap();
        let src = Store::open(dir.path().join("src")).unwrap();
        let blobs = [data(300_000, 1), data(5_000, 2), data(70_000, 3)];
        let mut hashes = Vec::new();
        for b in &blobs {
            let out = src.import_bytes(b.clone()).await.unwrap();
            hashes.push(out.hash);
            src.set_tag_and_release(&out.hash.to_string(), out.lease).unwrap();
        }
        let seq_bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        let seq = src.import_bytes(seq_bytes).await.unwrap();
        src.set_tag_and_release("seq", seq.lease).unwrap();

        let partial = ChunkRanges::from(blixard_store::ChunkNum(20)..blixard_store::ChunkNum(100));
        let many = vec![(hashes[0], ChunkRanges::all()), (hashes[1], ChunkRanges::all()), (hashes[2], partial)];
        let mut many_bytes = Vec::new();
        for (h, r) in &many {
            src.write_encoded(h, r, &mut many_bytes).unwrap();
        }
        let mut seq_response = Vec::new();
        src.write_encoded(&seq.hash, &ChunkRanges::all(), &mut seq_response).unwrap();
        for h in &hashes {
            src.write_encoded(h, &ChunkRanges::all(), &mut seq_response).unwrap();
        }

        let mut rng_state = 0x9e37_79b9_u64;
        let mut random = || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            (rng_state % 20_000) as usize + 1
        };
        let splits: Vec<Vec<usize>> = vec![vec![usize::MAX], vec![1], (0..64).map(|_| random()).collect()];
        let mut reference: Option<Vec<(Hash, u64, ChunkRanges, bool)>> = None;
        for (i, sizes) in splits.into_iter().enumerate() {
            for (name, response, items, children) in [
                ("many", &many_bytes, many.clone(), None),
                ("seq", &seq_response, vec![(seq.hash, ChunkRanges::all())], Some(ChunkRanges::all())),
            ] {
                let dst = Store::open(dir.path().join(format!("dst-{name}-{i}"))).unwrap();
                let mut source = Pieces { data: Bytes::from(response.clone()), sizes: sizes.clone(), next: 0 };
                let outcomes = receive(&dst, &mut source, ResponseSequence::new(items, children)).await.unwrap();
                let summary: Vec<_> = outcomes.iter().map(|o| (o.hash, o.size, o.held.clone(), o.complete)).collect();
                if name == "many" {
                    assert_eq!(reference.get_or_insert_with(|| summary.clone()), &summary, "split {i}");
                } else {
                    assert_eq!(summary.len(), 4, "the sequence and its three children");
                    assert!(summary.iter().all(|s| s.3), "all complete");
                }
                for (h, b) in hashes.iter().zip(&blobs) {
                    if dst.status(h).unwrap() == (blixard_store::BlobStatus::Complete { size: b.len() as u64 }) {
                        assert_eq!(&dst.read_to_vec(h).unwrap(), b);
                    }
                }
            }
        }
    }

    /// Trailing bytes and a stream that ends inside a header are errors.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trailing_and_short_streams_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = Store::open(dir.path().join("src")).unwrap();
        let out = src.import_bytes(data(40_000, 9)).await.unwrap();
        let mut response = Vec::new();
        src.write_encoded(&out.hash, &ChunkRanges::all(), &mut response).unwrap();
        let items = || vec![(out.hash, ChunkRanges::all())];
        let dst = Store::open(dir.path().join("dst")).unwrap();
        let mut long = response.clone();
        long.push(0);
        let mut source = Pieces { data: Bytes::from(long), sizes: vec![1000], next: 0 };
        let e = receive(&dst, &mut source, ResponseSequence::new(items(), None)).await.unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
        let mut source = Pieces { data: Bytes::from(response[..5].to_vec()), sizes: vec![2], next: 0 };
        let e = receive(&dst, &mut source, ResponseSequence::new(items(), None)).await.unwrap_err();
        assert!(e.to_string().contains("size header"), "{e}");
    }
}
