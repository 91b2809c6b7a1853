//! `ferry-bench SCENARIO`: ferry's benchmarks. Each prints its figures
//! beside a baseline measured in the same run on the same machine, as
//! ratios, and ends with one JSON line. Not part of the shipped `ferry`
//! binary; scenarios that run `ferry` processes (the edge ones) use the
//! `ferry` binary next to this one, or `--ferry PATH`.
//!
//! Modules: `cache` (read, train, checkpoint: a cache node and a mount in
//! this process), `edge` (edge, edge-link, edge-crash, fleet), `cluster`
//! (nodes in network namespaces, etcd, node loss and join), `s3` (the S3
//! endpoint against the store's files and the mount).

mod cache;
mod cluster;
mod edge;
mod s3;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytesize::ByteSize;
use clap::{Parser, Subcommand};

use cache::Shape;

/// ferry's benchmarks: each figure beside a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "ferry-bench", version, about, long_about = None)]
struct Cli {
    /// The `ferry` binary that edge scenarios run (default: `ferry` next to this binary).
    #[arg(long, global = true, env = "FERRY_BIN")]
    ferry: Option<PathBuf>,
    /// Log filter (tracing syntax) for nodes and mounts run in this process.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    scenario: Scenario,
}

/// The `ferry` binary edge scenarios run: `--ferry`, else the one beside this binary.
fn ferry_binary(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let me = std::env::current_exe().context("where is ferry-bench")?;
    let ferry = me.with_file_name("ferry");
    anyhow::ensure!(
        ferry.exists(),
        "no ferry binary at {} (build it with `cargo build --release -p ferry`, or pass --ferry PATH)",
        ferry.display()
    );
    Ok(ferry)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    run(cli.scenario, cli.ferry).await
}

