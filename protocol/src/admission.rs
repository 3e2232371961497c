//! Who is served, and how much: connection admission and fair response
//! slots, so that anonymous peers (many connections, many identities, slow
//! readers) never lock out the peers an operator configured.
//!
//! A server knows two kinds of peer: *privileged* ones (configured,
//! allowlisted or trusted, as the embedding node decides through a
//! [`PrivilegeSource`]) and anonymous ones. Anonymous peers share what is
//! left after the reserved room: they may hold at most
//! `max_connections - reserved_connections` connections (and
//! `max_connections_per_ip` from one IP), and at most
//! `max_concurrent_responses - reserved_responses` response slots (and
//! `max_responses_per_peer` per node id). Privileged peers may use
//! everything, up to the totals. Each connection also has its own cap
//! (`max_responses_per_connection`), enforced in `server`.
//!
//! The bookkeeping is a small table under a mutex; waiting for a slot is a
//! [`Notify`] wake-up on every release (slots are few).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

use crate::{limits::ServerLimits, NodeId};

/// Tells privileged peers (configured, allowlisted, trusted) from anonymous
/// ones.
pub type PrivilegeSource = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// Why a connection was refused (sent to the peer as the close reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot is taken.
    Full,
    /// The slots left are reserved for configured peers.
    Reserved,
    /// Too many connections from this IP address.
    PerIp,
}

impl Refusal {
    /// The close reason sent to the peer.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Full => "refused: connection limit reached",
            Refusal::Reserved => "refused: remaining connections are reserved for configured peers",
            Refusal::PerIp => "refused: too many connections from your address",
        }
    }
}

#[derive(Default)]
struct Table {
    connections: usize,
    per_ip: HashMap<IpAddr, usize>,
    responses: usize,
    per_peer: HashMap<NodeId, usize>,
}

fn release_count<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// The admission table of one server.
pub(crate) struct Admission {
    limits: ServerLimits,
    table: Mutex<Table>,
    freed: Notify,
}

/// A connection's place; given back when dropped.
pub(crate) struct ConnectionTicket {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

/// A response slot; given back when dropped.
pub(crate) struct ResponseSlot {
    admission: Arc<Admission>,
    peer: Option<NodeId>,
}

impl Admission {
    pub(crate) fn new(limits: ServerLimits) -> Arc<Self> {
        Arc::new(Admission { limits, table: Mutex::new(Table::default()), freed: Notify::new() })
    }

    /// Admits a connection from `ip` or says why not.
    pub(crate) fn connect(self: &Arc<Self>, ip: IpAddr, privileged: bool) -> Result<ConnectionTicket, Refusal> {
        let l = &self.limits;
        let mut t = self.table.lock().unwrap();
        if t.connections >= l.max_connections {
            return Err(Refusal::Full);
        }
        if privileged {
            t.connections += 1;
            return Ok(ConnectionTicket { admission: self.clone(), ip: None });
        }
        if t.connections >= l.max_connections.saturating_sub(l.reserved_connections) {
            return Err(Refusal::Reserved);
        }
        let from_ip = t.per_ip.entry(ip).or_default();
        if *from_ip >= l.max_connections_per_ip {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        t.connections += 1;
        Ok(ConnectionTicket { admission: self.clone(), ip: Some(ip) })
    }

    /// Takes a response slot for `peer`, waiting until one is free to it.
    pub(crate) async fn response(self: &Arc<Self>, peer: NodeId, privileged: bool) -> ResponseSlot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_response(peer, privileged) {
                return slot;
            }
            freed.await;
        }
    }

    fn try_response(self: &Arc<Self>, peer: NodeId, privileged: bool) -> Option<ResponseSlot> {
        let l = &self.limits;
        let mut t = self.table.lock().unwrap();
        if t.responses >= l.max_concurrent_responses {
            return None;
        }
        if privileged {
            t.responses += 1;
            return Some(ResponseSlot { admission: self.clone(), peer: None });
        }
        let held = t.per_peer.get(&peer).copied().unwrap_or(0);
        let shared = l.max_concurrent_responses.saturating_sub(l.reserved_responses);
        if t.responses >= shared || held >= l.max_responses_per_peer {
            return None;
        }
        *t.per_peer.entry(peer).or_default() += 1;
        t.responses += 1;
        Some(ResponseSlot { admission: self.clone(), peer: Some(peer) })
    }

    /// Connections and response slots in use, for tests and status.
    #[cfg(test)]
    fn in_use(&self) -> (usize, usize) {
        let t = self.table.lock().unwrap();
        (t.connections, t.responses)
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        let mut t = self.admission.table.lock().unwrap();
        t.connections -= 1;
        if let Some(ip) = self.ip {
            release_count(&mut t.per_ip, &ip);
        }
    }
}

impl Drop for ResponseSlot {
    fn drop(&mut self) {
        {
            let mut t = self.admission.table.lock().unwrap();
            t.responses -= 1;
            if let Some(peer) = self.peer {
                release_count(&mut t.per_peer, &peer);
            }
        }
        self.admission.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    fn limits() -> ServerLimits {
        ServerLimits {
            max_connections: 10,
            reserved_connections: 3,
            max_connections_per_ip: 5,
            max_concurrent_responses: 6,
            reserved_responses: 2,
            max_responses_per_peer: 3,
            ..Default::default()
        }
    }

    #[test]
    fn anonymous_connections_leave_the_reserved_room() {
        let a = Admission::new(limits());
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(a.connect(ip(1), false).unwrap());
        }
        assert_eq!(a.connect(ip(1), false).err(), Some(Refusal::PerIp));
        held.push(a.connect(ip(2), false).unwrap());
        held.push(a.connect(ip(3), false).unwrap());
        assert_eq!(a.connect(ip(4), false).err(), Some(Refusal::Reserved));
        for _ in 0..3 {
            held.push(a.connect(ip(1), true).unwrap());
        }
        assert_eq!(a.connect(ip(5), true).err(), Some(Refusal::Full));
        held.clear();
        assert_eq!(a.in_use(), (0, 0));
        a.connect(ip(1), false).unwrap();
    }

    #[tokio::test]
    async fn anonymous_peers_cannot_take_every_response_slot() {
        let a = Admission::new(limits());
        let (x, y, z) =
            (SecretKey::generate().node_id(), SecretKey::generate().node_id(), SecretKey::generate().node_id());
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.response(x, false).await);
        }
        assert!(a.try_response(x, false).is_none(), "per-peer cap");
        held.push(a.response(y, false).await);
        assert!(a.try_response(z, false).is_none(), "the rest is reserved");
        held.push(a.response(z, true).await);
        held.push(a.response(z, true).await);
        assert!(a.try_response(z, true).is_none(), "total cap");
        // A waiter is woken when a slot frees.
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.response(z, true).await }
        });
        tokio::task::yield_now().await;
        held.pop();
        let _slot = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
