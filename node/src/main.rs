//! `blixard`: the Blixard P2P command-line tool.

mod bench;

use std::path::PathBuf;

use anyhow::Result;
use blixard_store::ImportMode;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "blixard", version, about = "Blixard P2P: verified, resumable content-addressed transfer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure throughput against baselines in the same run.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Copy,
    Reference,
    Both,
}

#[derive(Subcommand)]
enum BenchScenario {
    /// Import a file into a fresh store vs BLAKE3 (mmap + update_rayon) of the same file.
    Import {
        /// Size of the generated input (ignored with --file).
        #[arg(long, default_value = "1GiB", value_parser = bench::parse_size)]
        size: u64,
        /// Import this file instead of a generated one.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Import mode.
        #[arg(long, value_enum, default_value = "both")]
        mode: ModeArg,
        /// Runs per mode; medians are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Directory for the generated file and stores.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Print one JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
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
