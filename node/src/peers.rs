//! Peers: the address book (persisted in sled), dialing with exponential
//! backoff and jitter, disconnect detection, health pings and discovery by
//! peer exchange.
//!
//! A peer is known by its node id and named by a [`NodeAddr`]. We keep one
//! outgoing connection per peer for our requests; peers that connect to us
//! are noted (their observed address is their listening address, since one
//! UDP socket serves both directions) and dialed back when we need them.
//! The book is saved in `node.db` (tree `peers.v2`: node id → versioned
//! record; tree `peers.seen`: when each was last seen and whether it served
//! or asked us anything); books of the first format (id → address text)
//! are moved over when opened.
//!
//! What the book keeps, against pollution by throwaway identities: peers the
//! operator configured or allowlisted, and peers that served us data or
//! asked us for something. A peer that only connected is listed while
//! connected and forgotten when it leaves. The book holds at most
//! `max_peers` (the least recently seen unprotected entry makes room),
//! forgets unprotected peers unseen for `peer_max_age`, and dials back only
//! configured, allowlisted and serving peers, with backoff after failures.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use blixard_protocol::{client, wire, Connection, Endpoint, NodeAddr, NodeId, RelayAddr};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::{
    codec,
    events::{P2pEvent, PeerInfo, PeerPath},
    metrics::Metrics,
    Result,
};

/// The sled tree of the peer book.
pub(crate) const BOOK_TREE: &str = "peers.v2";
/// The sled tree of when each peer was last seen.
pub(crate) const SEEN_TREE: &str = "peers.seen";
/// New peers dialed per discovery round, at most.
const MAX_EXCHANGE_DIALS: usize = 16;
/// First wait before dialing a peer again after a failed dial; doubles per
/// failure, up to [`MAX_REDIAL`].
const REDIAL: Duration = Duration::from_secs(15);
const MAX_REDIAL: Duration = Duration::from_secs(30 * 60);
/// Time given to dial back a peer that is connected to us right now.
const QUICK_DIAL: Duration = Duration::from_secs(1);

/// First retry delay when dialing; doubles per attempt, plus up to 50% jitter.
const DIAL_BACKOFF: Duration = Duration::from_millis(250);
/// A dial that has not completed its handshake after this gives up.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A ping that takes longer than this (or than the health-check interval)
/// counts as failed.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer as the book saves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PeerRecord {
    direct_addrs: Vec<SocketAddr>,
    relay: Option<RelayAddr>,
    /// Configured by the operator (dialed on request): a trusted publisher.
    trusted: bool,
}

/// When a peer was last seen, and what it did for us, as saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SeenRecord {
    /// Unix seconds.
    last_seen: u64,
    served: bool,
    asked: bool,
}

