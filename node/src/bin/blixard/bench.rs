//! `blixard bench`: throughput scenarios, each against a baseline measured in
//! the same run, printed as one JSON object per line (`--json`) or a table.
//!
//! Scenarios:
//! - `import`: importing a file into a fresh store vs BLAKE3 over the same
//!   file memory-mapped with `update_rayon` (what `b3sum` does); also the
//!   peak RSS of the import.
//! - `transfer` (in `transfer_bench`): a verified get between two processes
//!   vs a raw quinn stream.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use blixard_store::{ExportOptions, ImportMode, Store};
use rand::RngCore;
use serde_json::json;

/// Parses sizes like `1GiB`, `256MiB`, `64KiB`, `10MB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().with_context(|| format!("size {s:?}: expected a number and a unit like 1GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => bail!("size {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"),
    };
    Ok((num * mult as f64) as u64)
}

/// One figure of a scenario.
pub struct Figure {
    pub scenario: &'static str,
    pub metric: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<(String, f64)>,
    pub extra: serde_json::Value,
}

impl Figure {
    pub fn print(&self, json_out: bool) {
        if json_out {
            let mut v = json!({
                "scenario": self.scenario, "metric": self.metric,
                "value": round(self.value), "unit": self.unit,
            });
            if let Some((name, b)) = &self.baseline {
                v["baseline"] = json!(round(*b));
                v["baseline_name"] = json!(name);
                v["ratio"] = json!(round(self.value / b));
            }
            if let serde_json::Value::Object(m) = &self.extra {
                for (k, x) in m {
                    v[k] = x.clone();
                }
            }
            println!("{v}");
        } else {
            let base = match &self.baseline {
                Some((name, b)) => format!("  baseline {name} {:.1} {}  ratio {:.3}", b, self.unit, self.value / b),
                None => String::new(),
            };
            println!("{:<10} {:<24} {:>10.1} {:<5}{base}", self.scenario, self.metric, self.value, self.unit);
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Writes `size` random bytes to `path` in 1 MiB pieces, and syncs them.
pub fn generate_file(path: &Path, size: u64) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut rng = rand::thread_rng();
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    // On disk before any run, so its writeback does not compete with them.
    f.sync_all()?;
    Ok(())
}

/// Peak resident set (VmHWM) since the last reset, in bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak RSS counter (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The b3sum baseline: BLAKE3 with `update_rayon` over the memory-mapped
/// file. Returns the hash, the time to map and hash, and the time to unmap:
/// `b3sum` pays that too (at exit), and an import pays it for every window
/// it releases, so the whole job is map, hash and unmap.
pub fn baseline_hash(path: &Path) -> Result<(blake3::Hash, Duration, Duration)> {
    let start = Instant::now();
    let f = File::open(path)?;
    // SAFETY: a read-only map of a file only this benchmark uses.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    let mut h = blake3::Hasher::new();
    h.update_rayon(&map);
    let hash = h.finalize();
    let hashed = start.elapsed();
    drop(map);
    Ok((hash, hashed, start.elapsed() - hashed))
}

/// Copies `from` to `to` as `cp` does (`std::fs::copy`: the kernel's
/// `copy_file_range`), synced afterwards outside the timing, then removed;
/// returns how long the copy took.
fn timed_copy(from: &Path, to: &Path) -> Result<Duration> {
    let start = Instant::now();
    std::fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    let took = start.elapsed();
    File::open(to)?.sync_all()?;
    std::fs::remove_file(to)?;
    Ok(took)
}

/// Reads a file once so it is in the page cache.
fn warm(path: &Path) -> Result<()> {
    std::io::copy(&mut File::open(path)?, &mut std::io::sink())?;
    Ok(())
}

pub struct ImportArgs {
    pub size: u64,
    pub file: Option<PathBuf>,
    pub modes: Vec<ImportMode>,
    pub runs: usize,
    pub dir: PathBuf,
}

/// A bench's work dir in `dir`, and its input: `file`, or a generated file
/// of `size` bytes in the work dir. Returns the dir, the path and the size.
pub fn input(dir: &Path, file: Option<&Path>, size: u64) -> Result<(tempfile::TempDir, PathBuf, u64)> {
    let work = tempfile::Builder::new().prefix("blixard-bench-").tempdir_in(dir)?;
    let path = match file {
        Some(p) => p.to_path_buf(),
        None => {
            let p = work.path().join("input.bin");
            generate_file(&p, size)?;
            p
        }
    };
    let size = std::fs::metadata(&path)?.len();
    Ok((work, path, size))
}

/// The import scenario.
pub async fn import(args: ImportArgs) -> Result<Vec<Figure>> {
    let (work, path, size) = input(&args.dir, args.file.as_deref(), args.size)?;
    warm(&path)?;
    let mut figures = Vec::new();
    for &mode in &args.modes {
        let (mut ours, mut base, mut base_hash_only, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut plain_copy, mut exported, mut synced_copy) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..args.runs {
            let (expected, hashed, unmapped) = baseline_hash(&path)?;
            // The plain copy goes first in every other run: whichever runs
            // second may reuse pages the first freed, which a VM backs faster.
            let copy_first = mode == ImportMode::Copy && run % 2 == 0;
            let mut time_plain_copy = || -> Result<()> {
                plain_copy.push(size as f64 / timed_copy(&path, &work.path().join("plain-copy"))?.as_secs_f64() / 1e6);
                Ok(())
            };
            if copy_first {
                time_plain_copy()?;
            }
            let store_dir = work.path().join(format!("store-{mode:?}-{run}"));
            let store = Store::open(&store_dir)?;
            reset_peak_rss();
            let before = peak_rss().unwrap_or(0);
            let start = Instant::now();
            let out = store.import_path(&path, mode).await?;
            let took = start.elapsed();
            rss.push(peak_rss().unwrap_or(0).max(before) as f64);
            if out.hash != expected.into() {
                bail!("import hash {} differs from BLAKE3 {}", out.hash, expected);
            }
            ours.push(size as f64 / took.as_secs_f64() / 1e6);
            base.push(size as f64 / (hashed + unmapped).as_secs_f64() / 1e6);
            base_hash_only.push(size as f64 / hashed.as_secs_f64() / 1e6);
            if mode == ImportMode::Copy && !copy_first {
                time_plain_copy()?;
            }
            // let background syncs finish outside the timed region
            drop(out);
            store.sync_all()?;
            drop(store);
            std::fs::remove_dir_all(&store_dir)?;
        }
        if mode == ImportMode::Copy {
            // Export verifies every group as it copies: its cost against a
            // synced plain copy of the same bytes, in the same runs. After
            // the import runs, so memory the export leaves with the
            // allocator does not count in the import's peak RSS.
            let store_dir = work.path().join("store-export");
            let store = Store::open(&store_dir)?;
            let out = store.import_path(&path, ImportMode::Copy).await?;
            store.sync_all()?;
            let target = work.path().join("exported");
            for _ in 0..args.runs {
                // Both are durable when timed: export syncs before its rename.
                let start = Instant::now();
                store.export(out.hash, &target, ExportOptions { overwrite: true, ..Default::default() }).await?;
                exported.push(size as f64 / start.elapsed().as_secs_f64() / 1e6);
                std::fs::remove_file(&target)?;
                let start = Instant::now();
                std::fs::copy(&path, &target)?;
                File::open(&target)?.sync_all()?;
                synced_copy.push(size as f64 / start.elapsed().as_secs_f64() / 1e6);
                std::fs::remove_file(&target)?;
            }
            drop(out);
            drop(store);
            std::fs::remove_dir_all(&store_dir)?;
        }
        let mode_name = match mode {
            ImportMode::Copy => "copy",
            ImportMode::Reference => "reference",
        };
        let extra = json!({"mode": mode_name, "size": size, "runs": args.runs});
        let (value, hash_only) = (median(ours), median(base_hash_only));
        let mut with_hash_only = extra.clone();
        // The same baseline with its timer stopped before the unmap, for comparison.
        with_hash_only["baseline_before_unmap"] = json!(round(hash_only));
        with_hash_only["ratio_before_unmap"] = json!(round(value / hash_only));
        if !exported.is_empty() {
            figures.push(Figure {
                scenario: "export",
                metric: "throughput_verified".into(),
                value: median(exported),
                unit: "MB/s",
                baseline: Some(("plain_copy_synced_unverified".into(), median(synced_copy))),
                extra: json!({"size": size, "runs": args.runs}),
            });
        }
        if !plain_copy.is_empty() {
            // What copying the file alone costs (its floor), in the same runs.
            let copy = median(plain_copy);
            with_hash_only["plain_copy"] = json!(round(copy));
            with_hash_only["ratio_to_plain_copy"] = json!(round(value / copy));
        }
        figures.push(Figure {
            scenario: "import",
            metric: format!("throughput_{mode_name}"),
            value,
            unit: "MB/s",
            baseline: Some(("blake3_mmap_update_rayon_unmap".into(), median(base))),
            extra: with_hash_only,
        });
        figures.push(Figure {
            scenario: "import",
            metric: format!("peak_rss_{mode_name}"),
            value: rss.iter().cloned().fold(0.0, f64::max) / (1 << 20) as f64,
            unit: "MiB",
            baseline: None,
            extra,
        });
    }
    Ok(figures)
}
