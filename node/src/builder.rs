//! [`NodeBuilder`]: how an embedder starts a [`Node`] — from a data dir,
//! or from parts it already holds (a [`Store`], a [`SecretKey`], a UDP
//! socket), with [`P2pConfig`] defaults for everything else.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
};

use blixard_protocol::SecretKey;
use blixard_store::Store;

use crate::{Error, Node, P2pConfig, Result};

/// The address a node binds when given neither [`NodeBuilder::bind`] nor
/// [`NodeBuilder::socket`]: every IPv4 interface, a free port.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Builds a [`Node`] (see [`Node::builder`]).
///
/// Each part falls back on the data dir, then on a default:
///
/// | part | given | else, with [`data_dir`](Self::data_dir) | else |
/// |---|---|---|---|
/// | store | [`store`](Self::store) | `DIR/store` | — (an error) |
/// | identity | [`secret_key`](Self::secret_key) | `DIR/node.key`, made once | a new key each start |
/// | peer book, queued transfers | — | `DIR/node.db` | in memory |
/// | UDP socket | [`socket`](Self::socket) or [`bind`](Self::bind) | [`DEFAULT_BIND`] | [`DEFAULT_BIND`] |
///
/// ```
/// use blixard_node::{Node, P2pConfig};
/// use blixard_store::Store;
///
/// # #[tokio::main] async fn main() -> blixard_node::Result<()> {
/// // A node over a store the program already uses, on a socket it bound.
/// let store = Store::temporary()?;
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let config = P2pConfig { max_concurrent_transfers: 8, ..P2pConfig::default() };
/// let node = Node::builder().store(store.clone()).socket(socket).config(config).spawn().await?;
/// assert_eq!(node.store().dir(), store.dir());
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until spawn() is awaited"]
pub struct NodeBuilder {
    label: u64,
    data_dir: Option<PathBuf>,
    store: Option<Store>,
    key: Option<SecretKey>,
    bind: Option<SocketAddr>,
    socket: Option<UdpSocket>,
    config: P2pConfig,
}

/// What [`Node`]'s start needs, every default applied.
pub(crate) struct Parts {
    pub label: u64,
    pub data_dir: Option<PathBuf>,
    pub store: Store,
    pub key: SecretKey,
    pub endpoint_socket: EndpointSocket,
    pub config: P2pConfig,
}

/// Where the endpoint's UDP comes from.
pub(crate) enum EndpointSocket {
    Bind(SocketAddr),
    Socket(UdpSocket),
}

impl NodeBuilder {
    /// The data directory: identity key, store and node database, each
    /// unless given on its own. Created if missing.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Use this store (the node shares it: the embedder may keep using its
    /// clone) instead of `DIR/store`.
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Use this identity instead of the data dir's key file.
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Bind a new UDP socket here (port 0 picks a free one).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Serve on this already bound UDP socket (it wins over [`bind`](Self::bind)).
    pub fn socket(mut self, socket: UdpSocket) -> Self {
        self.socket = Some(socket);
        self
    }

    /// Settings ([`P2pConfig::default`] if not given). Checked at spawn.
    pub fn config(mut self, config: P2pConfig) -> Self {
        self.config = config;
        self
    }

    /// A number for this node in logs (the CLI's `--id`). Default 0.
    pub fn label(mut self, label: u64) -> Self {
        self.label = label;
        self
    }

    /// Opens what was not given and starts the node: serving, health
    /// checks, discovery, the transfer queue and garbage collection. Errors
    /// name the part that failed ("Failed to create node: ...").
    pub async fn spawn(self) -> Result<Node> {
        self.config.validate()?;
        if let Some(dir) = &self.data_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::start(format!("data dir {} is not writable", dir.display()), e))?;
        }
        let key = match (self.key, &self.data_dir) {
            (Some(key), _) => key,
            (None, Some(dir)) => SecretKey::load_or_create(dir).map_err(|e| Error::start("identity", e))?,
            (None, None) => SecretKey::generate(),
        };
        let store = match (self.store, &self.data_dir) {
            (Some(store), _) => store,
            (None, Some(dir)) => {
                let store_dir = dir.join("store");
                let opened = tokio::task::spawn_blocking(move || {
                    Store::open(&store_dir).map_err(|e| Error::start(format!("store in {}", store_dir.display()), e))
                });
                opened.await.map_err(|e| Error::start("store", e))??
            }
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "a node needs a data dir or a store (NodeBuilder::data_dir or ::store)".into(),
                ))
            }
        };
        let endpoint_socket = match self.socket {
            Some(socket) => EndpointSocket::Socket(socket),
            None => EndpointSocket::Bind(self.bind.unwrap_or(DEFAULT_BIND)),
        };
        Node::start(Parts {
            label: self.label,
            data_dir: self.data_dir,
            store,
            key,
            endpoint_socket,
            config: self.config,
        })
        .await
    }
}