struct Entry {
    direct_addrs: Vec<SocketAddr>,
    relay: Option<RelayAddr>,
    trusted: bool,
    /// It served us blob data: worth dialing back.
    served: bool,
    /// It asked us for something: worth keeping in the book.
    asked: bool,
    /// Unix seconds.
    last_seen: u64,
    /// Our connection to it, for our requests.
    conn: Option<Connection>,
    /// Its latest connection to us.
    incoming: Option<Connection>,
    rtt: Option<Duration>,
    /// The path its connection took last (to tell when it changes).
    path: Option<PeerPath>,
    /// Dial failures in a row, and no dial before `next_dial`.
    failures: u32,
    next_dial: Option<tokio::time::Instant>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Entry {
    fn new(direct_addrs: Vec<SocketAddr>) -> Self {
        Entry {
            direct_addrs,
            relay: None,
            trusted: false,
            served: false,
            asked: false,
            last_seen: now_secs(),
            conn: None,
            incoming: None,
            rtt: None,
            path: None,
            failures: 0,
            next_dial: None,
        }
    }

    fn connected(&self) -> bool {
        self.conn.is_some() || self.incoming.is_some()
    }

    fn node_addr(&self, id: NodeId) -> NodeAddr {
        NodeAddr { id: Some(id), direct_addrs: self.direct_addrs.clone(), relay: self.relay }
    }

    /// The connection our requests use, else its connection to us.
    fn live(&self) -> Option<&Connection> {
        self.conn.as_ref().or(self.incoming.as_ref())
    }

    /// Notes the path of its live connection; the new path if it changed
    /// from a known one.
    fn note_path(&mut self) -> Option<PeerPath> {
        let now = self.live().and_then(PeerPath::of)?;
        if let PeerPath::Relay { relay } = now {
            // Reached through it: a way back.
            self.relay = Some(relay);
        }
        let before = self.path.replace(now.clone());
        (before.is_some() && before != Some(now.clone())).then_some(now)
    }
}

/// Opens the saved book: today's tree, after moving a book of the first
/// format (node id → address text) into it.
pub(crate) fn open_book(db: &sled::Db) -> Result<sled::Tree> {
    let book = db.open_tree(BOOK_TREE)?;
    if db.tree_names().iter().any(|n| n.as_ref() == b"peers") {
        let old = db.open_tree("peers")?;
        for kv in old.iter() {
            let (k, v) = kv?;
            let addr = std::str::from_utf8(&v).ok().and_then(|t| t.parse::<SocketAddr>().ok());
            match (<[u8; 32]>::try_from(k.as_ref()), addr) {
                (Ok(_), Some(addr)) => {
                    // Only configured peers were ever dialed back from the old book.
                    let record = PeerRecord { direct_addrs: vec![addr], relay: None, trusted: false };
                    book.insert(k, codec::encode("peer", &record)?)?;
                }
                _ => warn!("dropping a damaged entry of the first-format peer book"),
            }
        }
        book.flush()?;
        db.drop_tree("peers")?;
    }
    Ok(book)
}

/// The peers this node knows.
pub(crate) struct Peers {
    endpoint: Endpoint,
    book: Mutex<HashMap<NodeId, Entry>>,
    saved: sled::Tree,
    seen: sled::Tree,
    events: broadcast::Sender<P2pEvent>,
    metrics: Arc<Metrics>,
    retries: u32,
    ping_timeout: Duration,
    allowlist: Option<std::collections::HashSet<NodeId>>,
    max_peers: usize,
    max_age: Duration,
    /// Peers that refused our connection lately, with their reason.
    refusals: Mutex<HashMap<NodeId, (String, tokio::time::Instant)>>,
    /// P2P is on: off, nothing is dialed and peers that connect are turned away.
    /// Shared with the handshake's client filter.
    enabled: Arc<std::sync::atomic::AtomicBool>,
}

/// Why a peer that connects while P2P is off is turned away.
const P2P_OFF: &str = "P2P is off on this node";

impl Peers {
    /// The book saved in `db`, loaded: entries older than the configured
    /// age are forgotten, and at most `max_peers` are kept.
    pub(crate) fn open(
        endpoint: Endpoint,
        db: &sled::Db,
        events: broadcast::Sender<P2pEvent>,
        metrics: Arc<Metrics>,
        config: &crate::P2pConfig,
        enabled: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self> {
        let ping_timeout = PING_TIMEOUT.min(config.health_check_interval);
        let allowlist = config.allowlist.clone().map(|a| a.into_iter().collect());
        let peers = Peers {
            endpoint,
            book: Mutex::new(HashMap::new()),
            saved: open_book(db)?,
            seen: db.open_tree(SEEN_TREE)?,
            events,
            metrics,
            retries: config.max_retry_attempts,
            ping_timeout,
            allowlist,
            max_peers: config.max_peers,
            max_age: config.peer_max_age,
            refusals: Mutex::new(HashMap::new()),
            enabled,
        };
        peers.load();
        Ok(peers)
    }

    fn load(&self) {
        let mut book = self.book.lock().unwrap();
        for (k, v) in self.saved.iter().filter_map(|kv| kv.ok()) {
            let Ok(id) = <[u8; 32]>::try_from(k.as_ref()).map(NodeId) else { continue };
            let record = match codec::decode::<PeerRecord>("peer", &v) {
                Ok(r) => r,
                Err(e) => {
                    warn!(peer = %id, "dropping a saved peer: {e}");
                    self.forget_saved(&id);
                    continue;
                }
            };
            let seen =
                self.seen.get(id.as_bytes()).ok().flatten().and_then(|v| codec::decode::<SeenRecord>("peer", &v).ok());
            let mut e = Entry::new(record.direct_addrs);
            (e.relay, e.trusted) = (record.relay, record.trusted);
            if let Some(seen) = seen {
                (e.last_seen, e.served, e.asked) = (seen.last_seen, seen.served, seen.asked);
            }
            book.insert(id, e);
        }
        let before = book.len();
        let stale: Vec<NodeId> =
            book.iter().filter(|(id, e)| !self.keeps(id, e) || self.expired(id, e)).map(|(id, _)| *id).collect();
        for id in &stale {
            book.remove(id);
            self.forget_saved(id);
        }
        while book.len() > self.max_peers {
            let Some(victim) = self.victim(&book) else { break };
            book.remove(&victim);
            self.forget_saved(&victim);
        }
        if before != book.len() {
            info!(kept = book.len(), forgotten = before - book.len(), "peer book loaded");
        }
    }

    /// True unless an allowlist is set and `id` is not on it. The allowlist
    /// guards both directions: incoming handshakes (the TLS verifier) and
    /// every dial, peer-exchange learning and download here.
    pub(crate) fn allowed(&self, id: &NodeId) -> bool {
        self.allowlist.as_ref().is_none_or(|a| a.contains(id))
    }

    /// Configured or allowlisted: never dropped, aged out or refused room.
    fn protected(&self, id: &NodeId, e: &Entry) -> bool {
        e.trusted || self.allowlist.as_ref().is_some_and(|a| a.contains(id))
    }

    /// Worth a place in the saved book.
    fn keeps(&self, id: &NodeId, e: &Entry) -> bool {
        self.protected(id, e) || e.served || e.asked
    }

    /// Worth dialing back when we need peers.
    fn dials(&self, id: &NodeId, e: &Entry) -> bool {
        (self.protected(id, e) || e.served) && self.allowed(id)
    }

    fn expired(&self, id: &NodeId, e: &Entry) -> bool {
        !self.protected(id, e) && now_secs().saturating_sub(e.last_seen) > self.max_age.as_secs()
    }

    /// The least recently seen entry that may make room: unprotected, not
    /// connected.
    fn victim(&self, book: &HashMap<NodeId, Entry>) -> Option<NodeId> {
        book.iter()
            .filter(|(id, e)| !self.protected(id, e) && !e.connected())
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(id, _)| *id)
    }

