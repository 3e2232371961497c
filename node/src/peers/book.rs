//! The peer book: what is known of each peer, its records in `node.db`
//! (tree `peers.v2`: node id → versioned record; tree `peers.seen`: when
//! each was last seen and whether it served or asked us anything; books of
//! the first format, id → address text, are moved over when opened), and
//! the retention policy as pure functions of entries and a clock.
//!
//! What the book keeps, against pollution by throwaway identities: peers the
//! operator configured or allowlisted, and peers that served us data or
//! asked us for something. A peer that only connected is listed while
//! connected and forgotten when it leaves. The book holds at most
//! `max_peers` (the least recently seen unprotected entry makes room),
//! forgets unprotected peers unseen for `peer_max_age`, and dials back only
//! configured, allowlisted and serving peers.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use blixard_protocol::{Connection, NodeAddr, NodeId, RelayAddr};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{codec, events::PeerPath, Result};

/// The sled tree of the peer book.
pub(crate) const BOOK_TREE: &str = "peers.v2";
/// The sled tree of when each peer was last seen.
pub(crate) const SEEN_TREE: &str = "peers.seen";

/// A peer as the book saves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PeerRecord {
    pub(super) direct_addrs: Vec<SocketAddr>,
    pub(super) relay: Option<RelayAddr>,
    /// Configured by the operator (dialed on request): a trusted publisher.
    pub(super) trusted: bool,
}

/// When a peer was last seen, and what it did for us, as saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SeenRecord {
    /// Unix seconds.
    pub(super) last_seen: u64,
    pub(super) served: bool,
    pub(super) asked: bool,
}

pub(super) struct Entry {
    pub(super) direct_addrs: Vec<SocketAddr>,
    pub(super) relay: Option<RelayAddr>,
    pub(super) trusted: bool,
    /// It served us blob data: worth dialing back.
    pub(super) served: bool,
    /// It asked us for something: worth keeping in the book.
    pub(super) asked: bool,
    /// Unix seconds.
    pub(super) last_seen: u64,
    /// Our connection to it, for our requests.
    pub(super) conn: Option<Connection>,
    /// Its latest connection to us.
    pub(super) incoming: Option<Connection>,
    pub(super) rtt: Option<Duration>,
    /// The path its connection took last (to tell when it changes).
    pub(super) path: Option<PeerPath>,
    /// Dial failures in a row, and no dial before `next_dial`.
    pub(super) failures: u32,
    pub(super) next_dial: Option<tokio::time::Instant>,
}

pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Entry {
    pub(super) fn new(direct_addrs: Vec<SocketAddr>) -> Self {
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

    pub(super) fn connected(&self) -> bool {
        self.conn.is_some() || self.incoming.is_some()
    }

    pub(super) fn node_addr(&self, id: NodeId) -> NodeAddr {
        NodeAddr { id: Some(id), direct_addrs: self.direct_addrs.clone(), relay: self.relay }
    }

    /// The connection our requests use, else its connection to us.
    pub(super) fn live(&self) -> Option<&Connection> {
        self.conn.as_ref().or(self.incoming.as_ref())
    }

    /// Notes the path of its live connection; the new path if it changed
    /// from a known one.
    pub(super) fn note_path(&mut self) -> Option<PeerPath> {
        let now = self.live().and_then(PeerPath::of)?;
        if let PeerPath::Relay { relay } = now {
            // Reached through it: a way back.
            self.relay = Some(relay);
        }
        let before = self.path.replace(now.clone());
        (before.is_some() && before != Some(now.clone())).then_some(now)
    }
}

/// Who the book keeps, dials and forgets: pure functions of an entry, its
/// id and the time, so they are tested without sockets or sled.
pub(super) struct Policy {
    /// If set, the only peers dialed, learned or accepted.
    pub(super) allowlist: Option<HashSet<NodeId>>,
    /// Entries at most (protected ones may exceed it).
    pub(super) max_peers: usize,
    /// Unprotected entries unseen for longer are forgotten.
    pub(super) max_age: Duration,
}

impl Policy {
    /// True unless an allowlist is set and `id` is not on it.
    pub(super) fn allowed(&self, id: &NodeId) -> bool {
        self.allowlist.as_ref().is_none_or(|a| a.contains(id))
    }

    /// Configured or allowlisted: never dropped, aged out or refused room.
    pub(super) fn protected(&self, id: &NodeId, e: &Entry) -> bool {
        e.trusted || self.allowlist.as_ref().is_some_and(|a| a.contains(id))
    }

    /// Worth a place in the saved book.
    pub(super) fn keeps(&self, id: &NodeId, e: &Entry) -> bool {
        self.protected(id, e) || e.served || e.asked
    }

    /// Worth dialing back when we need peers.
    pub(super) fn dials(&self, id: &NodeId, e: &Entry) -> bool {
        (self.protected(id, e) || e.served) && self.allowed(id)
    }

    /// Unprotected and unseen for longer than the age, at `now` (Unix seconds).
    pub(super) fn expired(&self, id: &NodeId, e: &Entry, now: u64) -> bool {
        !self.protected(id, e) && now.saturating_sub(e.last_seen) > self.max_age.as_secs()
    }

    /// The least recently seen entry that may make room: unprotected, not
    /// connected.
    pub(super) fn victim(&self, book: &HashMap<NodeId, Entry>) -> Option<NodeId> {
        book.iter()
            .filter(|(id, e)| !self.protected(id, e) && !e.connected())
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(id, _)| *id)
    }

    /// The entries a book loaded at `now` forgets: those it does not keep,
    /// the expired, then the least recently seen until it is within
    /// `max_peers`.
    pub(super) fn prune(&self, book: &HashMap<NodeId, Entry>, now: u64) -> Vec<NodeId> {
        let mut gone: Vec<NodeId> =
            book.iter().filter(|(id, e)| !self.keeps(id, e) || self.expired(id, e, now)).map(|(id, _)| *id).collect();
        let mut left: Vec<(&NodeId, &Entry)> = book.iter().filter(|(id, _)| !gone.contains(id)).collect();
        left.retain(|(id, e)| !self.protected(id, e) && !e.connected());
        left.sort_by_key(|(_, e)| e.last_seen);
        let over = (book.len() - gone.len()).saturating_sub(self.max_peers);
        gone.extend(left.into_iter().take(over).map(|(id, _)| *id));
        gone
    }
}

