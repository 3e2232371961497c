//! Peers: the address book (persisted in sled), dialing with exponential
//! backoff and jitter, disconnect detection, health pings and discovery by
//! peer exchange.
//!
//! A peer is known by its node id and named by a [`NodeAddr`]. We keep one
//! outgoing connection per peer for our requests; peers that connect to us
//! are noted (their observed address is their listening address, since one
//! UDP socket serves both directions) and dialed back when we need them.
//! The book is saved in `node.db` (tree `peers.v2`: node id → versioned
//! record); books of the first format (id → address text) are moved over
//! when opened.

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
    events::{P2pEvent, PeerInfo},
    metrics::Metrics,
    Result,
};

/// The sled tree of the peer book.
pub(crate) const BOOK_TREE: &str = "peers.v2";

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

struct Entry {
    direct_addrs: Vec<SocketAddr>,
    relay: Option<RelayAddr>,
    trusted: bool,
    conn: Option<Connection>,
    rtt: Option<Duration>,
}

impl Entry {
    fn new(direct_addrs: Vec<SocketAddr>) -> Self {
        Entry { direct_addrs, relay: None, trusted: false, conn: None, rtt: None }
    }

    fn node_addr(&self, id: NodeId) -> NodeAddr {
        NodeAddr { id: Some(id), direct_addrs: self.direct_addrs.clone(), relay: self.relay }
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
    events: broadcast::Sender<P2pEvent>,
    metrics: Arc<Metrics>,
    retries: u32,
    ping_timeout: Duration,
    allowlist: Option<std::collections::HashSet<NodeId>>,
}

impl Peers {
    pub(crate) fn new(
        endpoint: Endpoint,
        saved: sled::Tree,
        events: broadcast::Sender<P2pEvent>,
        metrics: Arc<Metrics>,
        retries: u32,
        health_interval: Duration,
        allowlist: Option<Vec<NodeId>>,
    ) -> Self {
        let ping_timeout = PING_TIMEOUT.min(health_interval);
        let allowlist = allowlist.map(|a| a.into_iter().collect());
        Peers { endpoint, book: Mutex::new(HashMap::new()), saved, events, metrics, retries, ping_timeout, allowlist }
    }

    /// True unless an allowlist is set and `id` is not on it. The allowlist
    /// guards both directions: incoming handshakes (the TLS verifier) and
    /// every dial, peer-exchange learning and download here.
    pub(crate) fn allowed(&self, id: &NodeId) -> bool {
        self.allowlist.as_ref().is_none_or(|a| a.contains(id))
    }

    /// The saved address book (peers from earlier runs), each with whether
    /// it was configured (trusted).
    pub(crate) fn saved(&self) -> Vec<(NodeAddr, bool)> {
        let mut out = Vec::new();
        for (k, v) in self.saved.iter().filter_map(|kv| kv.ok()) {
            let Ok(id) = <[u8; 32]>::try_from(k.as_ref()).map(NodeId) else { continue };
            match codec::decode::<PeerRecord>("peer", &v) {
                Ok(r) => out.push((NodeAddr { id: Some(id), direct_addrs: r.direct_addrs, relay: r.relay }, r.trusted)),
                Err(e) => warn!(peer = %id, "dropping a saved peer: {e}"),
            }
        }
        out
    }

    /// True if the operator configured this peer (dialed it on request).
    pub(crate) fn is_trusted(&self, id: &NodeId) -> bool {
        self.book.lock().unwrap().get(id).is_some_and(|e| e.trusted)
    }

    /// Saves a peer's addresses.
    fn save(&self, id: &NodeId, e: &Entry) {
        let record = PeerRecord { direct_addrs: e.direct_addrs.clone(), relay: e.relay, trusted: e.trusted };
        match codec::encode("peer", &record) {
            Ok(bytes) => drop(self.saved.insert(id.as_bytes(), bytes)),
            Err(e) => warn!(peer = %id, "cannot save a peer: {e}"),
        }
    }

