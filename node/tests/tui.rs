//! `blixard tui` end to end: the real binary in a tmux pane, driven by
//! keys against two real `blixard node`s, its screen read back with
//! `tmux capture-pane`. Skipped, with a message saying so, where tmux is
//! not installed (CI installs it).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use blixard_node::{client::ControlClient, TransferState};

mod common;

use common::{start_node, BIN};

fn start(data: &Path, extra: &[&str]) -> common::NodeProcess {
    let mut args = vec!["--max-retry-attempts", "10"];
    args.extend_from_slice(extra);
    start_node(1, data, &args)
}

fn blixard(args: &[&str], data: &Path) {
    let out = Command::new(BIN).args(args).arg("--data-dir").arg(data).output().unwrap();
    assert!(out.status.success(), "blixard {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn image(path: &Path, size: usize, seed: u32) {
    blixard_tests::data::write_file(path, size as u64, seed.into());
}

/// A tmux session running one command, killed on drop (even when the test fails).
struct Pane {
    session: String,
}

impl Pane {
    fn start(command: &str) -> Pane {
        let session = format!("blixard-tui-test-{}", std::process::id());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "120", "-y", "40", command])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session failed");
        Pane { session }
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let ok = Command::new("tmux").args(["send-keys", "-t", &self.session, k]).status().unwrap().success();
            assert!(ok, "tmux send-keys {k}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows a line for which `check` holds; returns it.
    fn wait_line(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if let Some(line) = screen.lines().find(|l| check(l)) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no {what} on the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.session])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).stderr(Stdio::null()).status();
    }
}

/// The percentage in a transfer row (`  37% ████...`).
fn percent(line: &str) -> Option<u32> {
    line.split_whitespace().find_map(|w| w.strip_suffix('%')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tui_lists_queues_downloads_and_turns_p2p_off_and_on() {
    if !blixard_tests::tools::available(
        "the_tui_lists_queues_downloads_and_turns_p2p_off_and_on",
        "tmux",
        "apt-get install tmux",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let seeder = start(&a, &[]);
    let viewed = start(&b, &["--p2p-peer", &format!("{}@{}", seeder.id, seeder.addr)]);
    let size = 24 * 1024 * 1024;
    let (wanted, served) = (dir.path().join("ubuntu.img"), dir.path().join("other.img"));
    image(&wanted, size, 1);
    image(&served, size, 2);
    blixard(&["vm", "upload", "--name", "ubuntu-server", "--version", "22.04", "--file", wanted.to_str().unwrap()], &a);
    blixard(&["vm", "upload", "--name", "other", "--version", "1", "--file", served.to_str().unwrap()], &b);

    let pane = Pane::start(&format!("{BIN} tui --data-dir {}", b.display()));
    pane.wait_line("the P2P tab", |l| l.contains("P2P on"));

    // `l` lists: our own image first, then the seeder's.
    pane.keys(&["l"]);
    pane.wait_line("the remote image", |l| l.contains("ubuntu-server") && l.contains("1 peer"));
    // Select it, `q`: High (one up from Normal), a limit of 40 Mbit/s, Enter.
    pane.keys(&["Down", "q", "Up", "Tab", "4", "0", "Enter"]);
    pane.wait_line("the queued message", |l| l.contains("queued: ubuntu-server 22.04 at high, limit 40 Mbit/s"));
    pane.keys(&["3"]);
    let row = |l: &str| l.contains("ubuntu-server 22.04") && l.contains("high") && percent(l).is_some();
    let running = pane.wait_line("a running transfer", |l| row(l) && l.contains("running") && percent(l) > Some(0));
    let first = percent(&running).unwrap();
    let later = pane.wait_line("the bar moving", |l| row(l) && percent(l) > Some(first));
    let later = percent(&later).unwrap();
    pane.wait_line("the completed transfer", |l| row(l) && l.contains("completed") && l.contains("100%"));
    eprintln!("progress seen at {first}% then {later}%, then completed");
    let out = dir.path().join("out.img");
    blixard(
        &["vm", "download", "--name", "ubuntu-server", "--version", "22.04", "--output", out.to_str().unwrap()],
        &b,
    );
    assert_eq!(blake3::hash(&std::fs::read(&out).unwrap()), blake3::hash(&std::fs::read(&wanted).unwrap()));

    // The seeder downloads from the viewed node, slowly (chosen by hash: it
    // does not trust the viewed node to name things); `p` there stops it.
    let hash = blake3::hash(&std::fs::read(&served).unwrap()).to_hex().to_string();
    let args =
        ["vm", "download", "--name", "other", "--version", "1", "--hash", &hash, "--detach", "--limit-mbps", "40"];
    blixard(&args, &a);
    let seeder_api = ControlClient::find(&a).unwrap();
    let progress = || async {
        let all = seeder_api.transfers().await.unwrap();
        let t = all.into_iter().find(|t| t.name == "other").unwrap();
        (t.state, t.progress.map_or(0, |p| p.bytes))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress().await.1 < 2 * 1024 * 1024 {
        assert!(Instant::now() < deadline, "the seeder's download did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pane.keys(&["5", "p"]);
    pane.wait_line("P2P off", |l| l.contains("P2P off"));
    // What the viewed node sends (counted as it goes out) stops.
    let viewed_api = ControlClient::find(&b).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped_at = viewed_api.status().await.unwrap().bytes_sent;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = viewed_api.status().await.unwrap().bytes_sent;
    assert_eq!(still, stopped_at, "the peer's download from this node went on while P2P was off");
    let (state, held) = progress().await;
    assert!(state.is_active() && held < size as u64, "{state:?} {held}");
    eprintln!(
        "P2P off: the viewed node sent nothing in 2 s (stayed at {still} bytes); the peer holds {held} of {size}"
    );
    pane.keys(&["p"]);
    pane.wait_line("P2P on again", |l| l.contains("P2P on"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (state, _) = progress().await;
        if state == TransferState::Completed {
            break;
        }
        assert!(state.is_active() && Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pane.keys(&["Escape"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pane.alive() {
        assert!(Instant::now() < deadline, "Esc did not quit:\n{}", pane.screen());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((seeder, viewed));
}
