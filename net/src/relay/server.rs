//! The relay server: accepts TLS-over-TCP clients, proves who each is by
//! its certificate, and forwards datagram frames between node ids; answers
//! the UDP echo probe on the same port number.
//!
//! Per connection, one reader task (frames in, through the client's
//! token bucket, so a fast sender is slowed by TCP backpressure) and one
//! writer task (frames out, from a bounded queue that drops when full, so
//! one slow receiver never stalls a sender or anyone else).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{mpsc, Notify},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::{
    probe,
    stream::{write_frame, write_loop},
};
use crate::{
    rate::{RateLimiter, TokenBucket},
    relay::frame::{FrameDecoder, RelayFrame, RELAY_VERSION},
    Error, NodeId, Result, SecretKey,
};

/// Error codes of the relay protocol (`docs/RELAY.md`).
pub mod code {
    /// Malformed frame, unknown type, over a cap, or not allowed here.
    pub const BAD_FRAME: u16 = 1;
    /// Unsupported version.
    pub const VERSION: u16 = 2;
    /// A datagram was dropped (informational).
    pub const QUEUE_FULL: u16 = 3;
    /// Too many connections.
    pub const TOO_MANY: u16 = 4;
    /// Replaced by a newer login of the same node id.
    pub const REPLACED: u16 = 5;
}

/// The relay's limits; every one holds per client, whatever it sends.
#[derive(Debug, Clone)]
pub struct RelayLimits {
    /// Clients logged in at once (default 10,000).
    pub max_clients: usize,
    /// TCP connections from one IP address at once, logged in or not
    /// (default 32); more are closed at once, before TLS.
    pub max_per_ip: usize,
    /// Each client's read rate, bytes per second (default 250 MB/s);
    /// `None`: unlimited.
    pub rate_bytes_per_sec: Option<u64>,
    /// Frames waiting for one client (default 512); more are dropped.
    pub queue_frames: usize,
    /// Time for TCP to become a logged-in client (default 10 s).
    pub handshake_timeout: Duration,
    /// A client that sends nothing for this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// The relay sends a keepalive after this much silence (default 15 s).
    pub keepalive_interval: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            max_clients: 10_000,
            max_per_ip: 32,
            rate_bytes_per_sec: Some(250_000_000),
            queue_frames: 512,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
        }
    }
}

/// What the relay has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Clients logged in now.
    pub clients: AtomicUsize,
    /// Payload bytes forwarded.
    pub bytes_relayed: AtomicU64,
    /// Datagram frames forwarded.
    pub frames_relayed: AtomicU64,
    /// Datagram frames dropped (destination queue full).
    pub dropped: AtomicU64,
    /// Frames to a node not connected here.
    pub to_unknown: AtomicU64,
    /// Connections refused: caps, failed handshakes, bad logins.
    pub refused: AtomicU64,
    /// Clients closed for a bad frame.
    pub bad_frames: AtomicU64,
    /// UDP probes answered.
    pub probes: AtomicU64,
}

struct Client {
    /// Which connection (a newer login replaces an older one).
    conn: u64,
    tx: mpsc::Sender<RelayFrame>,
    kicked: Arc<Notify>,
}

struct Shared {
    limits: RelayLimits,
    stats: Arc<RelayStats>,
    clients: Mutex<HashMap<NodeId, Client>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    next_conn: AtomicU64,
}

/// A running relay. Dropping it stops it.
pub struct RelayServer {
    id: NodeId,
    addr: SocketAddr,
    stats: Arc<RelayStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RelayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServer").field("id", &self.id).field("addr", &self.addr).finish()
    }
}

