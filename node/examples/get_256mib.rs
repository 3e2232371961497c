//! A 256 MiB verified get between two nodes in one program, timed: the
//! figure an embedder gets. `tests/embedder` builds this same file outside
//! our workspace (stock quinn-proto, the embedder's own profile) so the two
//! builds can be compared in one sitting (`tests/embedder/compare.sh`).
//!
//! `cargo run --release -p blixard-node --example get_256mib -- [MiB] [runs]`

use std::time::Instant;

use blixard_node::{Node, ResourceKind, TransferPriority};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(256);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let dir = tempfile::tempdir()?;
    let seeder = Node::builder().data_dir(dir.path().join("seeder")).bind("127.0.0.1:0".parse()?).spawn().await?;
    let image: Vec<u8> =
        (0..mib << 20).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()[7]).collect();
    let uploaded = seeder.upload_bytes(ResourceKind::VmImage, "bench", "1", image).await?;
    let mut rates = Vec::new();
    for run in 0..runs {
        let leecher = Node::builder()
            .data_dir(dir.path().join(format!("leecher-{run}")))
            .bind("127.0.0.1:0".parse()?)
            .spawn()
            .await?;
        leecher.connect(seeder.node_addr()).await?;
        let started = Instant::now();
        let id = leecher.request_download(ResourceKind::VmImage, "bench", "1", TransferPriority::High)?;
        let done = leecher.wait(id).await?;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(done.hash, Some(uploaded.hash));
        let rate = uploaded.size as f64 / secs / 1e6;
        println!("run {run}: {} MiB in {secs:.3} s = {rate:.0} MB/s", mib);
        rates.push(rate);
        leecher.shutdown().await;
    }
    rates.sort_by(f64::total_cmp);
    println!("median {:.0} MB/s over {runs} runs (min {:.0}, max {:.0})", rates[runs / 2], rates[0], rates[runs - 1]);
    seeder.shutdown().await;
    Ok(())
}
