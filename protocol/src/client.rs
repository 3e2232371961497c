//! The client side: requests over a [`Connection`], with blob data verified
//! and written into a store as it arrives.
//!
//! [`get`] asks only for the chunk ranges the store does not hold yet, so an
//! interrupted transfer resumes where it stopped. Every response read has a
//! deadline ([`Deadlines`]): a server that stalls or drips is cut off with
//! [`Error::Timeout`]. Nothing unverified is ever stored: the store verifies
//! every parent and leaf against the requested hash before writing it.

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant},
};

use blixard_store::{
    content_index::{ChunkLocation, IndexDecoder, IndexEntry},
    ranges, BlobStatus, ChunkRanges, Hash, SeedOutcome, Store,
};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use blixard_net::rate::RateLimiter;

pub use crate::response::GetOutcome;
use crate::{
    frame,
    limits::*,
    response::{self, ChunkSource, ResponseSequence},
    watched::{Deadlines, WatchedRead},
    wire::*,
    Connection, Error, Result,
};

/// Deadline for small requests (ping, lookup, list, peers, observe).
pub const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Options for blob requests.
///
/// ```
/// use std::sync::{atomic::AtomicU64, Arc};
///
/// let received = Arc::new(AtomicU64::new(0));
/// let options = blixard_protocol::client::GetOptions { progress: Some(received.clone()), ..Default::default() };
/// // then: client::get(&conn, &store, hash, &options).await?
/// ```
#[derive(Clone, Default)]
pub struct GetOptions {
    /// Deadlines for the response.
    pub deadlines: Deadlines,
    /// If set, incremented by every response byte read, as it arrives.
    pub progress: Option<Arc<AtomicU64>>,
    /// If set, paces reading the response (download bandwidth limits); the
    /// sender slows down through QUIC flow control.
    pub limiter: Option<Arc<dyn RateLimiter>>,
}

impl std::fmt::Debug for GetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetOptions")
            .field("deadlines", &self.deadlines)
            .field("limited", &self.limiter.is_some())
            .finish()
    }
}

/// Fetches whatever the store lacks of `hash`.
pub async fn get(conn: &Connection, store: &Store, hash: Hash, options: &GetOptions) -> Result<GetOutcome> {
    match store.missing(&hash)? {
        None => {
            let size = match store.status(&hash)? {
                BlobStatus::Complete { size } => size,
                _ => 0,
            };
            Ok(GetOutcome {
                hash,
                size,
                requested: ChunkRanges::empty(),
                wire_bytes: 0,
                data_bytes: 0,
                held: ranges::all(size),
                complete: true,
            })
        }
        Some(wanted) => get_ranges(conn, store, hash, wanted, options).await,
    }
}

/// Fetches `ranges` of `hash` (the server must hold all of them, else
/// [`ErrorCode::NotHeld`]), verifying into `store`.
pub async fn get_ranges(
    conn: &Connection,
    store: &Store,
    hash: Hash,
    ranges: ChunkRanges,
    options: &GetOptions,
) -> Result<GetOutcome> {
    let request = Request::Get(GetRequest { hash: hash.0, ranges: RangeSpec::new(&ranges) });
    let mut outcomes = fetch(conn, store, &request, vec![(hash, ranges)], None, options).await?;
    Ok(outcomes.pop().expect("one item requested"))
}

/// Fetches several blobs on one stream, in order.
pub async fn get_many(
    conn: &Connection,
    store: &Store,
    items: Vec<(Hash, ChunkRanges)>,
    options: &GetOptions,
) -> Result<Vec<GetOutcome>> {
    if items.len() > MAX_GET_MANY_ITEMS {
        return Err(Error::Limit {
            what: "get-many items",
            actual: items.len() as u64,
            limit: MAX_GET_MANY_ITEMS as u64,
        });
    }
    let request = Request::GetMany(GetManyRequest {
        items: items.iter().map(|(h, r)| GetRequest { hash: h.0, ranges: RangeSpec::new(r) }).collect(),
    });
    fetch(conn, store, &request, items, None, options).await
}

