//! Many idle connections from one address (one client, or a carrier-grade
//! NAT's worth of them) cannot lock out a new honest node at the same
//! address: at the per-address cap the idlest connection is closed for it.
//! (Apart from `bad_client`, whose memory checks must not see these
//! endpoints.)

mod common;

use std::time::Duration;

use blixard_protocol::{client, limits::ServerLimits, Endpoint, EndpointOptions, SecretKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_connections_do_not_stop_a_new_peer_at_that_address() {
    let limits = ServerLimits { evict_idle_after: Duration::from_millis(300), ..Default::default() };
    let cap = limits.max_connections_per_ip;
    let server = common::server_with(limits).await;
    let crowd =
        Endpoint::bind(SecretKey::generate(), "127.0.0.1:0".parse().unwrap(), EndpointOptions::default()).unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(crowd.connect(server.endpoint.local_addr(), Some(server.endpoint.node_id())).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Refusals reach their clients a moment after the handshake.
    let open = || idle.iter().filter(|c| !c.is_closed()).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open() > cap && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(open() <= cap, "{} connections from one address are open, over the cap of {cap}", open());
    // A new node at the same address (127.0.0.1) is served.
    let honest = common::client(&server.endpoint).await;
    let pong = tokio::time::timeout(Duration::from_secs(5), client::ping(&honest.conn)).await;
    assert!(matches!(pong, Ok(Ok(_))), "the new peer was not served: {pong:?}");
    // The close of the one that made room reaches its client a moment later.
    let evicted = || idle.iter().filter(|c| c.refusal().is_some_and(|r| r.contains("making room"))).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while evicted() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(evicted() >= 1, "an idle connection was closed to make room");
}
