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
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;
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
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Time a client has to send its whole request after opening a stream.
    pub request_timeout: Duration,
    /// Blob responses being encoded at once, over all connections (each takes
    /// a blocking thread and up to 1 MiB of buffers); further ones wait.
    pub max_concurrent_responses: usize,
    /// Connections served at once; further ones are refused.
    pub max_connections: usize,
    /// Time a watched observe stream may stay open.
    pub max_observe: Duration,
    /// A response that cannot write a byte for this long (the client stopped
    /// reading) is reset, freeing its permit.
    pub response_stall: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            request_timeout: Duration::from_secs(10),
            max_concurrent_responses: 32,
            max_connections: 256,
            max_observe: Duration::from_secs(30 * 60),
            response_stall: Duration::from_secs(30),
        }
    }
}
