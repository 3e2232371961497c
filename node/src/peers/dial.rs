//! Dialing: the one way this node opens a connection to a peer
//! ([`Peers::dial`]: a deadline, the identity check of the handshake, the
//! allowlist), used on request with retries ([`Peers::connect`]), for known
//! peers with a backoff remembered between rounds ([`Peers::dial_known`]),
//! and for peers learned by exchange (`rounds`).

use std::{sync::Arc, time::Duration};

use blixard_net::backoff::Backoff;
use blixard_protocol::{Connection, NodeAddr, NodeId};
use tracing::debug;

use super::Peers;
use crate::{Error, Result};

/// A dial that has not completed its handshake after this gives up.
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Time given to dial back a peer that is connected to us right now.
pub(super) const QUICK_DIAL: Duration = Duration::from_secs(1);
/// Retries of a dial on request: 250 ms doubling, plus up to 50% jitter.
const RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(64)).with_jitter(0.5);
/// Waits before dialing a known peer again after failed dials: 15 s
/// doubling per failure, up to 30 minutes.
const REDIAL: Backoff = Backoff::new(Duration::from_secs(15), Duration::from_secs(30 * 60));

impl Peers {
    /// Dials `target` once within `within`: the connection if the handshake
    /// proved the id it names (if any) and the peer is allowed here.
    pub(super) async fn dial(&self, target: &NodeAddr, within: Duration) -> Result<Connection> {
        let conn = match tokio::time::timeout(within, self.endpoint.connect_node(target)).await {
            Ok(r) => r?,
            Err(_) => return Err(Error::Unreachable { peer: target.to_string(), after: within }),
        };
        if !self.allowed(&conn.remote_id()) {
            conn.close(blixard_protocol::ErrorCode::Refused, "not on the allowlist");
            return Err(Error::NotAllowed(conn.remote_id()));
        }
        Ok(conn)
    }

    /// Dials `target`, retrying with exponential backoff and jitter up to the
    /// configured attempts. A wrong identity or a refused id is not retried.
    /// `trusted`: the operator configured this peer, so it names things (a
    /// peer given by address only is pinned at its first handshake).
    pub(crate) async fn connect(self: &Arc<Self>, target: NodeAddr, trusted: bool) -> Result<NodeId> {
        if !self.is_enabled() {
            return Err(Error::P2pOff);
        }
        if let Some(id) = target.id.filter(|id| !self.allowed(id)) {
            return Err(Error::NotAllowed(id));
        }
        let mut attempt = 0;
        loop {
            match self.dial(&target, DIAL_TIMEOUT).await {
                Ok(conn) => {
                    return self.register(conn.clone(), trusted).ok_or_else(|| Error::BookFull(conn.remote_id()))
                }
                Err(
                    e @ (Error::NotAllowed(_)
                    | Error::Protocol(blixard_protocol::Error::Net(blixard_net::Error::WrongIdentity { .. }))),
                ) => return Err(e),
                Err(e) if attempt >= self.retries => return Err(e),
                Err(e) => {
                    let wait = RETRY.delay(attempt);
                    debug!(peer = %target, attempt, "dial failed, retrying in {wait:?}: {e}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Dials a known peer once, unless a recent failure says wait; a failure
    /// backs its next dial off.
    pub(super) async fn dial_known(
        self: &Arc<Self>,
        id: NodeId,
        target: NodeAddr,
        within: Duration,
    ) -> Option<Connection> {
        if !self.is_enabled() {
            return None;
        }
        match self.dial(&target, within).await {
            Ok(conn) => {
                self.register(conn.clone(), false)?;
                Some(conn)
            }
            Err(why) => {
                if let Some(e) = self.book.lock().unwrap().get_mut(&id) {
                    let wait = REDIAL.delay(e.failures);
                    e.failures += 1;
                    e.next_dial = Some(tokio::time::Instant::now() + wait);
                    debug!(peer = %id, failures = e.failures, "dial failed, next try in {wait:?}: {why}");
                }
                None
            }
        }
    }
}