    /// Makes room for a new entry `id` (evicting if full); false if none can be made.
    fn room(&self, book: &mut HashMap<NodeId, Entry>, trusted: bool) -> bool {
        if book.len() < self.max_peers || trusted {
            return true;
        }
        match self.victim(book) {
            Some(v) => {
                book.remove(&v);
                self.forget_saved(&v);
                debug!(peer = %v, "peer book full: forgot the least recently seen peer");
                true
            }
            None => false,
        }
    }

    /// Configured peers and peers that served us: dialed at start.
    pub(crate) fn dial_at_start(&self) -> Vec<(NodeAddr, bool)> {
        let book = self.book.lock().unwrap();
        book.iter().filter(|(id, e)| self.dials(id, e)).map(|(id, e)| (e.node_addr(*id), e.trusted)).collect()
    }

    /// True if the operator configured this peer (dialed it on request).
    pub(crate) fn is_trusted(&self, id: &NodeId) -> bool {
        self.book.lock().unwrap().get(id).is_some_and(|e| e.trusted)
    }

    /// Saves a peer if the book keeps it, or forgets its saved record.
    fn save(&self, id: &NodeId, e: &Entry) {
        if !self.keeps(id, e) {
            self.forget_saved(id);
            return;
        }
        let record = PeerRecord { direct_addrs: e.direct_addrs.clone(), relay: e.relay, trusted: e.trusted };
        let seen = SeenRecord { last_seen: e.last_seen, served: e.served, asked: e.asked };
        match (codec::encode("peer", &record), codec::encode("peer", &seen)) {
            (Ok(r), Ok(s)) => {
                let _ = self.saved.insert(id.as_bytes(), r);
                let _ = self.seen.insert(id.as_bytes(), s);
            }
            (Err(e), _) | (_, Err(e)) => warn!(peer = %id, "cannot save a peer: {e}"),
        }
    }

    fn forget_saved(&self, id: &NodeId) {
        let _ = self.saved.remove(id.as_bytes());
        let _ = self.seen.remove(id.as_bytes());
    }

