//! The conformance suite passes against our server and fails, naming the
//! checks, against deliberately broken ones.

mod common;

use blixard_protocol::{conformance, frame, wire};
use blixard_store::ResourceKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_conforms() {
    let server = common::server().await;
    let hash = server.add(common::data(200_000, 1)).await;
    server.store.put_resource(&ResourceKind::VmImage, "ubuntu-server", "22.04", hash).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let report = conformance::run(server.endpoint.node_id(), server.endpoint.local_addr(), None, scratch.path()).await;
    println!("{}", report.table());
    assert!(report.passed(), "{}", report.table());
    assert!(report.checks.len() >= 18);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_requests_fails_by_name() {
    // Answers every request with a pong, whatever it asked.
    let ep = common::endpoint();
    let ep2 = ep.clone();
    tokio::spawn(async move {
        while let Some(Ok(conn)) = ep2.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.quinn().accept_bi().await {
                    tokio::spawn(async move {
                        let _ = frame::read_frame_body(&mut recv, 1 << 20).await;
                        let observed = conn_addr();
                        let _ = frame::write_frame(&mut send, &wire::Pong { observed }).await;
                        let _ = send.finish();
                    });
                }
            });
        }
    });
    let scratch = tempfile::tempdir().unwrap();
    let hash = blixard_store::Hash([3; 32]);
    let report = conformance::run(ep.node_id(), ep.local_addr(), Some(hash), scratch.path()).await;
    println!("{}", report.table());
    assert!(!report.passed());
    let failed = report.failures();
    for name in ["ping", "get full", "unknown hash", "malformed request", "oversized request", "too many ranges"] {
        assert!(failed.contains(&name), "{name} should fail: {}", report.table());
    }
    assert!(!failed.contains(&"handshake"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_damaged_data_fails_get_full() {
    let server = common::server().await;
    let data = common::data(300_000, 2);
    let hash = server.add(data).await;
    // Damage the owned data file under the server.
    let path = server._dir.path().join("blobs").join(format!("{hash}.data"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100_000] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let report =
        conformance::run(server.endpoint.node_id(), server.endpoint.local_addr(), Some(hash), scratch.path()).await;
    println!("{}", report.table());
    assert!(report.failures().contains(&"get full"), "{}", report.table());
}

fn conn_addr() -> wire::WireAddr {
    "192.0.2.1:9".parse::<std::net::SocketAddr>().unwrap().into()
}
