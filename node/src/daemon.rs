//! `blixard node`: runs a node that serves its store over the protocol.
//!
//! This is the serving core: identity, store, QUIC endpoint, request
//! handling. Peer management, the transfer queue and the control API build
//! on it.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result};
use blixard_protocol::{client, server, Endpoint, EndpointOptions, ErrorCode, PeerAddr, SecretKey};
use blixard_store::Store;
use tracing::{info, warn};

/// Options of `blixard node`.
pub struct NodeArgs {
    pub id: u64,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub peers: Vec<PeerAddr>,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: NodeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("Failed to create node: data dir {} is not writable", args.data_dir.display()))?;
    let key = SecretKey::load_or_create(&args.data_dir).context("Failed to create node: identity")?;
    let store = Store::open(args.data_dir.join("store"))
        .with_context(|| format!("Failed to create node: store in {}", args.data_dir.display()))?;
    let endpoint = Endpoint::bind(key, args.bind, EndpointOptions::default())
        .with_context(|| format!("Failed to create node: cannot listen on UDP {} (port in use?)", args.bind))?;
    let ctx = server::ServerContext::new(store.clone(), Default::default());
    tokio::spawn(server::accept_loop(endpoint.clone(), ctx));
    // One line for scripts and tests: the id and actual address.
    println!(
        "blixard node {} id={} addr={} data={}",
        args.id,
        endpoint.node_id(),
        endpoint.local_addr(),
        args.data_dir.display()
    );
    info!(node = args.id, id = %endpoint.node_id(), addr = %endpoint.local_addr(), "node started");
    for peer in &args.peers {
        let ep = endpoint.clone();
        let peer = *peer;
        tokio::spawn(async move {
            match ep.connect(peer.addr, peer.id).await {
                Ok(conn) => match client::ping(&conn).await {
                    Ok(p) => info!(%peer, id = %conn.remote_id(), rtt = ?p.rtt, "peer reachable"),
                    Err(e) => warn!(%peer, "peer did not answer a ping: {e}"),
                },
                Err(e) => warn!(%peer, "cannot reach peer: {e}"),
            }
        });
    }
    shutdown_signal().await;
    info!("shutting down");
    endpoint.close(ErrorCode::Unavailable, "shutting down");
    store.flush()?;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), endpoint.wait_idle()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
