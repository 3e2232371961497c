//! `blixard bench incremental`: what a new version costs on the wire, in
//! five scenarios on a generated raw image (random data with zero
//! regions), each against its own baseline in the same run:
//!
//! - (a) 1% of 16 KiB groups rewritten in place: against the changed
//!   groups plus the tree;
//! - (b) 64 MiB appended: against the appended bytes plus the tree;
//! - (c) 100 bytes inserted at 1 MiB (everything after shifts): against
//!   the changed content-defined chunks plus index plus tree;
//! - (d) a fresh image, 70% zeros: against its non-zero bytes (and its
//!   physical size on the receiver);
//! - (e) a different image sharing half its chunks with the stored one:
//!   against the image's size.
//!
//! Two nodes in this process on loopback: a seeder publishes each version,
//! a leecher that holds version 1 downloads it. Each scenario also times a
//! full download of the same version by a node without incremental
//! seeding, and, when `rsync` is installed, pushes the same pair of files
//! through a local rsync daemon and reports its "Total bytes sent".

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use blixard_node::{DownloadRequest, Node, NodeOptions, P2pConfig};
use blixard_store::{content_index, Hash, ResourceKind};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;

use crate::bench::Figure;

pub struct IncrementalBenchArgs {
    pub size: u64,
    pub dir: PathBuf,
}

const GROUP: usize = 16 * 1024;
const MIB: usize = 1 << 20;
const NAME: &str = "bench-image";

async fn node(dir: &Path, id: u64, incremental: bool) -> Result<Node> {
    let config = P2pConfig { incremental, ..Default::default() };
    let options = NodeOptions { id, data_dir: dir.join(format!("node-{id}")), bind: "127.0.0.1:0".parse()?, config };
    Ok(Node::spawn(options).await?)
}