    /// Notes that `id` served us verified data.
    pub(crate) fn served(&self, id: &NodeId) {
        self.touch(id, |e| e.served = true);
    }

    /// Notes that `id` asked us for something.
    pub(crate) fn asked(&self, id: &NodeId) {
        self.touch(id, |e| e.asked = true);
    }

    fn touch(&self, id: &NodeId, f: impl FnOnce(&mut Entry)) {
        let mut book = self.book.lock().unwrap();
        if let Some(e) = book.get_mut(id) {
            f(e);
            e.last_seen = now_secs();
            self.save(id, e);
        }
    }

    /// Dials `target`, retrying with exponential backoff and jitter up to the
    /// configured attempts. A wrong identity is not retried.
    /// `trusted`: the operator configured this peer, so it names things (a
    /// peer given by address only is pinned at its first handshake).
    pub(crate) async fn connect(self: &Arc<Self>, target: NodeAddr, trusted: bool) -> Result<NodeId> {
        if !self.is_enabled() {
            return Err(crate::Error::P2pOff);
        }
        if let Some(id) = target.id.filter(|id| !self.allowed(id)) {
            return Err(crate::Error::NotAllowed(id));
        }
        let mut attempt = 0;
        loop {
            let dialed = match tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect_node(&target)).await {
                Ok(r) => r.map_err(crate::Error::from),
                Err(_) => Err(crate::Error::Unreachable { peer: target.to_string(), after: DIAL_TIMEOUT }),
            };
            match dialed {
                Ok(conn) if !self.allowed(&conn.remote_id()) => {
                    conn.close(blixard_protocol::ErrorCode::Refused, "not on the allowlist");
                    return Err(crate::Error::NotAllowed(conn.remote_id()));
                }
                Ok(conn) => {
                    return self.register(conn.clone(), trusted).ok_or_else(|| crate::Error::BookFull(conn.remote_id()))
                }
                Err(
                    e @ crate::Error::Protocol(blixard_protocol::Error::Net(blixard_net::Error::WrongIdentity {
                        ..
                    })),
                ) => return Err(e),
                Err(e) if attempt >= self.retries => return Err(e),
                Err(e) => {
                    let base = DIAL_BACKOFF * 2u32.pow(attempt.min(8));
                    let jitter = base.mul_f64(rand::thread_rng().gen_range(0.0..0.5));
                    debug!(peer = %target, attempt, "dial failed, retrying in {:?}: {e}", base + jitter);
                    tokio::time::sleep(base + jitter).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Dials a known peer once, unless a recent failure says wait; a failure
    /// backs its next dial off.
    async fn dial_known(self: &Arc<Self>, id: NodeId, target: NodeAddr, within: Duration) -> Option<Connection> {
        if !self.is_enabled() {
            return None;
        }
        let dialed = tokio::time::timeout(within, self.endpoint.connect_node(&target)).await;
        match dialed {
            Ok(Ok(conn)) => {
                self.register(conn.clone(), false)?;
                Some(conn)
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no handshake within {within:?}"),
                };
                if let Some(e) = self.book.lock().unwrap().get_mut(&id) {
                    e.failures += 1;
                    let wait = (REDIAL * 2u32.pow(e.failures.min(10) - 1)).min(MAX_REDIAL);
                    e.next_dial = Some(tokio::time::Instant::now() + wait);
                    debug!(peer = %id, failures = e.failures, "dial failed, next try in {wait:?}: {why}");
                }
                None
            }
        }
    }

    /// Records a new outgoing connection and watches it for closing. A
    /// connection it replaces is closed; requests running on it fail, and
    /// their callers take the new one from [`Peers::current`]. `None` (and
    /// the connection closed) if the book has no room for a new peer.
    fn register(self: &Arc<Self>, conn: Connection, trusted: bool) -> Option<NodeId> {
        let id = conn.remote_id();
        let addr = conn.observed_addr();
        let (new, replaced, moved) = {
            let mut book = self.book.lock().unwrap();
            let new = !book.contains_key(&id);
            if new && !self.room(&mut book, trusted) {
                drop(book);
                debug!(peer = %id, "peer book full of protected or connected peers: not keeping a new one");
                conn.close(blixard_protocol::ErrorCode::Ok, "peer book full");
                return None;
            }
            let e = book.entry(id).or_insert_with(|| Entry::new(Vec::new()));
            if let Some(addr) = addr {
                e.direct_addrs.retain(|a| *a != addr);
                e.direct_addrs.insert(0, addr);
                e.direct_addrs.truncate(blixard_net::addr::MAX_DIRECT_ADDRS);
            }
            e.rtt = Some(conn.rtt());
            e.trusted |= trusted;
            e.last_seen = now_secs();
            (e.failures, e.next_dial) = (0, None);
            let was_connected = e.connected();
            let replaced = e.conn.replace(conn.clone());
            let moved = e.note_path();
            self.save(&id, e);
            (new || !was_connected, replaced, moved)
        };
        if let Some(old) = replaced.filter(|old| old.quinn().stable_id() != conn.quinn().stable_id()) {
            old.close(blixard_protocol::ErrorCode::Ok, "replaced by a newer connection");
        }
        if new {
            let _ = self.events.send(P2pEvent::PeerDiscovered(self.info(&id)));
            info!(peer = %id, ?addr, "peer connected");
            let _ = self.events.send(P2pEvent::PeerConnected(id));
        }
        self.path_changed(id, moved);
        self.update_gauge();
        // Turned off while this dial was under way: do not keep it.
        if !self.is_enabled() {
            conn.close(blixard_protocol::ErrorCode::Unavailable, P2P_OFF);
        }
        self.watch_close(id, conn);
        Some(id)
    }

    /// Calls [`Peers::lost`] when `conn` closes (unless the book is gone).
    fn watch_close(self: &Arc<Self>, id: NodeId, conn: Connection) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = conn.quinn().closed().await;
            if let Some(me) = me.upgrade() {
                me.lost(&id, &conn, &reason.to_string());
            }
        });
    }