/// Fetches a hash sequence whole, then `children` of each hash in it. The
/// first outcome is the sequence blob's.
pub async fn get_seq(
    conn: &Connection,
    store: &Store,
    seq: Hash,
    children: ChunkRanges,
    options: &GetOptions,
) -> Result<Vec<GetOutcome>> {
    let request = Request::GetSeq(GetSeqRequest { hash: seq.0, children: RangeSpec::new(&children) });
    fetch(conn, store, &request, vec![(seq, ChunkRanges::all())], Some(children), options).await
}

/// Sends `request` and receives the blob responses for `items` in order;
/// with `seq_children`, the first item is a hash sequence whose children
/// follow with those ranges.
async fn fetch(
    conn: &Connection,
    store: &Store,
    request: &Request,
    items: Vec<(Hash, ChunkRanges)>,
    seq_children: Option<ChunkRanges>,
    options: &GetOptions,
) -> Result<Vec<GetOutcome>> {
    let (mut send, recv) = conn.quinn().open_bi().await.map_err(Error::Connection)?;
    frame::write_frame(&mut send, request).await?;
    send.finish()?;
    let (reader, report) = WatchedRead::new(recv, options.deadlines, options.progress.clone());
    let mut chunks = Chunks::new(reader, options.limiter.clone());
    let result = response::receive(store, &mut chunks, ResponseSequence::new(items, seq_children)).await;
    let wire = report.bytes.load(std::sync::atomic::Ordering::Relaxed);
    match result {
        Ok(mut outcomes) => {
            // Attribute the wire bytes to the single item of a plain get.
            if outcomes.len() == 1 {
                outcomes[0].wire_bytes = wire;
            }
            Ok(outcomes)
        }
        Err(e) => Err(report.explain(e, &options.deadlines)),
    }
}

/// What [`get_tree`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeOutcome {
    /// What seeding from the tree did: bytes copied from local blobs, zero
    /// bytes kept as holes, damaged base bytes left for the network.
    pub seed: SeedOutcome,
    /// Response bytes read (the size header and the tree).
    pub wire_bytes: u64,
}

/// Fetches the content index of `hash` (`size` bytes, as its claim says):
/// its chunks, each with its offset, length and BLAKE3 hash, checked
/// against the size as they stream in (`blixard_store::content_index`).
/// A hint for finding moved bytes locally, never trusted: whatever it
/// points at is verified against the blob's tree before it is used. A peer
/// that has not built one answers [`ErrorCode::NotFound`].
pub async fn get_index(conn: &Connection, hash: Hash, size: u64, options: &GetOptions) -> Result<Vec<IndexEntry>> {
    let (mut send, recv) = conn.quinn().open_bi().await.map_err(Error::Connection)?;
    frame::write_frame(&mut send, &Request::GetIndex(GetTreeRequest { hash: hash.0 })).await?;
    send.finish()?;
    let (reader, report) = WatchedRead::new(recv, options.deadlines, options.progress.clone());
    let mut chunks = Chunks::new(reader, options.limiter.clone());
    let read = async {
        let mut decoder = IndexDecoder::new(size);
        let mut entries = Vec::new();
        while let Some(c) = chunks.next_chunk().await? {
            decoder.push(&c, |e| entries.push(e)).map_err(bad_index)?;
        }
        decoder.finish().map_err(bad_index)?;
        Ok(entries)
    };
    read.await.map_err(|e| report.explain(e, &options.deadlines))
}

fn bad_index(e: blixard_store::Error) -> Error {
    Error::Malformed { what: "content index", reason: e.to_string() }
}

/// Tree bytes handed to the store at once.
const TREE_BATCH: usize = 1 << 20;

/// What a download is seeded from (see [`get_tree`]).
#[derive(Debug, Clone, Default)]
pub struct SeedSources {
    /// Local blobs compared group by group at equal positions.
    pub bases: Vec<Hash>,
    /// Chunks of the new blob that local blobs hold (from its content
    /// index, [`get_index`]): offset in the new blob, and where they lie.
    pub moved: Vec<(u64, ChunkLocation)>,
}

