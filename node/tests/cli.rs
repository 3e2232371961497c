//! The `blixard` binary end to end: `blixard node` serving a data dir, and
//! `blixard conformance` pointed at it, as an implementer would run them.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use blixard_store::{ResourceKind, Store};

mod common;

use common::{start_node as start, NodeProcess as Node, BIN};

fn start_node(data: &Path) -> Node {
    start(1, data, &[])
}

fn start_node_with(data: &Path, extra: &[&str]) -> Node {
    start(1, data, extra)
}

fn conformance(node: &Node) -> Output {
    Command::new(BIN).args(["conformance", &format!("{}@{}", node.id, node.addr)]).output().unwrap()
}

#[test]
fn conformance_passes_against_a_node_serving_a_resource() {
    let data = tempfile::tempdir().unwrap();
    {
        let store = Store::open(data.path().join("store")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let image: Vec<u8> = (0..100 * 1024 + 1u32).map(|i| (i * 7 % 256) as u8).collect();
        let out = rt.block_on(store.import_bytes(image)).unwrap();
        store.put_resource_and_release(&ResourceKind::VmImage, "ubuntu-server", "22.04", out.lease).unwrap();
        store.sync_all().unwrap();
    }
    let node = start_node(data.path());
    let out = conformance(&node);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "conformance failed:\n{table}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains(" 0 failed"), "{table}");
    assert!(!table.contains("FAIL"), "{table}");
}

#[test]
fn conformance_fails_and_names_the_check_against_a_node_with_nothing_to_serve() {
    let data = tempfile::tempdir().unwrap();
    let node = start_node(data.path());
    // A failed run leaves no scratch dir behind.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["conformance", &format!("{}@{}", node.id, node.addr)])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "conformance left its scratch dir");
    let failed: Vec<&str> = table.lines().filter(|l| l.contains(" FAIL ")).collect();
    assert!(failed.iter().any(|l| l.starts_with("get full")), "expected `get full` to fail:\n{table}");
    // The checks that need no blob still pass.
    assert!(table.lines().any(|l| l.starts_with("ping") && l.contains(" pass ")), "{table}");
}

#[test]
fn conformance_refuses_a_peer_without_an_identity() {
    let out = Command::new(BIN).args(["conformance", "127.0.0.1:9"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NODE_ID@"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The demo runs end to end with an empty image too.
#[test]
fn the_demo_moves_an_empty_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["demo", "--size", "0"]).current_dir(dir.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("verified"), "{text}");
}

fn blixard(args: &[&str], data: &Path) -> Output {
    Command::new(BIN).args(args).arg("--data-dir").arg(data).env_remove("BLIXARD_NODE").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Numbers are parsed (negative ones too) and rejected naming where they
/// came from; near-zero intervals are refused; a file value a flag
/// replaces is not judged on its own.
#[test]
fn settings_are_checked_after_merging_and_errors_name_their_source() {
    let run = |args: &[&str], env: Option<(&str, &str)>| {
        let mut c = Command::new(BIN);
        c.args(["node", "--id", "1", "--bind", "127.0.0.1:0"]).args(args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let e = stderr(&run(&["--bandwidth-limit-mbps", "-1"], None));
    assert!(e.contains("--bandwidth-limit-mbps") && e.contains("positive"), "{e}");
    let e = stderr(&run(&[], Some(("BLIXARD_P2P_BANDWIDTH_LIMIT_MBPS", "-1"))));
    assert!(e.contains("BLIXARD_P2P_BANDWIDTH_LIMIT_MBPS") && e.contains("positive"), "{e}");
    let e = stderr(&run(&["--max-retry-attempts", "-2"], None));
    assert!(e.contains("--max-retry-attempts") && e.contains("0 or more"), "{e}");
    let e = stderr(&run(&["--health-check-interval", "0.001"], None));
    assert!(e.contains("--health-check-interval") && e.contains("between"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "health_check_interval = 0.0\n").unwrap();
    let e =
        stderr(&run(&["--config", file.to_str().unwrap(), "--data-dir", dir.path().join("a").to_str().unwrap()], None));
    assert!(e.contains("health_check_interval"), "{e}");
    // The flag replaces the file's bad value: the node starts.
    let data = dir.path().join("b");
    let node = start_node_with(&data, &["--config", file.to_str().unwrap(), "--health-check-interval", "5"]);
    assert!(!node.id.is_empty());
}

/// `transfers` lists, `cancel` stops, `vm download --detach` returns at
/// once, and Ctrl-C of `vm download` cancels its transfer.
#[test]
fn transfers_can_be_listed_cancelled_and_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let empty = start_node(&dir.path().join("empty"));
    let data = dir.path().join("node");
    // Its only peer has nothing: a download retries for a while.
    let peer = format!("{}@{}", empty.id, empty.addr);
    let _node = start_node_with(&data, &["--p2p-peer", &peer, "--max-retry-attempts", "10"]);
    let out = blixard(&["transfers"], &data);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no transfers"));

    let out = blixard(&["vm", "download", "--name", "nope", "--version", "1", "--detach", "--limit-mbps", "16"], &data);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let id = text.split_whitespace().next().unwrap().to_string();
    let listed = String::from_utf8_lossy(&blixard(&["transfers"], &data).stdout).to_string();
    assert!(listed.contains(&id) && listed.contains("nope") && listed.contains("limit 16 Mbit/s"), "{listed}");
    let out = blixard(&["transfers", "priority", &id, "critical"], &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is now critical"));
    let listed = String::from_utf8_lossy(&blixard(&["transfers"], &data).stdout).to_string();
    assert!(listed.lines().any(|l| l.contains(&id) && l.contains("critical")), "{listed}");
    let out = blixard(&["vm", "download", "--name", "x", "--version", "1", "--limit-mbps", "-1"], &data);
    assert!(!out.status.success() && stderr(&out).contains("limit-mbps"), "{}", stderr(&out));
    let out = blixard(&["cancel", &id], &data);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&blixard(&["transfers"], &data).stdout).to_string();
    assert!(listed.lines().any(|l| l.contains(&id) && l.contains("cancelled")), "{listed}");
    let out = blixard(&["cancel", "no-such-transfer"], &data);
    assert!(!out.status.success());
    // Cancelling it again is an error that says it ended; the detach hint
    // named the same node.
    let out = blixard(&["cancel", &id], &data);
    assert!(!out.status.success() && stderr(&out).contains("already ended (cancelled)"), "{}", stderr(&out));
    assert!(text.contains("--data-dir"), "the hint names the node: {text}");

    // Ctrl-C (SIGINT) of an attached download cancels its transfer.
    let child = Command::new(BIN)
        .args(["vm", "download", "--name", "other", "--version", "1", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("interrupted") && stderr(&out).contains("cancelled"), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&blixard(&["transfers"], &data).stdout).to_string();
    assert!(listed.lines().any(|l| l.contains("other") && l.contains("cancelled")), "{listed}");
}

/// Client errors are told before any transfer starts: an output that is a
/// directory or in a missing one, an empty name (HTTP 400, not 500).
#[test]
fn bad_outputs_and_names_fail_before_any_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let _node = start_node(&data);
    let cases: [(&[&str], &str); 3] = [
        (&["--output", dir.path().to_str().unwrap()], "is a directory"),
        (&["--output", "/nonexistent/dir/out.img"], "not an existing directory"),
        (&["--name", "", "--version", "1"], "HTTP 400"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["vm", "download"];
        if !extra.contains(&"--name") {
            args.extend(["--name", "x", "--version", "1"]);
        }
        args.extend(extra);
        let out = blixard(&args, &data);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
    let listed = String::from_utf8_lossy(&blixard(&["transfers"], &data).stdout).to_string();
    assert!(listed.contains("no transfers"), "{listed}");
}

/// `vm upload` to a name and version already published here is refused,
/// naming the blob it would replace; `--force` replaces it.
#[test]
fn uploading_over_a_published_version_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let _node = start_node(&data);
    let (one, two) = (dir.path().join("one.img"), dir.path().join("two.img"));
    std::fs::write(&one, vec![1u8; 70_000]).unwrap();
    std::fs::write(&two, vec![2u8; 70_000]).unwrap();
    let upload = |file: &Path, extra: &[&str]| {
        let mut args = vec!["vm", "upload", "--name", "img", "--version", "1", "--file", file.to_str().unwrap()];
        args.extend(extra);
        blixard(&args, &data)
    };
    let out = upload(&one, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = blixard_store::Hash::of(&[1u8; 70_000]);
    let out = upload(&two, &[]);
    assert!(!out.status.success(), "a second upload replaced the first silently");
    assert!(stderr(&out).contains("--force") && stderr(&out).contains(&first.to_string()), "{}", stderr(&out));
    let out = upload(&two, &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
