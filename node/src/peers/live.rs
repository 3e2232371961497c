//! Live connections: one outgoing connection per peer for our requests,
//! and peers' connections to us (their observed address is their listening
//! address, since one UDP socket serves both directions). Registered,
//! watched until they close, looked up, and closed here.

use std::{sync::Arc, time::Duration};

use blixard_protocol::{Connection, NodeAddr, NodeId};
use tracing::{debug, info, warn};

use super::{
    book::{now_secs, Entry},
    dial::{DIAL_TIMEOUT, QUICK_DIAL},
    Peers, P2P_OFF,
};
use crate::events::{P2pEvent, PeerPath};

impl Peers {
    /// Records a new outgoing connection and watches it for closing. A
    /// connection it replaces is closed; requests running on it fail, and
    /// their callers take the new one from [`Peers::current`]. `None` (and
    /// the connection closed) if the book has no room for a new peer.
    pub(super) fn register(self: &Arc<Self>, conn: Connection, trusted: bool) -> Option<NodeId> {
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
        if let Some(old) = replaced.filter(|old| !old.same(&conn)) {
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
    pub(super) fn watch_close(self: &Arc<Self>, id: NodeId, conn: Connection) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = conn.closed().await;
            if let Some(me) = me.upgrade() {
                me.lost(&id, &conn, &reason.to_string());
            }
        });
    }

    /// A connection (ours or theirs) ended: forget it. An entry the book
    /// does not keep goes once no connection is left.
    pub(super) fn lost(&self, id: &NodeId, conn: &Connection, reason: &str) {
        if let Some(why) = conn.refusal() {
            warn!(peer = %id, "the peer refused our connection: {why}");
            self.refusals.lock().unwrap().insert(*id, (why, tokio::time::Instant::now()));
        }
        let same = |c: &Option<Connection>| c.as_ref().is_some_and(|c| c.same(conn));
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
            if gone && !self.policy.keeps(id, e) {
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

    pub(super) fn path_changed(&self, id: NodeId, path: Option<PeerPath>) {
        if let Some(path) = path {
            info!(peer = %id, %path, "peer path changed");
            let _ = self.events.send(P2pEvent::PathChanged(id, path));
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
        self.dial_known(*id, target, DIAL_TIMEOUT).await
    }

    /// Dials every peer worth reaching that has no connection (once, unless
    /// a recent dial failed) and returns all open connections: the peers worth dialing (configured,
    /// allowlisted, or that served us), and peers connected to us right now
    /// (alive, so given only [`QUICK_DIAL`]: a stranger cannot make us wait).
    pub(crate) async fn connect_all(self: &Arc<Self>) -> Vec<Connection> {
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
                .filter_map(|(id, e)| match (self.policy.dials(id, e), e.incoming.is_some()) {
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
