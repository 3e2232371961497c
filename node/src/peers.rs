//! Peers: the address book (persisted in sled), dialing with exponential
//! backoff and jitter, disconnect detection, health pings and discovery by
//! peer exchange.
//!
//! A peer is known by its node id. We keep one outgoing connection per peer
//! for our requests; peers that connect to us are noted (their address is
//! their listening address, since one UDP socket serves both directions) and
//! dialed back when we need them.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use blixard_protocol::{client, wire, Connection, Endpoint, NodeId, PeerAddr};
use rand::Rng;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::{
    events::{P2pEvent, PeerInfo},
    metrics::Metrics,
    Result,
};

/// First retry delay when dialing; doubles per attempt, plus up to 50% jitter.
const DIAL_BACKOFF: Duration = Duration::from_millis(250);
/// A dial that has not completed its handshake after this gives up.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A ping that takes longer than this (or than the health-check interval)
/// counts as failed.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

struct Entry {
    addr: SocketAddr,
    conn: Option<Connection>,
    rtt: Option<Duration>,
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
}

impl Peers {
    pub(crate) fn new(
        endpoint: Endpoint,
        saved: sled::Tree,
        events: broadcast::Sender<P2pEvent>,
        metrics: Arc<Metrics>,
        retries: u32,
        health_interval: Duration,
    ) -> Self {
        let ping_timeout = PING_TIMEOUT.min(health_interval);
        Peers { endpoint, book: Mutex::new(HashMap::new()), saved, events, metrics, retries, ping_timeout }
    }

    /// The saved address book (peers from earlier runs).
    pub(crate) fn saved(&self) -> Vec<PeerAddr> {
        self.saved
            .iter()
            .filter_map(|kv| kv.ok())
            .filter_map(|(k, v)| {
                let id = NodeId(k.as_ref().try_into().ok()?);
                let addr = std::str::from_utf8(&v).ok()?.parse().ok()?;
                Some(PeerAddr { id: Some(id), addr })
            })
            .collect()
    }

    /// Dials `target`, retrying with exponential backoff and jitter up to the
    /// configured attempts. A wrong identity is not retried.
    pub(crate) async fn connect(self: &Arc<Self>, target: PeerAddr) -> Result<NodeId> {
        let mut attempt = 0;
        loop {
            let dialed = match tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(target.addr, target.id)).await {
                Ok(r) => r.map_err(crate::Error::from),
                Err(_) => Err(crate::Error::Unreachable { peer: target.to_string(), after: DIAL_TIMEOUT }),
            };
            match dialed {
                Ok(conn) => return Ok(self.register(conn)),
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

    /// Records a new outgoing connection and watches it for closing.
    fn register(self: &Arc<Self>, conn: Connection) -> NodeId {
        let id = conn.remote_id();
        let addr = conn.remote_address();
        let new = {
            let mut book = self.book.lock().unwrap();
            let new = !book.contains_key(&id);
            let e = book.entry(id).or_insert(Entry { addr, conn: None, rtt: None });
            e.addr = addr;
            e.rtt = Some(conn.rtt());
            e.conn = Some(conn.clone());
            new
        };
        let _ = self.saved.insert(id.as_bytes(), addr.to_string().as_bytes());
        if new {
            let _ = self.events.send(P2pEvent::PeerDiscovered(self.info(&id)));
        }
        info!(peer = %id, %addr, "peer connected");
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

    /// Notes a peer that connected to us.
    pub(crate) fn note_incoming(&self, id: NodeId, addr: SocketAddr) {
        let new = {
            let mut book = self.book.lock().unwrap();
            match book.get(&id) {
                Some(_) => false,
                None => {
                    book.insert(id, Entry { addr, conn: None, rtt: None });
                    true
                }
            }
        };
        if new {
            let _ = self.saved.insert(id.as_bytes(), addr.to_string().as_bytes());
            let _ = self.events.send(P2pEvent::PeerDiscovered(self.info(&id)));
        }
    }

    /// Open connections to every peer we can reach now, dialing known but
    /// unconnected peers once.
    pub(crate) async fn connections(self: &Arc<Self>) -> Vec<Connection> {
        let (mut open, idle): (Vec<Connection>, Vec<(NodeId, SocketAddr)>) = {
            let book = self.book.lock().unwrap();
            let open = book.values().filter_map(|e| e.conn.clone()).collect();
            let idle = book.iter().filter(|(_, e)| e.conn.is_none()).map(|(id, e)| (*id, e.addr)).collect();
            (open, idle)
        };
        let dials = idle.into_iter().map(|(id, addr)| {
            let me = self.clone();
            async move {
                let conn = tokio::time::timeout(DIAL_TIMEOUT, me.endpoint.connect(addr, Some(id))).await.ok()?.ok()?;
                Some((me.register(conn.clone()), conn))
            }
        });
        for (_, conn) in crate::download::join_all(dials).await.into_iter().flatten() {
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
                if p.id == me || known {
                    continue;
                }
                for addr in p.addrs.iter().map(|a| SocketAddr::from(*a)) {
                    if let Ok(Ok(c)) = tokio::time::timeout(DIAL_TIMEOUT, self.endpoint.connect(addr, Some(p.id))).await
                    {
                        debug!(peer = %p.id, %addr, "found by peer exchange");
                        self.register(c);
                        break;
                    }
                }
            }
        }
    }

    /// What this node tells others in a peers response: the peers it is
    /// connected to.
    pub(crate) fn exchange_list(&self) -> Vec<wire::PeerInfo> {
        let book = self.book.lock().unwrap();
        book.iter()
            .filter(|(_, e)| e.conn.is_some())
            .map(|(id, e)| wire::PeerInfo { id: *id, addrs: vec![e.addr.into()] })
            .collect()
    }

    fn info(&self, id: &NodeId) -> PeerInfo {
        let book = self.book.lock().unwrap();
        let e = book.get(id);
        PeerInfo {
            id: id.to_string(),
            addr: e.map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |e| e.addr),
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