/// Fetches the tree of `hash` (`size` bytes, as its claim says) and seeds
/// the store's partial blob with it (see [`Store::start_seed`]): groups
/// equal to those of the local blobs `from.bases` (at the same position)
/// or assembled from `from.moved` are copied, verified;
/// zero groups become holes; the rest is left missing, for [`get`]. The
/// tree is verified as it streams in: a lying or short one is an error and
/// records nothing. A blob of one group has no tree: nothing is asked.
pub async fn get_tree(
    conn: &Connection,
    store: &Store,
    hash: Hash,
    size: u64,
    from: &SeedSources,
    options: &GetOptions,
) -> Result<TreeOutcome> {
    if size <= blixard_store::ranges::GROUP_BYTES {
        return Ok(TreeOutcome::default());
    }
    let (mut send, recv) = conn.quinn().open_bi().await.map_err(Error::Connection)?;
    frame::write_frame(&mut send, &Request::GetTree(GetTreeRequest { hash: hash.0 })).await?;
    send.finish()?;
    let (reader, report) = WatchedRead::new(recv, options.deadlines, options.progress.clone());
    let mut chunks = Chunks::new(reader, options.limiter.clone());
    let result = receive_tree(store, &mut chunks, hash, size, from).await;
    let wire_bytes = report.bytes.load(std::sync::atomic::Ordering::Relaxed);
    match result {
        Ok(seed) => Ok(TreeOutcome { seed, wire_bytes }),
        Err(e) => Err(report.explain(e, &options.deadlines)),
    }
}

/// Reads a tree response (size header, then parents) into a seeder.
async fn receive_tree(
    store: &Store,
    chunks: &mut impl ChunkSource,
    hash: Hash,
    size: u64,
    from: &SeedSources,
) -> Result<SeedOutcome> {
    let mut header = Vec::with_capacity(8);
    let mut buf = Vec::new();
    while header.len() < 8 {
        let Some(mut c) = chunks.next_chunk().await? else {
            return Err(Error::Malformed { what: "tree response", reason: "it ended before its size".into() });
        };
        let take = (8 - header.len()).min(c.len());
        header.extend_from_slice(&c.split_to(take));
        buf.extend_from_slice(&c);
    }
    let claimed = u64::from_le_bytes(header.try_into().expect("8 bytes"));
    if claimed != size {
        return Err(blixard_store::Error::SizeMismatch { hash, claimed, known: size }.into());
    }
    let blocking = |e: tokio::task::JoinError| Error::Store(e.into());
    let (s, bases, moved) = (store.clone(), from.bases.clone(), from.moved.clone());
    let start = move || s.start_seed(hash, size, &bases).map(|seeder| seeder.with_moved_chunks(moved));
    let mut seeder = tokio::task::spawn_blocking(start).await.map_err(blocking)??;
    loop {
        let next = chunks.next_chunk().await?;
        if let Some(c) = &next {
            // Cheap check before buffering: the store checks exactly.
            if (buf.len() + c.len()) as u64 > seeder.remaining() + TREE_BATCH as u64 {
                return Err(Error::Malformed {
                    what: "tree response",
                    reason: "longer than the tree of its size".into(),
                });
            }
            buf.extend_from_slice(c);
        }
        if buf.len() >= TREE_BATCH || (next.is_none() && !buf.is_empty()) {
            let piece = std::mem::take(&mut buf);
            seeder =
                tokio::task::spawn_blocking(move || seeder.push(&piece).map(|()| seeder)).await.map_err(blocking)??;
        }
        if next.is_none() {
            break;
        }
    }
    Ok(tokio::task::spawn_blocking(move || seeder.finish()).await.map_err(blocking)??)
}

/// Chunks taken from the stream per read (one lock of the connection).
const CHUNKS_PER_READ: usize = 32;

/// A response stream read chunk by chunk, zero-copy, paced by the download
/// limiter: the QUIC shell around [`response::receive`].
struct Chunks {
    src: WatchedRead<quinn::RecvStream>,
    /// Chunks read and not yet handed out: `ready[next..count]`.
    ready: Vec<Bytes>,
    next: usize,
    count: usize,
    limiter: Option<Arc<dyn RateLimiter>>,
}

impl Chunks {
    fn new(src: WatchedRead<quinn::RecvStream>, limiter: Option<Arc<dyn RateLimiter>>) -> Self {
        Chunks { src, ready: vec![Bytes::new(); CHUNKS_PER_READ], next: 0, count: 0, limiter }
    }
}

