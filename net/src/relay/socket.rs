//! One socket, two paths: the `quinn::AsyncUdpSocket` a node's endpoint
//! runs on. Datagrams to real addresses go out of the UDP socket; a peer
//! reached through a relay has a mapped address (a unique-local IPv6
//! address per node id with random bits), and datagrams to it become relay
//! frames, while relay frames come back out carrying that mapped address.
//! quinn sees one address per relayed peer while the relay underneath can
//! change.
//!
//! What quinn needs from such a socket (see FIELD-NOTES): one poller for
//! all paths (relay sends never block: they queue or drop), `Ok` for a
//! datagram nothing can carry (loss recovery copes, an error would kill
//! the connection), an IPv6 local address so that IPv6 mapped addresses
//! are accepted (IPv4 peers then appear as `::ffff:a.b.c.d`, converted
//! here in both directions). Relayed datagrams are capped at
//! [`MAX_RELAYED_DATAGRAM`]: MTU discovery over a relay finds no more, so
//! no path change can leave a connection with packets too big. Datagrams
//! whose first byte is below 0x40 are not QUIC (the endpoint never greases
//! the QUIC bit): probes, taken out before quinn.

use std::{
    collections::HashMap,
    io::{self, IoSliceMut},
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use quinn::{
    udp::{EcnCodepoint, RecvMeta, Transmit},
    AsyncUdpSocket, UdpPoller,
};
use rand::Rng;
use tokio::sync::mpsc;

use super::links::{Arrived, Relays, INBOX_BATCHES};
use crate::{relay::frame::MAX_PAYLOAD_BYTES, NodeId, RelayAddr, SecretKey};

/// Largest datagram sent through a relay (QUIC's minimum MTU); larger
/// ones (MTU probes) are dropped.
pub const MAX_RELAYED_DATAGRAM: usize = 1200;
/// Relayed peers with a mapped address at once; the least recently active
/// one gives its address up to a new one.
pub const MAX_MAPPED_PEERS: usize = 4096;

/// Where the datagrams to an address quinn uses go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// Straight to this UDP address.
    Direct(SocketAddr),
    /// Through this relay.
    Relay(RelayAddr),
}

/// Bytes through relays, and datagrams nothing carried.
#[derive(Debug, Default)]
pub struct PathStats {
    /// Datagram bytes sent through relays.
    pub relay_bytes_sent: AtomicU64,
    /// Datagram bytes received through relays.
    pub relay_bytes_received: AtomicU64,
    /// Datagrams dropped on the way to a relay (too big, no connection,
    /// queue full).
    pub relay_dropped: AtomicU64,
    /// Datagrams received that were not QUIC (taken out before quinn).
    pub not_quic: AtomicU64,
}

struct Mapped {
    node: NodeId,
    addr: SocketAddr,
    relay: RelayAddr,
    used: Instant,
}

#[derive(Default)]
struct AddrMap {
    by_node: HashMap<NodeId, Mapped>,
    by_ip: HashMap<Ipv6Addr, NodeId>,
}

struct Inbox {
    rx: mpsc::Receiver<Arrived>,
    /// A batch partly handed to quinn, and how far.
    partial: Option<(SocketAddr, Arrived, usize)>,
}

/// The socket under a node's endpoint: UDP and relays. Build one with
/// [`crate::Endpoint::with_relays`].
pub struct PathSocket {
    udp: Arc<dyn AsyncUdpSocket>,
    /// The real socket is IPv4: quinn sees `::ffff:` forms.
    v4: bool,
    /// The first 6 bytes of every mapped address (`fd` + 40 random bits).
    prefix: [u8; 6],
    map: Mutex<AddrMap>,
    relays: Arc<Relays>,
    inbox: Mutex<Inbox>,
    /// Alternates which path `poll_recv` reads first.
    relay_first: AtomicBool,
    stats: Arc<PathStats>,
}

impl std::fmt::Debug for PathSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathSocket").field("udp", &self.udp).field("relays", &self.relays).finish()
    }
}

fn to_v4(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(IpAddr::V4(ip), a.port()),
            None => addr,
        },
        a => a,
    }
}

fn to_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0)),
        a => a,
    }
}

