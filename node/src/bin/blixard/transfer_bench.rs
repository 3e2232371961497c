//! `blixard bench transfer`: our verified get of a blob between two
//! processes on loopback vs a raw quinn stream of the same size with the
//! same transport configuration, in the same run; plus a resumed transfer
//! and the b3sum check of what arrived.
//!
//! The parent generates the file and re-runs this binary as the serving
//! child (`bench transfer-server`), which imports the file and serves it on
//! two endpoints: the protocol, and a raw stream of N bytes. The raw stream
//! is the baseline: one hot 1 MiB buffer sent again and again (QUIC alone).
//! A second raw figure streams the file itself (`pread` into fresh 1 MiB
//! buffers), so the cost of reading the file shows apart from the protocol's.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use blixard_protocol::{client, server, Endpoint, EndpointOptions, NodeId, SecretKey};
use blixard_store::{ranges, Hash, ImportMode, Store};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::bench::{self, median, Figure};

/// Arguments of the transfer scenario.
pub struct TransferArgs {
    pub size: u64,
    pub file: Option<PathBuf>,
    pub runs: usize,
    pub dir: PathBuf,
}

/// The serving child: imports `file`, serves it, prints
/// `READY <node-id> <protocol-addr> <raw-addr> <hash>`, runs until stdin closes.
pub async fn serve_child(file: PathBuf, dir: PathBuf) -> Result<()> {
    let store = Store::open(dir.join("server-store"))?;
    let out = store.import_path(&file, ImportMode::Copy).await?;
    store.set_tag_and_release("bench", out.lease)?;
    let key = SecretKey::generate();
    let proto = Endpoint::bind(key, "127.0.0.1:0".parse()?, EndpointOptions::default())?;
    tokio::spawn(server::accept_loop(proto.clone(), server::ServerContext::new(store, Default::default())));
    let raw = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse()?, EndpointOptions::default())?;
    let raw2 = raw.clone();
    let source = Arc::new(std::fs::File::open(&file)?);
    tokio::spawn(async move {
        while let Some(Ok(conn)) = raw2.accept().await {
            let source = source.clone();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.quinn().accept_bi().await {
                    // The length, then 0 for the hot buffer or 1 for the file.
                    let mut req = [0u8; 9];
                    if recv.read_exact(&mut req).await.is_err() {
                        return;
                    }
                    let size = u64::from_le_bytes(req[..8].try_into().expect("8 bytes"));
                    let from_file = req[8] == 1;
                    let piece = bytes::Bytes::from(vec![0x5au8; 1 << 20]);
                    let mut at = 0u64;
                    while at < size {
                        let n = (size - at).min(piece.len() as u64) as usize;
                        let chunk = if from_file {
                            let mut buf = bytes::BytesMut::zeroed(n);
                            if std::os::unix::fs::FileExt::read_exact_at(&*source, &mut buf, at).is_err() {
                                return;
                            }
                            buf.freeze()
                        } else {
                            piece.slice(..n)
                        };
                        if send.write_chunk(chunk).await.is_err() {
                            return;
                        }
                        at += n as u64;
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                }
            });
        }
    });
    println!("READY {} {} {} {}", proto.node_id(), proto.local_addr(), raw.local_addr(), out.hash);
    // Run until the parent closes our stdin.
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
    Ok(())
}

