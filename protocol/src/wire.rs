//! The wire format: framing, messages and error codes, with the protocol's
//! one bincode configuration. Nothing here touches a socket: the functions
//! turn bytes into checked messages and back, so they can be tested and
//! fuzzed alone (`docs/PROTOCOL.md` specifies every byte).
//!
//! A frame is a `u32` little-endian body length followed by the body, a
//! bincode 2 value in the configuration [`config`]: little-endian, fixed-width
//! integers, enum tags as `u32`, sequence lengths as `u64`, `Option` as one
//! tag byte.

use std::net::{IpAddr, SocketAddr};

use blixard_store::{ranges, ChunkRanges, Hash};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{limits::*, Error, NodeId, Result};
pub use blixard_net::ErrorCode;

/// A request, the first and only frame a client sends on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Tag 0: ranges of one blob.
    Get(GetRequest),
    /// Tag 1: ranges of several blobs, answered in order.
    GetMany(GetManyRequest),
    /// Tag 2: a hash sequence and the same ranges of each of its children.
    GetSeq(GetSeqRequest),
    /// Tag 3: which ranges of a blob the peer holds.
    Observe(ObserveRequest),
    /// Tag 4: one resource by `(kind, name, version)`.
    Lookup(LookupRequest),
    /// Tag 5: the peer's resources, optionally of one kind.
    List(ListRequest),
    /// Tag 6: liveness and the address the peer sees us at.
    Ping,
    /// Tag 7: the peers this peer knows.
    Peers,
    /// Tag 8: the whole tree (every parent) of a complete blob, to compare
    /// with local blobs before fetching (`docs/PROTOCOL.md` §5.4).
    GetTree(GetTreeRequest),
    /// Tag 9: the content-defined index of a complete blob, to find moved
    /// bytes in local blobs (`docs/PROTOCOL.md` §5.5).
    GetIndex(GetTreeRequest),
}

/// Number of request tags defined in this protocol version.
pub const REQUEST_TAGS: u32 = 10;

/// Chunk ranges (1 KiB chunks) as sorted, strictly increasing boundaries:
/// `[a, b, c]` is `a..b` and `c..` (an odd count leaves the last range open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSpec(pub Vec<u64>);

impl RangeSpec {
    /// The spec for a range set.
    pub fn new(ranges: &ChunkRanges) -> Self {
        RangeSpec(ranges::boundaries(ranges))
    }

    /// All chunks of a blob.
    pub fn all() -> Self {
        RangeSpec(vec![0])
    }

    /// The range set of a request, checked: boundaries strictly increasing,
    /// at most [`MAX_RANGE_BOUNDARIES`].
    pub fn to_ranges(&self) -> Result<ChunkRanges> {
        self.to_ranges_within(MAX_RANGE_BOUNDARIES)
    }

    /// The range set, checked: boundaries strictly increasing, at most `limit`
    /// (responses describe holdings, which may be more fragmented than a
    /// request; their frame size bounds them).
    pub fn to_ranges_within(&self, limit: usize) -> Result<ChunkRanges> {
        if self.0.len() > limit {
            return Err(Error::Limit { what: "range boundaries", actual: self.0.len() as u64, limit: limit as u64 });
        }
        ranges::from_boundaries(&self.0)
            .ok_or_else(|| Error::Malformed { what: "ranges", reason: "boundaries are not strictly increasing".into() })
    }
}

/// Get: ranges of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRequest {
    /// The blob's BLAKE3 hash.
    pub hash: [u8; 32],
    /// The chunks wanted.
    pub ranges: RangeSpec,
}

/// Get tree (and get index): one blob, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetTreeRequest {
    /// The blob's BLAKE3 hash.
    pub hash: [u8; 32],
}

/// Get many: blobs answered one after another, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetManyRequest {
    /// At most [`MAX_GET_MANY_ITEMS`].
    pub items: Vec<GetRequest>,
}

/// Get a hash sequence (a blob of concatenated 32-byte hashes) whole, then
/// `children` of each hash in it, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSeqRequest {
    /// The sequence blob's hash.
    pub hash: [u8; 32],
    /// The chunks wanted of every child.
    pub children: RangeSpec,
}

/// Observe: what the peer holds of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserveRequest {
    /// The blob's hash.
    pub hash: [u8; 32],
    /// Keep the stream open and send a new frame whenever the held ranges grow.
    pub watch: bool,
}

/// Look up one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// Kind in text form: `vm-image`, `configuration`, `logs`, `metrics`, `custom:NAME`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// List resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Only this kind (text form), or all.
    pub kind: Option<String>,
}

/// What a peer holds of a blob (an observe response frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// The size, if known (from the first response the peer received).
    pub size: Option<u64>,
    /// True if the size is proven (the last chunk verified).
    pub size_verified: bool,
    /// Verified chunk ranges held.
    pub ranges: RangeSpec,
    /// True if the peer holds every byte.
    pub complete: bool,
}

