//! `blixard bench output`: a download that ends in a file, end to end,
//! against the download alone, in the same run: what `vm download --output`
//! does (the download, then the store's copy handed over to the output
//! path), the old way (a verified copy out of the store) for reference,
//! and, with `--sendme PATH`, sendme's receive of the same file.
//!
//! Everything runs in one network namespace the bench makes (as root; it
//! re-runs itself inside and removes the namespace after), with only
//! loopback up, so an external tool such as sendme cannot reach out.
//! Fresh receiving nodes every run; medians are reported.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use blixard_node::{DownloadRequest, Node, NodeOptions, P2pConfig};
use blixard_store::{ExportOptions, ResourceKind};
use serde_json::json;

use crate::bench::{self, median, Figure};

pub struct OutputBenchArgs {
    pub size: u64,
    pub runs: usize,
    pub dir: PathBuf,
    pub sendme: Option<PathBuf>,
    pub json: bool,
    /// Already inside the bench's network namespace.
    pub in_netns: bool,
}

/// Re-runs this command inside a new network namespace (loopback only) and
/// removes the namespace afterwards; `false` if that cannot be done here
/// (not root, no `ip`), in which case the bench runs where it is.
fn rerun_in_netns(args: &OutputBenchArgs) -> Result<bool> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("not root or no `ip`: running outside a network namespace");
        return Ok(false);
    }
    let ns = format!("blixard-bench-{}", std::process::id());
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if !ok(Command::new("ip").args(["netns", "add", &ns])) {
        bail!("cannot create network namespace {ns}");
    }
    let _ = ok(Command::new("ip").args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]));
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns]).arg(exe).args(["bench", "output", "--in-netns"]);
    cmd.arg(format!("--size={}", args.size)).arg(format!("--runs={}", args.runs)).arg("--dir").arg(&args.dir);
    if let Some(s) = &args.sendme {
        cmd.arg("--sendme").arg(s);
    }
    if args.json {
        cmd.arg("--json");
    }
    let status = cmd.status();
    // Removed even if the bench failed; retried, as a namespace whose last
    // process is still exiting can be busy for a moment.
    let removed = (0..10).any(|i| {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        ok(Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()))
    });
    if !removed {
        eprintln!("could not remove network namespace {ns}: remove it with `ip netns del {ns}`");
    }
    if !status?.success() {
        bail!("the bench failed inside {ns}");
    }
    Ok(true)
}

async fn node(dir: &Path, id: u64) -> Result<Node> {
    let options = NodeOptions {
        id,
        data_dir: dir.join(format!("node-{id}")),
        bind: "127.0.0.1:0".parse()?,
        config: P2pConfig::default(),
    };
    Ok(Node::spawn(options).await?)
}

/// A fresh node downloads the image; with `output`, then writes it there
/// (handed over, or copied). Seconds, end to end.
async fn receive(seeder: &Node, dir: &Path, id: u64, output: Option<(&Path, bool)>) -> Result<f64> {
    let n = node(dir, id).await?;
    n.connect_peer(&format!("{}@{}", seeder.node_id(), seeder.addr())).await?;
    let started = Instant::now();
    let t = n.download(DownloadRequest::new(ResourceKind::VmImage, "bench", "1"))?;
    n.wait(t).await?;
    if let Some((path, hand_over)) = output {
        let options = ExportOptions { overwrite: false, hand_over };
        n.export_resource(&ResourceKind::VmImage, "bench", "1", path, options).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    n.shutdown().await;
    let _ = std::fs::remove_dir_all(dir.join(format!("node-{id}")));
    Ok(secs)
}

/// sendme: `send` the file in one process, time `receive` of its ticket
/// in a fresh directory. Seconds.
fn sendme(bin: &Path, file: &Path, dir: &Path, run: usize) -> Result<f64> {
    let mut sender = Command::new(bin)
        .args(["send", "--relay", "disabled"])
        .arg(file)
        .current_dir(file.parent().unwrap_or(dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let out = sender.stdout.take().context("sendme's stdout")?;
    let mut ticket = None;
    for line in BufReader::new(out).lines() {
        let line = line?;
        if let Some(t) = line.split_whitespace().find(|w| w.starts_with("blob")) {
            ticket = Some(t.to_string());
            break;
        }
    }
    let Some(ticket) = ticket else {
        let _ = sender.kill();
        bail!("sendme send printed no ticket");
    };
    let into = dir.join(format!("sendme-{run}"));
    std::fs::create_dir_all(&into)?;
    let started = Instant::now();
    let status = Command::new(bin)
        .args(["receive", "--relay", "disabled"])
        .arg(&ticket)
        .current_dir(&into)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let secs = started.elapsed().as_secs_f64();
    let _ = sender.kill();
    let _ = sender.wait();
    if !status.success() {
        bail!("sendme receive failed ({status})");
    }
    let name = file.file_name().context("file name")?;
    let got = std::fs::metadata(into.join(name)).map(|m| m.len()).unwrap_or(0);
    if got != std::fs::metadata(file)?.len() {
        bail!("sendme wrote {got} bytes");
    }
    let _ = std::fs::remove_dir_all(&into);
    Ok(secs)
}

pub async fn run(args: OutputBenchArgs) -> Result<Option<Vec<Figure>>> {
    if !args.in_netns && rerun_in_netns(&args)? {
        return Ok(None);
    }
    std::fs::create_dir_all(&args.dir)?;
    let tmp = tempfile::Builder::new().prefix("blixard-output-bench-").tempdir_in(&args.dir)?;
    let dir = tmp.path();
    let image = dir.join("image.img");
    bench::generate_file(&image, args.size)?;
    let seeder = node(dir, 1).await?;
    seeder.upload_resource(ResourceKind::VmImage, "bench", "1", &image).await?;
    let (mut alone, mut handed, mut copied, mut sent) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let id = 10 + 10 * run as u64;
        alone.push(receive(&seeder, dir, id, None).await?);
        let out = dir.join(format!("out-{run}.img"));
        handed.push(receive(&seeder, dir, id + 1, Some((&out, true))).await?);
        anyhow::ensure!(std::fs::metadata(&out)?.len() == args.size, "the output has the wrong size");
        std::fs::remove_file(&out)?;
        copied.push(receive(&seeder, dir, id + 2, Some((&out, false))).await?);
        std::fs::remove_file(&out)?;
        if let Some(bin) = &args.sendme {
            sent.push(sendme(bin, &image, dir, run)?);
        }
    }
    seeder.shutdown().await;
    let mut extra = json!({
        "size": args.size, "runs": args.runs,
        "download_alone_s_each": alone, "download_output_s_each": handed,
        "download_then_copy_s_each": copied,
    });
    if !sent.is_empty() {
        extra["sendme_receive_s_each"] = json!(sent);
    }
    let mut figures = vec![
        Figure {
            scenario: "output",
            metric: "download_output_s".into(),
            value: median(handed.clone()),
            unit: "s",
            baseline: Some(("download_alone_s".into(), median(alone.clone()))),
            extra: extra.clone(),
        },
        Figure {
            scenario: "output",
            metric: "download_then_copy_s".into(),
            value: median(copied),
            unit: "s",
            baseline: Some(("download_alone_s".into(), median(alone))),
            extra: json!({}),
        },
    ];
    if !sent.is_empty() {
        figures.push(Figure {
            scenario: "output",
            metric: "download_output_s".into(),
            value: median(handed),
            unit: "s",
            baseline: Some(("sendme_0_37_receive_s".into(), median(sent))),
            extra: json!({}),
        });
    }
    Ok(Some(figures))
}