/// `b3sum` of a file if the tool is installed.
fn b3sum(path: &Path) -> Option<String> {
    let out = std::process::Command::new("b3sum").arg("--no-names").arg(path).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The transfer scenario.
pub async fn run(args: TransferArgs) -> Result<Vec<Figure>> {
    let (work, path, size) = bench::input(&args.dir, args.file.as_deref(), args.size)?;
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "transfer-server", "--file"])
        .arg(&path)
        .arg("--dir")
        .arg(work.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start the serving child")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .context("the serving child did not start")??
        .context("the serving child exited")?;
    let parts: Vec<&str> = ready.split_whitespace().collect();
    let [_, id, proto_addr, raw_addr, hash] = parts[..] else { bail!("unexpected child output {ready:?}") };
    let id: NodeId = id.parse()?;
    let hash: Hash = hash.parse()?;
    let (proto_addr, raw_addr) = (proto_addr.parse()?, raw_addr.parse()?);

    let ep = Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse()?, EndpointOptions::default())?;
    let (mut ours, mut raw, mut raw_file) = (Vec::new(), Vec::new(), Vec::new());
    let server_pid = child.id().context("the serving child exited")?;
    let (mut ours_cpu, mut raw_cpu) = (Cpu::default(), Cpu::default());
    // Datagrams the kernel dropped for full receive buffers (whole machine).
    let (mut ours_lost, mut raw_lost) = (0u64, 0u64);
    for run in 0..args.runs {
        // Raw quinn: one stream of `size` bytes, read and dropped.
        let conn = ep.connect(raw_addr, None).await?;
        let cpu = Cpu::now(server_pid);
        let drops = udp_receive_drops();
        let took = raw_stream(&conn, size, false).await?;
        raw.push(size as f64 / took.as_secs_f64() / 1e6);
        raw_cpu.add(&cpu, server_pid);
        raw_lost += udp_receive_drops() - drops;
        // The same with the file's bytes.
        let took = raw_stream(&conn, size, true).await?;
        raw_file.push(size as f64 / took.as_secs_f64() / 1e6);
        conn.close(blixard_protocol::ErrorCode::Ok, "done");

        // Ours: a verified get into a fresh store (its data lands in files).
        let store_dir = work.path().join(format!("client-{run}"));
        let store = Store::open(&store_dir)?;
        let conn = ep.connect(proto_addr, Some(id)).await?;
        let cpu = Cpu::now(server_pid);
        let drops = udp_receive_drops();
        let start = Instant::now();
        let out = client::get(&conn, &store, hash, &Default::default()).await?;
        ours_cpu.add(&cpu, server_pid);
        ours_lost += udp_receive_drops() - drops;
        let took = start.elapsed();
        if !out.complete {
            bail!("the get did not complete");
        }
        ours.push(size as f64 / took.as_secs_f64() / 1e6);
        conn.close(blixard_protocol::ErrorCode::Ok, "done");
        drop(store);
        std::fs::remove_dir_all(&store_dir)?;
    }

    // Resume: interrupt a get at ~40%, then finish it; count what the
    // second get received against what was missing.
    let store_dir = work.path().join("client-resume");
    let store = Store::open(&store_dir)?;
    let conn = ep.connect(proto_addr, Some(id)).await?;
    let progress = Arc::new(AtomicU64::new(0));
    let opts = client::GetOptions { progress: Some(progress.clone()), ..Default::default() };
    let stop_at = size * 2 / 5;
    tokio::select! {
        r = client::get(&conn, &store, hash, &opts) => { r?; bail!("the get finished before it could be interrupted"); }
        _ = async { while progress.load(Ordering::Relaxed) < stop_at { tokio::time::sleep(Duration::from_millis(2)).await } } => {}
    }
    // Let the cancelled receiver wind down and checkpoint.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let missing = store.missing(&hash)?.unwrap_or_default();
    let missing_bytes = ranges::byte_count(&missing, size);
    let second = client::get(&conn, &store, hash, &Default::default()).await?;
    if !second.complete {
        bail!("the resumed get did not complete");
    }
    let held_before = size - missing_bytes;

    // What arrived equals the source: the store verified it against the
    // hash; the hash must equal b3sum of the source file.
    let b3 = b3sum(&path);
    let matches = match &b3 {
        Some(sum) => *sum == hash.to_hex(),
        None => Hash::of(&std::fs::read(&path)?) == hash,
    };
    if !matches {
        bail!("received blob {hash} differs from b3sum {b3:?} of the source");
    }
    drop(store);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;

    let round = |v: &[f64]| v.iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>();
    // CPU milliseconds per MB moved, receiver and sender.
    let per_mb = |c: &Cpu, n: usize| {
        let mb = (size as f64 / 1e6) * n as f64;
        [c.receiver, c.sender].map(|s| (s * 1e3 / mb * 1000.0).round() / 1000.0)
    };
    // Each run's ratio to the raw run just before it: adjacent runs share
    // the machine's speed of the moment, so their median drifts less than
    // the ratio of the two medians (the headline figure).
    let ratio_each: Vec<f64> = ours.iter().zip(&raw).map(|(o, r)| (o / r * 1000.0).round() / 1000.0).collect();
    let extra = json!({
        "size": size, "runs": args.runs, "processes": 2, "each": round(&ours), "baseline_each": round(&raw),
        "ratio_each": ratio_each, "ratio_paired_median": median(ratio_each.clone()),
        "cpu_ms_per_mb": per_mb(&ours_cpu, ours.len()), "baseline_cpu_ms_per_mb": per_mb(&raw_cpu, raw.len()),
        "udp_drops": ours_lost, "baseline_udp_drops": raw_lost,
    });
    let raw_file_each = round(&raw_file);
    let ours_median = median(ours.clone());
    Ok(vec![
        Figure {
            scenario: "transfer",
            metric: "throughput_get_vs_raw_file".into(),
            value: ours_median,
            unit: "MB/s",
            baseline: Some(("raw_quinn_file_stream".into(), median(raw_file))),
            extra: json!({"baseline_each": raw_file_each}),
        },
        Figure {
            scenario: "transfer",
            metric: "throughput_get".into(),
            value: median(ours),
            unit: "MB/s",
            baseline: Some(("raw_quinn_single_stream".into(), median(raw))),
            extra: extra.clone(),
        },
        Figure {
            scenario: "transfer",
            metric: "resume_data_bytes".into(),
            value: second.data_bytes as f64,
            unit: "B",
            baseline: Some(("missing_bytes".into(), missing_bytes as f64)),
            extra: json!({"held_before_resume": held_before, "wire_bytes": second.wire_bytes, "size": size}),
        },
        Figure {
            scenario: "transfer",
            metric: "hash_equals_b3sum".into(),
            value: if matches { 1.0 } else { 0.0 },
            unit: "bool",
            baseline: None,
            extra: json!({"hash": hash.to_hex(), "checked_with": if b3.is_some() { "b3sum" } else { "blake3 crate" }}),
        },
    ])
}

