//! What the node's tests share: starting a node in process, or a
//! `blixard node` process, on a free loopback port (reading the line it
//! prints).
#![allow(dead_code)] // each test crate uses part of it

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_blixard");

/// A running `blixard node`, killed on drop.
pub struct NodeProcess {
    pub child: Child,
    /// Its node id, as printed.
    pub id: String,
    /// Its QUIC address, as printed.
    pub addr: String,
}

impl NodeProcess {
    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `blixard node --id ID` on 127.0.0.1:0 with `data` as its data
/// dir and `extra` flags; returns once it has printed its id and address.
pub fn start_node(id: u64, data: &Path, extra: &[&str]) -> NodeProcess {
    let mut child = Command::new(BIN)
        .args(["node", "--id", &id.to_string(), "--bind", "127.0.0.1:0", "--enable-p2p", "--data-dir"])
        .arg(data)
        .args(extra)
        .env_remove("BLIXARD_P2P_PORT")
        .env_remove("BLIXARD_P2P_CACHE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start blixard node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    let (id, addr) = (field("id="), field("addr="));
    NodeProcess { child, id, addr }
}

/// A node in this process on a free loopback port, its data in
/// `dir/node-ID`.
pub async fn node_in(dir: &Path, id: u64, config: blixard_node::P2pConfig) -> blixard_node::Node {
    let options = blixard_node::NodeOptions {
        id,
        data_dir: dir.join(format!("node-{id}")),
        bind: "127.0.0.1:0".parse().unwrap(),
        config,
    };
    blixard_node::Node::spawn(options).await.unwrap()
}
