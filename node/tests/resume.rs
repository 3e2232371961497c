//! kill -9 of a downloading node at about half way, then a restart: the
//! download resumes by itself and completes, and what the provider sent in
//! all is at most 10% more than the blob.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use blixard_node::{control::ControlFile, TransferInfo, TransferState};

mod common;

use common::{start_node, BIN};

fn get(data: &Path, path: &str) -> String {
    let c = ControlFile::read(data).unwrap();
    ureq::get(&format!("http://{}{path}", c.addr))
        .set("Authorization", &format!("Bearer {}", c.token))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap()
}

#[test]
fn a_killed_download_resumes_after_restart_and_refetches_little() {
    let dir = tempfile::tempdir().unwrap();
    let (d1, d2) = (dir.path().join("seeder"), dir.path().join("leecher"));
    let mut seeder = start_node(1, &d1, &["--bandwidth-limit-mbps", "160"]);
    let seeder_addr = seeder.addr.clone();
    let size = 64 * 1024 * 1024;
    let image = dir.path().join("image.img");
    std::fs::write(&image, (0..size as u32).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect::<Vec<u8>>())
        .unwrap();
    let up = Command::new(BIN)
        .args(["vm", "upload", "--name", "big", "--version", "1", "--file"])
        .arg(&image)
        .arg("--data-dir")
        .arg(&d1)
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));

    let mut leecher = start_node(2, &d2, &["--p2p-peer", &seeder_addr]);
    let c = ControlFile::read(&d2).unwrap();
    let id: blixard_node::TransferId = ureq::post(&format!("http://{}/v1/download", c.addr))
        .set("Authorization", &format!("Bearer {}", c.token))
        .send_json(serde_json::json!({"kind": "vm-image", "name": "big", "version": "1"}))
        .unwrap()
        .into_json()
        .unwrap();

    // Kill -9 at about half way.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t: TransferInfo = serde_json::from_str(&get(&d2, &format!("/v1/transfers/{id}"))).unwrap();
        if t.progress.as_ref().is_some_and(|p| p.bytes >= size as u64 / 2) {
            break;
        }
        assert!(t.state != TransferState::Completed, "finished before it could be killed");
        assert!(Instant::now() < deadline, "no progress: {t:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    leecher.kill(); // SIGKILL

    // Restart with the same data dir and no peers given: the saved address
    // book and the persisted queue must carry on by themselves.
    let mut leecher = start_node(2, &d2, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let t: TransferInfo = serde_json::from_str(&get(&d2, &format!("/v1/transfers/{id}"))).unwrap();
        if !matches!(t.state, TransferState::Queued | TransferState::Running) {
            break t;
        }
        assert!(Instant::now() < deadline, "not resumed: {t:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done.state, TransferState::Completed, "{:?}", done.error);

    let out = dir.path().join("out.img");
    let export = ureq::post(&format!("http://{}/v1/export", ControlFile::read(&d2).unwrap().addr))
        .set("Authorization", &format!("Bearer {}", ControlFile::read(&d2).unwrap().token))
        .send_json(serde_json::json!({"kind": "vm-image", "name": "big", "version": "1", "path": out}));
    assert!(export.is_ok());
    assert_eq!(blake3::hash(&std::fs::read(&out).unwrap()), blake3::hash(&std::fs::read(&image).unwrap()));

    let sent = metric(&get(&d1, "/metrics"), "blixard_p2p_bytes_sent");
    let refetched = sent - size as f64;
    eprintln!("sent {sent} bytes for a {size}-byte blob: {:.1}% re-fetched", 100.0 * refetched / size as f64);
    assert!(refetched <= 0.10 * size as f64, "re-fetched {refetched} bytes");
    leecher.kill();
    seeder.kill();
}
