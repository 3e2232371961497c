//! A node's connections to relays: the home relay (the nearest of those
//! configured, kept connected for as long as the node runs, reconnected
//! with backoff) and relays of peers it sends to (connected on first use,
//! dropped after [`LINK_IDLE`] without use). What arrives on any of them
//! goes into one inbox, tagged with the relay it came through, so replies
//! take the same way back. [`super::PathSocket`] sits on top.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::client::{Incoming, RelayClient, RelaySender};
use crate::backoff::Backoff;
use crate::{relay::frame::Datagrams, NodeId, RelayAddr, SecretKey};

/// First wait before reconnecting to a relay; doubles per failure up to
/// [`MAX_RECONNECT`] (plus up to 50% jitter).
pub const RECONNECT: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts.
pub const MAX_RECONNECT: Duration = Duration::from_secs(5);
/// Reconnection waits, for the home election and each link.
const RECONNECT_BACKOFF: Backoff = Backoff::new(RECONNECT, MAX_RECONNECT).with_jitter(0.5);
/// A relay that is not home and carried nothing for this long is left.
pub const LINK_IDLE: Duration = Duration::from_secs(300);
/// Relays connected at once, at most (home plus peers' relays); a send to
/// one more is dropped (QUIC sees loss).
pub const MAX_LINKS: usize = 64;
/// Failed reconnections to the home relay before the nearest of the
/// configured relays is chosen again.
const REELECT_AFTER: u32 = 3;
/// Batches that arrived from relays and wait for the socket to read them;
/// more are dropped.
pub(crate) const INBOX_BATCHES: usize = 1024;

/// Datagrams that came through a relay.
#[derive(Debug)]
pub(crate) struct Arrived {
    pub relay: RelayAddr,
    pub src: NodeId,
    pub datagrams: Datagrams,
}

struct Link {
    sender: Mutex<Option<RelaySender>>,
    /// A task keeps this link (one at a time).
    running: AtomicBool,
    /// Milliseconds since `Relays::epoch` of the last send on it.
    last_used: AtomicU64,
    home: AtomicBool,
}

/// The relay connections of one node.
pub struct Relays {
    key: Arc<SecretKey>,
    candidates: Vec<RelayAddr>,
    links: Mutex<HashMap<RelayAddr, Arc<Link>>>,
    home: watch::Sender<Option<RelayAddr>>,
    inbox: mpsc::Sender<Arrived>,
    epoch: Instant,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays").field("candidates", &self.candidates).field("home", &*self.home.borrow()).finish()
    }
}

impl Relays {
    /// Starts choosing a home among `candidates` (none: only peers'
    /// relays are used, on demand). Needs a tokio runtime.
    pub(crate) fn start(key: Arc<SecretKey>, candidates: Vec<RelayAddr>, inbox: mpsc::Sender<Arrived>) -> Arc<Relays> {
        let relays = Arc::new(Relays {
            key,
            candidates,
            links: Mutex::new(HashMap::new()),
            home: watch::Sender::new(None),
            inbox,
            epoch: Instant::now(),
        });
        if !relays.candidates.is_empty() {
            tokio::spawn(elect(Arc::downgrade(&relays)));
        }
        relays
    }

    /// The home relay, once one is chosen.
    pub fn home(&self) -> Option<RelayAddr> {
        *self.home.borrow()
    }

    /// Watches the home relay.
    pub fn watch_home(&self) -> watch::Receiver<Option<RelayAddr>> {
        self.home.subscribe()
    }

    /// The relays configured (candidates for home).
    pub fn candidates(&self) -> &[RelayAddr] {
        &self.candidates
    }