/// A resource record (lookup and list responses): a publisher's claim that
/// `(kind, name, version)` is the blob `hash`, signed by the publisher
/// (see `claim.rs` for what is signed and how it is checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// Kind in text form.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The blob's hash.
    pub hash: [u8; 32],
    /// Size in bytes.
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The node that makes the claim.
    pub publisher: NodeId,
    /// Its Ed25519 signature over the claim, as two 32-byte halves.
    pub signature: [[u8; 32]; 2],
}

impl TryFrom<ResourceInfo> for blixard_store::Resource {
    type Error = Error;
    /// The record as a store type; an unknown kind is malformed.
    fn try_from(r: ResourceInfo) -> Result<Self> {
        let kind = r
            .kind
            .parse()
            .map_err(|e: blixard_store::Error| Error::Malformed { what: "resource record", reason: e.to_string() })?;
        let (name, version, hash, size, created_unix_ms) = (r.name, r.version, Hash(r.hash), r.size, r.created_unix_ms);
        Ok(blixard_store::Resource { kind, name, version, hash, size, created_unix_ms })
    }
}

/// The lookup response: the record, if the peer has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupResponse(pub Option<ResourceInfo>);

/// The list response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// At most [`MAX_LIST_ITEMS`], ordered by kind, name, version.
    pub items: Vec<ResourceInfo>,
    /// True if there were more.
    pub truncated: bool,
}

/// An IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAddr {
    /// The IP.
    pub ip: WireIp,
    /// The port.
    pub port: u16,
}

/// An IP address: tag 0 with 4 bytes, or tag 1 with 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireIp {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

impl From<SocketAddr> for WireAddr {
    fn from(a: SocketAddr) -> Self {
        let ip = match a.ip() {
            IpAddr::V4(v4) => WireIp::V4(v4.octets()),
            IpAddr::V6(v6) => WireIp::V6(v6.octets()),
        };
        WireAddr { ip, port: a.port() }
    }
}

impl From<WireAddr> for SocketAddr {
    fn from(a: WireAddr) -> Self {
        let ip = match a.ip {
            WireIp::V4(b) => IpAddr::from(b),
            WireIp::V6(b) => IpAddr::from(b),
        };
        SocketAddr::new(ip, a.port)
    }
}

/// The ping response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The address the responder sees the requester at.
    pub observed: WireAddr,
}

/// A known peer, as peer exchange carries it: its id, direct addresses
/// and home relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Its node id.
    pub id: NodeId,
    /// Addresses it was reached at, at most [`MAX_ADDRS_PER_PEER`].
    pub addrs: Vec<WireAddr>,
    /// The relay it keeps a connection to, if known.
    pub relay: Option<WireRelay>,
}

/// A relay as the wire carries it: its id and TCP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRelay {
    /// The relay's node id.
    pub id: NodeId,
    /// Its address.
    pub addr: WireAddr,
}

impl From<crate::RelayAddr> for WireRelay {
    fn from(r: crate::RelayAddr) -> Self {
        WireRelay { id: r.id, addr: r.addr.into() }
    }
}

impl From<WireRelay> for crate::RelayAddr {
    fn from(r: WireRelay) -> Self {
        crate::RelayAddr { id: r.id, addr: r.addr.into() }
    }
}

impl From<&PeerEntry> for crate::NodeAddr {
    fn from(p: &PeerEntry) -> Self {
        let direct_addrs = p.addrs.iter().take(MAX_ADDRS_PER_PEER).map(|a| SocketAddr::from(*a)).collect();
        crate::NodeAddr { id: Some(p.id), direct_addrs, relay: p.relay.map(Into::into) }
    }
}

/// The peers response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersResponse {
    /// At most [`MAX_PEERS`].
    pub peers: Vec<PeerEntry>,
}

/// The protocol's bincode configuration: little-endian, fixed-width integers.
/// The limit is applied per decode by [`decode_body`].
pub fn config() -> Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding()
}

/// The type of [`config`].
pub type Config = bincode::config::Configuration<bincode::config::LittleEndian, bincode::config::Fixint>;

/// Encodes a value as a frame: `u32` LE body length, then the body.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let body = bincode::serde::encode_to_vec(value, config()).expect("protocol types always encode");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a frame body of exactly `body.len()` bytes (no trailing bytes).
pub fn decode_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T> {
    let cfg = config().with_limit::<{ MAX_RESPONSE_FRAME_BYTES as usize }>();
    let (value, used) =
        bincode::serde::decode_from_slice(body, cfg).map_err(|e| Error::Malformed { what, reason: e.to_string() })?;
    if used != body.len() {
        return Err(Error::Malformed { what, reason: format!("{} trailing bytes", body.len() - used) });
    }
    Ok(value)
}

/// Why a request body was rejected, with the code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The code to reset the stream with.
    pub code: ErrorCode,
    /// What was wrong, for the log.
    pub reason: String,
}

