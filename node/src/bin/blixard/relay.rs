//! `blixard relay`: runs a relay server (TLS over TCP, and the UDP probe on
//! the same port) until Ctrl-C or SIGTERM, with optional Prometheus metrics.

use std::{net::SocketAddr, path::PathBuf, sync::atomic::Ordering, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use blixard_net::{
    relay::{RelayLimits, RelayServer, RelayStats},
    SecretKey,
};
use tracing::info;

/// What `blixard relay` was given.
pub struct RelayArgs {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub limits: RelayLimits,
}

/// The relay's counters as Prometheus text.
pub fn render(stats: &RelayStats) -> String {
    use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, v: usize| {
        let g = IntGauge::new(name, help).expect("valid metric");
        g.set(v as i64);
        registry.register(Box::new(g)).expect("registered once");
    };
    let counter = |name: &str, help: &str, v: u64| {
        let c = IntCounter::new(name, help).expect("valid metric");
        c.inc_by(v);
        registry.register(Box::new(c)).expect("registered once");
    };
    gauge("blixard_relay_clients", "Clients logged in now", stats.clients.load(Ordering::Relaxed));
    let counters = [
        ("blixard_relay_bytes_relayed_total", "Datagram payload bytes forwarded", &stats.bytes_relayed),
        ("blixard_relay_frames_relayed_total", "Datagram frames forwarded", &stats.frames_relayed),
        ("blixard_relay_dropped_total", "Datagram frames dropped: destination queue full", &stats.dropped),
        ("blixard_relay_to_unknown_total", "Datagram frames to a node not connected here", &stats.to_unknown),
        ("blixard_relay_refused_total", "Connections refused: caps, failed handshakes, bad logins", &stats.refused),
        ("blixard_relay_bad_frames_total", "Clients closed for a bad frame", &stats.bad_frames),
        ("blixard_relay_probes_total", "UDP echo probes answered", &stats.probes),
    ];
    for (name, help, value) in counters {
        counter(name, help, value.load(Ordering::Relaxed));
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).expect("text encoding");
    String::from_utf8(out).expect("text")
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: RelayArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let key = SecretKey::load_or_create(&args.data_dir)?;
    let server = RelayServer::bind(key, args.bind, args.limits).await?;
    let metrics = match args.metrics {
        Some(addr) => {
            let stats = server.stats().clone();
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics on {addr}"))?;
            let local = listener.local_addr()?;
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let stats: Arc<RelayStats> = stats.clone();
                    async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(&stats)) }
                }),
            );
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            format!(" metrics={local}")
        }
        None => String::new(),
    };
    println!("blixard relay id={} addr={}{metrics}", server.node_id(), server.addr());
    info!(id = %server.node_id(), addr = %server.addr(), "relay running");
    super::daemon::shutdown_signal().await.context("installing signal handlers")?;
    drop(server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}
