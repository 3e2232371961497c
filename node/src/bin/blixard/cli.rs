//! The client commands (`vm upload|download|list`, `peers`, `status`): they
//! drive a running node through its control API, found through the node's
//! data dir (`control.json`, readable only by the node's user).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use blixard_node::{
    client::ControlClient, control::ResourceFile, DownloadRequest, TransferInfo, TransferPriority, TransferState,
};
use blixard_store::ResourceKind;
use indicatif::{ProgressBar, ProgressStyle};

/// The client of the node whose data dir is `data_dir`, or an error that
/// says how to start or pick one.
pub fn find(data_dir: &Path) -> Result<ControlClient> {
    ControlClient::find(data_dir).map_err(|e| {
        anyhow!(
            "no running node found at {} ({e}); start one with `blixard node --id N`, \
             or pick it with --node N / --data-dir DIR",
            data_dir.display()
        )
    })
}

/// Set when the user presses Ctrl-C (the binary installs the handler).
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// `blixard vm upload`.
pub async fn upload(node: &ControlClient, name: &str, version: &str, file: &Path, force: bool) -> Result<()> {
    let path = absolute(file)?;
    if !force {
        let held = node.resources().await?;
        let same =
            |r: &&blixard_node::ResourceInfo| r.kind == ResourceKind::VmImage && r.name == name && r.version == version;
        if let Some(r) = held.iter().find(same) {
            bail!(
                "vm-image {name} {version} is already published here as {} ({}): pass --force to replace it",
                r.hash,
                indicatif::HumanBytes(r.size)
            );
        }
    }
    let size = std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?.len();
    let bar = ProgressBar::new(size).with_style(progress_style());
    bar.set_message(format!("importing {}", path.display()));
    bar.enable_steady_tick(Duration::from_millis(100));
    let started = Instant::now();
    let body = ResourceFile {
        kind: "vm-image".into(),
        name: name.into(),
        version: version.into(),
        path: path.clone(),
        overwrite: false,
        hand_over: false,
    };
    // The import runs in the node while this follows its progress.
    let call = node.upload(&body);
    let mut call = std::pin::pin!(call);
    let info = loop {
        tokio::select! {
            done = &mut call => break done?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Ok(uploads) = node.uploads().await {
                    if let Some(u) = uploads.iter().find(|u| u.path == path) {
                        bar.set_position(u.bytes);
                    }
                }
            }
        }
    };
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "uploaded vm-image {name} {version}: {} in {secs:.1} s ({}/s), hash {}",
        indicatif::HumanBytes(info.size),
        indicatif::HumanBytes((info.size as f64 / secs.max(1e-3)) as u64),
        info.hash
    );
    Ok(())
}

/// How `vm download` treats the output and the terminal.
pub struct Follow {
    /// Replace an existing output.
    pub force: bool,
    /// Queue and return.
    pub detach: bool,
    /// The flags that name the node (`--node N`), for the hints printed.
    pub target: String,
}

