//! Peers: the address book (persisted in sled), dialing with exponential
//! backoff and jitter, disconnect detection, health pings and discovery by
//! peer exchange.
//!
//! A peer is known by its node id and named by a [`NodeAddr`]. We keep one
//! outgoing connection per peer for our requests; peers that connect to us
//! are noted (their observed address is their listening address, since one
//! UDP socket serves both directions) and dialed back when we need them.
//!
//! - [`book`]: what is known of each peer, its records in `node.db`, and
//!   the retention policy (pure functions of entries and a clock).
//! - [`dial`]: the one way this node dials a peer, with backoff.
//! - [`live`]: live connections: registered, watched, lost, current.
//! - [`rounds`]: the periodic health checks and peer exchange.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use blixard_protocol::{Endpoint, NodeAddr, NodeId};
use tokio::sync::broadcast;
use tracing::{debug, info};

use self::book::{now_secs, Entry, Policy, Saved};
use crate::{
    events::{P2pEvent, PeerInfo, PeerPath},
    metrics::Metrics,
    Result,
};

mod book;
mod dial;
mod live;
mod rounds;

/// The peers this node knows.
pub(crate) struct Peers {
    endpoint: Endpoint,
    book: Mutex<HashMap<NodeId, Entry>>,
    saved: Saved,
    policy: Policy,
    events: broadcast::Sender<P2pEvent>,
    metrics: Arc<Metrics>,
    retries: u32,
    ping_timeout: Duration,
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
        let policy = Policy {
            allowlist: config.allowlist.clone().map(|a| a.into_iter().collect()),
            max_peers: config.max_peers,
            max_age: config.peer_max_age,
        };
        let saved = Saved::open(db)?;
        let mut book = saved.load();
        let before = book.len();
        for id in policy.prune(&book, now_secs()) {
            book.remove(&id);
            saved.forget(&id);
        }
        if before != book.len() {
            info!(kept = book.len(), forgotten = before - book.len(), "peer book loaded");
        }
        Ok(Peers {
            endpoint,
            book: Mutex::new(book),
            saved,
            policy,
            events,
            metrics,
            retries: config.max_retry_attempts,
            ping_timeout: rounds::PING_TIMEOUT.min(config.health_check_interval),
            refusals: Mutex::new(HashMap::new()),
            enabled,
        })
    }

    /// True unless an allowlist is set and `id` is not on it. The allowlist
    /// guards both directions: incoming handshakes (the TLS verifier) and
    /// every dial, peer-exchange learning and download here.
    pub(crate) fn allowed(&self, id: &NodeId) -> bool {
        self.policy.allowed(id)
    }

    /// Saves a peer if the book keeps it, or forgets its saved record.
    fn save(&self, id: &NodeId, e: &Entry) {
        if self.policy.keeps(id, e) {
            self.saved.save(id, e);
        } else {
            self.saved.forget(id);
        }
    }

    /// Makes room for a new entry `id` (evicting if full); false if none can be made.
    fn room(&self, book: &mut HashMap<NodeId, Entry>, trusted: bool) -> bool {
        if book.len() < self.policy.max_peers || trusted {
            return true;
        }
        match self.policy.victim(book) {
            Some(v) => {
                book.remove(&v);
                self.saved.forget(&v);
                debug!(peer = %v, "peer book full: forgot the least recently seen peer");
                true
            }
            None => false,
        }
    }

    /// Configured peers and peers that served us: dialed at start.
    pub(crate) fn dial_at_start(&self) -> Vec<(NodeAddr, bool)> {
        let book = self.book.lock().unwrap();
        book.iter().filter(|(id, e)| self.policy.dials(id, e)).map(|(id, e)| (e.node_addr(*id), e.trusted)).collect()
    }

    /// True if the operator configured this peer (dialed it on request).
    pub(crate) fn is_trusted(&self, id: &NodeId) -> bool {
        self.book.lock().unwrap().get(id).is_some_and(|e| e.trusted)
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

    fn info(&self, id: &NodeId) -> PeerInfo {
        let book = self.book.lock().unwrap();
        let e = book.get(id);
        let (bytes_sent, bytes_received) = e.map_or((0, 0), |e| {
            let each = [&e.conn, &e.incoming].into_iter().flatten().map(|c| c.udp_bytes());
            each.fold((0, 0), |(sent, received), (s, r)| (sent + s, received + r))
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
}

#[cfg(test)]
mod tests {
    use super::{
        book::{PeerRecord, SeenRecord},
        *,
    };
    use crate::codec;

    /// Unprotected peers unseen for longer than the age are forgotten when
    /// the book opens; configured ones stay; the cap holds.
    #[tokio::test]
    async fn the_book_forgets_old_peers_and_keeps_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("node.db")).unwrap();
        let book = db.open_tree(book::BOOK_TREE).unwrap();
        let seen = db.open_tree(book::SEEN_TREE).unwrap();
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
