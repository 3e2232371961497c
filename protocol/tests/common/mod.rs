#![allow(dead_code)]

use std::sync::Arc;

use blixard_protocol::{server, Connection, Endpoint, EndpointOptions, SecretKey};
use blixard_store::{Hash, Store};

pub struct Server {
    pub endpoint: Endpoint,
    pub store: Store,
    pub _dir: tempfile::TempDir,
}

/// Deterministic pseudo-random bytes (the one generator of every test).
#[allow(unused_imports)] // not every test crate uses it
pub use blixard_tests::data::pseudo_random as data;

pub fn endpoint() -> Endpoint {
    Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), EndpointOptions::default()).unwrap()
}

pub async fn server_with(limits: blixard_protocol::limits::ServerLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let endpoint = endpoint();
    let ctx = server::ServerContext::new(store.clone(), limits);
    tokio::spawn(server::accept_loop(endpoint.clone(), ctx));
    Server { endpoint, store, _dir: dir }
}

pub async fn server() -> Server {
    server_with(Default::default()).await
}

impl Server {
    pub async fn add(&self, data: Vec<u8>) -> Hash {
        let out = self.store.import_bytes(data).await.unwrap();
        let h = out.hash;
        self.store.set_tag_and_release(&format!("t-{h}"), out.lease).unwrap();
        h
    }
}

pub struct Client {
    pub endpoint: Endpoint,
    pub store: Store,
    pub conn: Connection,
    pub _dir: tempfile::TempDir,
}

pub async fn client(server: &Endpoint) -> Client {
    client_with(server, EndpointOptions::default()).await
}

pub async fn client_with(server: &Endpoint, options: EndpointOptions) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let endpoint = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), options).unwrap();
    let conn = endpoint.connect(server.local_addr(), Some(server.node_id())).await.unwrap();
    Client { endpoint, store, conn, _dir: dir }
}

pub fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