impl Drop for RelayServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RelayServer {
    /// Listens on TCP `addr` for clients and on UDP at the same port for
    /// probes (port 0 picks one free for both).
    pub async fn bind(key: SecretKey, addr: SocketAddr, limits: RelayLimits) -> Result<RelayServer> {
        let bind_err = |source| Error::Bind { addr, source };
        let (listener, udp) = if addr.port() == 0 {
            // A port free for both TCP and UDP.
            let mut tries = 0;
            loop {
                let l = TcpListener::bind(addr).await.map_err(bind_err)?;
                let port = l.local_addr().map_err(Error::LocalAddr)?.port();
                match UdpSocket::bind(SocketAddr::new(addr.ip(), port)).await {
                    Ok(u) => break (l, u),
                    Err(e) if tries > 20 => return Err(bind_err(e)),
                    Err(_) => tries += 1,
                }
            }
        } else {
            (TcpListener::bind(addr).await.map_err(bind_err)?, UdpSocket::bind(addr).await.map_err(bind_err)?)
        };
        let local = listener.local_addr().map_err(Error::LocalAddr)?;
        let acceptor = TlsAcceptor::from(Arc::new(crate::tls::relay_server_config(&key)?));
        let stats = Arc::new(RelayStats::default());
        let shared = Arc::new(Shared {
            limits,
            stats: stats.clone(),
            clients: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        });
        let accept = tokio::spawn(accept_loop(listener, acceptor, shared));
        let echo = tokio::spawn(echo_loop(udp, stats.clone()));
        info!(id = %key.node_id(), addr = %local, "relay listening");
        Ok(RelayServer { id: key.node_id(), addr: local, stats, tasks: vec![accept, echo] })
    }

    /// The relay's node id (clients pin it).
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Its TCP (and UDP probe) address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }
}

async fn echo_loop(udp: UdpSocket, stats: Arc<RelayStats>) {
    let mut buf = [0u8; 64];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else { continue };
        if let Some(txid) = probe::parse_request(&buf[..n]) {
            stats.probes.fetch_add(1, Ordering::Relaxed);
            let _ = udp.send_to(&probe::answer(txid, from), from).await;
        }
    }
}

/// One place of an IP's connection count, given back when dropped.
struct IpTicket {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for IpTicket {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock().unwrap();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                warn!("relay accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ticket = {
            let mut per_ip = shared.per_ip.lock().unwrap();
            let n = per_ip.entry(from.ip()).or_default();
            if *n >= shared.limits.max_per_ip {
                None
            } else {
                *n += 1;
                Some(IpTicket { shared: shared.clone(), ip: from.ip() })
            }
        };
        let Some(ticket) = ticket else {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            debug!(%from, "relay: over the per-IP connection cap, closed");
            drop(tcp);
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_client(tcp, from, acceptor, shared.clone()).await {
                debug!(%from, "relay client ended: {e}");
            }
            drop(ticket);
        });
    }
}