/// One raw stream of `size` bytes from the serving child (from the file, or
/// a hot buffer), read and dropped; returns how long it took.
async fn raw_stream(conn: &blixard_protocol::Connection, size: u64, from_file: bool) -> Result<Duration> {
    let start = Instant::now();
    let (mut send, mut recv) = conn.quinn().open_bi().await?;
    let mut req = size.to_le_bytes().to_vec();
    req.push(u8::from(from_file));
    send.write_all(&req).await?;
    send.finish()?;
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        got += chunk.bytes.len() as u64;
    }
    if got != size {
        bail!("raw stream carried {got} of {size} bytes");
    }
    Ok(start.elapsed())
}

/// CPU seconds (user + system, all threads) of this process (the receiver)
/// and the serving child, from `/proc`.
#[derive(Default)]
struct Cpu {
    receiver: f64,
    sender: f64,
}

impl Cpu {
    fn now(server_pid: u32) -> Cpu {
        Cpu { receiver: proc_cpu_seconds("self"), sender: proc_cpu_seconds(&server_pid.to_string()) }
    }

    /// Adds the CPU spent since `start`.
    fn add(&mut self, start: &Cpu, server_pid: u32) {
        let now = Cpu::now(server_pid);
        self.receiver += now.receiver - start.receiver;
        self.sender += now.sender - start.sender;
    }
}

/// utime + stime of a process in seconds (0 if unreadable). Linux reports
/// them in USER_HZ ticks, which is 100 on every architecture we build for.
fn proc_cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name may hold spaces; the fields after it do not.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// UDP datagrams the kernel dropped because a receive buffer was full
/// (`RcvbufErrors` in /proc/net/snmp; 0 if unreadable).
fn udp_receive_drops() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else { return 0 };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors");
    at.and_then(|i| values.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}
