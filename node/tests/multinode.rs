//! The documented multi-node example, as processes: three `blixard node`s,
//! `vm upload` on node 1, `vm download` on node 3, the bytes verified.

use std::{path::Path, process::Command};

mod common;

use common::{start_node, NodeProcess as Node, BIN};

fn start(id: u64, data: &Path, peers: &[&Node], extra: &[&str]) -> Node {
    let mut args: Vec<&str> = peers.iter().flat_map(|p| ["--p2p-peer", p.addr.as_str()]).collect();
    args.extend_from_slice(extra);
    start_node(id, data, &args)
}

fn blixard(args: &[&str], data: &Path) -> std::process::Output {
    Command::new(BIN).args(args).arg("--data-dir").arg(data).env_remove("BLIXARD_NODE").output().unwrap()
}

#[test]
fn three_nodes_upload_on_one_download_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: u32| dir.path().join(format!("node-{n}"));
    let n1 = start(1, &d(1), &[], &[]);
    let n2 = start(2, &d(2), &[&n1], &[]);
    let _n3 = start(3, &d(3), &[&n1, &n2], &[]);

    let image = dir.path().join("ubuntu.img");
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 123u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&image, &data).unwrap();

    let up = blixard(
        &["vm", "upload", "--name", "ubuntu-server", "--version", "22.04", "--file", image.to_str().unwrap()],
        &d(1),
    );
    assert!(up.status.success(), "upload: {}", String::from_utf8_lossy(&up.stderr));

    let out = dir.path().join("downloaded.img");
    let down = blixard(
        &["vm", "download", "--name", "ubuntu-server", "--version", "22.04", "--output", out.to_str().unwrap()],
        &d(3),
    );
    assert!(
        down.status.success(),
        "download: {}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    let got = std::fs::read(&out).unwrap();
    assert_eq!(blake3::hash(&got), blake3::hash(&data), "downloaded bytes differ");
    if blixard_tests::tools::available("three_nodes_upload_on_one_download_on_another", "b3sum", "cargo install b3sum")
    {
        let b3 = Command::new("b3sum").args(["--no-names"]).arg(&out).output().unwrap();
        let sum = String::from_utf8_lossy(&b3.stdout).trim().to_string();
        assert_eq!(sum, blake3::hash(&data).to_hex().as_str(), "b3sum of the download");
    }

    // Node 3 lists it locally now; node 1 reports bytes sent in its status.
    let list = blixard(&["vm", "list"], &d(3));
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("ubuntu-server"),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    let status = blixard(&["status"], &d(1));
    assert!(status.status.success());
}

#[test]
fn client_commands_without_a_node_say_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = blixard(&["status"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running node found") && err.contains("blixard node"), "{err}");
}

#[test]
fn downloading_an_unknown_image_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: u32| dir.path().join(format!("node-{n}"));
    let n1 = start(1, &d(1), &[], &[]);
    let _n2 = start(2, &d(2), &[&n1], &["--max-retry-attempts", "0"]);
    let out = blixard(&["vm", "download", "--name", "nope", "--version", "1"], &d(2));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no peer has vm-image nope 1"), "{err}");
}