/// Logs a client in, then forwards its frames until it goes.
async fn serve_client(tcp: TcpStream, from: SocketAddr, acceptor: TlsAcceptor, shared: Arc<Shared>) -> Result<()> {
    let _ = tcp.set_nodelay(true);
    let limits = shared.limits.clone();
    let refused = |why: String| {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        Error::Relay(why)
    };
    let login = async {
        let mut tls = acceptor.accept(tcp).await.map_err(|e| Error::Relay(format!("TLS handshake: {e}")))?;
        let id = {
            let (_, conn) = tls.get_ref();
            let cert =
                conn.peer_certificates().and_then(|c| c.first()).ok_or(Error::Relay("no client certificate".into()))?;
            crate::tls::node_id_of(cert).map_err(|e| Error::Relay(e.to_string()))?
        };
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; 4096];
        let version = loop {
            if let Some(frame) = decoder.next_frame()? {
                match frame {
                    RelayFrame::Login { version } => break version,
                    other => return Err(Error::Relay(format!("expected Login, got {}", other.name()))),
                }
            }
            let n = tls.read(&mut buf).await.map_err(Error::Io)?;
            if n == 0 {
                return Err(Error::Relay("closed before logging in".into()));
            }
            decoder.extend(&buf[..n]);
        };
        Ok::<_, Error>((tls, id, version, decoder))
    };
    let (mut tls, id, version, decoder) = match tokio::time::timeout(limits.handshake_timeout, login).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Err(refused(e.to_string())),
        Err(_) => return Err(refused(format!("not logged in within {:?}", limits.handshake_timeout))),
    };
    if version != RELAY_VERSION {
        let _ = write_frame(
            &mut tls,
            &error(code::VERSION, format!("version {version} unsupported; this relay speaks {RELAY_VERSION}")),
        )
        .await;
        return Err(refused(format!("{id} speaks version {version}")));
    }
    let (tx, rx) = mpsc::channel(limits.queue_frames);
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let kicked = Arc::new(Notify::new());
    let admitted = {
        let mut clients = shared.clients.lock().unwrap();
        if !clients.contains_key(&id) && clients.len() >= limits.max_clients {
            false
        } else {
            let old = clients.insert(id, Client { conn, tx: tx.clone(), kicked: kicked.clone() });
            match old {
                Some(old) => {
                    let _ = old.tx.try_send(error(code::REPLACED, "replaced by a newer login of this node id".into()));
                    old.kicked.notify_one();
                }
                None => {
                    shared.stats.clients.fetch_add(1, Ordering::Relaxed);
                }
            }
            true
        }
    };
    if !admitted {
        let _ = write_frame(&mut tls, &error(code::TOO_MANY, "the relay is full".into())).await;
        return Err(refused(format!("{id}: the relay is full")));
    }
    info!(client = %id, %from, "relay client logged in");
    let _ = tx.try_send(RelayFrame::LoginAck { version: RELAY_VERSION });
    let (reader, writer) = tokio::io::split(tls);
    let mut writer_task = tokio::spawn(write_loop(writer, rx, limits.keepalive_interval));
    let mut writer_done = false;
    let outcome = tokio::select! {
        r = read_loop(reader, decoder, id, &tx, &shared) => r,
        _ = kicked.notified() => Ok(()),
        _ = &mut writer_task => {
            writer_done = true;
            Ok(()) // it could not write: the client is gone
        }
    };
    // Gone: forget it, unless a newer login took its place.
    {
        let mut clients = shared.clients.lock().unwrap();
        if clients.get(&id).is_some_and(|c| c.conn == conn) {
            clients.remove(&id);
            shared.stats.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if let Err(e) = &outcome {
        if matches!(e, Error::Malformed { .. } | Error::Limit { .. } | Error::Relay(_)) {
            shared.stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            warn!(client = %id, "relay client closed: {e}");
            let _ = tx.try_send(error(code::BAD_FRAME, e.to_string()));
        }
    }
    drop(tx);
    // Let the writer send what is queued (an Error, say), briefly.
    if !writer_done {
        let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    }
    info!(client = %id, "relay client left");
    outcome
}

fn error(code: u16, message: String) -> RelayFrame {
    RelayFrame::Error { code, message }
}

/// Reads a client's frames and forwards its datagrams; returns when it
/// closes, goes idle, or breaks a rule (the error names which).
async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    mut decoder: FrameDecoder,
    me: NodeId,
    tx: &mpsc::Sender<RelayFrame>,
    shared: &Shared,
) -> Result<()> {
    let limits = &shared.limits;
    let bucket = limits.rate_bytes_per_sec.map(|rate| TokenBucket::new(rate, (rate / 10).max(256 * 1024)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(frame) = decoder.next_frame()? {
            match frame {
                RelayFrame::SendTo { dst, datagrams } => {
                    let target = shared.clients.lock().unwrap().get(&dst).map(|c| c.tx.clone());
                    let Some(target) = target else {
                        shared.stats.to_unknown.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.try_send(RelayFrame::PeerGone(dst));
                        continue;
                    };
                    let len = datagrams.payload.len() as u64;
                    match target.try_send(RelayFrame::RecvFrom { src: me, datagrams }) {
                        Ok(()) => {
                            shared.stats.frames_relayed.fetch_add(1, Ordering::Relaxed);
                            shared.stats.bytes_relayed.fetch_add(len, Ordering::Relaxed);
                        }
                        Err(_) => {
                            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                RelayFrame::Ping(data) => {
                    let _ = tx.try_send(RelayFrame::Pong(data));
                }
                RelayFrame::KeepAlive | RelayFrame::Pong(_) => {}
                RelayFrame::Error { code, message } => {
                    debug!(client = %me, code, "relay client sent an error: {message}");
                    return Ok(());
                }
                other => return Err(Error::Relay(format!("a client may not send {}", other.name()))),
            }
        }
        let n = match tokio::time::timeout(limits.idle_timeout, r.read(&mut buf)).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(Error::Io(e)),
            Err(_) => {
                debug!(client = %me, "relay client idle for {:?}: closed", limits.idle_timeout);
                return Ok(());
            }
        };
        if let Some(bucket) = &bucket {
            // Not reading is what slows a fast sender: TCP pushes back.
            let wait = bucket.reserve(n as u64);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        decoder.extend(&buf[..n]);
    }
}
