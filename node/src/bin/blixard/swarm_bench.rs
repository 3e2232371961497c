//! `blixard bench swarm`: one seeder and N leechers on 127.0.0.1, every
//! node's bandwidth limited to the same rate. All leechers download the
//! same image at once; leechers serve each other what they already hold.
//! The figure is the time until all are done against what one source would
//! need at that limit, N x size / limit (the ratio; lower is better).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use blixard_node::{Node, NodeOptions, P2pConfig, TransferPriority};
use blixard_store::ResourceKind;
use serde_json::json;

use crate::bench::{self, Figure};

pub struct SwarmArgs {
    pub size: u64,
    pub peers: usize,
    pub limit_mbps: f64,
}

pub async fn run(args: SwarmArgs) -> Result<Vec<Figure>> {
    if args.peers == 0 {
        bail!("--peers must be at least 1");
    }
    let dir = tempfile::Builder::new().prefix("blixard-swarm-").tempdir()?;
    let config = P2pConfig { bandwidth_limit_mbps: Some(args.limit_mbps), ..Default::default() };
    let mut nodes = Vec::new();
    for id in 0..=args.peers as u64 {
        nodes.push(
            Node::spawn(NodeOptions {
                id,
                data_dir: dir.path().join(format!("node-{id}")),
                bind: "127.0.0.1:0".parse()?,
                config: config.clone(),
            })
            .await?,
        );
    }
    // A full mesh: every leecher knows the seeder and every other leecher.
    for i in 1..nodes.len() {
        for j in 0..nodes.len() {
            if i != j {
                nodes[i].connect_peer(&format!("{}@{}", nodes[j].node_id(), nodes[j].addr())).await?;
            }
        }
    }
    let image = dir.path().join("image.img");
    bench::generate_file(&image, args.size)?;
    nodes[0].upload_resource(ResourceKind::VmImage, "swarm", "1", &image).await?;

    let started = Instant::now();
    let ids: Vec<(Node, blixard_node::TransferId)> = nodes[1..]
        .iter()
        .map(|n| Ok((n.clone(), n.request_download(ResourceKind::VmImage, "swarm", "1", TransferPriority::Normal)?)))
        .collect::<Result<_>>()?;
    let mut each = Vec::new();
    for (n, id) in &ids {
        let done = n.wait(*id).await.with_context(|| format!("leecher {id}"))?;
        each.push(done.duration_secs.unwrap_or(0.0));
    }
    let all = started.elapsed().as_secs_f64();
    let limit_bytes = args.limit_mbps * 1e6 / 8.0;
    let single = args.peers as f64 * args.size as f64 / limit_bytes;
    let seeder_sent = nodes[0].metrics().bytes_sent.get();
    for n in &nodes {
        n.shutdown().await;
    }
    let extra = json!({
        "size": args.size, "leechers": args.peers, "limit_mbps": args.limit_mbps,
        "slowest_leecher_s": each.iter().cloned().fold(0.0, f64::max),
        "seeder_sent_bytes": seeder_sent,
    });
    Ok(vec![
        Figure {
            scenario: "swarm",
            metric: "time_all_done".into(),
            value: all,
            unit: "s",
            baseline: Some(("single_source_at_limit".into(), single)),
            extra: extra.clone(),
        },
        Figure {
            scenario: "swarm",
            metric: "seeder_upload_share".into(),
            value: seeder_sent as f64,
            unit: "B",
            baseline: Some(("bytes_all_leechers_received".into(), (args.peers as u64 * args.size) as f64)),
            extra,
        },
    ])
}
