//! The server side: answers every request stream of a connection from a
//! store, within the protocol's limits.
//!
//! One task per stream (at most [`MAX_STREAMS_PER_CONNECTION`] per connection,
//! enforced by QUIC flow control); blob responses are encoded on the blocking
//! pool under a server-wide permit count. A request that cannot be answered
//! gets its stream reset with a documented [`ErrorCode`]; nothing a client
//! sends can panic the server or make it allocate beyond the caps.
//!
//! This module runs connections and streams and answers the small
//! requests; [`respond`] sends the responses that carry blob bytes, trees
//! and content indexes.

use std::{net::SocketAddr, sync::Arc};

use blixard_store::{Hash, ResourceKind, Store};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

pub use self::respond::availability;
use self::respond::{answer_blobs, observe, send_index, send_tree};
use crate::{
    admission::{Admission, ConnectionTicket, PrivilegeSource},
    frame,
    limits::*,
    wire::{self, *},
    Connection, Endpoint, Error, NodeId, Result, SecretKey,
};
use blixard_net::rate::RateLimiter;

pub(crate) mod respond;

/// The peers this node knows, for peers requests.
pub type PeerSource = Arc<dyn Fn() -> Vec<PeerEntry> + Send + Sync>;

/// Claims of other publishers that this node keeps for its resources (a
/// download keeps the claim it was resolved by); a resource without one is
/// claimed by this node itself.
pub type ClaimSource = Arc<dyn Fn(&blixard_store::Resource) -> Option<ResourceInfo> + Send + Sync>;

/// Called with a peer's id on its connection's first request.
pub type RequestHook = Arc<dyn Fn(&NodeId) + Send + Sync>;

/// What a server answers from, and its limits. Built with
/// [`ServerContext::builder`].
///
/// ```
/// use blixard_net::rate::TokenBucket;
/// use blixard_protocol::server::ServerContext;
/// use std::sync::Arc;
///
/// let store = blixard_store::Store::temporary()?;
/// let ctx = ServerContext::builder(store, Default::default())
///     .upload_limiter(Arc::new(TokenBucket::new(50_000_000, 1 << 20)))
///     .build();
/// // then: tokio::spawn(server::accept_loop(endpoint, ctx));
/// # Ok::<(), blixard_store::Error>(())
/// ```
pub struct ServerContext {
    store: Store,
    limits: ServerLimits,
    peers: Option<PeerSource>,
    upload_limiter: Option<Arc<dyn RateLimiter>>,
    claims: Option<ClaimSource>,
    privileged: Option<PrivilegeSource>,
    on_request: Option<RequestHook>,
    /// When each blob was last re-checked after a peer's report.
    rechecked: std::sync::Mutex<std::collections::HashMap<Hash, std::time::Instant>>,
    /// The key that signs this node's own claims: the endpoint's, set by
    /// [`accept_loop`].
    signer: std::sync::OnceLock<Arc<SecretKey>>,
    admission: Arc<Admission>,
}

/// Builds a [`ServerContext`].
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use blixard_protocol::{limits::ServerLimits, server::ServerContext};
/// let dir = tempfile::tempdir()?;
/// let store = blixard_store::Store::open(dir.path())?;
/// let ctx = ServerContext::builder(store, ServerLimits::default())
///     .privileged(std::sync::Arc::new(|_id| false))
///     .build();
/// # drop(ctx); Ok(()) }
/// ```
pub struct ServerBuilder {
    ctx: ServerContext,
}

impl ServerBuilder {
    /// Answers peers requests from `peers`.
    pub fn peers(mut self, peers: PeerSource) -> Self {
        self.ctx.peers = Some(peers);
        self
    }

    /// Paces every byte of blob data served.
    pub fn upload_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.ctx.upload_limiter = Some(limiter);
        self
    }

    /// Serves claims kept from other publishers.
    pub fn claims(mut self, claims: ClaimSource) -> Self {
        self.ctx.claims = Some(claims);
        self
    }

    /// Tells configured, allowlisted and trusted peers (who get the reserved
    /// room) from anonymous ones. Without it every peer is anonymous.
    pub fn privileged(mut self, privileged: PrivilegeSource) -> Self {
        self.ctx.privileged = Some(privileged);
        self
    }

    /// Calls `hook` with a peer's id when a connection of its opens its
    /// first request stream (a node keeps peers that asked it something).
    pub fn on_first_request(mut self, hook: RequestHook) -> Self {
        self.ctx.on_request = Some(hook);
        self
    }

    /// The context, ready for [`accept_loop`].
    pub fn build(self) -> Arc<ServerContext> {
        Arc::new(self.ctx)
    }
}

