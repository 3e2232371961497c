//! `blixard demo`: the whole system in one command, for a newcomer. Three
//! nodes on 127.0.0.1 in one process; an image is uploaded on two of them
//! and downloaded on the third from both at once, verified, with progress;
//! then the figures. Everything lives in a temp dir that is removed after.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use blixard_node::{Node, NodeOptions, P2pConfig, TransferPriority, TransferState};
use blixard_store::ResourceKind;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::bench;

pub async fn run(size: u64) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("blixard-demo-").tempdir()?;
    println!("Blixard P2P demo: three nodes on 127.0.0.1, data in {}", dir.path().display());
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let node = Node::spawn(NodeOptions {
            id,
            data_dir: dir.path().join(format!("node-{id}")),
            bind: "127.0.0.1:0".parse()?,
            config: P2pConfig::default(),
        })
        .await?;
        println!("  node {id}: {} at {}", node.node_id(), node.addr());
        nodes.push(node);
    }
    let target = |n: &Node| format!("{}@{}", n.node_id(), n.addr());
    nodes[1].connect_peer(&target(&nodes[0])).await?;
    nodes[2].connect_peer(&target(&nodes[0])).await?;
    nodes[2].connect_peer(&target(&nodes[1])).await?;
    println!("  node 3 is connected to nodes 1 and 2");

    let image = dir.path().join("ubuntu.img");
    bench::generate_file(&image, size)?;
    for n in &nodes[..2] {
        let started = Instant::now();
        let r = n.upload_resource(ResourceKind::VmImage, "ubuntu-server", "22.04", &image).await?;
        println!(
            "  uploaded ubuntu-server 22.04 ({}) on node {}: {:.2} s, hash {}",
            HumanBytes(r.size),
            if std::ptr::eq(n, &nodes[0]) { 1 } else { 2 },
            started.elapsed().as_secs_f64(),
            &r.hash.to_hex()[..16]
        );
    }

    let leecher = &nodes[2];
    let started = Instant::now();
    let id = leecher.request_download(ResourceKind::VmImage, "ubuntu-server", "22.04", TransferPriority::High)?;
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")?
            .progress_chars("=> "),
    );
    bar.set_message("node 3 downloading");
    let done = loop {
        let t = leecher.transfer(id).expect("queued above");
        if let Some(p) = &t.progress {
            bar.set_position(p.bytes);
            bar.set_message(format!("node 3 downloading from {} peer(s)", p.providers));
        }
        if !matches!(t.state, TransferState::Queued | TransferState::Running) {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_and_clear();
    if done.state != TransferState::Completed {
        bail!("the download failed: {}", done.error.map(|e| e.message).unwrap_or_default());
    }
    let secs = started.elapsed().as_secs_f64();

    // Verify end to end: export and compare with BLAKE3 of the source file.
    let out = dir.path().join("downloaded.img");
    leecher.export_resource(&ResourceKind::VmImage, "ubuntu-server", "22.04", &out, Default::default()).await?;
    let (a, b) = (hash_file(&image)?, hash_file(&out)?);
    if a != b {
        bail!("verification failed: the download's BLAKE3 {b} differs from the source's {a}");
    }
    let (s1, s2) = (nodes[0].metrics().bytes_sent.get(), nodes[1].metrics().bytes_sent.get());
    println!("  downloaded on node 3 in {secs:.2} s: {}/s", HumanBytes((size as f64 / secs) as u64));
    println!("    from node 1: {} sent; from node 2: {} sent", HumanBytes(s1), HumanBytes(s2));
    println!("  verified: BLAKE3 of the download equals the source's ({})", &a[..16]);
    for n in &nodes {
        n.shutdown().await;
    }
    println!("done; removing {}", dir.path().display());
    Ok(())
}

fn hash_file(path: &std::path::Path) -> Result<String> {
    Ok(bench::baseline_hash(path)?.0.to_hex().to_string())
}
