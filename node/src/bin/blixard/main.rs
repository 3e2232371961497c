//! `blixard`: the Blixard P2P command-line tool, a thin shell over the
//! `blixard-node` library.
//!
//! | module | job |
//! | --- | --- |
//! | [`args`] | the command line as clap reads it, with environment variables and value checks |
//! | [`daemon`] | `blixard node`: runs a node until a signal |
//! | [`cli`] | the client commands over the control API (`vm`, `status`, `peers`, `transfers`, ...) |
//! | [`tui`] | `blixard tui`: the terminal interface |
//! | [`demo`] | `blixard demo`: two nodes, one download, explained |
//! | [`relay`] | `blixard relay`: a relay server with metrics |
//! | [`bench`](mod@bench) | `blixard bench`: sizes, figures, and the scenarios [`transfer_bench`], [`swarm_bench`], [`relay_bench`], [`incremental_bench`], [`output_bench`] |

mod args;
mod bench;
mod cli;
mod daemon;
mod demo;
mod incremental_bench;
mod output_bench;
mod relay;
mod relay_bench;
mod swarm_bench;
mod transfer_bench;
mod tui;

use anyhow::{bail, Context, Result};
use args::{default_data_dir, BenchScenario, Cli, Command, ModeArg, TransfersCommand, VmCommand};
use blixard_node::DownloadRequest;
use blixard_store::{ImportMode, ResourceKind};
use clap::Parser;

/// Rust ignores SIGPIPE, so printing into a closed pipe (`blixard bench ... |
/// head`) panics. Commands that print restore the default: they end quietly
/// when the reader goes away, as other Unix tools do. The daemon keeps
/// ignoring it.
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default, before any
    // other thread of ours could rely on it being ignored (sockets send with
    // MSG_NOSIGNAL anyway).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Logs go to stderr: by default `info` from our crates for `blixard node`