impl ServerContext {
    /// A context serving `store` with `limits`, nothing else.
    pub fn new(store: Store, limits: ServerLimits) -> Arc<Self> {
        Self::builder(store, limits).build()
    }

    /// A builder for a context serving `store` with `limits`.
    pub fn builder(store: Store, limits: ServerLimits) -> ServerBuilder {
        ServerBuilder {
            ctx: ServerContext {
                admission: Admission::new(limits.clone()),
                store,
                limits,
                peers: None,
                upload_limiter: None,
                claims: None,
                privileged: None,
                on_request: None,
                rechecked: Default::default(),
                signer: std::sync::OnceLock::new(),
            },
        }
    }

    /// The claim this server makes for `r`: one kept from its publisher,
    /// or its own, signed now. `None` without a signer.
    fn claim(&self, r: &blixard_store::Resource) -> Option<ResourceInfo> {
        let kept = self.claims.as_ref().and_then(|c| c(r)).filter(|c| c.hash == r.hash.0 && c.verify().is_ok());
        kept.or_else(|| self.signer.get().map(|key| ResourceInfo::sign(r, key)))
    }

    fn is_privileged(&self, id: &NodeId) -> bool {
        self.privileged.as_ref().is_some_and(|p| p(id))
    }
}

/// Accepts connections on `endpoint` and serves each until the endpoint
/// closes. Connections over the limits ([`ServerLimits::max_connections`],
/// the reserved room, the per-IP cap) are closed with [`ErrorCode::Refused`]
/// and a reason.
pub async fn accept_loop(endpoint: Endpoint, ctx: Arc<ServerContext>) {
    accept_loop_with(endpoint, ctx, |_| {}).await
}

/// [`accept_loop`], calling `on_connect` with each admitted connection
/// before it is served (a node notes who connected to it).
pub async fn accept_loop_with(endpoint: Endpoint, ctx: Arc<ServerContext>, on_connect: impl Fn(&Connection)) {
    let _ = ctx.signer.set(endpoint.key());
    while let Some(conn) = endpoint.accept().await {
        match conn {
            Ok(conn) => {
                let Some((ticket, privileged)) = admit(&ctx, &conn) else { continue };
                on_connect(&conn);
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_admitted(conn, ctx, privileged, ticket.activity.clone()).await {
                        debug!("connection ended: {e}");
                    }
                    drop(ticket);
                });
            }
            Err(e) => debug!("incoming connection failed: {e}"),
        }
    }
}

/// Serves every request stream `conn` opens until it closes, if the
/// admission limits let it in.
pub async fn serve(conn: Connection, ctx: Arc<ServerContext>) -> Result<()> {
    match admit(&ctx, &conn) {
        Some((ticket, privileged)) => serve_admitted(conn, ctx, privileged, ticket.activity.clone()).await,
        None => Ok(()),
    }
}

/// Admits `conn` (its place, and whether it is privileged), or closes it
/// with [`ErrorCode::Refused`] and the reason.
fn admit(ctx: &ServerContext, conn: &Connection) -> Option<(ConnectionTicket, bool)> {
    let privileged = ctx.is_privileged(&conn.remote_id());
    let victim = conn.clone();
    let close =
        move || victim.close(ErrorCode::Refused, "closed: idle, making room for a new connection from your address");
    match ctx.admission.connect(conn.remote_address().ip(), privileged, close) {
        Ok(ticket) => Some((ticket, privileged)),
        Err(refusal) => {
            debug!(peer = %conn.remote_id(), addr = %conn.remote_address(), "{}", refusal.reason());
            conn.close(ErrorCode::Refused, refusal.reason());
            None
        }
    }
}

/// What one admitted connection's streams share.
struct Peer {
    id: NodeId,
    privileged: bool,
    remote: Option<SocketAddr>,
    /// This connection's response slots.
    responses: Semaphore,
    /// Blobs served on it (the first [`MAX_RECHECK`]), re-checked if the
    /// peer closes saying our data failed its verification.
    served: std::sync::Mutex<Vec<Hash>>,
}

