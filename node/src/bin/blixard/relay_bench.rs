//! `blixard bench relay`: the same verified get of one image from one
//! seeder on 127.0.0.1, once straight over UDP and once through a relay
//! (TLS over TCP, in this process), alternating, fresh leechers each run.
//! The figure is relayed throughput against direct (the ratio; higher is
//! better).

use std::time::Instant;

use anyhow::{Context, Result};
use blixard_net::{
    relay::{RelayLimits, RelayServer},
    RelayAddr, SecretKey,
};
use blixard_node::{Node, NodeOptions, P2pConfig, TransferPriority};
use blixard_store::ResourceKind;
use serde_json::json;

use crate::bench::{self, Figure};

pub struct RelayBenchArgs {
    pub size: u64,
    pub runs: usize,
}

async fn node(dir: &std::path::Path, id: u64, relays: Vec<RelayAddr>) -> Result<Node> {
    let config = P2pConfig { relays, ..Default::default() };
    Ok(Node::spawn(NodeOptions { id, data_dir: dir.join(format!("node-{id}")), bind: "127.0.0.1:0".parse()?, config })
        .await?)
}

/// One download by a fresh leecher that reaches the seeder at `target`;
/// seconds, and whether its path was the relay.
async fn get(dir: &std::path::Path, id: u64, target: &str) -> Result<(f64, bool)> {
    let leecher = node(dir, id, Vec::new()).await?;
    leecher.connect_peer(target).await.with_context(|| format!("dialing {target}"))?;
    let started = Instant::now();
    let t = leecher.request_download(ResourceKind::VmImage, "bench", "1", TransferPriority::Normal)?;
    leecher.wait(t).await?;
    let secs = started.elapsed().as_secs_f64();
    let relayed = leecher.peers().iter().any(|p| matches!(p.path, Some(blixard_node::PeerPath::Relay { .. })));
    leecher.shutdown().await;
    Ok((secs, relayed))
}

pub async fn run(args: RelayBenchArgs) -> Result<Vec<Figure>> {
    let dir = tempfile::Builder::new().prefix("blixard-relay-bench-").tempdir()?;
    // The data path, not the policy: no per-client rate limit (a relay's
    // default, 2,000 Mbit/s per client, would be the figure on loopback).
    let limits = RelayLimits { rate_bytes_per_sec: None, ..RelayLimits::default() };
    let server = RelayServer::bind(SecretKey::generate(), "127.0.0.1:0".parse()?, limits).await?;
    let relay = RelayAddr { id: server.node_id(), addr: server.addr() };
    let seeder = node(dir.path(), 0, vec![relay]).await?;
    let image = dir.path().join("image.img");
    bench::generate_file(&image, args.size)?;
    seeder.upload_resource(ResourceKind::VmImage, "bench", "1", &image).await?;
    std::fs::remove_file(&image)?;
    for _ in 0..100 {
        if seeder.node_addr().relay.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let direct_target = format!("{}@{}", seeder.node_id(), seeder.addr());
    let relay_target = format!("{}@relay={relay}", seeder.node_id());
    let (mut direct, mut relayed) = (Vec::new(), Vec::new());
    for run in 0..args.runs as u64 {
        let (secs, via_relay) = get(dir.path(), 1 + 2 * run, &direct_target).await?;
        anyhow::ensure!(!via_relay, "the direct get went through the relay");
        direct.push(secs);
        let (secs, via_relay) = get(dir.path(), 2 + 2 * run, &relay_target).await?;
        anyhow::ensure!(via_relay, "the relayed get did not go through the relay");
        relayed.push(secs);
    }
    let relay_bytes = server.stats().bytes_relayed.load(std::sync::atomic::Ordering::Relaxed);
    seeder.shutdown().await;
    let mib = args.size as f64 / (1024.0 * 1024.0);
    let rate = |s: &[f64]| s.iter().map(|t| mib / t).collect::<Vec<f64>>();
    let (direct_rates, relay_rates) = (rate(&direct), rate(&relayed));
    let extra = json!({
        "size": args.size, "runs": args.runs,
        "relay_mib_s_each": relay_rates, "direct_mib_s_each": direct_rates,
        "bytes_through_relay": relay_bytes, "relay_client_rate_limit": null,
    });
    Ok(vec![Figure {
        scenario: "relay",
        metric: "relayed_get_mib_s".into(),
        value: bench::median(relay_rates),
        unit: "MiB/s",
        baseline: Some(("direct_get_mib_s".into(), bench::median(direct_rates))),
        extra,
    }])
}
