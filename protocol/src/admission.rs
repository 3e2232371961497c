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
//! At the per-address cap, the anonymous connection from that address that
//! has been idle longest (no request stream open for at least
//! `evict_idle_after`) is closed to admit the new one: idle connections
//! from one address cannot lock out the honest nodes that share it.
//!
//! The bookkeeping is a small table under a mutex; waiting for a slot is a
//! [`Notify`] wake-up on every release (slots are few).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
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

/// What a connection is doing, for choosing an idle one to close: request
/// streams open now, and when the last one ended.
#[derive(Debug)]
pub(crate) struct Activity {
    open: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last had no stream.
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Self {
        Activity { open: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0), epoch: Instant::now() }
    }

    /// A request stream opened.
    pub(crate) fn stream_opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    /// A request stream ended.
    pub(crate) fn stream_ended(&self) {
        self.idle_since_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    /// How long it has had no stream open (`None` while one is).
    fn idle_for(&self) -> Option<std::time::Duration> {
        if self.open.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        Some(self.epoch.elapsed().saturating_sub(since))
    }
}

/// An anonymous connection as its address's room knows it.
struct Occupant {
    serial: u64,
    activity: Arc<Activity>,
    /// Closes the connection (it was chosen to make room).
    close: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct Table {
    connections: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// The anonymous connections of each address, for making room.
    occupants: HashMap<IpAddr, Vec<Occupant>>,
    next_serial: u64,
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
    /// The address and serial of an anonymous connection.
    ip: Option<(IpAddr, u64)>,
    /// What the connection is doing (kept current by the server).
    pub(crate) activity: Arc<Activity>,
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

    /// Admits a connection from `ip` or says why not. `close` closes it,
    /// should it be chosen later to make room for another from its address.
    pub(crate) fn connect(
        self: &Arc<Self>,
        ip: IpAddr,
        privileged: bool,
        close: impl Fn() + Send + Sync + 'static,
    ) -> Result<ConnectionTicket, Refusal> {
        let l = &self.limits;
        let mut t = self.table.lock().unwrap();
        let activity = Arc::new(Activity::new());
        if t.connections >= l.max_connections {
            return Err(Refusal::Full);
        }
        if privileged {
            t.connections += 1;
            return Ok(ConnectionTicket { admission: self.clone(), ip: None, activity });
        }
        // At its address's cap, a connection is admitted only in the place
        // of one closed for it; judge the shared room with that place freed,
        // and close nothing for a connection that would be refused anyway.
        let at_cap = t.per_ip.get(&ip).copied().unwrap_or(0) >= l.max_connections_per_ip;
        if t.connections.saturating_sub(usize::from(at_cap)) >= l.max_connections.saturating_sub(l.reserved_connections)
        {
            return Err(Refusal::Reserved);
        }
        if at_cap && !self.make_room(&mut t, ip) {
            return Err(Refusal::PerIp);
        }
        *t.per_ip.entry(ip).or_default() += 1;
        t.connections += 1;
        t.next_serial += 1;
        let serial = t.next_serial;
        let occupant = Occupant { serial, activity: activity.clone(), close: Box::new(close) };
        t.occupants.entry(ip).or_default().push(occupant);
        Ok(ConnectionTicket { admission: self.clone(), ip: Some((ip, serial)), activity })
    }

    /// Closes the connection from `ip` idle longest (at least
    /// `evict_idle_after`) and gives its place back; false if none is.
    fn make_room(&self, t: &mut Table, ip: IpAddr) -> bool {
        let Some(list) = t.occupants.get_mut(&ip) else { return false };
        let idlest = list
            .iter()
            .enumerate()
            .filter_map(|(i, o)| Some((i, o.activity.idle_for()?)))
            .filter(|(_, idle)| *idle >= self.limits.evict_idle_after)
            .max_by_key(|(_, idle)| *idle);
        let Some((i, idle)) = idlest else { return false };
        let victim = list.swap_remove(i);
        if list.is_empty() {
            t.occupants.remove(&ip);
        }
        t.connections -= 1;
        release_count(&mut t.per_ip, &ip);
        tracing::debug!(%ip, ?idle, "closing the idlest connection from an address at its cap for a new one");
        (victim.close)();
        true
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
        let Some((ip, serial)) = self.ip else {
            t.connections -= 1;
            return;
        };
        // A connection closed to make room gave its place back already.
        let Some(list) = t.occupants.get_mut(&ip) else { return };
        let Some(i) = list.iter().position(|o| o.serial == serial) else { return };
        list.swap_remove(i);
        if list.is_empty() {
            t.occupants.remove(&ip);
        }
        t.connections -= 1;
        release_count(&mut t.per_ip, &ip);
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
            held.push(a.connect(ip(1), false, || {}).unwrap());
        }
        assert_eq!(a.connect(ip(1), false, || {}).err(), Some(Refusal::PerIp));
        held.push(a.connect(ip(2), false, || {}).unwrap());
        held.push(a.connect(ip(3), false, || {}).unwrap());
        assert_eq!(a.connect(ip(4), false, || {}).err(), Some(Refusal::Reserved));
        for _ in 0..3 {
            held.push(a.connect(ip(1), true, || {}).unwrap());
        }
        assert_eq!(a.connect(ip(5), true, || {}).err(), Some(Refusal::Full));
        held.clear();
        assert_eq!(a.in_use(), (0, 0));
        a.connect(ip(1), false, || {}).unwrap();
    }

    /// At the per-address cap the idlest connection from that address is
    /// closed for a new one; one with a stream open is not, nor is a
    /// privileged one, and its place is given back once.
    #[test]
    fn an_address_at_its_cap_makes_room_by_closing_its_idlest_connection() {
        let a = Admission::new(ServerLimits {
            max_connections_per_ip: 2,
            evict_idle_after: std::time::Duration::ZERO,
            ..limits()
        });
        let ip = IpAddr::from([10, 0, 0, 1]);
        let closed = Arc::new(AtomicUsize::new(0));
        let closer = |n: usize| {
            let closed = closed.clone();
            move || {
                closed.fetch_or(1 << n, Ordering::SeqCst);
            }
        };
        let busy = a.connect(ip, false, closer(0)).unwrap();
        busy.activity.stream_opened();
        let idle = a.connect(ip, false, closer(1)).unwrap();
        let _friend = a.connect(ip, true, closer(2)).unwrap();
        let newer = a.connect(ip, false, closer(3)).unwrap();
        assert_eq!(closed.load(Ordering::SeqCst), 1 << 1, "only the idle anonymous one was closed");
        assert_eq!(a.in_use().0, 3);
        drop(idle); // its place was given back already
        assert_eq!(a.in_use().0, 3);
        newer.activity.stream_opened();
        assert_eq!(a.connect(ip, false, closer(4)).err(), Some(Refusal::PerIp), "every other one is busy");
        drop((busy, newer));
        assert_eq!(a.in_use().0, 1, "the privileged one");
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