    /// Dials `target`, retrying with exponential backoff and jitter up to the
    /// configured attempts. A wrong identity is not retried.
    /// `trusted`: the operator configured this peer, so it names things (a
    /// peer given by address only is pinned at its first handshake).
    pub(crate) async fn connect(self: &Arc<Self>, target: NodeAddr, trusted: bool) -> Result<NodeId> {
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
                Ok(conn) => return Ok(self.register(conn, trusted)),
                Err(e @ crate::Error::Protocol(blixard_protocol::Error::WrongIdentity { .. })) => return Err(e),
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

    /// Records a new outgoing connection and watches it for closing. A
    /// connection it replaces is closed; requests running on it fail, and
    /// their callers take the new one from [`Peers::current`].
    fn register(self: &Arc<Self>, conn: Connection, trusted: bool) -> NodeId {
        let id = conn.remote_id();
        let addr = conn.observed_addr();
        let (new, replaced) = {
            let mut book = self.book.lock().unwrap();
            let new = !book.contains_key(&id);
            let e = book.entry(id).or_insert_with(|| Entry::new(Vec::new()));
            if let Some(addr) = addr {
                e.direct_addrs.retain(|a| *a != addr);
                e.direct_addrs.insert(0, addr);
                e.direct_addrs.truncate(blixard_protocol::addr::MAX_DIRECT_ADDRS);
            }
            e.rtt = Some(conn.rtt());
            e.trusted |= trusted;
            let replaced = e.conn.replace(conn.clone());
            self.save(&id, e);
            (new, replaced)
        };
        if let Some(old) = replaced.filter(|old| old.quinn().stable_id() != conn.quinn().stable_id()) {
            old.close(blixard_protocol::ErrorCode::Ok, "replaced by a newer connection");
        }
        if new {
            let _ = self.events.send(P2pEvent::PeerDiscovered(self.info(&id)));
        }
        info!(peer = %id, ?addr, "peer connected");
        let _ = self.events.send(P2pEvent::PeerConnected(id.to_string()));
        self.update_gauge();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = conn.quinn().closed().await;
            if let Some(me) = me.upgrade() {
                me.lost(&id, &conn, &reason.to_string());
            }
        });
        id
    }

    /// A connection ended: forget it (the address stays known).
    fn lost(&self, id: &NodeId, conn: &Connection, reason: &str) {
        let was_current = {
            let mut book = self.book.lock().unwrap();
            match book.get_mut(id) {
                Some(e) if e.conn.as_ref().is_some_and(|c| c.quinn().stable_id() == conn.quinn().stable_id()) => {
                    e.conn = None;
                    true
                }
                _ => false,
            }
        };
        if was_current {
            info!(peer = %id, "peer disconnected: {reason}");
            let _ = self.events.send(P2pEvent::PeerDisconnected(id.to_string()));
            self.update_gauge();
        }
    }

