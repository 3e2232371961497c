//! A relay client: one TLS connection to a relay, logged in as this node,
//! pinning the relay's id; datagrams out through a bounded queue, what
//! arrives through a channel. The node's socket layer builds on it.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::{
    io::AsyncReadExt,
    net::TcpStream,
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
};
use tokio_rustls::TlsConnector;
use tracing::debug;

use super::stream::write_loop;
use crate::{
    relay::frame::{Datagrams, FrameDecoder, RelayFrame, RELAY_VERSION},
    Error, NodeId, RelayAddr, Result, SecretKey,
};

/// Frames waiting to be sent to the relay (or read by the owner); more
/// are dropped (datagrams may be lost; QUIC recovers). At most 16 MiB of
/// 64 KiB batches.
pub const SEND_QUEUE_FRAMES: usize = 256;
/// Time to connect, handshake and log in.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A keepalive after this much silence (the relay closes idle clients
/// after 60 s; NATs forget TCP mappings too).
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// With no frame from the relay for this long, the connection is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(45);

/// What arrives from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Datagrams from a node.
    Datagrams {
        /// The sender, as the relay proved it.
        src: NodeId,
        /// The batch.
        datagrams: Datagrams,
    },
    /// A node is not connected to this relay.
    PeerGone(NodeId),
}

/// A logged-in connection to a relay. Dropping it closes the connection.
#[derive(Debug)]
pub struct RelayClient {
    relay: RelayAddr,
    login_rtt: Duration,
    tx: mpsc::Sender<RelayFrame>,
    rx: mpsc::Receiver<Incoming>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for RelayClient {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RelayClient {
    /// Connects to `relay` over TCP + TLS as `key`'s node, checks the
    /// relay's identity, and logs in.
    pub async fn connect(key: &SecretKey, relay: RelayAddr) -> Result<RelayClient> {
        let config = Arc::new(crate::tls::relay_client_config(key, relay.id)?);
        let connect = async {
            let tcp = TcpStream::connect(relay.addr)
                .await
                .map_err(|e| Error::Connect { addr: relay.addr, reason: e.to_string() })?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::IpAddress(relay.addr.ip().into());
            let mut tls = TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| Error::Connect { addr: relay.addr, reason: format!("TLS: {e}") })?;
            let mut out = bytes::BytesMut::new();
            RelayFrame::Login { version: RELAY_VERSION }.encode(&mut out)?;
            let sent = std::time::Instant::now();
            tokio::io::AsyncWriteExt::write_all(&mut tls, &out).await.map_err(Error::Io)?;
            let mut decoder = FrameDecoder::default();
            let mut buf = vec![0u8; 4096];
            loop {
                match decoder.next_frame()? {
                    Some(RelayFrame::LoginAck { .. }) => break,
                    Some(RelayFrame::Error { code, message }) => {
                        return Err(Error::Relay(format!("{} refused the login ({code}): {message}", relay.addr)))
                    }
                    Some(RelayFrame::KeepAlive) => {}
                    Some(other) => return Err(Error::Relay(format!("expected LoginAck, got {other:?}"))),
                    None => {
                        let n = tls.read(&mut buf).await.map_err(Error::Io)?;
                        if n == 0 {
                            return Err(Error::Relay(format!("{} closed the connection at login", relay.addr)));
                        }
                        decoder.extend(&buf[..n]);
                    }
                }
            }
            Ok((tls, decoder, sent.elapsed()))
        };
        let (tls, decoder, login_rtt) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| {
            Error::Timeout(format!("relay {} did not log us in within {CONNECT_TIMEOUT:?}", relay.addr))
        })??;
        let (reader, writer) = tokio::io::split(tls);
        let (tx, out_rx) = mpsc::channel(SEND_QUEUE_FRAMES);
        let (in_tx, rx) = mpsc::channel(SEND_QUEUE_FRAMES);
        let writer = tokio::spawn(write_loop(writer, out_rx, KEEPALIVE));
        let reader = tokio::spawn(read_loop(reader, decoder, in_tx, tx.clone()));
        debug!(%relay, "logged in to the relay");
        Ok(RelayClient { relay, login_rtt, tx, rx, tasks: [writer, reader] })
    }

    /// The time from sending the login to its acknowledgement: one round
    /// trip to the relay (how the nearest relay is chosen).
    pub fn login_rtt(&self) -> Duration {
        self.login_rtt
    }

    /// A handle that queues datagrams on this connection (for a socket
    /// that sends from many tasks while one task reads).
    pub fn sender(&self) -> RelaySender {
        RelaySender(self.tx.clone())
    }

    /// The relay.
    pub fn relay(&self) -> RelayAddr {
        self.relay
    }

    /// Queues datagrams for `dst`; false if the queue is full (they are
    /// dropped) or the connection is gone (see [`Self::is_closed`]).
    pub fn send(&self, dst: NodeId, ecn: u8, segment_size: u16, payload: Bytes) -> bool {
        RelaySender(self.tx.clone()).send(dst, ecn, segment_size, payload)
    }

    /// The next thing the relay sends; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// Non-blocking [`Self::recv`].
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }

    /// True once the connection ended (the relay closed it, or it died).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.tasks.iter().any(|t| t.is_finished())
    }
}

/// Queues datagrams on one relay connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct RelaySender(mpsc::Sender<RelayFrame>);

impl RelaySender {
    /// As [`RelayClient::send`].
    pub fn send(&self, dst: NodeId, ecn: u8, segment_size: u16, payload: Bytes) -> bool {
        let frame = RelayFrame::SendTo { dst, datagrams: Datagrams { ecn, segment_size, payload } };
        self.0.try_send(frame).is_ok()
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    mut decoder: FrameDecoder,
    incoming: mpsc::Sender<Incoming>,
    out: mpsc::Sender<RelayFrame>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    debug!("relay sent a bad frame: {e}");
                    return;
                }
            };
            let item = match frame {
                RelayFrame::RecvFrom { src, datagrams } => Incoming::Datagrams { src, datagrams },
                RelayFrame::PeerGone(id) => Incoming::PeerGone(id),
                RelayFrame::Ping(data) => {
                    let _ = out.try_send(RelayFrame::Pong(data));
                    continue;
                }
                RelayFrame::Error { code, message } => {
                    debug!(code, "the relay closed our connection: {message}");
                    return;
                }
                _ => continue,
            };
            // A full inbox drops datagrams rather than stalling the
            // relay connection (QUIC recovers the loss).
            if let Err(TrySendError::Closed(_)) = incoming.try_send(item) {
                return;
            }
        }
        match tokio::time::timeout(DEAD_AFTER, r.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => decoder.extend(&buf[..n]),
            _ => return,
        }
    }
}