/// Decodes and checks a request body against every protocol limit. The
/// caller has already refused lengths over [`MAX_REQUEST_BYTES`].
pub fn decode_request(body: &[u8]) -> std::result::Result<Request, Rejection> {
    let reject = |code, reason: String| Rejection { code, reason };
    if body.len() > MAX_REQUEST_BYTES as usize {
        return Err(reject(ErrorCode::RequestTooLarge, format!("{} bytes", body.len())));
    }
    if body.len() < 4 {
        return Err(reject(ErrorCode::BadRequest, "shorter than a tag".into()));
    }
    let tag = u32::from_le_bytes(body[..4].try_into().expect("4 bytes"));
    if tag >= REQUEST_TAGS {
        return Err(reject(ErrorCode::UnknownRequest, format!("tag {tag}")));
    }
    let req: Request = decode_body("request", body).map_err(|e| reject(ErrorCode::BadRequest, e.to_string()))?;
    check_request(&req)?;
    Ok(req)
}

fn check_request(req: &Request) -> std::result::Result<(), Rejection> {
    let too_many = |what: &str, n: usize, limit: usize| Rejection {
        code: ErrorCode::TooMany,
        reason: format!("{n} {what}, over the limit of {limit}"),
    };
    let check_ranges = |r: &RangeSpec| -> std::result::Result<(), Rejection> {
        r.to_ranges().map(|_| ()).map_err(|e| Rejection {
            code: if matches!(e, Error::Limit { .. }) { ErrorCode::TooMany } else { ErrorCode::BadRequest },
            reason: e.to_string(),
        })
    };
    let check_str = |s: &str| -> std::result::Result<(), Rejection> {
        if s.len() > MAX_STRING_BYTES {
            return Err(Rejection { code: ErrorCode::BadRequest, reason: format!("a {}-byte string", s.len()) });
        }
        Ok(())
    };
    match req {
        Request::Get(g) => check_ranges(&g.ranges),
        Request::GetMany(m) => {
            if m.items.len() > MAX_GET_MANY_ITEMS {
                return Err(too_many("items", m.items.len(), MAX_GET_MANY_ITEMS));
            }
            let total: usize = m.items.iter().map(|i| i.ranges.0.len()).sum();
            if total > MAX_REQUEST_BOUNDARIES {
                return Err(too_many("range boundaries", total, MAX_REQUEST_BOUNDARIES));
            }
            m.items.iter().try_for_each(|i| check_ranges(&i.ranges))
        }
        Request::GetSeq(s) => check_ranges(&s.children),
        Request::Lookup(l) => [&l.kind, &l.name, &l.version].into_iter().try_for_each(|s| check_str(s)),
        Request::List(l) => l.kind.as_deref().map_or(Ok(()), check_str),
        Request::Observe(_) | Request::Ping | Request::Peers | Request::GetTree(_) | Request::GetIndex(_) => Ok(()),
    }
}

/// The chunks a response for `requested` carries once the blob's `size` is
/// known (see [`ranges::effective`]); both sides compute it.
pub fn effective_ranges(requested: &ChunkRanges, size: u64) -> ChunkRanges {
    ranges::effective(requested, size)
}

/// A blob hash from its wire form.
pub fn hash(bytes: &[u8; 32]) -> Hash {
    Hash(*bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_junk() {
        let req = Request::Get(GetRequest { hash: [7; 32], ranges: RangeSpec(vec![0, 16, 32]) });
        let frame = encode_frame(&req);
        assert_eq!(&frame[..4], &((frame.len() - 4) as u32).to_le_bytes());
        assert_eq!(decode_request(&frame[4..]).unwrap(), req);
        let mut extra = frame[4..].to_vec();
        extra.push(0);
        assert_eq!(decode_request(&extra).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(decode_request(&[10, 0, 0, 0]).unwrap_err().code, ErrorCode::UnknownRequest);
        assert_eq!(decode_request(&[0, 0]).unwrap_err().code, ErrorCode::BadRequest);
        let unsorted = Request::Get(GetRequest { hash: [0; 32], ranges: RangeSpec(vec![5, 5]) });
        assert_eq!(decode_request(&encode_frame(&unsorted)[4..]).unwrap_err().code, ErrorCode::BadRequest);
        let many = Request::Get(GetRequest { hash: [0; 32], ranges: RangeSpec((0..3000).collect()) });
        assert_eq!(decode_request(&encode_frame(&many)[4..]).unwrap_err().code, ErrorCode::TooMany);
    }

    #[test]
    fn a_huge_length_prefix_inside_a_body_is_refused_without_allocating() {
        // A get-many claiming 2^60 items in a 16-byte body.
        let mut body = 1u32.to_le_bytes().to_vec();
        body.extend_from_slice(&(1u64 << 60).to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        assert_eq!(decode_request(&body).unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn error_codes_round_trip() {
        for c in 0..20 {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
    }
}
