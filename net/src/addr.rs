//! How to reach a node: [`NodeAddr`], its id (if known), the UDP addresses
//! it may be reached at directly, and the relay it keeps a connection to
//! ([`RelayAddr`]). One type names a peer everywhere: in the CLI, the peer
//! book, peer exchange and dialing ([`crate::Endpoint::connect_node`]).
//!
//! Text forms: `HOST:PORT`, `NODE_ID@HOST:PORT`, several direct addresses
//! separated by commas (`NODE_ID@HOST:PORT,HOST:PORT`), and a relay after a
//! `relay=` element (`NODE_ID@HOST:PORT,relay=RELAY_ID@HOST:PORT`, or
//! `NODE_ID@relay=RELAY_ID@HOST:PORT` for a node with no direct address).
//! Without the node id, the key seen at the first handshake is returned so
//! the caller can pin it (trust on first use).

use std::{fmt, net::SocketAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Error, NodeId, Result};

/// Most direct addresses kept for one node (more are dropped, not an error).
pub const MAX_DIRECT_ADDRS: usize = 8;

/// A relay server: its own identity (pinned by clients) and its address.
///
/// ```
/// let relay: blixard_net::RelayAddr = format!("relay://{}@127.0.0.1:3340", "ab".repeat(32)).parse()?;
/// assert_eq!(relay.addr.port(), 3340);
/// # Ok::<(), blixard_net::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelayAddr {
    /// The relay's node id.
    pub id: NodeId,
    /// Its TCP address.
    pub addr: SocketAddr,
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl FromStr for RelayAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidPeerAddr(s.into());
        let text = s.strip_prefix("relay://").unwrap_or(s);
        let (id, addr) = text.split_once('@').ok_or_else(bad)?;
        Ok(RelayAddr { id: id.parse()?, addr: addr.parse().map_err(|_| bad())? })
    }
}

/// Where to reach a node, and optionally who it must be.
///
/// ```
/// use blixard_net::{NodeAddr, SecretKey};
///
/// let key = SecretKey::generate();
/// let by_id: NodeAddr = format!("{}@127.0.0.1:7001", key.node_id()).parse()?;
/// assert_eq!(by_id.id, Some(key.node_id()));
/// let by_address: NodeAddr = "127.0.0.1:7001".parse()?; // identity learned at the handshake
/// assert_eq!(by_address, NodeAddr::direct(None, "127.0.0.1:7001".parse().unwrap()));
/// # Ok::<(), blixard_net::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct NodeAddr {
    /// The expected identity; `None` trusts the key seen on first use.
    pub id: Option<NodeId>,
    /// UDP addresses it may be reached at directly, best first.
    pub direct_addrs: Vec<SocketAddr>,
    /// The relay it keeps a connection to, if any.
    pub relay: Option<RelayAddr>,
}

impl NodeAddr {
    /// A node known by one direct address.
    pub fn direct(id: Option<NodeId>, addr: SocketAddr) -> Self {
        NodeAddr { id, direct_addrs: vec![addr], relay: None }
    }

    /// True if it names no way to reach the node.
    pub fn is_unreachable(&self) -> bool {
        self.direct_addrs.is_empty() && self.relay.is_none()
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = self.id {
            write!(f, "{id}@")?;
        }
        let mut parts: Vec<String> = self.direct_addrs.iter().map(|a| a.to_string()).collect();
        if let Some(r) = &self.relay {
            parts.push(format!("relay={r}"));
        }
        f.write_str(&parts.join(","))
    }
}

impl FromStr for NodeAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidPeerAddr(s.into());
        // The id is what comes before the first '@', unless that part is an address.
        let (id, rest) = match s.split_once('@') {
            Some((id, rest)) if !id.starts_with("relay=") && !id.contains(',') => (Some(id.parse()?), rest),
            _ => (None, s),
        };
        let mut addr = NodeAddr { id, ..Default::default() };
        for part in rest.split(',') {
            match part.strip_prefix("relay=") {
                Some(r) if addr.relay.is_none() => addr.relay = Some(r.parse().map_err(|_| bad())?),
                Some(_) => return Err(bad()),
                None => addr.direct_addrs.push(part.parse().map_err(|_| bad())?),
            }
        }
        if addr.is_unreachable() || addr.direct_addrs.len() > MAX_DIRECT_ADDRS {
            return Err(bad());
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    #[test]
    fn text_forms_round_trip() {
        let id = SecretKey::generate().node_id();
        let relay = SecretKey::generate().node_id();
        for text in [
            "127.0.0.1:7002".to_string(),
            format!("{id}@127.0.0.1:7001"),
            format!("{id}@127.0.0.1:7001,[::1]:7001"),
            format!("{id}@127.0.0.1:7001,relay={relay}@10.0.0.1:3340"),
            format!("{id}@relay={relay}@10.0.0.1:3340"),
        ] {
            let a: NodeAddr = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
        }
        let a: NodeAddr = format!("{id}@127.0.0.1:7001").parse().unwrap();
        assert_eq!(a, NodeAddr::direct(Some(id), "127.0.0.1:7001".parse().unwrap()));
        assert_eq!("127.0.0.1:7002".parse::<NodeAddr>().unwrap().id, None);
        let r: RelayAddr = format!("relay://{relay}@10.0.0.1:3340").parse().unwrap();
        assert_eq!(r.id, relay);
        for bad in ["nonsense", "", "abc@127.0.0.1:1", "127.0.0.1:1,relay=x", &format!("{id}@")] {
            assert!(bad.parse::<NodeAddr>().is_err(), "{bad:?}");
        }
    }
}
