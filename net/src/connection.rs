//! [`Connection`]: a QUIC connection to a peer whose node id the TLS
//! handshake proved, with what the node needs of it (its path, refusal,
//! round trip, byte counts) so nothing above reaches into quinn for it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    codes::ErrorCode,
    relay::{Path, PathSocket},
    tls, Error, NodeId, Result,
};

/// A connection to an authenticated peer.
#[derive(Clone)]
pub struct Connection {
    inner: quinn::Connection,
    remote: NodeId,
    paths: Option<Arc<PathSocket>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("remote", &self.remote).field("addr", &self.inner.remote_address()).finish()
    }
}

impl Connection {
    /// The peer's node id (proven by the handshake).
    pub fn remote_id(&self) -> NodeId {
        self.remote
    }

    /// The address quinn sends to: the peer's UDP address, or a mapped
    /// address standing for a relayed path. Use [`Connection::observed_addr`]
    /// for an address to tell anyone.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// The peer's reason, if it closed this connection refusing us
    /// ([`ErrorCode::Refused`]: an allowlist, a connection cap).
    pub fn refusal(&self) -> Option<String> {
        match self.inner.close_reason()? {
            quinn::ConnectionError::ApplicationClosed(c) if c.error_code == ErrorCode::Refused.varint() => {
                Some(String::from_utf8_lossy(&c.reason).into_owned())
            }
            // A server that refuses our certificate (an allowlist) does so
            // after our side of the handshake finished: a TLS alert.
            quinn::ConnectionError::ConnectionClosed(c) if (0x100..0x200).contains(&u64::from(c.error_code)) => {
                Some(format!("handshake refused ({}): {}", c.error_code, String::from_utf8_lossy(&c.reason)))
            }
            _ => None,
        }
    }

    /// True if `other` is this very connection (clones compare equal).
    pub fn same(&self, other: &Connection) -> bool {
        self.inner.stable_id() == other.inner.stable_id()
    }

    /// True once the connection is closed or lost.
    pub fn is_closed(&self) -> bool {
        self.inner.close_reason().is_some()
    }

    /// Waits until the connection closes; why it did.
    pub async fn closed(&self) -> quinn::ConnectionError {
        self.inner.closed().await
    }

    /// UDP payload bytes sent and received on this connection so far.
    pub fn udp_bytes(&self) -> (u64, u64) {
        let s = self.inner.stats();
        (s.udp_tx.bytes, s.udp_rx.bytes)
    }

    /// The peer's real UDP address as this endpoint sees it, if the path is
    /// direct (`None` through a relay).
    pub fn observed_addr(&self) -> Option<SocketAddr> {
        match self.path()? {
            Path::Direct(a) => Some(a),
            _ => None,
        }
    }

    /// The way this connection's datagrams go (`None`: a relayed peer whose
    /// mapping was given up, the connection is dying).
    pub fn path(&self) -> Option<Path> {
        let seen = self.inner.remote_address();
        match &self.paths {
            Some(p) => p.path(seen),
            None => Some(Path::Direct(seen)),
        }
    }

    /// The underlying quinn connection.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }

    /// Closes the connection with `code`.
    pub fn close(&self, code: ErrorCode, reason: &str) {
        self.inner.close(code.varint(), reason.as_bytes());
    }

    /// Round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.inner.rtt()
    }

    pub(crate) fn from_quinn(inner: quinn::Connection, paths: Option<Arc<PathSocket>>) -> Result<Self> {
        let certs = inner
            .peer_identity()
            .and_then(|i| i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
            .ok_or_else(|| Error::PeerIdentity("the peer presented no certificate".into()))?;
        let cert = certs.first().ok_or_else(|| Error::PeerIdentity("the peer presented no certificate".into()))?;
        let remote = tls::node_id_of(cert).map_err(|e| Error::PeerIdentity(e.to_string()))?;
        Ok(Connection { inner, remote, paths })
    }
}