impl PathSocket {
    /// Wraps a UDP socket quinn's runtime made (needs a tokio runtime);
    /// `relays` are candidates for home (none: peers' relays are still
    /// used when dialing them).
    pub(crate) fn new(
        key: Arc<SecretKey>,
        udp: Arc<dyn AsyncUdpSocket>,
        relays: Vec<RelayAddr>,
    ) -> io::Result<Arc<PathSocket>> {
        let v4 = udp.local_addr()?.is_ipv4();
        let (tx, rx) = mpsc::channel(INBOX_BATCHES);
        let mut prefix = [0u8; 6];
        rand::thread_rng().fill(&mut prefix[1..]);
        prefix[0] = 0xfd;
        Ok(Arc::new(PathSocket {
            udp,
            v4,
            prefix,
            map: Mutex::new(AddrMap::default()),
            relays: Relays::start(key, relays, tx),
            inbox: Mutex::new(Inbox { rx, partial: None }),
            relay_first: AtomicBool::new(false),
            stats: Arc::new(PathStats::default()),
        }))
    }

    /// The relay connections.
    pub fn relays(&self) -> &Arc<Relays> {
        &self.relays
    }

    /// Relay traffic counters.
    pub fn stats(&self) -> &Arc<PathStats> {
        &self.stats
    }

    /// The real UDP address the socket is bound to.
    pub fn udp_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    fn is_mapped(&self, ip: &IpAddr) -> bool {
        matches!(ip, IpAddr::V6(v6) if v6.octets()[..6] == self.prefix)
    }

    /// What an address quinn uses stands for: a real address (IPv4 in its
    /// own form), or the relay a peer is reached through; `None` for a
    /// mapped address no longer (or never) in use.
    pub fn path(&self, seen: SocketAddr) -> Option<Path> {
        if !self.is_mapped(&seen.ip()) {
            return Some(Path::Direct(to_v4(seen)));
        }
        let IpAddr::V6(ip) = seen.ip() else { return None };
        let map = self.map.lock().unwrap();
        let node = map.by_ip.get(&ip)?;
        map.by_node.get(node).map(|m| Path::Relay(m.relay))
    }

    /// The address quinn dials to reach `node` through `relay`; the same
    /// for as long as the node keeps its mapping (its relay is updated).
    pub fn relay_addr(&self, node: NodeId, relay: RelayAddr) -> SocketAddr {
        self.map_node(node, relay)
    }

    fn map_node(&self, node: NodeId, relay: RelayAddr) -> SocketAddr {
        let mut map = self.map.lock().unwrap();
        let now = Instant::now();
        if let Some(m) = map.by_node.get_mut(&node) {
            m.relay = relay;
            m.used = now;
            return m.addr;
        }
        if map.by_node.len() >= MAX_MAPPED_PEERS {
            let oldest = map.by_node.values().min_by_key(|m| m.used).map(|m| (m.node, m.addr));
            if let Some((old, SocketAddr::V6(a))) = oldest {
                map.by_node.remove(&old);
                map.by_ip.remove(a.ip());
            }
        }
        let addr = loop {
            let mut octets = [0u8; 16];
            octets[..6].copy_from_slice(&self.prefix);
            rand::thread_rng().fill(&mut octets[6..]);
            let ip = Ipv6Addr::from(octets);
            if !map.by_ip.contains_key(&ip) {
                break SocketAddr::V6(SocketAddrV6::new(ip, 1, 0, 0));
            }
        };
        let SocketAddr::V6(a) = addr else { unreachable!("mapped addresses are IPv6") };
        map.by_ip.insert(*a.ip(), node);
        map.by_node.insert(node, Mapped { node, addr, relay, used: now });
        addr
    }

    fn relayed_to(&self, dst: &SocketAddr) -> Option<(NodeId, RelayAddr)> {
        let SocketAddr::V6(a) = dst else { return None };
        let mut map = self.map.lock().unwrap();
        let node = *map.by_ip.get(a.ip())?;
        let m = map.by_node.get_mut(&node)?;
        m.used = Instant::now();
        Some((node, m.relay))
    }

    fn send_relayed(&self, node: NodeId, relay: RelayAddr, t: &Transmit) {
        let segment = t.segment_size.unwrap_or(t.contents.len());
        let dropped = |n: usize| self.stats.relay_dropped.fetch_add(n as u64, Ordering::Relaxed);
        if segment > MAX_RELAYED_DATAGRAM || segment == 0 {
            dropped(t.contents.len().div_ceil(segment.max(1)));
            return;
        }
        let ecn = t.ecn.map_or(0, |e| e as u8);
        // A batch bigger than one relay frame goes as several.
        let per_frame = (MAX_PAYLOAD_BYTES / segment) * segment;
        for part in t.contents.chunks(per_frame) {
            let seg = if part.len() > segment { segment as u16 } else { 0 };
            if self.relays.send(relay, node, ecn, seg, Bytes::copy_from_slice(part)) {
                self.stats.relay_bytes_sent.fetch_add(part.len() as u64, Ordering::Relaxed);
            } else {
                dropped(part.len().div_ceil(segment));
            }
        }
    }

