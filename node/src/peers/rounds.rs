//! The periodic rounds over the peers: health checks (a ping each; a peer
//! that fails is disconnected, and the book ages out old entries), and peer
//! exchange (each peer's list, new peers dialed, a bounded number per
//! round), and the list this node gives others.

use std::{sync::Arc, time::Duration};

use blixard_protocol::{client, wire, Connection, NodeAddr, NodeId};
use tracing::{debug, warn};

use super::{book::now_secs, dial::DIAL_TIMEOUT, Peers};

/// New peers dialed per discovery round, at most.
const MAX_EXCHANGE_DIALS: usize = 16;
/// A ping that takes longer than this (or than the health-check interval)
/// counts as failed.
pub(super) const PING_TIMEOUT: Duration = Duration::from_secs(10);

impl Peers {
    /// Pings every connected peer; one that fails is disconnected. Forgets
    /// peers unseen for longer than the configured age.
    pub(crate) async fn health_round(self: &Arc<Self>) {
        let conns: Vec<(NodeId, Connection)> = {
            let mut book = self.book.lock().unwrap();
            let old: Vec<NodeId> = book
                .iter()
                .filter(|(id, e)| !e.connected() && self.policy.expired(id, e, now_secs()))
                .map(|(id, _)| *id)
                .collect();
            for id in old {
                debug!(peer = %id, "forgetting a peer unseen for {:?}", self.policy.max_age);
                book.remove(&id);
                self.saved.forget(&id);
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
        for conn in self.connect_all().await {
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
                if let Ok(c) = self.dial(&target, DIAL_TIMEOUT).await {
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
}
