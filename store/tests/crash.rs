//! Crash safety with real crashes: a child process receives random verified
//! ranges into a partial blob and is killed with SIGKILL at random moments.
//! After each kill the store is reopened and checked:
//! - every recorded range was being written (subset of what was sent),
//! - every range whose receive returned is still recorded (nothing verified
//!   and acknowledged is lost; at most the in-flight checkpoint interval),
//! - recorded bytes are the source's bytes, and a complete blob is exact,
//! - what is recorded can be served and verifies at a third store (so the
//!   outboard records of every recorded range were durable too).
//!
//! The child receives through the blocking and the async (push) API in turn.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use blixard_store::{ranges, BlobStatus, ChunkNum, ChunkRanges, Hash, Store, StoreConfig};
use rand::{Rng, SeedableRng};

const SIZE: usize = 24 * 1024 * 1024 + 777;
const SEED: u64 = 99;
const CHILD_ENV: &str = "BLIXARD_CRASH_CHILD_DIR";

fn config() -> StoreConfig {
    StoreConfig { checkpoint_bytes: 1024 * 1024, checkpoint_interval: Duration::from_millis(100) }
}

fn parse_log(path: &Path) -> (ChunkRanges, ChunkRanges) {
    let (mut started, mut done) = (ChunkRanges::empty(), ChunkRanges::empty());
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts.len() != 3 {
            continue; // a line cut by the kill
        }
        let (Ok(a), Ok(b)) = (parts[1].parse::<u64>(), parts[2].parse::<u64>()) else { continue };
        let r = ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
        match parts[0] {
            "start" => started |= r,
            "done" => done |= r,
            _ => {}
        }
    }
    (started, done)
}

/// Rounds chunk ranges out to whole 16-chunk groups (what a leaf records).
fn to_groups(r: &ChunkRanges, size: u64) -> ChunkRanges {
    let mut out = ChunkRanges::empty();
    for x in ranges::to_vec(r, size) {
        out |= ChunkRanges::from(ChunkNum(x.start / 16 * 16)..ChunkNum(x.end.div_ceil(16) * 16));
    }
    ranges::clamp(&out, size)
}

/// The child: receive random ranges forever (until killed or complete).
#[test]
#[ignore = "the child process of kill_9_mid_write_loses_nothing_acknowledged, run by it"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = PathBuf::from(dir);
    let src = Store::open(dir.join("src")).unwrap();
    let dst = Store::open_with(dir.join("dst"), config()).unwrap();
    let hash: Hash = std::fs::read_to_string(dir.join("hash")).unwrap().parse().unwrap();
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("log")).unwrap();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let chunks = ranges::chunk_count(SIZE as u64);
    loop {
        if let BlobStatus::Complete { .. } = dst.status(&hash).unwrap() {
            return;
        }
        let a = rng.gen_range(0..chunks) / 16 * 16;
        let b = (a + rng.gen_range(1..4096)).div_ceil(16).saturating_mul(16).min(chunks);
        let r = ChunkRanges::from(ChunkNum(a)..ChunkNum(b));
        let resp = common::response(&src, &hash, &r);
        writeln!(log, "start {a} {b}").unwrap();
        if rng.gen_bool(0.5) {
            common::receive(&dst, hash, &r, &resp).unwrap();
        } else {
            common::receive_pushed(&dst, hash, &r, &resp, &[1452, 64 * 1024, 7]).unwrap();
        }
        writeln!(log, "done {a} {b}").unwrap();
    }
}

#[test]
fn kill_9_mid_write_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::data(SIZE, SEED);
    let hash = {
        let src = Store::open(dir.path().join("src")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(src.import_bytes(data.clone())).unwrap();
        src.set_tag_and_release("source", out.lease).unwrap();
        src.sync_all().unwrap();
        out.hash
    };
    std::fs::write(dir.path().join("hash"), hash.to_string()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let (mut kills, mut completions, mut partial_checks) = (0, 0, 0);
    while kills < 12 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(40..400)));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        let (started, done) = parse_log(&dir.path().join("log"));
        let dst = Store::open_with(dir.path().join("dst"), config()).unwrap();
        match dst.status(&hash).unwrap() {
            BlobStatus::Complete { .. } => {
                assert_eq!(dst.read_to_vec(&hash).unwrap(), data, "complete blob has wrong bytes");
                completions += 1;
                drop(dst);
                std::fs::remove_dir_all(dir.path().join("dst")).unwrap();
                std::fs::remove_file(dir.path().join("log")).unwrap();
            }
            BlobStatus::Partial { ranges: recorded, .. } => {
                let size = SIZE as u64;
                assert!(
                    to_groups(&(started.clone() | done.clone()), size).is_superset(&recorded),
                    "recorded more than was sent"
                );
                assert!(recorded.is_superset(&to_groups(&done, size)), "lost acknowledged ranges");
                partial_checks += usize::from(!recorded.is_empty());
                let file = std::fs::read(dir.path().join("dst/partial").join(format!("{hash}.data"))).unwrap();
                for r in ranges::to_vec(&recorded, size) {
                    let (s, e) = ((r.start * 1024) as usize, ((r.end * 1024) as usize).min(SIZE));
                    assert!(file[s..e] == data[s..e], "recorded bytes {s}..{e} differ from the source");
                }
                if !recorded.is_empty() {
                    // Served from the reopened partial blob, the recorded
                    // ranges verify against the hash: their parents survived.
                    let third_dir = tempfile::tempdir().unwrap();
                    let third = Store::open(third_dir.path()).unwrap();
                    let resp = common::response(&dst, &hash, &recorded);
                    let out = common::receive(&third, hash, &recorded, &resp).expect("recorded ranges verify");
                    assert_eq!(out.held, recorded, "a third store got other ranges than were recorded");
                }
            }
            BlobStatus::Absent => assert!(done.is_empty(), "acknowledged data lost entirely ({status:?})"),
        }
    }
    eprintln!("{kills} kills, {partial_checks} checks of a partial blob, {completions} completions");
    assert!(partial_checks >= 6, "kills did not land mid-transfer often enough to test anything");
}

