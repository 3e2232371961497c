//! Two nodes in one program: one publishes an image, the other downloads
//! it (verified), while a task prints the downloader's events.
//!
//! `cargo run -p blixard-node --example two_nodes`

use blixard_node::{DownloadRequest, Node, P2pConfig, P2pEvent, ResourceKind, TransferPriority};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let loopback = "127.0.0.1:0".parse()?;
    let seeder = Node::builder().data_dir(dir.path().join("seeder")).bind(loopback).spawn().await?;
    let config = P2pConfig { progress_interval: std::time::Duration::from_millis(100), ..P2pConfig::default() };
    let leecher = Node::builder().data_dir(dir.path().join("leecher")).bind(loopback).config(config).spawn().await?;

    // Events from now on; a receiver that falls more than EVENTS_CAPACITY
    // behind is told how many it missed.
    let mut events = leecher.events();
    let printer = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(P2pEvent::TransferProgress(id, p)) => println!("event: {id} {} of {} bytes", p.bytes, p.total),
                Ok(event) => println!("event: {event:?}"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => println!("missed {n} events"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let image: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let published = seeder.upload_bytes(ResourceKind::VmImage, "ubuntu-server", "22.04", image).await?;
    println!("published {} ({} bytes) on {}", published.hash, published.size, seeder.node_id());

    // The seeder is a configured peer of the leecher, so its claims name
    // things here.
    let seeder_id = leecher.connect(seeder.node_addr()).await?;
    let request =
        DownloadRequest::new(ResourceKind::VmImage, "ubuntu-server", "22.04").priority(TransferPriority::High);
    let done = leecher.wait(leecher.download(request)?).await?;
    assert_eq!(done.hash, Some(published.hash));
    println!("downloaded from {seeder_id} in {:.2} s", done.duration_secs.unwrap_or_default());

    let out = dir.path().join("ubuntu.img");
    leecher.export_resource(&ResourceKind::VmImage, "ubuntu-server", "22.04", &out, Default::default()).await?;
    println!("exported to {}", out.display());
    seeder.shutdown().await;
    leecher.shutdown().await;
    drop(leecher);
    let _ = printer.await;
    Ok(())
}