    /// A connection (ours or theirs) ended: forget it. An entry the book
    /// does not keep goes once no connection is left.
    fn lost(&self, id: &NodeId, conn: &Connection, reason: &str) {
        if let Some(why) = conn.refusal() {
            warn!(peer = %id, "the peer refused our connection: {why}");
            self.refusals.lock().unwrap().insert(*id, (why, tokio::time::Instant::now()));
        }
        let same =
            |c: &Option<Connection>| c.as_ref().is_some_and(|c| c.quinn().stable_id() == conn.quinn().stable_id());
        let gone = {
            let mut book = self.book.lock().unwrap();
            let Some(e) = book.get_mut(id) else { return };
            let was = e.connected();
            if same(&e.conn) {
                e.conn = None;
            }
            if same(&e.incoming) {
                e.incoming = None;
            }
            let gone = was && !e.connected();
            if gone && !self.keeps(id, e) {
                book.remove(id);
            }
            gone
        };
        if gone {
            info!(peer = %id, "peer disconnected: {reason}");
            let _ = self.events.send(P2pEvent::PeerDisconnected(*id));
            self.update_gauge();
        }
    }

    /// Notes a peer that connected to us, at the address the socket layer
    /// observed (none through a relay): it shows as connected at once. It
    /// is saved only once it asks for something (or is configured).
    pub(crate) fn note_incoming(self: &Arc<Self>, conn: &Connection) {
        if !self.is_enabled() {
            conn.close(blixard_protocol::ErrorCode::Unavailable, P2P_OFF);
            return;
        }
        let id = conn.remote_id();
        let (new, now_connected, moved) = {
            let mut book = self.book.lock().unwrap();
            let new = !book.contains_key(&id);
            if new && !self.room(&mut book, false) {
                return; // served all the same, but not listed
            }
            let e = book.entry(id).or_insert_with(|| Entry::new(conn.observed_addr().into_iter().collect()));
            e.last_seen = now_secs();
            let now_connected = !e.connected();
            e.incoming = Some(conn.clone());
            let moved = e.note_path();
            (new, now_connected, moved)
        };
        if new {
            let _ = self.events.send(P2pEvent::PeerDiscovered(self.info(&id)));
        }
        if now_connected {
            let _ = self.events.send(P2pEvent::PeerConnected(id));
            self.update_gauge();
        }
        self.path_changed(id, moved);
        self.watch_close(id, conn.clone());
    }