    /// Relays connected right now.
    pub fn connected(&self) -> Vec<RelayAddr> {
        let links = self.links.lock().unwrap();
        links.iter().filter(|(_, l)| l.sender.lock().unwrap().is_some()).map(|(r, _)| *r).collect()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Queues datagrams for `dst` through `relay`, connecting to it first
    /// if needed (this batch is then dropped). False if dropped.
    pub(crate) fn send(self: &Arc<Self>, relay: RelayAddr, dst: NodeId, ecn: u8, segment: u16, payload: Bytes) -> bool {
        let link = self.link(relay, false);
        let Some(link) = link else { return false };
        link.last_used.store(self.now_ms(), Ordering::Relaxed);
        let sender = link.sender.lock().unwrap().clone();
        sender.is_some_and(|s| s.send(dst, ecn, segment, payload))
    }

    /// The link to `relay`, started if there is none (and room for one).
    fn link(self: &Arc<Self>, relay: RelayAddr, home: bool) -> Option<Arc<Link>> {
        let mut links = self.links.lock().unwrap();
        if let Some(l) = links.get(&relay) {
            if home {
                l.home.store(true, Ordering::SeqCst);
            }
            return Some(l.clone());
        }
        if links.len() >= MAX_LINKS {
            debug!(%relay, "too many relay connections: not connecting to another");
            return None;
        }
        let link = Arc::new(Link {
            sender: Mutex::new(None),
            running: AtomicBool::new(false),
            last_used: AtomicU64::new(self.now_ms()),
            home: AtomicBool::new(home),
        });
        links.insert(relay, link.clone());
        tokio::spawn(run_link(Arc::downgrade(self), relay, link.clone(), None));
        Some(link)
    }
}

/// Chooses the nearest configured relay as home (the lowest login round
/// trip; all are tried at once) and keeps it; again whenever home has
/// failed [`REELECT_AFTER`] reconnections in a row.
async fn elect(me: Weak<Relays>) {
    let mut failures = 0;
    loop {
        let Some(relays) = me.upgrade() else { return };
        let (key, candidates) = (relays.key.clone(), relays.candidates.clone());
        drop(relays);
        let mut tries = tokio::task::JoinSet::new();
        for r in candidates {
            let key = key.clone();
            tries.spawn(async move { (r, RelayClient::connect(&key, r).await) });
        }
        let mut best: Option<RelayClient> = None;
        while let Some(Ok((relay, outcome))) = tries.join_next().await {
            match outcome {
                Ok(c) => {
                    debug!(%relay, rtt = ?c.login_rtt(), "relay answered");
                    if best.as_ref().is_none_or(|b| c.login_rtt() < b.login_rtt()) {
                        best = Some(c);
                    }
                }
                Err(e) => warn!(%relay, "relay unreachable: {e}"),
            }
        }
        let Some(relays) = me.upgrade() else { return };
        let Some(client) = best else {
            drop(relays);
            let wait = RECONNECT_BACKOFF.delay(failures);
            failures += 1;
            debug!("no relay reachable; trying again in {wait:?}");
            tokio::time::sleep(wait).await;
            continue;
        };
        failures = 0;
        let relay = client.relay();
        info!(%relay, rtt = ?client.login_rtt(), "home relay chosen");
        let link = {
            let mut links = relays.links.lock().unwrap();
            let link = links.entry(relay).or_insert_with(|| {
                Arc::new(Link {
                    sender: Mutex::new(None),
                    running: AtomicBool::new(false),
                    last_used: AtomicU64::new(0),
                    home: AtomicBool::new(true),
                })
            });
            link.home.store(true, Ordering::SeqCst);
            link.clone()
        };
        for (r, l) in relays.links.lock().unwrap().iter() {
            if *r != relay {
                l.home.store(false, Ordering::SeqCst);
            }
        }
        relays.home.send_replace(Some(relay));
        drop(relays);
        // Runs until home fails too often; the link may already be running
        // (a peer's relay that became home), then this client is spare.
        let ran = run_link(me.clone(), relay, link, Some(client)).await;
        if !ran {
            // The existing task keeps it; wait for it to give up.
            loop {
                tokio::time::sleep(MAX_RECONNECT).await;
                let Some(relays) = me.upgrade() else { return };
                if !relays.links.lock().unwrap().contains_key(&relay) {
                    break;
                }
            }
        }
    }
}

/// Keeps one relay connected: reconnects with backoff, passes what arrives
/// into the inbox. A home link returns after [`REELECT_AFTER`] failures in
/// a row when there are other candidates; another link after
/// [`LINK_IDLE`] without use. False if a task for this link already ran.
async fn run_link(me: Weak<Relays>, relay: RelayAddr, link: Arc<Link>, mut first: Option<RelayClient>) -> bool {
    if link.running.swap(true, Ordering::SeqCst) {
        return false;
    }
    let ran = keep_link(me, relay, &link, first.take()).await;
    link.running.store(false, Ordering::SeqCst);
    *link.sender.lock().unwrap() = None;
    ran
}

async fn keep_link(me: Weak<Relays>, relay: RelayAddr, link: &Link, mut first: Option<RelayClient>) -> bool {
    let mut failures = 0u32;
    loop {
        let Some(relays) = me.upgrade() else { return true };
        let home = link.home.load(Ordering::SeqCst);
        let idle = Duration::from_millis(relays.now_ms().saturating_sub(link.last_used.load(Ordering::Relaxed)));
        if !home && idle > LINK_IDLE {
            debug!(%relay, "leaving an idle relay");
            relays.links.lock().unwrap().remove(&relay);
            return true;
        }
        if home && failures >= REELECT_AFTER && relays.candidates.len() > 1 {
            warn!(%relay, failures, "home relay unreachable: choosing again");
            relays.links.lock().unwrap().remove(&relay);
            return true;
        }
        let (key, inbox) = (relays.key.clone(), relays.inbox.clone());
        drop(relays);
        let client = match first.take() {
            Some(c) => Ok(c),
            None => RelayClient::connect(&key, relay).await,
        };
        match client {
            Ok(mut client) => {
                if failures > 0 {
                    info!(%relay, "reconnected to the relay");
                }
                failures = 0;
                *link.sender.lock().unwrap() = Some(client.sender());
                let mut tick = tokio::time::interval(LINK_IDLE / 10);
                loop {
                    tokio::select! {
                        got = client.recv() => match got {
                            Some(Incoming::Datagrams { src, datagrams }) => {
                                // Full: dropped (QUIC recovers the loss).
                                let _ = inbox.try_send(Arrived { relay, src, datagrams });
                            }
                            Some(Incoming::PeerGone(id)) => debug!(%relay, peer = %id, "not connected to the relay"),
                            None => break,
                        },
                        _ = tick.tick() => {
                            let Some(relays) = me.upgrade() else { return true };
                            let idle = relays.now_ms().saturating_sub(link.last_used.load(Ordering::Relaxed));
                            if !link.home.load(Ordering::SeqCst) && Duration::from_millis(idle) > LINK_IDLE {
                                break;
                            }
                        }
                    }
                }
                *link.sender.lock().unwrap() = None;
                if link.home.load(Ordering::SeqCst) {
                    warn!(%relay, "lost the connection to the home relay; reconnecting");
                }
            }
            Err(e) => {
                let wait = RECONNECT_BACKOFF.delay(failures);
                failures += 1;
                warn!(%relay, failures, "cannot reach the relay (next try in {wait:?}): {e}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