/// The book's records in `node.db`.
pub(super) struct Saved {
    saved: sled::Tree,
    seen: sled::Tree,
}

impl Saved {
    /// Opens the saved book: today's trees, after moving a book of the
    /// first format (node id → address text) into them.
    pub(super) fn open(db: &sled::Db) -> Result<Self> {
        Ok(Saved { saved: open_book(db)?, seen: db.open_tree(SEEN_TREE)? })
    }

    /// Every saved entry (damaged records are dropped with a warning).
    pub(super) fn load(&self) -> HashMap<NodeId, Entry> {
        let mut book = HashMap::new();
        for (k, v) in self.saved.iter().filter_map(|kv| kv.ok()) {
            let Ok(id) = <[u8; 32]>::try_from(k.as_ref()).map(NodeId) else { continue };
            let record = match codec::decode::<PeerRecord>("peer", &v) {
                Ok(r) => r,
                Err(e) => {
                    warn!(peer = %id, "dropping a saved peer: {e}");
                    self.forget(&id);
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
        book
    }

    /// Writes a peer's records.
    pub(super) fn save(&self, id: &NodeId, e: &Entry) {
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

    /// Removes a peer's records.
    pub(super) fn forget(&self, id: &NodeId) {
        let _ = self.saved.remove(id.as_bytes());
        let _ = self.seen.remove(id.as_bytes());
    }
}

/// Opens the saved book: today's tree, after moving a book of the first
/// format (node id → address text) into it.
fn open_book(db: &sled::Db) -> Result<sled::Tree> {
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

    fn id(n: u8) -> NodeId {
        blixard_protocol::SecretKey::from_seed(&[n; 32]).node_id()
    }

    fn entry(last_seen: u64, trusted: bool, served: bool, asked: bool) -> Entry {
        Entry { last_seen, trusted, served, asked, ..Entry::new(Vec::new()) }
    }

    /// The retention rules on a clock we choose: what is kept, dialed,
    /// aged out and evicted first.
    #[test]
    fn retention_is_a_function_of_entries_and_the_clock() {
        let day = 24 * 3600;
        let now = 100 * day;
        let policy = Policy { allowlist: None, max_peers: 3, max_age: Duration::from_secs(7 * day) };
        let book: HashMap<NodeId, Entry> = [
            (id(1), entry(now - 30 * day, true, false, false)), // configured, old: kept
            (id(2), entry(now - 30 * day, false, true, false)), // served, old: aged out
            (id(3), entry(now, false, false, false)),           // only connected: not kept
            (id(4), entry(now - day, false, false, true)),      // asked: kept
            (id(5), entry(now - 2 * day, false, true, false)),  // served
            (id(6), entry(now - 3 * day, false, true, false)),  // served, oldest of the rest: evicted
        ]
        .into_iter()
        .collect();
        let mut gone = policy.prune(&book, now);
        gone.sort();
        let mut want = vec![id(2), id(3), id(6)];
        want.sort();
        assert_eq!(gone, want);
        assert!(policy.dials(&id(1), &book[&id(1)]) && policy.dials(&id(5), &book[&id(5)]));
        assert!(!policy.dials(&id(4), &book[&id(4)]), "a peer that only asked is not dialed back");
        assert!(!policy.expired(&id(2), &book[&id(2)], now - 25 * day), "not yet expired a while ago");
        let strict = Policy { allowlist: Some([id(1)].into_iter().collect()), ..policy };
        assert!(strict.allowed(&id(1)) && !strict.allowed(&id(5)) && !strict.dials(&id(5), &book[&id(5)]));
        assert!(strict.protected(&id(1), &entry(0, false, false, false)), "allowlisted is protected");
    }
}