    fn path_changed(&self, id: NodeId, path: Option<PeerPath>) {
        if let Some(path) = path {
            info!(peer = %id, %path, "peer path changed");
            let _ = self.events.send(P2pEvent::PathChanged(id, path));
        }
    }

    /// True while P2P is on.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Turns P2P on or off. Off closes every connection (peers are told
    /// why), turns away peers that connect and dials nothing; on dials the
    /// peers worth dialing again.
    pub(crate) fn set_enabled(self: &Arc<Self>, on: bool) {
        let was = self.enabled.swap(on, std::sync::atomic::Ordering::SeqCst);
        if was == on {
            return;
        }
        if on {
            info!("P2P turned on");
            for (saved, trusted) in self.dial_at_start() {
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.connect(saved, trusted).await;
                });
            }
        } else {
            info!("P2P turned off: connections closed, peers turned away");
            self.close_all(blixard_protocol::ErrorCode::Unavailable, P2P_OFF);
        }
    }

    /// Peers that refused us in the last minute, as "id: reason".
    pub(crate) fn recent_refusals(&self) -> Vec<String> {
        let mut r = self.refusals.lock().unwrap();
        r.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        r.iter().map(|(id, (why, _))| format!("{id}: {why}")).collect()
    }

    /// The open connection to `id`, if any.
    pub(crate) fn current(&self, id: &NodeId) -> Option<Connection> {
        self.book.lock().unwrap().get(id).and_then(|e| e.conn.clone())
    }

    /// The open connection to `id`, dialing it once if there is none.
    pub(crate) async fn current_or_dial(self: &Arc<Self>, id: &NodeId) -> Option<Connection> {
        if let Some(c) = self.current(id) {
            return Some(c);
        }
        let target = self.book.lock().unwrap().get(id).map(|e| e.node_addr(*id))?;
        self.dial_known(*id, target, DIAL_TIMEOUT).await
    }

    /// Open connections to every peer we can reach now, dialing once, unless
    /// a recent dial failed: the peers worth dialing (configured,
    /// allowlisted, or that served us), and peers connected to us right now
    /// (alive, so given only [`QUICK_DIAL`]: a stranger cannot make us wait).
    pub(crate) async fn connections(self: &Arc<Self>) -> Vec<Connection> {
        if !self.is_enabled() {
            return Vec::new();
        }
        let now = tokio::time::Instant::now();
        let (mut open, idle): (Vec<Connection>, Vec<(NodeId, NodeAddr, Duration)>) = {
            let book = self.book.lock().unwrap();
            let open = book.values().filter_map(|e| e.conn.clone()).collect();
            let idle = book
                .iter()
                .filter(|(id, e)| e.conn.is_none() && e.next_dial.is_none_or(|t| t <= now) && self.allowed(id))
                .filter_map(|(id, e)| match (self.dials(id, e), e.incoming.is_some()) {
                    (true, _) => Some((*id, e.node_addr(*id), DIAL_TIMEOUT)),
                    (false, true) => Some((*id, e.node_addr(*id), QUICK_DIAL)),
                    (false, false) => None,
                })
                .collect();
            (open, idle)
        };
        let dials = idle.into_iter().map(|(id, target, within)| {
            let me = self.clone();
            async move { me.dial_known(id, target, within).await }
        });
        open.extend(crate::join::join_all(dials).await.into_iter().flatten());
        open
    }

    /// Pings every connected peer; one that fails is disconnected. Forgets
    /// peers unseen for longer than the configured age.
    pub(crate) async fn health_round(self: &Arc<Self>) {
        let conns: Vec<(NodeId, Connection)> = {
            let mut book = self.book.lock().unwrap();
            let old: Vec<NodeId> =
                book.iter().filter(|(id, e)| !e.connected() && self.expired(id, e)).map(|(id, _)| *id).collect();
            for id in old {
                debug!(peer = %id, "forgetting a peer unseen for {:?}", self.max_age);
                book.remove(&id);
                self.forget_saved(&id);
            }
            book.iter().filter_map(|(id, e)| e.conn.clone().map(|c| (*id, c))).collect()
        };
        for (id, conn) in conns {
            match tokio::time::timeout(self.ping_timeout, client::ping(&conn)).await {
                Ok(Ok(pong)) => {
                    let moved = self.book.lock().unwrap().get_mut(&id).and_then(|e| {
                        e.rtt = Some(pong.rtt);
                        e.last_seen = now_secs();
                        e.note_path()
                    });
                    self.path_changed(id, moved);
                    self.metrics.peer_rtt.observe(pong.rtt.as_secs_f64());
                }
                Ok(Err(e)) => {
                    warn!(peer = %id, "health check failed: {e}");
                    conn.close(blixard_protocol::ErrorCode::Ok, "health check failed");
                    self.lost(&id, &conn, "health check failed");
                }
                Err(_) => {
                    warn!(peer = %id, "health check timed out");
                    conn.close(blixard_protocol::ErrorCode::Ok, "health check timed out");
                    self.lost(&id, &conn, "health check timed out");
                }
            }
        }
    }

    /// Asks every connected peer for the peers it knows and dials new ones
    /// ([`MAX_EXCHANGE_DIALS`] per round at most).
    pub(crate) async fn discovery_round(self: &Arc<Self>) {
        if !self.is_enabled() {
            return;
        }
        let me = self.endpoint.node_id();
        let mut dialed = 0;
        for conn in self.connections().await {
            let Ok(Ok(list)) = tokio::time::timeout(self.ping_timeout, client::peers(&conn)).await else { continue };
            for p in list {
                let known = {
                    let mut book = self.book.lock().unwrap();
                    let e = book.get_mut(&p.id);
                    let known = e.as_ref().is_some_and(|e| e.conn.is_some() || e.next_dial.is_some());
                    // A relay learned for a peer we know: another way to it.
                    if let (Some(e), Some(relay)) = (e, p.relay) {
                        if e.relay.is_none() {
                            e.relay = Some(relay.into());
                        }
                    }
                    known
                };
                if p.id == me || known || !self.allowed(&p.id) || dialed >= MAX_EXCHANGE_DIALS {
                    continue;
                }
                dialed += 1;
                let target = NodeAddr::from(&p);
                if let Ok(Ok(c)) = tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect_node(&target)).await {
                    debug!(peer = %target, "found by peer exchange");
                    self.register(c, false);
                }
            }
        }
    }

    /// What this node tells others in a peers response: itself first if
    /// it has a home relay (so the asker can reach it through it), then
    /// the peers it is connected to (either way) at a known address or
    /// relay.
    pub(crate) fn exchange_list(&self) -> Vec<wire::PeerEntry> {
        let me = self.endpoint.home_relay().map(|relay| wire::PeerEntry {
            id: self.endpoint.node_id(),
            addrs: Vec::new(),
            relay: Some(relay.into()),
        });
        let book = self.book.lock().unwrap();
        let others = book
            .iter()
            .filter(|(_, e)| e.connected() && !(e.direct_addrs.is_empty() && e.relay.is_none()))
            .map(|(id, e)| wire::PeerEntry {
                id: *id,
                addrs: e.direct_addrs.iter().map(|a| (*a).into()).collect(),
                relay: e.relay.map(Into::into),
            });
        me.into_iter().chain(others).collect()
    }

    fn info(&self, id: &NodeId) -> PeerInfo {
        let book = self.book.lock().unwrap();
        let e = book.get(id);
        let (bytes_sent, bytes_received) = e.map_or((0, 0), |e| {
            let stats = [&e.conn, &e.incoming].into_iter().flatten().map(|c| c.quinn().stats());
            stats.fold((0, 0), |(sent, received), s| (sent + s.udp_tx.bytes, received + s.udp_rx.bytes))
        });
        PeerInfo {
            path: e.and_then(|e| e.live()).and_then(PeerPath::of),
            bytes_sent,
            bytes_received,
            id: *id,
            addr: e
                .and_then(|e| e.direct_addrs.first().copied())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            connected: e.is_some_and(Entry::connected),
            rtt_ms: e.and_then(|e| e.rtt).map(|d| d.as_secs_f64() * 1000.0),
        }
    }

    /// Every known peer.
    pub(crate) fn list(&self) -> Vec<PeerInfo> {
        let ids: Vec<NodeId> = self.book.lock().unwrap().keys().copied().collect();
        let mut out: Vec<PeerInfo> = ids.iter().map(|id| self.info(id)).collect();
        out.sort_by_key(|p| p.id);
        out
    }

    /// Known peers (without building each one's info).
    pub(crate) fn known_count(&self) -> usize {
        self.book.lock().unwrap().len()
    }

    /// Connected peers (either direction).
    pub(crate) fn connected_count(&self) -> usize {
        self.book.lock().unwrap().values().filter(|e| e.connected()).count()
    }

    fn update_gauge(&self) {
        self.metrics.peers.set(self.connected_count() as i64);
    }

    /// Closes every connection, telling each peer why.
    pub(crate) fn close_all(&self, code: blixard_protocol::ErrorCode, why: &str) {
        let open: Vec<(NodeId, Connection)> = {
            let book = self.book.lock().unwrap();
            let each = book.iter().flat_map(|(id, e)| [&e.conn, &e.incoming].map(|c| c.clone().map(|c| (*id, c))));
            each.flatten().collect()
        };
        for (id, c) in open {
            c.close(code, why);
            self.lost(&id, &c, why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A book written by the first format (node id -> "IP:PORT") is read,
    /// moved into today's tree, and the old tree is gone.
    #[test]
    fn a_first_format_peer_book_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("node.db")).unwrap();
        let id = blixard_protocol::SecretKey::generate().node_id();
        let old = db.open_tree("peers").unwrap();
        old.insert(id.as_bytes(), b"127.0.0.1:7001".as_slice()).unwrap();
        old.insert([7u8; 3], b"damaged".as_slice()).unwrap();
        let book = open_book(&db).unwrap();
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"peers"), "the old tree is dropped");
        let v = book.get(id.as_bytes()).unwrap().unwrap();
        let r: PeerRecord = codec::decode("peer", &v).unwrap();
        assert_eq!(
            r,
            PeerRecord { direct_addrs: vec!["127.0.0.1:7001".parse().unwrap()], relay: None, trusted: false }
        );
        assert_eq!(book.len(), 1, "the damaged entry is dropped");
        drop(book);
        assert_eq!(open_book(&db).unwrap().len(), 1, "opening again changes nothing");
    }

    /// Unprotected peers unseen for longer than the age are forgotten when
    /// the book opens; configured ones stay; the cap holds.
    #[tokio::test]
    async fn the_book_forgets_old_peers_and_keeps_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("node.db")).unwrap();
        let book = open_book(&db).unwrap();
        let seen = db.open_tree(SEEN_TREE).unwrap();
        let day = 24 * 3600;
        let mut ids = Vec::new();
        for (i, (trusted, age)) in
            [(true, 30 * day), (false, 30 * day), (false, 0), (false, 1), (false, 2)].into_iter().enumerate()
        {
            let id = blixard_protocol::SecretKey::from_seed(&[i as u8 + 1; 32]).node_id();
            let r = PeerRecord {
                direct_addrs: vec![format!("127.0.0.1:{}", 7000 + i).parse().unwrap()],
                relay: None,
                trusted,
            };
            book.insert(id.as_bytes(), codec::encode("peer", &r).unwrap()).unwrap();
            let s = SeenRecord { last_seen: now_secs() - age, served: true, asked: false };
            seen.insert(id.as_bytes(), codec::encode("peer", &s).unwrap()).unwrap();
            ids.push(id);
        }
        let config =
            crate::P2pConfig { max_peers: 3, peer_max_age: Duration::from_secs(7 * day), ..Default::default() };
        let endpoint =
            Endpoint::bind(blixard_protocol::SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), Default::default())
                .unwrap();
        let (events, _) = broadcast::channel(16);
        let peers =
            Peers::open(endpoint, &db, events, Arc::new(Metrics::new()), &config, Arc::new(true.into())).unwrap();
        let listed: Vec<NodeId> = peers.list().into_iter().map(|p| p.id).collect();
        assert!(listed.contains(&ids[0]), "a configured peer is never aged out");
        assert!(!listed.contains(&ids[1]), "an old unconfigured peer is forgotten");
        assert_eq!(listed.len(), 3, "the cap holds: {listed:?}");
        assert!(!listed.contains(&ids[4]), "the least recently seen goes first");
        assert_eq!(book.len(), 3, "what is forgotten is gone from disk too");
    }
}