const SEED_CHILD_ENV: &str = "BLIXARD_SEED_CRASH_CHILD_DIR";

/// The seeding child: seeds version 2 from version 1 (equal groups copied,
/// zero groups punched), then fetches the rest, until killed or complete.
#[test]
#[ignore = "the child process of kill_9_mid_seed_records_only_verified_bytes, run by it"]
fn seed_crash_child() {
    let Ok(dir) = std::env::var(SEED_CHILD_ENV) else { return };
    let dir = PathBuf::from(dir);
    let src = Store::open(dir.join("src")).unwrap();
    let dst = Store::open_with(dir.join("dst"), config()).unwrap();
    let base: Hash = std::fs::read_to_string(dir.join("base")).unwrap().parse().unwrap();
    let hash: Hash = std::fs::read_to_string(dir.join("hash")).unwrap().parse().unwrap();
    let tree = src.outboard_bytes(&hash).unwrap();
    let size = match src.status(&hash).unwrap() {
        BlobStatus::Complete { size } => size,
        s => panic!("{s:?}"),
    };
    loop {
        match dst.status(&hash).unwrap() {
            BlobStatus::Complete { .. } => return,
            BlobStatus::Partial { ranges, .. } if !ranges.is_empty() => {
                let missing = dst.missing(&hash).unwrap().unwrap();
                let resp = common::response(&src, &hash, &missing);
                common::receive(&dst, hash, &missing, &resp).unwrap();
            }
            _ => {
                let mut seeder = dst.start_seed(hash, size, &[base]).unwrap();
                for piece in tree.chunks(4096) {
                    seeder.push(piece).unwrap();
                }
                seeder.finish().unwrap();
            }
        }
    }
}

/// Seeding killed with SIGKILL at random moments, then reopened: whatever
/// is recorded is version 2's bytes and serves to a third store that
/// verifies it (its parents were durable before it was recorded).
#[test]
fn kill_9_mid_seed_records_only_verified_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = common::data(SIZE, SEED);
    let mut v2 = v1.clone();
    for g in (0..SIZE / 16384).step_by(37) {
        v2[g * 16384 + 11] ^= 0x5a;
    }
    v2[3 << 20..5 << 20].fill(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hash = {
        let src = Store::open(dir.path().join("src")).unwrap();
        let out = rt.block_on(src.import_bytes(v2.clone())).unwrap();
        src.set_tag_and_release("v2", out.lease).unwrap();
        src.sync_all().unwrap();
        out.hash
    };
    let base = {
        let dst = Store::open_with(dir.path().join("dst"), config()).unwrap();
        let out = rt.block_on(dst.import_bytes(v1.clone())).unwrap();
        dst.set_tag_and_release("v1", out.lease).unwrap();
        dst.sync_all().unwrap();
        out.hash
    };
    std::fs::write(dir.path().join("hash"), hash.to_string()).unwrap();
    std::fs::write(dir.path().join("base"), base.to_string()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let (mut kills, mut partial_checks, mut rounds) = (0, 0, 0);
    while kills < 8 && rounds < 80 {
        rounds += 1;
        let mut child = Command::new(&exe)
            .args(["--exact", "seed_crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(SEED_CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(10..120)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        assert!(child.wait().is_ok());
        let dst = Store::open_with(dir.path().join("dst"), config()).unwrap();
        match dst.status(&hash).unwrap() {
            BlobStatus::Complete { .. } => {
                assert_eq!(dst.read_to_vec(&hash).unwrap(), v2, "complete blob has wrong bytes");
                // start over: forget version 2, keep the base
                drop(dst);
                let dst = Store::open_with(dir.path().join("dst"), config()).unwrap();
                dst.gc().unwrap();
            }
            BlobStatus::Partial { ranges: recorded, .. } if !recorded.is_empty() => {
                let file = std::fs::read(dir.path().join("dst/partial").join(format!("{hash}.data"))).unwrap();
                for r in ranges::to_vec(&recorded, SIZE as u64) {
                    let (s, e) = ((r.start * 1024) as usize, ((r.end * 1024) as usize).min(SIZE));
                    assert!(file[s..e] == v2[s..e], "recorded bytes {s}..{e} are not version 2's");
                }
                let third_dir = tempfile::tempdir().unwrap();
                let third = Store::open(third_dir.path()).unwrap();
                let resp = common::response(&dst, &hash, &recorded);
                let out = common::receive(&third, hash, &recorded, &resp).expect("recorded ranges verify");
                assert_eq!(out.held, recorded);
                partial_checks += 1;
            }
            _ => {}
        }
    }
    eprintln!("{kills} kills in {rounds} rounds, {partial_checks} partial blobs checked");
    assert!(kills >= 3, "the child finished too fast to be killed: {kills} kills");
    assert!(partial_checks >= 1, "no kill left anything recorded to check");
}