/// `blixard vm download`: queues the download and follows it with a
/// progress bar; Ctrl-C cancels it unless `detach` (which returns at once).
pub async fn download(node: &ControlClient, req: DownloadRequest, output: Option<&Path>, follow: Follow) -> Result<()> {
    let Follow { force, detach, target } = follow;
    let (name, version) = (req.name.clone(), req.version.clone());
    // Check the output first: a bad path fails before any transfer.
    let output = output.map(absolute).transpose()?;
    if let Some(out) = &output {
        let dir = out.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            bail!("cannot write {}: {} is not an existing directory", out.display(), dir.display());
        }
        if out.is_dir() {
            bail!("cannot write {}: it is a directory (give a file name)", out.display());
        }
        if !force && out.symlink_metadata().is_ok() {
            bail!("{} exists: pass --force to replace it", out.display());
        }
    }
    let id = node.download(&req).await?;
    if detach {
        println!(
            "{id} queued; follow it with `blixard transfers {target}`, stop it with `blixard cancel {id} {target}`"
        );
        return Ok(());
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(format!("{id} queued"));
    bar.enable_steady_tick(Duration::from_millis(100));
    let queued_since = Instant::now();
    let (mut hinted, mut sized) = (false, false);
    let done = loop {
        if INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            bar.finish_and_clear();
            match node.cancel(id).await {
                Ok(()) => bail!("interrupted: download {id} cancelled (what was verified is kept for next time)"),
                Err(e) => bail!("interrupted, but cancelling download {id} failed: {e}"),
            }
        }
        let t: TransferInfo = node.transfer(id).await?;
        if let Some(p) = t.progress.as_ref().filter(|p| p.total > 0) {
            if !sized {
                // Known only now (or re-attached mid-way): start the rate
                // and ETA from here, not from a jump out of zero.
                bar.set_style(progress_style());
                bar.set_length(p.total);
                bar.set_position(p.bytes);
                bar.reset_eta();
                sized = true;
            }
            bar.set_position(p.bytes);
            bar.set_message(format!("{id} from {} peer(s)", p.providers));
        }
        match t.state {
            TransferState::Queued if !hinted && queued_since.elapsed() > Duration::from_secs(10) => {
                bar.println(
                    "still queued: other transfers hold every slot (max_concurrent_transfers); it runs when one ends",
                );
                hinted = true;
            }
            TransferState::Queued | TransferState::Running => {}
            _ => break t,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    bar.finish_and_clear();
    match done.state {
        TransferState::Completed => {
            let p = done.progress.clone().unwrap_or_default();
            let secs = done.duration_secs.unwrap_or(0.0);
            println!(
                "downloaded vm-image {name} {version}: {} in {secs:.1} s, verified, hash {}",
                indicatif::HumanBytes(p.total),
                done.hash.map(|h| h.to_string()).unwrap_or_else(|| "unknown".into())
            );
            if p.reused_bytes + p.zero_bytes > 0 || p.fetched_bytes > 0 {
                println!(
                    "  fetched {}, reused {} from local blobs, {} of zeros skipped",
                    indicatif::HumanBytes(p.fetched_bytes),
                    indicatif::HumanBytes(p.reused_bytes),
                    indicatif::HumanBytes(p.zero_bytes)
                );
            }
        }
        _ => bail!(
            "download {id} {}: {}",
            match done.state {
                TransferState::Cancelled => "cancelled",
                _ => "failed",
            },
            done.error.map(|e| e.message).unwrap_or_default()
        ),
    }
    if let Some(path) = output {
        let (kind, name, version) = ("vm-image".into(), name, version);
        // The download's own file becomes the output (no second copy).
        let body = ResourceFile { kind, name, version, path: path.clone(), overwrite: force, hand_over: true };
        node.export(&body).await?;
        println!("written to {}", path.display());
    }
    Ok(())
}

fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .expect("valid template")
        .progress_chars("=> ")
}

/// `blixard transfers`: every transfer the node knows, newest last.
pub async fn transfers(node: &ControlClient) -> Result<()> {
    let mut all = node.transfers().await?;
    all.sort_by_key(|t| t.id);
    if all.is_empty() {
        println!("no transfers");
    }
    for t in all {
        let progress = t
            .progress
            .as_ref()
            .map_or("-".into(), |p| format!("{}/{}", indicatif::HumanBytes(p.bytes), indicatif::HumanBytes(p.total)));
        let state = format!("{:?}", t.state).to_lowercase();
        let error = t.error.map(|e| format!("  {e}")).unwrap_or_default();
        let limit = t.limit_mbps.map(|m| format!("  limit {m} Mbit/s")).unwrap_or_default();
        println!(
            "{:<10} {state:<10} {:<8} {} {} {}  {progress}{limit}{error}",
            t.id.to_string(),
            t.priority.to_string(),
            t.kind,
            t.name,
            t.version
        );
    }
    Ok(())
}

/// `blixard transfers priority ID PRIORITY`.
pub async fn set_priority(
    node: &ControlClient,
    id: blixard_node::TransferId,
    priority: TransferPriority,
) -> Result<()> {
    let t = node.set_priority(id, priority).await?;
    println!("{id} is now {} ({})", t.priority, format!("{:?}", t.state).to_lowercase());
    Ok(())
}

/// `blixard cancel ID`.
pub async fn cancel(node: &ControlClient, id: blixard_node::TransferId) -> Result<()> {
    node.cancel(id).await?;
    println!("{id} cancelled");
    Ok(())
}