impl ChunkSource for Chunks {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.next == self.count {
            let read = self.src.read_chunks(&mut self.ready).await.map_err(Error::StreamIo)?;
            let Some(n) = read else { return Ok(None) };
            (self.next, self.count) = (0, n);
            if let Some(limiter) = &self.limiter {
                let wait = limiter.reserve(self.ready[..n].iter().map(|b| b.len() as u64).sum());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        self.next += 1;
        Ok(Some(std::mem::take(&mut self.ready[self.next - 1])))
    }
}

/// Sends a small request and reads its one response frame.
async fn small<T: DeserializeOwned>(conn: &Connection, request: &Request, what: &'static str) -> Result<T> {
    let work = async {
        let (mut send, mut recv) = conn.quinn().open_bi().await?;
        frame::write_frame(&mut send, request).await?;
        send.finish()?;
        frame::read_frame(&mut recv, what).await
    };
    tokio::time::timeout(SMALL_REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| Error::Timeout(format!("no {what} within {SMALL_REQUEST_TIMEOUT:?}")))?
}

/// What a peer holds of `hash` now.
pub async fn observe(conn: &Connection, hash: Hash) -> Result<Availability> {
    small(conn, &Request::Observe(ObserveRequest { hash: hash.0, watch: false }), "availability").await
}

/// A stream of availability updates for one blob.
pub struct Observer {
    recv: quinn::RecvStream,
    _send: quinn::SendStream,
}

impl Observer {
    /// The next update; `None` when the peer ends the stream (the blob is
    /// complete there, or the peer's observe time limit passed).
    pub async fn next(&mut self) -> Result<Option<Availability>> {
        match frame::read_frame_body(&mut self.recv, MAX_RESPONSE_FRAME_BYTES).await? {
            Some(body) => decode_body("availability", &body).map(Some),
            None => Ok(None),
        }
    }
}

/// Observes `hash` with updates as the peer's holdings grow.
pub async fn watch(conn: &Connection, hash: Hash) -> Result<Observer> {
    let (mut send, recv) = conn.quinn().open_bi().await?;
    frame::write_frame(&mut send, &Request::Observe(ObserveRequest { hash: hash.0, watch: true })).await?;
    send.finish()?;
    Ok(Observer { recv, _send: send })
}

/// Looks up one resource.
/// The claim is checked ([`ResourceInfo::verify`]: its size, its signature)
/// and must be for exactly what was asked: a genuine claim for another
/// kind, name or version (replayed by whoever answers) is
/// [`Error::BadClaim`]. Whether its publisher is trusted is the caller's
/// question.
pub async fn lookup(conn: &Connection, kind: &str, name: &str, version: &str) -> Result<Option<ResourceInfo>> {
    let req = Request::Lookup(LookupRequest { kind: kind.into(), name: name.into(), version: version.into() });
    let found = small::<LookupResponse>(conn, &req, "lookup response").await?.0;
    if let Some(claim) = &found {
        claim.verify()?;
        claim.check_answers(kind, name, version)?;
    }
    Ok(found)
}

/// Lists a peer's resources, optionally of one kind.
/// Every claim's signature is checked ([`Error::BadClaim`] if one is forged).
pub async fn list(conn: &Connection, kind: Option<&str>) -> Result<ListResponse> {
    let list: ListResponse =
        small(conn, &Request::List(ListRequest { kind: kind.map(Into::into) }), "list response").await?;
    list.items.iter().try_for_each(ResourceInfo::verify)?;
    Ok(list)
}

/// What a ping measured.
#[derive(Debug, Clone, Copy)]
pub struct PingOutcome {
    /// The address the peer sees us at.
    pub observed: SocketAddr,
    /// Round trip of the request.
    pub rtt: Duration,
}

/// Pings a peer: round trip and the address it sees us at.
pub async fn ping(conn: &Connection) -> Result<PingOutcome> {
    let start = Instant::now();
    let pong: Pong = small(conn, &Request::Ping, "pong").await?;
    Ok(PingOutcome { observed: pong.observed.into(), rtt: start.elapsed() })
}

/// The peers a peer knows.
pub async fn peers(conn: &Connection) -> Result<Vec<PeerEntry>> {
    let r: PeersResponse = small(conn, &Request::Peers, "peers response").await?;
    if r.peers.len() > MAX_PEERS || r.peers.iter().any(|p| p.addrs.len() > MAX_ADDRS_PER_PEER) {
        return Err(Error::Malformed { what: "peers response", reason: "more peers or addresses than allowed".into() });
    }
    Ok(r.peers)
}