    /// Hands relayed datagrams to quinn: whole batches (stride = segment
    /// size) when they fit the buffer, else as many packets as fit.
    fn poll_relayed(&self, cx: &mut Context, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> usize {
        let mut inbox = self.inbox.lock().unwrap();
        let mut n = 0;
        while n < bufs.len() {
            let (addr, arrived, offset) = match inbox.partial.take() {
                Some(p) => p,
                None => match inbox.rx.poll_recv(cx) {
                    Poll::Ready(Some(a)) => {
                        self.stats.relay_bytes_received.fetch_add(a.datagrams.payload.len() as u64, Ordering::Relaxed);
                        (self.map_node(a.src, a.relay), a, 0)
                    }
                    _ => break,
                },
            };
            let d = &arrived.datagrams;
            let rest = &d.payload[offset..];
            let stride = match d.segment_size {
                0 => rest.len(),
                s => s as usize,
            };
            let buf = &mut bufs[n];
            let fits = if rest.len() <= buf.len() { rest.len() } else { (buf.len() / stride.max(1)) * stride };
            if fits == 0 {
                // A packet bigger than quinn's buffer: not a packet quinn
                // sent (it is dropped).
                continue;
            }
            buf[..fits].copy_from_slice(&rest[..fits]);
            meta[n] = RecvMeta {
                addr,
                len: fits,
                stride: stride.min(fits),
                ecn: EcnCodepoint::from_bits(d.ecn),
                dst_ip: None,
            };
            n += 1;
            if offset + fits < d.payload.len() {
                inbox.partial = Some((addr, arrived, offset + fits));
            }
        }
        n
    }

    fn poll_udp(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = match self.udp.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for (m, buf) in meta.iter_mut().zip(bufs.iter()).take(n) {
            if self.v4 {
                m.addr = to_v6(m.addr);
            }
            // Not QUIC (a probe), or posing as a relayed peer: not for quinn.
            if m.len > 0 && (buf[0] < 0x40 || self.is_mapped(&m.addr.ip())) {
                self.stats.not_quic.fetch_add(1, Ordering::Relaxed);
                m.len = 0;
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncUdpSocket for PathSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        // Relay sends never block, so UDP's writability is the socket's.
        self.udp.clone().create_io_poller()
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        if let Some((node, relay)) = self.relayed_to(&t.destination) {
            self.send_relayed(node, relay, t);
            return Ok(());
        }
        if self.is_mapped(&t.destination.ip()) {
            // A mapping given up: nothing carries it.
            self.stats.relay_dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if !self.v4 {
            return self.udp.try_send(t);
        }
        let destination = to_v4(t.destination);
        if destination.is_ipv6() {
            return Ok(()); // an IPv6 peer, unreachable from an IPv4 socket
        }
        let src_ip = t.src_ip.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        });
        self.udp.try_send(&Transmit { destination, src_ip, ..*t })
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let relay_first = !self.relay_first.fetch_xor(true, Ordering::Relaxed);
        if relay_first {
            let n = self.poll_relayed(cx, bufs, meta);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            return self.poll_udp(cx, bufs, meta);
        }
        match self.poll_udp(cx, bufs, meta) {
            Poll::Pending => {}
            ready => return ready,
        }
        match self.poll_relayed(cx, bufs, meta) {
            0 => Poll::Pending,
            n => Poll::Ready(Ok(n)),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        let addr = self.udp.local_addr()?;
        Ok(if self.v4 { to_v6(addr) } else { addr })
    }

    fn max_transmit_segments(&self) -> usize {
        self.udp.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.udp.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.udp.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_map_both_ways() {
        let v4: SocketAddr = "10.0.0.1:7001".parse().unwrap();
        let v6 = to_v6(v4);
        assert_eq!(v6.to_string(), "[::ffff:10.0.0.1]:7001");
        assert_eq!(to_v4(v6), v4);
        let real6: SocketAddr = "[2001:db8::1]:7001".parse().unwrap();
        assert_eq!(to_v4(real6), real6);
    }
}
