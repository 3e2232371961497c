//! The `blixard` binary end to end: `blixard node` serving a data dir, and
//! `blixard conformance` pointed at it, as an implementer would run them.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
};

use blixard_store::{ResourceKind, Store};

const BIN: &str = env!("CARGO_BIN_EXE_blixard");

/// A running `blixard node`, killed on drop.
struct Node {
    child: Child,
    id: String,
    addr: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(data: &Path) -> Node {
    let mut child = Command::new(BIN)
        .args(["node", "--id", "1", "--bind", "127.0.0.1:0", "--enable-p2p", "--data-dir"])
        .arg(data)
        .env_remove("BLIXARD_P2P_PORT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start blixard node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
            .to_string()
    };
    let (id, addr) = (field("id="), field("addr="));
    Node { child, id, addr }
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
    let out = conformance(&node);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
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