/// `blixard vm list`.
pub async fn list(node: &ControlClient, remote: bool) -> Result<()> {
    let local = node.resources().await?;
    println!("{:<10} {:<24} {:<12} {:>12}  hash", "where", "name", "version", "size");
    for r in local.iter().filter(|r| r.kind == ResourceKind::VmImage) {
        println!(
            "{:<10} {:<24} {:<12} {:>12}  {}",
            "local",
            r.name,
            r.version,
            indicatif::HumanBytes(r.size).to_string(),
            &r.hash.to_hex()[..16]
        );
    }
    if remote {
        let others = node.remote_resources().await?;
        for o in others.iter().filter(|o| o.resource.kind == ResourceKind::VmImage) {
            let r = &o.resource;
            let trust = if o.trusted { String::new() } else { format!("  untrusted publisher {}", o.publisher) };
            println!(
                "{:<10} {:<24} {:<12} {:>12}  {}{trust}",
                &o.peer.to_string()[..8],
                r.name,
                r.version,
                indicatif::HumanBytes(r.size).to_string(),
                r.hash.to_hex()
            );
        }
    }
    Ok(())
}

/// `blixard peers`.
pub async fn peers(node: &ControlClient) -> Result<()> {
    let peers = node.peers().await?;
    if peers.is_empty() {
        println!(
            "no peers known: give the node --p2p-peer ADDR; if you did, the peer was unreachable (see the node's log)"
        );
    }
    for p in peers {
        let rtt = p.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms"));
        let path = p.path.map_or_else(|| p.addr.to_string(), |path| path.to_string());
        println!(
            "{}  {:<28} {:<12} rtt {rtt}  sent {} received {}",
            p.id,
            path,
            if p.connected { "connected" } else { "disconnected" },
            indicatif::HumanBytes(p.bytes_sent),
            indicatif::HumanBytes(p.bytes_received)
        );
    }
    Ok(())
}

/// `blixard status`.
pub async fn status(node: &ControlClient) -> Result<()> {
    let s = node.status().await?;
    println!("node      {}", s.node_id);
    println!("address   {}", s.addr);
    println!("peers     {} connected, {} known", s.peers_connected, s.peers_known);
    println!("transfers {} active, {} queued", s.transfers_active, s.transfers_queued);
    println!(
        "traffic   {} sent, {} received",
        indicatif::HumanBytes(s.bytes_sent),
        indicatif::HumanBytes(s.bytes_received)
    );
    println!(
        "saved     {} reused from local blobs, {} of zeros not fetched",
        indicatif::HumanBytes(s.reused_bytes),
        indicatif::HumanBytes(s.zero_bytes_skipped)
    );
    println!(
        "store     {} blobs, {} logical, {} on disk",
        s.store.blobs,
        indicatif::HumanBytes(s.store.logical_bytes),
        indicatif::HumanBytes(s.store.physical_bytes)
    );
    println!("resources {}", s.resources);
    println!("p2p       {}", if s.p2p_enabled { "on" } else { "off" });
    match &s.home_relay {
        Some(r) => println!(
            "relay     {r} ({} sent, {} received through relays)",
            indicatif::HumanBytes(s.relay_bytes_sent),
            indicatif::HumanBytes(s.relay_bytes_received)
        ),
        None => println!("relay     none"),
    }
    Ok(())
}

/// `blixard gc`.
pub async fn gc(node: &ControlClient) -> Result<()> {
    let r = node.gc().await?;
    for e in &r.evicted {
        println!("evicted  {} {} {} ({})", e.kind, e.name, e.version, indicatif::HumanBytes(e.size));
    }
    println!(
        "{} blob(s) and {} stray file(s) removed; the cache holds {}",
        r.blobs_removed,
        r.files_removed,
        indicatif::HumanBytes(r.cache_bytes)
    );
    Ok(())
}

/// `blixard verify`: one line per blob, a summary; fails if any is damaged.
pub async fn verify(node: &ControlClient, repair: bool) -> Result<()> {
    let reports = node.verify(repair).await?;
    let mut damaged = 0;
    for r in &reports {
        let state = if r.complete { "complete" } else { "partial" };
        if r.damaged.is_empty() {
            println!("ok       {} {state} {} checked", r.hash, indicatif::HumanBytes(r.checked_bytes));
        } else {
            damaged += 1;
            let ranges: Vec<String> = r.damaged.iter().map(|[a, b]| format!("{a}..{b}")).collect();
            let fate = if r.repaired { "now missing, to be fetched again" } else { "run with --repair" };
            println!("DAMAGED  {} {state} bytes {} ({fate})", r.hash, ranges.join(", "));
        }
    }
    println!("{} blob(s) checked, {damaged} damaged", reports.len());
    if damaged > 0 && !repair {
        bail!("{damaged} blob(s) damaged at rest");
    }
    Ok(())
}
