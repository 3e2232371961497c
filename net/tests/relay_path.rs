//! Endpoints over path sockets: a peer known only by its relay is dialed
//! through it, QUIC runs over relay frames (batched, capped at 1,200-byte
//! datagrams), the accepting side sees the relay as the path, and a relay
//! that restarts is reconnected without the endpoints doing anything.

use std::{sync::atomic::Ordering, time::Duration};

use blixard_net::{
    endpoint::{bind_udp, Path},
    relay::{RelayLimits, RelayServer, MAX_RELAYED_DATAGRAM},
    Endpoint, EndpointOptions, NodeAddr, RelayAddr, SecretKey,
};

async fn relay_at(key: SecretKey, addr: std::net::SocketAddr) -> RelayServer {
    RelayServer::bind(key, addr, RelayLimits::default()).await.unwrap()
}

fn endpoint(relays: Vec<RelayAddr>) -> Endpoint {
    let socket = bind_udp("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
    Endpoint::with_relays(SecretKey::generate(), socket, relays, EndpointOptions::default()).unwrap()
}

async fn home_of(e: &Endpoint) -> RelayAddr {
    for _ in 0..100 {
        if let Some(r) = e.home_relay() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no home relay after 5 s");
}

/// Sends `n` bytes from `from` on a new stream of `conn` and reads them on
/// `to`'s accepted connection.
async fn stream_bytes(client: &blixard_net::Connection, server: &blixard_net::Connection, n: usize) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let (mut send, _recv) = client.quinn().open_bi().await.unwrap();
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
            send.stopped().await.ok();
        })
    };
    let (_s, mut recv) = server.quinn().accept_bi().await.unwrap();
    let got = recv.read_to_end(n + 1).await.unwrap();
    assert_eq!(got.len(), n);
    assert!(got == data, "bytes differ after the relay");
    writer.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_known_only_by_its_relay_is_reached_through_it() {
    let server = relay_at(SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).await;
    let relay = RelayAddr { id: server.node_id(), addr: server.addr() };
    let a = endpoint(vec![relay]);
    let b = endpoint(Vec::new()); // no relay of its own: uses A's
    assert_eq!(home_of(&a).await, relay);
    assert_eq!(a.node_addr().relay, Some(relay));

    let target = NodeAddr { id: Some(a.node_id()), direct_addrs: Vec::new(), relay: Some(relay) };
    let accept = tokio::spawn({
        let a = a.clone();
        async move { a.accept().await.unwrap().unwrap() }
    });
    let conn = b.connect_node(&target).await.unwrap();
    let served = accept.await.unwrap();
    assert_eq!(conn.remote_id(), a.node_id());
    assert_eq!(served.remote_id(), b.node_id());
    assert_eq!(conn.path(), Some(Path::Relay(relay)));
    assert_eq!(served.path(), Some(Path::Relay(relay)), "the answer goes back the way it came");
    assert_eq!((conn.observed_addr(), served.observed_addr()), (None, None));

    stream_bytes(&conn, &served, 8 << 20).await;
    let stats = b.path_socket().unwrap().stats();
    let sent = stats.relay_bytes_sent.load(Ordering::Relaxed);
    assert!(sent >= 8 << 20, "relayed bytes counted: {sent}");
    assert!(a.path_socket().unwrap().stats().relay_bytes_received.load(Ordering::Relaxed) >= 8 << 20);
    // MTU discovery found nothing above the cap.
    let mtu = conn.quinn().stats().path.current_mtu as usize;
    assert!(mtu <= MAX_RELAYED_DATAGRAM, "MTU {mtu} over a relay");
    assert!(server.stats().bytes_relayed.load(Ordering::Relaxed) >= 8 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_relay_are_dialed_at_once_and_direct_wins_on_loopback() {
    let relay = relay_at(SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).await;
    let relay_addr = RelayAddr { id: relay.node_id(), addr: relay.addr() };
    let a = endpoint(vec![relay_addr]);
    let b = endpoint(Vec::new());
    home_of(&a).await;
    let accept = tokio::spawn({
        let a = a.clone();
        async move { a.accept().await.unwrap().unwrap() }
    });
    let conn = b.connect_node(&a.node_addr()).await.unwrap();
    let _served = accept.await.unwrap();
    assert_eq!(conn.path(), Some(Path::Direct(a.local_addr())));
    assert_eq!(conn.observed_addr(), Some(a.local_addr()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_restarts_is_reconnected_and_the_connection_lives_on() {
    let key = SecretKey::generate();
    let seed = key.pkcs8_der().to_vec();
    let relay = relay_at(key, "127.0.0.1:0".parse().unwrap()).await;
    let relay_addr = RelayAddr { id: relay.node_id(), addr: relay.addr() };
    let a = endpoint(vec![relay_addr]);
    let b = endpoint(vec![relay_addr]);
    home_of(&a).await;
    home_of(&b).await;
    let accept = tokio::spawn({
        let a = a.clone();
        async move { a.accept().await.unwrap().unwrap() }
    });
    let target = NodeAddr { id: Some(a.node_id()), direct_addrs: Vec::new(), relay: Some(relay_addr) };
    let conn = b.connect_node(&target).await.unwrap();
    let served = accept.await.unwrap();
    stream_bytes(&conn, &served, 1 << 20).await;

    drop(relay);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let relay = relay_at(SecretKey::from_pkcs8(&seed).unwrap(), relay_addr.addr).await;
    // Both reconnect by themselves (backoff at most a few seconds), and
    // the QUIC connection, idle-timeout 30 s, carries on.
    stream_bytes(&conn, &served, 1 << 20).await;
    assert_eq!(conn.quinn().close_reason(), None);
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_is_a_relay_that_answers_when_another_is_down() {
    let server = relay_at(SecretKey::generate(), "127.0.0.1:0".parse().unwrap()).await;
    let up = RelayAddr { id: server.node_id(), addr: server.addr() };
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = RelayAddr { id: SecretKey::generate().node_id(), addr: dead };
    let a = endpoint(vec![down, up]);
    assert_eq!(home_of(&a).await, up);
    assert_eq!(a.path_socket().unwrap().relays().connected(), vec![up]);
}