/// (`warn` for other commands, whose output is their own) and `warn` from
/// dependencies; `RUST_LOG` replaces that. Colour only on a terminal.
fn init_logging(daemon: bool) {
    use std::io::IsTerminal;
    let ours = if daemon { "info" } else { "warn" };
    let default = format!("warn,blixard={ours},blixard_node={ours},blixard_protocol={ours},blixard_store={ours}");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// clap names the flag when a value from its environment variable is bad;
/// the user set the variable, so name that instead.
fn from_environment(e: &clap::Error) -> Option<String> {
    if e.kind() != clap::error::ErrorKind::ValueValidation {
        return None;
    }
    let text = e.to_string();
    let first = text.lines().next()?.trim_start_matches("error: ");
    let given = |flag: &str| std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    // The flags that read an environment variable, as clap declares them.
    let command = <Cli as clap::CommandFactory>::command();
    let env = command.get_subcommands().flat_map(|c| c.get_arguments()).find_map(|arg| {
        let flag = format!("--{}", arg.get_long()?);
        let env = arg.get_env()?.to_str()?.to_string();
        (first.contains(&format!("'{flag} ")) && std::env::var_os(&env).is_some() && !given(&flag)).then_some(env)
    })?;
    let why = first.split_once("': ").map_or(first, |(_, why)| why);
    let value = std::env::var(&env).unwrap_or_default();
    Some(format!("invalid value {value:?} in the environment variable {env}: {why}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if let Some(msg) = from_environment(&e) {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
        e.exit()
    });
    // The TUI owns the terminal: log lines on stderr would tear its screen
    // (what goes wrong shows in the view instead).
    if !matches!(cli.command, Command::Tui { .. }) {
        init_logging(matches!(cli.command, Command::Node { .. } | Command::Relay { .. }));
    }
    if !matches!(cli.command, Command::Node { .. } | Command::Relay { .. }) {
        restore_sigpipe();
    }
    match cli.command {
        Command::Node {
            id,
            mut bind,
            enable_p2p: _,
            p2p_peers,
            data_dir,
            config,
            max_concurrent_transfers,
            transfer_timeout,
            max_retry_attempts,
            peer_discovery_interval,
            health_check_interval,
            bandwidth_limit_mbps,
            max_cache_size,
            allow,
            trust,
            relays,
            relay_server,
        } => {
            if let Ok(port) = std::env::var("BLIXARD_P2P_PORT") {
                bind.set_port(port.parse().with_context(|| format!("BLIXARD_P2P_PORT={port:?} is not a port"))?);
            }
            // File, then environment and flags (clap merged those two), then
            // one validation of the result: a file value a flag replaces
            // is never judged on its own.
            let mut c = match &config {
                Some(path) => blixard_node::P2pConfig::read_toml_file(path)?,
                None => blixard_node::P2pConfig::default(),
            };
            if let Some(v) = max_concurrent_transfers {
                c.max_concurrent_transfers = v;
            }
            if let Some(v) = transfer_timeout {
                c.transfer_timeout = v;
            }
            if let Some(v) = max_retry_attempts {
                c.max_retry_attempts = v;
            }
            if let Some(v) = peer_discovery_interval {
                c.peer_discovery_interval = v;
            }
            if let Some(v) = health_check_interval {
                c.health_check_interval = v;
            }
            if bandwidth_limit_mbps.is_some() {
                c.bandwidth_limit_mbps = bandwidth_limit_mbps;
            }
            if max_cache_size.is_some() {
                c.max_cache_size = max_cache_size;
            }
            if !allow.is_empty() {
                c.allowlist = Some(allow);
            }
            if !trust.is_empty() {
                c.trust = trust;
            }
            if !relays.is_empty() {
                c.relays = relays;
            }
            if relay_server.is_some() {
                c.relay_server = relay_server;
            }
            c.validate().with_context(|| match &config {
                Some(path) => format!("settings from {}, the environment and flags", path.display()),
                None => "settings from the environment and flags".into(),
            })?;
            let data_dir = data_dir.unwrap_or_else(|| default_data_dir(id));
            daemon::run(daemon::NodeArgs { id, bind, data_dir, peers: p2p_peers, config: c }).await?;
        }
        Command::Vm { target, command } => {
            // Ctrl-C during `vm download` cancels its transfer (see cli::download).
            if matches!(command, VmCommand::Download { detach: false, .. }) {
                let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
                tokio::spawn(async move {
                    int.recv().await;
                    cli::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
                });
            }
            let node = target.control()?;
            match command {
                VmCommand::Upload { name, version, file, force } => {
                    cli::upload(&node, &name, &version, &file, force).await?
                }
                VmCommand::Download {
                    name,
                    version,
                    priority,
                    output,
                    force,
                    hash,
                    detach,
                    limit_mbps,
                    base,
                    base_hash,
                } => {
                    let mut request = DownloadRequest::new(ResourceKind::VmImage, name, version).priority(priority);
                    (request.hash, request.limit_mbps, request.base_version) = (hash, limit_mbps, base);
                    request.bases.extend(base_hash);
                    cli::download(
                        &node,
                        request,
                        output.as_deref(),
                        cli::Follow { force, detach, target: target.flags() },
                    )
                    .await?
                }
                VmCommand::List { remote } => cli::list(&node, remote).await?,
            }
        }
        Command::Transfers { target, change: None } => cli::transfers(&target.control()?).await?,
        Command::Transfers { target, change: Some(TransfersCommand::Priority { id, priority }) } => {
            cli::set_priority(&target.control()?, id, priority).await?
        }
        Command::Cancel { target, id } => cli::cancel(&target.control()?, id).await?,
        Command::Peers { target } => cli::peers(&target.control()?).await?,
        Command::Status { target } => cli::status(&target.control()?).await?,
        Command::Tui { target } => tui::main(target.dir()).await?,
        Command::Gc { target } => cli::gc(&target.control()?).await?,
        Command::Verify { target, repair } => cli::verify(&target.control()?, repair).await?,
        Command::Demo { size } => demo::run(size).await?,
        Command::Relay { bind, data_dir, metrics, max_clients, max_per_ip, client_rate_mbps } => {
            let limits = blixard_net::relay::RelayLimits {
                max_clients,
                max_per_ip,
                rate_bytes_per_sec: Some((client_rate_mbps * 1e6 / 8.0) as u64),
                ..Default::default()
            };
            relay::run(relay::RelayArgs { bind, data_dir, metrics, limits }).await?
        }
        Command::Conformance { peer, hash } => {
            let (Some(id), Some(&addr)) = (peer.id, peer.direct_addrs.first()) else {
                bail!("conformance needs the peer's identity and a direct address: NODE_ID@HOST:PORT, not {peer}");
            };
            let scratch = tempfile::Builder::new().prefix("blixard-conformance-").tempdir()?;
            let report = blixard_protocol::conformance::run(id, addr, hash, scratch.path()).await;
            print!("{}", report.table());
            // exit() skips destructors: remove the scratch dir first.
            drop(scratch);
            if !report.passed() {
                std::process::exit(1);
            }
        }
        Command::Bench { scenario: BenchScenario::Transfer { size, file, runs, dir, json } } => {
            let figures =
                transfer_bench::run(transfer_bench::TransferArgs { size, file, runs: runs.max(1), dir }).await?;
            for f in figures {
                f.print(json);
            }
        }
        Command::Bench { scenario: BenchScenario::Swarm { size, peers, upload_limit_mbps, json } } => {
            let figures =
                swarm_bench::run(swarm_bench::SwarmArgs { size, peers, limit_mbps: upload_limit_mbps }).await?;
            for f in figures {
                f.print(json);
            }
        }
        Command::Bench { scenario: BenchScenario::Incremental { size, dir, json } } => {
            let figures = incremental_bench::run(incremental_bench::IncrementalBenchArgs { size, dir }).await?;
            for f in figures {
                f.print(json);
            }
        }
        Command::Bench { scenario: BenchScenario::Output { size, runs, dir, sendme, json, in_netns } } => {
            let args = output_bench::OutputBenchArgs { size, runs: runs.max(1), dir, sendme, json, in_netns };
            for f in output_bench::run(args).await?.unwrap_or_default() {
                f.print(json);
            }
        }
        Command::Bench { scenario: BenchScenario::Relay { size, runs, json } } => {
            let figures = relay_bench::run(relay_bench::RelayBenchArgs { size, runs: runs.max(1) }).await?;
            for f in figures {
                f.print(json);
            }
        }
        Command::Bench { scenario: BenchScenario::TransferServer { file, dir } } => {
            transfer_bench::serve_child(file, dir).await?;
        }
        Command::Bench { scenario: BenchScenario::Import { size, file, mode, runs, dir, json } } => {
            let modes = match mode {
                ModeArg::Copy => vec![ImportMode::Copy],
                ModeArg::Reference => vec![ImportMode::Reference],
                ModeArg::Both => vec![ImportMode::Reference, ImportMode::Copy],
            };
            let figures = bench::import(bench::ImportArgs { size, file, modes, runs: runs.max(1), dir }).await?;
            for f in figures {
                f.print(json);
            }
        }
    }
    Ok(())
}