    /// Notes a peer that connected to us, at the address the socket layer
    /// observed (none through a relay).
    pub(crate) fn note_incoming(&self, id: NodeId, addr: Option<SocketAddr>) {
        let new = {
            let mut book = self.book.lock().unwrap();
            match book.get(&id) {
                Some(_) => false,
                None => {
                    let e = Entry::new(addr.into_iter().collect());
                    self.save(&id, &e);
                    book.insert(id, e);
                    true
                }
            }
        };
        if new {
            let _ = self.events.send(P2pEvent::PeerDiscovered(self.info(&id)));
        }
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
        let conn = tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect_node(&target)).await.ok()?.ok()?;
        self.register(conn.clone(), false);
        Some(conn)
    }

    /// Open connections to every peer we can reach now, dialing known but
    /// unconnected peers once.
    pub(crate) async fn connections(self: &Arc<Self>) -> Vec<Connection> {
        let (mut open, idle): (Vec<Connection>, Vec<NodeAddr>) = {
            let book = self.book.lock().unwrap();
            let open = book.values().filter_map(|e| e.conn.clone()).collect();
            let idle = book
                .iter()
                .filter(|(id, e)| e.conn.is_none() && self.allowed(id))
                .map(|(id, e)| e.node_addr(*id))
                .collect();
            (open, idle)
        };
        let dials = idle.into_iter().map(|target| {
            let me = self.clone();
            async move {
                let conn = tokio::time::timeout(DIAL_TIMEOUT, me.endpoint.connect_node(&target)).await.ok()?.ok()?;
                Some((me.register(conn.clone(), false), conn))
            }
        });
        for (_, conn) in crate::join::join_all(dials).await.into_iter().flatten() {
            open.push(conn);
        }
        open
    }

    /// Pings every connected peer; one that fails is disconnected.
    pub(crate) async fn health_round(self: &Arc<Self>) {
        let conns: Vec<(NodeId, Connection)> = {
            let book = self.book.lock().unwrap();
            book.iter().filter_map(|(id, e)| e.conn.clone().map(|c| (*id, c))).collect()
        };
        for (id, conn) in conns {
            match tokio::time::timeout(self.ping_timeout, client::ping(&conn)).await {
                Ok(Ok(pong)) => {
                    if let Some(e) = self.book.lock().unwrap().get_mut(&id) {
                        e.rtt = Some(pong.rtt);
                    }
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

    /// Asks every connected peer for the peers it knows and dials new ones.
    pub(crate) async fn discovery_round(self: &Arc<Self>) {
        let me = self.endpoint.node_id();
        for conn in self.connections().await {
            let Ok(Ok(list)) = tokio::time::timeout(self.ping_timeout, client::peers(&conn)).await else { continue };
            for p in list {
                let known = self.book.lock().unwrap().get(&p.id).is_some_and(|e| e.conn.is_some());
                if p.id == me || known || !self.allowed(&p.id) {
                    continue;
                }
                let target = NodeAddr::from(&p);
                if let Ok(Ok(c)) = tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect_node(&target)).await {
                    debug!(peer = %target, "found by peer exchange");
                    self.register(c, false);
                }
            }
        }
    }

    /// What this node tells others in a peers response: the peers it is
    /// connected to.
    pub(crate) fn exchange_list(&self) -> Vec<wire::PeerEntry> {
        let book = self.book.lock().unwrap();
        book.iter()
            .filter(|(_, e)| e.conn.is_some())
            .map(|(id, e)| wire::PeerEntry { id: *id, addrs: e.direct_addrs.iter().map(|a| (*a).into()).collect() })
            .collect()
    }

    fn info(&self, id: &NodeId) -> PeerInfo {
        let book = self.book.lock().unwrap();
        let e = book.get(id);
        PeerInfo {
            id: id.to_string(),
            addr: e
                .and_then(|e| e.direct_addrs.first().copied())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            connected: e.is_some_and(|e| e.conn.is_some()),
            rtt_ms: e.and_then(|e| e.rtt).map(|d| d.as_secs_f64() * 1000.0),
        }
    }

    /// Every known peer.
    pub(crate) fn list(&self) -> Vec<PeerInfo> {
        let ids: Vec<NodeId> = self.book.lock().unwrap().keys().copied().collect();
        let mut out: Vec<PeerInfo> = ids.iter().map(|id| self.info(id)).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Connected peers.
    pub(crate) fn connected_count(&self) -> usize {
        self.book.lock().unwrap().values().filter(|e| e.conn.is_some()).count()
    }

    fn update_gauge(&self) {
        self.metrics.peers.set(self.connected_count() as i64);
    }

    /// Closes every connection.
    pub(crate) fn close_all(&self) {
        let mut book = self.book.lock().unwrap();
        for e in book.values_mut() {
            if let Some(c) = e.conn.take() {
                c.close(blixard_protocol::ErrorCode::Ok, "shutting down");
            }
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
}
