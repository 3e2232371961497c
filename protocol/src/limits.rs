//! Every limit of the protocol, in one place (and in `docs/PROTOCOL.md`).
//!
//! The constants are part of the protocol: a peer that exceeds one gets the
//! documented error code. [`ServerLimits`] holds the knobs a server may tune
//! for its own resources (they never loosen a protocol constant).

use std::time::Duration;

/// Largest request frame body, bytes.
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// Largest response frame body (availability, lists, peers), bytes.
pub const MAX_RESPONSE_FRAME_BYTES: u32 = 1024 * 1024;
/// Most range boundaries in one range set (so at most 1024 ranges).
pub const MAX_RANGE_BOUNDARIES: usize = 2048;
/// Most range boundaries in all the range sets of one request.
pub const MAX_REQUEST_BOUNDARIES: usize = 4096;
/// Most items in one get-many request.
pub const MAX_GET_MANY_ITEMS: usize = 1024;
/// Most children of a hash sequence served by one get-seq request (the
/// sequence blob is then at most 2 MiB).
pub const MAX_SEQ_CHILDREN: u64 = 65_536;
/// Most bidirectional streams a peer may have open on one connection at once.
pub use blixard_net::endpoint::MAX_STREAMS_PER_CONNECTION;
/// Most resources in one list response.
pub const MAX_LIST_ITEMS: usize = 1024;
/// Most peers in one peers response.
pub const MAX_PEERS: usize = 256;
/// Most addresses per peer in a peers response.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Longest string field (kind, name, version) in a request or response.
pub const MAX_STRING_BYTES: usize = 255 + 7;
/// How often a watched observe re-checks the blob, at most.
pub const OBSERVE_INTERVAL: Duration = Duration::from_millis(200);

/// A server's own resource knobs. Memory a server spends on peers is bounded
/// by `max_connections` x (the server send window + 1 MiB receive window)
/// plus `max_concurrent_responses` x about 1 MiB of encoded batches queued for
/// sending (`blixard_store::Store::encode_response`; owned data is mapped, not copied).
///
/// Anonymous peers share what the reserved room leaves (see
/// [`crate::admission`]): a flood of connections, identities or slow
/// readers never locks out a configured peer.
///
/// ```
/// use std::time::Duration;
///
/// let limits = blixard_protocol::limits::ServerLimits {
///     request_timeout: Duration::from_secs(5),
///     ..Default::default()
/// };
/// // then: server::ServerContext::builder(store, limits).build()
/// ```
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time a client has to send its whole request after opening a stream.
    pub request_timeout: Duration,
    /// Blob responses being encoded at once, over all connections (each takes
    /// a blocking thread and up to 1 MiB of buffers); further ones wait.
    pub max_concurrent_responses: usize,
    /// Response slots only privileged peers may take.
    pub reserved_responses: usize,
    /// Response slots one anonymous node id may hold at once.
    pub max_responses_per_peer: usize,
    /// Response slots one connection may hold at once.
    pub max_responses_per_connection: usize,
    /// Connections served at once; further ones are refused.
    pub max_connections: usize,
    /// Connections only privileged peers may take.
    pub reserved_connections: usize,
    /// Connections from one IP address by anonymous peers.
    pub max_connections_per_ip: usize,
    /// An anonymous connection with no request stream open for this long is
    /// closed.
    pub idle_connection: Duration,
    /// At the per-address cap, a new connection from that address closes
    /// the one that has had no request stream open the longest, if that
    /// is at least this long (so one address cannot lock out the honest
    /// nodes behind it, a carrier-grade NAT say). Privileged peers are
    /// never closed for room.
    pub evict_idle_after: Duration,
    /// Time a watched observe stream may stay open.
    pub max_observe: Duration,
    /// The window over which a response's pace is judged: a peer that
    /// accepts less than `min_response_rate` bytes/s over it (time spent in
    /// our own upload limiter does not count) has its response reset,
    /// freeing the slot.
    pub response_stall: Duration,
    /// Bytes per second a response must move, averaged over
    /// `response_stall`; 0 only resets responses that move nothing.
    pub min_response_rate: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            request_timeout: Duration::from_secs(10),
            max_concurrent_responses: 32,
            reserved_responses: 8,
            max_responses_per_peer: 8,
            max_responses_per_connection: 8,
            max_connections: 256,
            reserved_connections: 32,
            max_connections_per_ip: 32,
            idle_connection: Duration::from_secs(20),
            evict_idle_after: Duration::from_secs(2),
            max_observe: Duration::from_secs(30 * 60),
            response_stall: Duration::from_secs(10),
            min_response_rate: 32 * 1024,
        }
    }
}