fn random(len: usize, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Waits until `n` has built the content index of `hash`.
async fn indexed(n: &Node, hash: Hash) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while n.store().content_index(&hash)?.is_none() {
        if Instant::now() > deadline {
            bail!("no content index of {hash} after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One scenario's outcome.
struct Outcome {
    wire: u64,
    reused: u64,
    zeros: u64,
    secs: f64,
    hash: Hash,
}

async fn publish(seeder: &Node, dir: &Path, name: &str, version: &str, data: &[u8]) -> Result<Hash> {
    let path = dir.join(format!("{name}-{version}.img"));
    std::fs::write(&path, data)?;
    let r = seeder.upload_resource(ResourceKind::VmImage, name, version, &path).await?;
    std::fs::remove_file(&path)?;
    indexed(seeder, r.hash).await?;
    Ok(r.hash)
}

async fn download(n: &Node, name: &str, version: &str) -> Result<Outcome> {
    let started = Instant::now();
    let id = n.download(DownloadRequest::new(ResourceKind::VmImage, name, version))?;
    let t = n.wait(id).await?;
    let secs = started.elapsed().as_secs_f64();
    let p = t.progress.context("no progress recorded")?;
    let hash = t.hash.context("no hash")?;
    Ok(Outcome { wire: p.fetched_bytes, reused: p.reused_bytes, zeros: p.zero_bytes, secs, hash })
}

/// A full download of the same version by a fresh node that does not seed.
async fn full(seeder: &Node, dir: &Path, id: u64, name: &str, version: &str) -> Result<f64> {
    let n = node(dir, id, false).await?;
    n.connect_peer(&format!("{}@{}", seeder.node_id(), seeder.addr())).await?;
    let out = download(&n, name, version).await?;
    n.shutdown().await;
    let _ = std::fs::remove_dir_all(dir.join(format!("node-{id}")));
    Ok(out.secs)
}

/// Bytes of `new`'s content-defined chunks that `old` does not have.
fn changed_chunk_bytes(old: &[u8], new: &[u8]) -> u64 {
    let have: std::collections::HashSet<[u8; 32]> = content_index::chunk_bytes(old).iter().map(|e| e.hash).collect();
    content_index::chunk_bytes(new).iter().filter(|e| !have.contains(&e.hash)).map(|e| e.len as u64).sum()
}

fn tree_bytes(size: usize) -> u64 {
    (size.div_ceil(GROUP).max(1) as u64 - 1) * 64 + 8
}

fn index_bytes(data: &[u8]) -> u64 {
    (content_index::INDEX_HEADER_BYTES + content_index::chunk_bytes(data).len() * content_index::INDEX_ENTRY_BYTES)
        as u64
}

/// A local rsync daemon serving one writable module, for pushing the new
/// file onto a copy of the old one and reading rsync's own count.
struct Rsync {
    child: std::process::Child,
    port: u16,
    module: PathBuf,
}

impl Rsync {
    fn start(dir: &Path) -> Result<Option<Rsync>> {
        if std::process::Command::new("rsync").arg("--version").output().is_err() {
            eprintln!("rsync is not installed: no rsync comparison (apt-get install rsync)");
            return Ok(None);
        }
        let module = dir.join("rsync-module");
        std::fs::create_dir_all(&module)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join("rsyncd.conf");
        std::fs::write(
            &conf,
            format!(
                "use chroot = false\nuid = root\ngid = root\n[m]\npath = {}\nread only = false\n",
                module.display()
            ),
        )?;
        let child = std::process::Command::new("rsync")
            .args(["--daemon", "--no-detach", "--address=127.0.0.1", &format!("--port={port}")])
            .arg(format!("--config={}", conf.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Some(Rsync { child, port, module }));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the rsync daemon did not start")
    }

    /// Pushes `new` onto a copy of `old` on the daemon; rsync's "Total
    /// bytes sent" and "Total bytes received".
    fn push(&self, dir: &Path, old: Option<&[u8]>, new: &[u8]) -> Result<(u64, u64)> {
        let target = self.module.join("image.img");
        match old {
            Some(o) => std::fs::write(&target, o)?,
            None => drop(std::fs::remove_file(&target)),
        }
        let src = dir.join("rsync-new.img");
        std::fs::write(&src, new)?;
        let out = std::process::Command::new("rsync")
            .args(["--stats", "--no-whole-file"])
            .arg(&src)
            .arg(format!("rsync://127.0.0.1:{}/m/image.img", self.port))
            .output()?;
        let _ = std::fs::remove_file(&src);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("rsync failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
        }
        let field = |name: &str| -> Result<u64> {
            let line = text.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name:?} in {text}"))?;
            Ok(line[name.len()..].trim().replace(',', "").split(' ').next().unwrap_or("").parse()?)
        };
        Ok((field("Total bytes sent:")?, field("Total bytes received:")?))
    }
}

impl Drop for Rsync {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(args: IncrementalBenchArgs) -> Result<Vec<Figure>> {
    let size = args.size as usize;
    if size < 64 * MIB {
        bail!("--size must be at least 64 MiB");
    }
    std::fs::create_dir_all(&args.dir)?;
    let dir = tempfile::Builder::new().prefix("blixard-incremental-bench-").tempdir_in(&args.dir)?;
    let dir = dir.path();
    let rsync = Rsync::start(dir)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    // Version 1: random data with zero regions (10% of the image).
    let mut v1 = random(size, &mut rng);
    for k in 0..4 {
        let at = (size / 4) * k + size / 16;
        v1[at..at + size / 40].fill(0);
    }
    let seeder = node(dir, 1, true).await?;
    let leecher = node(dir, 2, true).await?;
    leecher.connect_peer(&format!("{}@{}", seeder.node_id(), seeder.addr())).await?;
    publish(&seeder, dir, NAME, "1", &v1).await?;
    let first = download(&leecher, NAME, "1").await?;
    indexed(&leecher, first.hash).await?;
    let mut figures = Vec::new();
    let mut full_id = 10;

    // A scenario: publish `new` as `version` of `name`, download it, and
    // compare with `baseline`.
    struct Case<'a> {
        scenario: &'static str,
        name: &'a str,
        version: &'a str,
        new: Vec<u8>,
        old: Option<&'a [u8]>,
        baseline: (&'static str, u64),
        goal: f64,
    }
    let mut cases = Vec::new();

    // (a) 1% of groups rewritten in place
    let groups = size / GROUP;
    let mut changed = std::collections::BTreeSet::new();
    while changed.len() < groups / 100 {
        changed.insert(rng.gen_range(0..groups));
    }
    let mut a = v1.clone();
    for g in &changed {
        rng.fill_bytes(&mut a[g * GROUP..(g + 1) * GROUP]);
    }
    let base_a = changed.len() as u64 * GROUP as u64 + tree_bytes(size);
    cases.push(Case {
        scenario: "a-rewrite-1pct",
        name: NAME,
        version: "a",
        new: a,
        old: Some(&v1),
        baseline: ("changed_groups_plus_tree", base_a),
        goal: 1.1,
    });

    // (b) 64 MiB appended
    let mut b = v1.clone();
    b.extend_from_slice(&random(64 * MIB, &mut rng));
    let base_b = 64 * MIB as u64 + tree_bytes(b.len());
    cases.push(Case {
        scenario: "b-append-64mib",
        name: NAME,
        version: "b",
        new: b,
        old: Some(&v1),
        baseline: ("appended_plus_tree", base_b),
        goal: 1.05,
    });

    // (c) 100 bytes inserted at 1 MiB
    let mut c = v1[..MIB].to_vec();
    c.extend_from_slice(&random(100, &mut rng));
    c.extend_from_slice(&v1[MIB..]);
    let base_c = changed_chunk_bytes(&v1, &c) + index_bytes(&c) + tree_bytes(c.len());
    cases.push(Case {
        scenario: "c-insert-100b",
        name: NAME,
        version: "c",
        new: c,
        old: Some(&v1),
        baseline: ("changed_chunks_plus_index_plus_tree", base_c),
        goal: 1.2,
    });

    // (d) a fresh image, 70% zeros, under another name
    let mut d = vec![0u8; size];
    let mut at = 0;
    while at < size {
        let data = (3 * MIB).min(size - at);
        d[at..at + data].copy_from_slice(&random(data, &mut rng));
        at += 10 * MIB;
    }
    let nonzero = d.chunks(GROUP).filter(|g| g.iter().any(|x| *x != 0)).count() as u64 * GROUP as u64;
    cases.push(Case {
        scenario: "d-fresh-70pct-zeros",
        name: "bench-sparse",
        version: "1",
        new: d,
        old: None,
        baseline: ("nonzero_bytes", nonzero),
        goal: 1.05,
    });

    // (e) another image, half of it chunks of version 1 at other offsets
    let mut e = Vec::with_capacity(size);
    let piece = 4 * MIB;
    let mut k = 0;
    while e.len() < size {
        let n = piece.min(size - e.len());
        if k % 2 == 0 {
            let from = (k * 3 * piece + 12_345) % (size - n);
            e.extend_from_slice(&v1[from..from + n]);
        } else {
            e.extend_from_slice(&random(n, &mut rng));
        }
        k += 1;
    }
    let image_size = e.len() as u64;
    cases.push(Case {
        scenario: "e-shares-half",
        name: "bench-other",
        version: "1",
        new: e,
        old: Some(&v1),
        baseline: ("image_size", image_size),
        goal: 0.6,
    });

    for case in cases {
        publish(&seeder, dir, case.name, case.version, &case.new).await?;
        let out = download(&leecher, case.name, case.version).await?;
        anyhow::ensure!(out.hash == Hash::of(&case.new), "{}: the download differs", case.scenario);
        let full_secs = full(&seeder, dir, full_id, case.name, case.version).await?;
        full_id += 1;
        let rsync_stats = match &rsync {
            Some(r) => Some(r.push(dir, case.old, &case.new)?),
            None => None,
        };
        let physical = leecher.store().usage()?.physical_bytes;
        let ratio = out.wire as f64 / case.baseline.1 as f64;
        let mut extra = json!({
            "size": case.new.len(), "reused_bytes": out.reused, "zero_bytes": out.zeros,
            "time_s": out.secs, "full_download_time_s": full_secs, "goal_ratio": case.goal,
            "goal_met": ratio <= case.goal, "store_physical_bytes_after": physical,
        });
        if let Some((sent, received)) = rsync_stats {
            extra["rsync_total_bytes_sent"] = json!(sent);
            extra["rsync_total_bytes_received"] = json!(received);
        }
        if case.scenario.starts_with('d') {
            let data = leecher.store().dir().join("blobs").join(format!("{}.data", out.hash.to_hex()));
            let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&data)?) * 512;
            extra["stored_physical_bytes"] = json!(blocks);
            extra["stored_physical_ratio"] = json!(blocks as f64 / case.baseline.1 as f64);
        }
        figures.push(Figure {
            scenario: "incremental",
            metric: format!("{}_wire_bytes", case.scenario),
            value: out.wire as f64,
            unit: "B",
            baseline: Some((case.baseline.0.into(), case.baseline.1 as f64)),
            extra,
        });
    }
    leecher.shutdown().await;
    seeder.shutdown().await;
    Ok(figures)
}