/// Blobs per connection re-checked after a peer reports bad data.
pub(super) const MAX_RECHECK: usize = 16;
/// A blob is re-checked on a peer's report at most this often.
const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

async fn serve_admitted(
    conn: Connection,
    ctx: Arc<ServerContext>,
    privileged: bool,
    activity: Arc<crate::admission::Activity>,
) -> Result<()> {
    debug!(peer = %conn.remote_id(), addr = %conn.remote_address(), privileged, "serving");
    let peer = Arc::new(Peer {
        id: conn.remote_id(),
        privileged,
        remote: conn.observed_addr(),
        responses: Semaphore::new(ctx.limits.max_responses_per_connection.max(1)),
        served: std::sync::Mutex::new(Vec::new()),
    });
    // Streams open now; an anonymous connection with none for
    // `idle_connection` is closed.
    let open = Arc::new(());
    let mut first = true;
    loop {
        let accepted = tokio::select! {
            a = conn.quinn().accept_bi() => a,
            _ = tokio::time::sleep(ctx.limits.idle_connection), if !privileged => {
                if Arc::strong_count(&open) == 1 {
                    debug!(peer = %peer.id, "closing an idle connection");
                    conn.close(ErrorCode::Ok, "idle");
                    return Ok(());
                }
                continue;
            }
        };
        let (send, recv) = match accepted {
            Ok(s) => s,
            Err(quinn::ConnectionError::ApplicationClosed(c))
                if c.error_code == ErrorCode::ProtocolViolation.varint() =>
            {
                recheck(&ctx, &peer);
                return Ok(());
            }
            Err(
                quinn::ConnectionError::ApplicationClosed(_)
                | quinn::ConnectionError::LocallyClosed
                | quinn::ConnectionError::TimedOut,
            ) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if first {
            first = false;
            if let Some(hook) = &ctx.on_request {
                hook(&peer.id);
            }
        }
        let ctx = ctx.clone();
        let (peer, open, activity) = (peer.clone(), open.clone(), activity.clone());
        activity.stream_opened();
        tokio::spawn(async move {
            handle_stream(ctx, send, recv, &peer).await;
            activity.stream_ended();
            drop(open);
        });
    }
}

async fn handle_stream(ctx: Arc<ServerContext>, mut send: quinn::SendStream, mut recv: quinn::RecvStream, peer: &Peer) {
    let remote = peer.remote;
    let request = match tokio::time::timeout(ctx.limits.request_timeout, read_request(&mut recv)).await {
        Err(_) => Err(Rejection { code: ErrorCode::RequestTimeout, reason: "request not sent in time".into() }),
        Ok(r) => r,
    };
    let request = match request {
        Ok(r) => r,
        Err(rej) => {
            debug!(?remote, code = %rej.code, "rejected request: {}", rej.reason);
            reject(&mut send, &mut recv, rej.code);
            return;
        }
    };
    // The request is complete: nothing more is read from this stream.
    let _ = recv.stop(ErrorCode::Ok.varint());
    let (mut send, result) = match request {
        Request::Get(_) | Request::GetMany(_) | Request::GetSeq(_) => answer_blobs(&ctx, request, send, peer).await,
        Request::GetTree(t) => send_tree(&ctx, send, wire::hash(&t.hash), peer).await,
        Request::GetIndex(t) => send_index(&ctx, send, wire::hash(&t.hash), peer).await,
        other => {
            let r = answer(&ctx, other, &mut send, remote).await;
            (send, r)
        }
    };
    match result {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(code) => {
            let _ = send.reset(code.varint());
        }
    }
}

fn reject(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, code: ErrorCode) {
    let _ = send.reset(code.varint());
    let _ = recv.stop(code.varint());
}

async fn read_request(recv: &mut quinn::RecvStream) -> std::result::Result<Request, Rejection> {
    let bad = |reason: String| Rejection { code: ErrorCode::BadRequest, reason };
    match frame::read_frame_body(recv, MAX_REQUEST_BYTES).await {
        Ok(Some(body)) => wire::decode_request(&body),
        Ok(None) => Err(bad("stream ended before a request".into())),
        Err(Error::Limit { actual, .. }) => {
            Err(Rejection { code: ErrorCode::RequestTooLarge, reason: format!("{actual}-byte request") })
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Answers one request; an error is the code to reset the stream with.
async fn answer(
    ctx: &ServerContext,
    request: Request,
    send: &mut quinn::SendStream,
    remote: Option<SocketAddr>,
) -> std::result::Result<(), ErrorCode> {
    let write = |e: Error| {
        debug!(?remote, "writing a response failed: {e}");
        ErrorCode::Internal
    };
    match request {
        Request::Observe(o) => observe(ctx, send, wire::hash(&o.hash), o.watch).await,
        Request::Lookup(l) => {
            let kind: ResourceKind = l.kind.parse().map_err(|_| ErrorCode::BadRequest)?;
            let found = match ctx.store.resource(&kind, &l.name, &l.version) {
                Ok(r) => r,
                Err(blixard_store::Error::InvalidArgument(_)) => return Err(ErrorCode::BadRequest),
                Err(_) => return Err(ErrorCode::Internal),
            };
            let claim = match found {
                Some(r) => Some(ctx.claim(&r).ok_or(ErrorCode::Internal)?),
                None => None,
            };
            frame::write_frame(send, &LookupResponse(claim)).await.map_err(write)
        }
        Request::List(l) => {
            let kind = match l.kind {
                Some(k) => Some(k.parse::<ResourceKind>().map_err(|_| ErrorCode::BadRequest)?),
                None => None,
            };
            let all = ctx.store.resources(kind.as_ref()).map_err(|_| ErrorCode::Internal)?;
            let truncated = all.len() > MAX_LIST_ITEMS;
            let items = all
                .iter()
                .take(MAX_LIST_ITEMS)
                .map(|r| ctx.claim(r).ok_or(ErrorCode::Internal))
                .collect::<std::result::Result<_, _>>()?;
            frame::write_frame(send, &ListResponse { items, truncated }).await.map_err(write)
        }
        // Blob and tree requests are answered by `answer_blobs` and `send_tree`.
        Request::Get(_) | Request::GetMany(_) | Request::GetSeq(_) | Request::GetTree(_) | Request::GetIndex(_) => {
            Err(ErrorCode::Internal)
        }
        Request::Ping => {
            // Through a relay there is no address to report: the unspecified one.
            let observed = remote.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            frame::write_frame(send, &Pong { observed: observed.into() }).await.map_err(write)
        }
        Request::Peers => {
            let mut peers = ctx.peers.as_ref().map(|p| p()).unwrap_or_default();
            peers.truncate(MAX_PEERS);
            for p in &mut peers {
                p.addrs.truncate(MAX_ADDRS_PER_PEER);
            }
            frame::write_frame(send, &PeersResponse { peers }).await.map_err(write)
        }
    }
}

/// The peer closed saying data we served failed its verification: our
/// copy may have rotted at rest. Re-check what we served it (each blob at
/// most every [`RECHECK_EVERY`], so reports cannot make us hash forever);
/// damaged groups become missing, so we stop serving them.
fn recheck(ctx: &Arc<ServerContext>, peer: &Peer) {
    let hashes: Vec<Hash> = {
        let mut last = ctx.rechecked.lock().unwrap();
        let now = std::time::Instant::now();
        last.retain(|_, at| now.duration_since(*at) < RECHECK_EVERY);
        let due: Vec<Hash> = peer.served.lock().unwrap().iter().filter(|h| !last.contains_key(*h)).copied().collect();
        for h in &due {
            last.insert(*h, now);
        }
        due
    };
    if hashes.is_empty() {
        return;
    }
    warn!(peer = %peer.id, blobs = hashes.len(), "a peer reports data we served failed verification: re-checking it");
    let store = ctx.store.clone();
    tokio::task::spawn_blocking(move || {
        for h in hashes {
            match store.verify_blob(&h, true) {
                Ok(r) if r.is_intact() => debug!(%h, "re-checked after a report: intact"),
                Ok(r) => warn!(%h, damaged = ?r.damaged, "re-checked after a report: damaged at rest, now missing"),
                Err(e) => debug!(%h, "re-check failed: {e}"),
            }
        }
    });
}
