//! `blixard node`: runs a [`Node`] with its control API until Ctrl-C or
//! SIGTERM.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result};
use blixard_node::{control, Node, NodeOptions, P2pConfig};
use blixard_protocol::NodeAddr;
use tracing::{info, warn};

/// What `blixard node` was given.
pub struct NodeArgs {
    pub id: u64,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub peers: Vec<NodeAddr>,
    pub config: P2pConfig,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: NodeArgs) -> Result<()> {
    let node =
        Node::spawn(NodeOptions { id: args.id, data_dir: args.data_dir.clone(), bind: args.bind, config: args.config })
            .await?;
    let control = control::serve(node.clone(), node.addr().port()).await?;
    // Dial the configured peers first (bounded), so the node is connected
    // when it reports ready; a peer that is down is retried later.
    let dials = args.peers.iter().map(|peer| {
        let (node, peer) = (node.clone(), peer.clone());
        tokio::spawn(async move {
            match node.connect(peer.clone()).await {
                Ok(id) => info!(%peer, %id, "peer reachable"),
                Err(e) => {
                    warn!(%peer, "cannot reach peer (No peers discovered? check that it runs and the address): {e}")
                }
            }
        })
    });
    let dials: Vec<_> = dials.collect();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        for d in dials {
            let _ = d.await;
        }
    })
    .await;
    // One line for scripts and tests: the id and actual addresses.
    let relay = node.relay_server_addr().map(|a| format!(" relay={}@{a}", node.node_id())).unwrap_or_default();
    println!(
        "blixard node {} id={} addr={} control={} data={}{relay}",
        args.id,
        node.node_id(),
        node.addr(),
        control,
        args.data_dir.display()
    );
    shutdown_signal().await.context("installing signal handlers")?;
    info!("shutting down");
    node.shutdown().await;
    let _ = std::fs::remove_file(control::ControlFile::path(&args.data_dir));
    Ok(())
}

pub async fn shutdown_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