/// Benchmark scenarios.
#[derive(Debug, Subcommand)]
enum Scenario {
    /// Cold read vs direct store read (same throttled store); warm read vs plain TCP and local disk.
    Read {
        /// Object size.
        #[arg(long, default_value = "1GiB")]
        size: ByteSize,
        /// Bandwidth cap of the simulated store, bytes per second.
        #[arg(long, default_value = "200MB")]
        bandwidth: ByteSize,
        /// Latency the simulated store adds to every request.
        #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
        latency: Duration,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// MLPerf-Storage-style training load through a FUSE mount: accelerator utilization per epoch.
    Train {
        /// Dataset and compute shape.
        #[arg(long, value_enum, default_value = "unet3d")]
        shape: Shape,
        /// Simulated accelerators (reader threads).
        #[arg(long, default_value_t = 2)]
        accelerators: usize,
        /// Epochs per mode (the first is cold).
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// Bandwidth cap of the simulated store.
        #[arg(long, default_value = "100MB")]
        bandwidth: ByteSize,
        /// Latency the simulated store adds to every request.
        #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
        latency: Duration,
        /// Scale of sample sizes and compute times (1 = MLPerf's sizes).
        #[arg(long, default_value_t = 0.1)]
        scale: f64,
        /// Files in the dataset (default: the shape's).
        #[arg(long)]
        files: Option<u64>,
        /// Give the node's memory this fraction of the dataset (e.g. 0.25;
        /// no disk tier, no kernel page cache) and compare LRU eviction
        /// with eviction by the announced order.
        #[arg(long)]
        cache: Option<f64>,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Checkpoint files written with fsync through a FUSE mount vs to local disk; then read back.
    Checkpoint {
        /// Total bytes written.
        #[arg(long, default_value = "2GiB")]
        size: ByteSize,
        /// Number of files.
        #[arg(long, default_value_t = 4)]
        files: usize,
        /// Rounds, alternating which side goes first; the best time of each side counts.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Edge agent: compression, dedup of re-copied data, CPU per GB, idle memory, binary size.
    Edge {
        /// Bytes uploaded (half log lines, half random frames).
        #[arg(long, default_value = "256MiB")]
        size: ByteSize,
        /// The agent binary to measure, e.g. the edge-only build (default: the `ferry` binary).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Edge upload goodput over a rate-limited link between network namespaces, clean and lossy (needs root).
    EdgeLink {
        /// Bytes uploaded (random).
        #[arg(long, default_value = "8MiB")]
        size: ByteSize,
        /// Link rate in Mbit/s.
        #[arg(long, default_value_t = 10)]
        rate_mbit: u32,
        /// Packets dropped in each direction, percent.
        #[arg(long, default_value_t = 2)]
        loss: u32,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// 1, 10 and 50 simulated robots fetching one model version through a cache node.
    Fleet {
        /// Model size.
        #[arg(long, default_value = "1GiB")]
        size: ByteSize,
        /// Each robot's link, bytes per second (0 = no cap).
        #[arg(long, default_value = "10MiB")]
        device_rate: ByteSize,
        /// Robot counts, one round each.
        #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
        robots: Vec<usize>,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Cache nodes in network namespaces behind rate-limited links, membership in etcd: warm aggregate
    /// throughput with 1..N nodes vs N x one node, store bytes per dataset byte, read stall when a node is
    /// killed, store bytes read by a joining node (needs root, ip, tc, etcd).
    Cluster {
        /// Dataset size (8 files).
        #[arg(long, default_value = "256MiB")]
        size: ByteSize,
        /// Most nodes (rounds with 1..N).
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Each node's link in Mbit/s (tbf on both ends).
        #[arg(long, default_value_t = 400)]
        rate_mbit: u32,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Warm GetObject throughput of the S3 endpoint vs the same ranged reads from the local-file store
    /// behind it and through the mount.
    S3 {
        /// Dataset size.
        #[arg(long, default_value = "1GiB")]
        size: ByteSize,
        /// Files in the dataset.
        #[arg(long, default_value_t = 8)]
        files: usize,
        /// Measured rounds (after one warm-up pass); each side keeps its best.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Kill -9 the edge agent at random points while logs grow; check every object afterwards.
    EdgeCrash {
        /// Kill iterations.
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        /// Working directory (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Runs a scenario; `ferry` is the `--ferry` option (resolved only by the
/// scenarios that run `ferry` processes).
async fn run(s: Scenario, ferry: Option<PathBuf>) -> Result<()> {
    match s {
        Scenario::Read { size, bandwidth, latency, dir } => {
            cache::read(size.as_u64(), bandwidth.as_u64(), latency, dir).await
        }
        Scenario::Checkpoint { size, files, rounds, dir } => cache::checkpoint(size.as_u64(), files, rounds, dir).await,
        Scenario::Train { shape, accelerators, epochs, bandwidth, latency, scale, files, cache, dir } => {
            let opts = cache::TrainOptions {
                accelerators,
                epochs,
                bandwidth: bandwidth.as_u64(),
                latency,
                scale,
                files,
                cache,
                dir,
            };
            cache::train(shape, opts).await
        }
        Scenario::Edge { size, agent, dir } => {
            let ferry = ferry_binary(ferry)?;
            tokio::task::spawn_blocking(move || edge::edge(&ferry, size.as_u64(), agent, dir)).await?
        }
        Scenario::EdgeLink { size, rate_mbit, loss, dir } => {
            let ferry = ferry_binary(ferry)?;
            tokio::task::spawn_blocking(move || edge::edge_link(&ferry, size.as_u64(), rate_mbit, loss, dir)).await?
        }
        Scenario::Fleet { size, device_rate, robots, dir } => {
            edge::fleet(size.as_u64(), device_rate.as_u64(), &robots, dir).await
        }
        Scenario::Cluster { size, nodes, rate_mbit, dir } => {
            anyhow::ensure!(nodes >= 1, "--nodes must be at least 1");
            let ferry = ferry_binary(ferry)?;
            tokio::task::spawn_blocking(move || cluster::cluster(&ferry, size.as_u64(), nodes, rate_mbit, dir)).await?
        }
        Scenario::S3 { size, files, rounds, dir } => s3::s3(size.as_u64(), files, rounds, dir).await,
        Scenario::EdgeCrash { iterations, dir } => {
            let ferry = ferry_binary(ferry)?;
            tokio::task::spawn_blocking(move || edge::edge_crash(&ferry, iterations, dir)).await?
        }
    }
}
