//! `ferry`: one binary for every role — cache node, training host, robot
//! agent, reader, operator.
//!
//! Modules: `config` (TOML + `FERRY_CLOUD_*` / `FERRY_CLIENT_*` /
//! `FERRY_EDGE_*` overrides), `certs` (`ferry cert`), `read` (`cat`, `ls`,
//! `stat`, `load`), `edge` (`ferry edge`), `model` (`ferry model`), `mount`,
//! `predictor` (`ferry predictor`), `up` (the embedded-default stack).
//!
//! Features, one per machine: `cloud` (cache node), `mount` (training host),
//! `edge` (robot), `operator` (certificates, model push, predictor
//! training, progress bars), and `up` (all of them, the default).
//! `--no-default-features --features edge` builds the robot binary: no FUSE,
//! no cache node, no predictor, no certificate issuing, no model pusher.
//! Benchmarks are a separate binary (`ferry-bench`).

#[cfg(feature = "edge")]
mod alloc;
#[cfg(feature = "operator")]
mod certs;
#[cfg(feature = "progress")]
mod cluster;
mod config;
#[cfg(feature = "edge")]
mod edge;
#[cfg(any(feature = "cloud", feature = "edge"))]
mod lock;
#[cfg(any(feature = "edge", feature = "mount"))]
mod metrics_http;
#[cfg(feature = "operator")]
mod model;
#[cfg(feature = "mount")]
mod mount;
#[cfg(any(feature = "cloud", feature = "edge"))]
mod notify;
#[cfg(feature = "operator")]
mod predictor;
mod read;
#[cfg(feature = "cloud")]
mod s3;
#[cfg(any(feature = "cloud", feature = "mount", feature = "edge"))]
mod signal;
#[cfg(feature = "up")]
mod up;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;

use ferry_protocol::codec::EntryKind;
#[cfg(feature = "operator")]
use ferry_protocol::ids::Role;

/// The log filter when none is given.
const DEFAULT_LOG: &str = "info,rumqttd=off";

/// Move data between robots, object storage and GPU training machines.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info` or `ferry_cloud_tier=debug`;
    /// without `--log` and `FERRY_LOG`, `RUST_LOG` is used when set.
    #[arg(long, global = true, env = "FERRY_LOG", default_value = DEFAULT_LOG)]
    log: String,
    /// Log lines as `text` or `json` (one object per line: timestamp, level, fields).
    #[arg(long, global = true, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// Exit statuses (docs/OPERATIONS.md): 2 is a usage error (clap's).
mod exit {
    /// Any other failure.
    pub const FAILURE: i32 = 1;
    /// A path, object or file that is not there.
    pub const NOT_FOUND: i32 = 3;
    /// Refused: this identity may not do it.
    pub const PERMISSION: i32 = 4;
    /// A node, store or broker that cannot be reached or cannot serve now: try again later.
    pub const UNAVAILABLE: i32 = 5;
}

/// The exit status for `e`: from the first error in its chain that says.
fn exit_status(e: &anyhow::Error) -> i32 {
    use ferry_protocol::{ErrorCode, ProtocolError};
    for cause in e.chain() {
        if let Some(p) = cause.downcast_ref::<ProtocolError>() {
            match p {
                ProtocolError::Remote { code: ErrorCode::NotFound, .. } => return exit::NOT_FOUND,
                ProtocolError::Remote { code: ErrorCode::Unauthorized, .. } => return exit::PERMISSION,
                ProtocolError::Remote { code: ErrorCode::Unavailable, .. } | ProtocolError::Connection { .. } => {
                    return exit::UNAVAILABLE
                }
                _ => {}
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::NotFound => return exit::NOT_FOUND,
                std::io::ErrorKind::PermissionDenied => return exit::PERMISSION,
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut => return exit::UNAVAILABLE,
                _ => {}
            }
        }
    }
    exit::FAILURE
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local stack on embedded defaults: CA, a cache node over DIR/store, the mount at DIR/mnt,
    /// an edge agent uploading DIR/robot, DIR/client.toml.
    #[cfg(feature = "up")]
    Up {
        /// Working directory for the stack's data, certificates and configs.
        #[arg(long, env = "FERRY_DATA", default_value = "ferry-data")]
        data: PathBuf,
        /// QUIC address of the cache node.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: std::net::SocketAddr,
        /// Metrics address of the cache node.
        #[arg(long, default_value = "127.0.0.1:7401")]
        metrics_listen: std::net::SocketAddr,
        /// Address of the embedded MQTT broker (model announcements).
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt_listen: std::net::SocketAddr,
        /// Address of the S3-compatible endpoint.
        #[arg(long, default_value = "127.0.0.1:7480")]
        s3_listen: std::net::SocketAddr,
        /// How long the kernel keeps the mount's attributes and entries
        /// (as `ferry mount --attr-ttl`).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        attr_ttl: std::time::Duration,
    },
    /// Run a cache node.
    #[cfg(feature = "cloud")]
    Cloud {
        /// Node configuration (see docs/OPERATIONS.md for every key).
        #[arg(long, env = "FERRY_CONFIG")]
        config: PathBuf,
    },
    /// FUSE-mount the namespace at DIR (an existing, empty directory) until Ctrl-C or SIGTERM.
    #[cfg(feature = "mount")]
    Mount {
        /// Where to mount.
        dir: PathBuf,
        /// Directory for files being written before they reach the cache node
        /// (default: a fresh directory under the system temp dir).
        #[arg(long)]
        staging: Option<PathBuf>,
        /// Bytes of whole-file local copies (kept in the staging directory) of
        /// files read to the end; later opens are served by the kernel from
        /// them at local-disk speed (FUSE passthrough); a node on this host
        /// over a file:// store lets the kernel read the store's own files
        /// the same way. 0 turns both off (every read through the node).
        #[arg(long, default_value = "8GiB")]
        local_copies: bytesize::ByteSize,
        /// What predicts the files read next, to fetch them ahead of the
        /// reader: `tree` (the shipped model), `markov`, `stride`,
        /// `readahead` (within a file only), `none`, or the directory of a
        /// model made by `ferry predictor train`.
        #[arg(long, default_value = "tree")]
        prefetch: String,
        /// Most bytes fetched ahead and not read yet.
        #[arg(long, default_value = "256MiB")]
        prefetch_budget: bytesize::ByteSize,
        /// Serve Prometheus metrics (reads, latency, local-copy hits,
        /// prefetch per reader) and /healthz, /readyz on this address,
        /// e.g. 127.0.0.1:7403 (port 0 picks one, printed). Off by default.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// How long the kernel keeps a file's attributes and a name's entry
        /// before asking again. Longer makes walks of big trees (`ls -lR`,
        /// `stat` of every file) cheaper; a file changed through another
        /// client may show its old size and time that long.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        attr_ttl: std::time::Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Serve the namespace over the S3 API: buckets are its top-level
    /// directories; requests are signed (SigV4) with the keys in `[s3]` of
    /// the client config, each acting as a ferry identity.
    #[cfg(feature = "cloud")]
    S3 {
        /// HTTP address to serve on (default: `s3.listen` of the config).
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print an object's bytes to standard output.
    Cat {
        /// `ferry://HOST:PORT/PATH`, or `/PATH` with the nodes from --config.
        target: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a directory.
    Ls {
        /// `ferry://HOST:PORT/PATH`, or `/PATH` with the nodes from --config.
        target: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an object's metadata.
    Stat {
        /// `ferry://HOST:PORT/PATH`, or `/PATH` with the nodes from --config.
        target: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Warm a file or directory: each page is fetched into the cache of its
    /// owners, spread over the cluster; pages already cached are skipped, so
    /// running it again resumes an interrupted load.
    #[cfg(feature = "progress")]
    Load {
        /// `ferry://HOST:PORT/PATH`, or `/PATH` with the nodes from --config.
        target: String,
        /// Owners per page to warm (default: the mount's `replicas` on the nodes, else the client config's).
        #[arg(long)]
        replicas: Option<usize>,
        /// One JSON line with the totals instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The cluster: members and what they hold.
    #[cfg(feature = "progress")]
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Fleet CA and node identities.
    #[cfg(feature = "operator")]
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Access traces and prefetch predictors: generate, train, evaluate.
    #[cfg(feature = "operator")]
    Predictor {
        #[command(subcommand)]
        command: predictor::PredictorCommand,
    },
    /// Model versions to fleets: push, status, rollback, promote.
    #[cfg(feature = "operator")]
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Run the robot agent: upload watched files to the cache nodes (see `ferry edge status`).
    #[cfg(feature = "edge")]
    Edge {
        /// Agent configuration (see docs/OPERATIONS.md for every key).
        #[arg(long, env = "FERRY_CONFIG", default_value = "edge.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: Option<EdgeCommand>,
    },
}

#[cfg(feature = "operator")]
#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Chunk a model file, store its chunks through the cache, sign its manifest and announce it to the fleet.
    Push {
        /// MODEL-VERSION (e.g. detector-v7) or MODEL@VERSION.
        name: String,
        /// The model file (e.g. model.safetensors).
        file: PathBuf,
        /// Fleet to announce to (default: the client config's).
        #[arg(long)]
        fleet: Option<String>,
        /// Only this share of devices installs it until `ferry model promote`, e.g. 10%.
        #[arg(long, value_parser = parse_percent)]
        canary: Option<u8>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Per-device state of a model, from the devices' reports; without a
    /// model, every model of every fleet with its devices counted per state.
    Status {
        /// Model name (none: all models).
        model: Option<String>,
        /// Fleet (default: the client config's; without a model: every fleet).
        #[arg(long)]
        fleet: Option<String>,
        /// How long to collect reports.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move the fleet back to the version pushed before the current one (devices still have it).
    Rollback {
        /// Model name.
        model: String,
        /// Fleet (default: the client config's).
        #[arg(long)]
        fleet: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let a canary version go to every device.
    Promote {
        /// Model name.
        model: String,
        /// Fleet (default: the client config's).
        #[arg(long)]
        fleet: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[cfg(feature = "operator")]
fn parse_percent(s: &str) -> Result<u8, String> {
    let n: u8 = s.trim_end_matches('%').parse().map_err(|_| format!("{s:?} is not a percentage"))?;
    if n > 100 {
        return Err(format!("{s:?} is over 100%"));
    }
    Ok(n)
}

#[cfg(feature = "progress")]
#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Members (from etcd or the node list), their addresses, health,
    /// capacity, share of the ring, pages and bytes held, and pending
    /// write-back bytes.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[cfg(feature = "edge")]
#[derive(Debug, Subcommand)]
enum EdgeCommand {
    /// Show queued and uploaded bytes, the current rate, ETA and the oldest pending file.
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Client configuration (nodes, certificates, identity).
    #[arg(long, env = "FERRY_CONFIG", default_value = "client.toml")]
    config: PathBuf,
}

impl ClientArgs {
    /// The client config: `--config` when given (it must exist), else
    /// ./client.toml if there is one, else the defaults.
    fn load(&self) -> Result<config::ClientConfig> {
        let explicit = std::env::var_os("FERRY_CONFIG").is_some() || self.config != std::path::Path::new("client.toml");
        let given = explicit || self.config.is_file();
        config::ClientConfig::load(given.then_some(self.config.as_path()))
    }
}

#[cfg(feature = "operator")]
#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Create a fleet CA and the fleet's model-signing key.
    Init {
        /// Directory for the CA files.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Fleet name written into the CA certificate.
        #[arg(long, default_value = "default")]
        fleet: String,
    },
    /// Issue a node identity signed by the fleet CA.
    Issue {
        /// Directory holding the CA; the identity is written here as ID.pem and ID.key.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// cloud, edge or client.
        #[arg(long)]
        role: Role,
        /// Node id: 1-64 characters of A-Z a-z 0-9 - _.
        #[arg(long)]
        id: String,
        /// Extra DNS names or IP addresses the certificate is valid for
        /// (repeatable), e.g. for an MQTT broker serving TLS with it.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let spec = match std::env::var("RUST_LOG") {
        Ok(rust_log) if cli.log == DEFAULT_LOG && std::env::var_os("FERRY_LOG").is_none() => rust_log,
        _ => cli.log.clone(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // fuser's own unmount on session end, after ours already did it, is no news.
        .add_directive("fuser::mnt=error".parse().expect("a valid directive"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().with_target(true).with_current_span(false).init(),
        LogFormat::Text => logs
            .with_target(false)
            // Colour codes only for a terminal, not for a log file or journald.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    if runs_a_node(&cli.command) {
        // What a node writes (objects of a `file://` store, its caches and
        // journal) is not for other users of the machine to read.
        use rustix::fs::Mode;
        let old = rustix::process::umask(Mode::from_bits_truncate(0o077));
        rustix::process::umask(old | Mode::from_bits_truncate(0o027));
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    #[cfg(feature = "edge")]
    if matches!(cli.command, Command::Edge { command: None, .. }) {
        // The robot agent: small and long-running. Two workers carry its
        // uploads (chunking runs on blocking threads), whatever the core count.
        alloc::keep_memory_small();
        builder.worker_threads(2);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferry: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli.command)) {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("ferry: {}", chain.join(": "));
        std::process::exit(exit_status(&e));
    }
}

/// How to run this binary again in a hint: `ferry` when that is the one on
/// PATH, else the path of the binary that is running.
#[cfg(feature = "operator")]
fn invoked_as() -> String {
    let me = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let candidate = d.join("ferry");
            me.as_ref().is_some_and(|m| candidate.canonicalize().ok().as_ref() == Some(m))
        })
    });
    match me {
        Some(m) if !on_path => m.display().to_string(),
        _ => "ferry".to_string(),
    }
}

/// Whether `command` runs a cache node (`ferry cloud`, `ferry up`).
fn runs_a_node(command: &Command) -> bool {
    #[cfg(feature = "up")]
    if matches!(command, Command::Up { .. }) {
        return true;
    }
    #[cfg(feature = "cloud")]
    if matches!(command, Command::Cloud { .. }) {
        return true;
    }
    let _ = command;
    false
}

async fn run(command: Command) -> Result<()> {
    match command {
        #[cfg(feature = "up")]
        Command::Up { data, listen, metrics_listen, mqtt_listen, s3_listen, attr_ttl } => {
            up::run(&data, listen, metrics_listen, mqtt_listen, s3_listen, attr_ttl).await
        }
        #[cfg(feature = "edge")]
        Command::Edge { config, command: None } => edge::run(&config).await,
        #[cfg(feature = "edge")]
        Command::Edge { config, command: Some(EdgeCommand::Status { json }) } => edge::print_status(&config, json),
        #[cfg(feature = "operator")]
        Command::Predictor { command } => predictor::run(command),
        #[cfg(feature = "operator")]
        Command::Model { command } => {
            let load = ClientArgs::load;
            match command {
                ModelCommand::Push { name, file, fleet, canary, client } => {
                    let cfg = load(&client)?;
                    let fleet = fleet.unwrap_or_else(|| cfg.fleet.clone());
                    model::push(&cfg, &client.config, &name, &file, &fleet, canary.unwrap_or(100)).await
                }
                ModelCommand::Status { model: None, fleet, wait, json, client } => {
                    model::overview(&load(&client)?, fleet.as_deref(), wait, json).await
                }
                ModelCommand::Status { model: Some(m), fleet, wait, json, client } => {
                    let cfg = load(&client)?;
                    let fleet = fleet.unwrap_or_else(|| cfg.fleet.clone());
                    model::status(&cfg, &m, &fleet, wait, json).await
                }
                ModelCommand::Rollback { model: m, fleet, client } => {
                    let cfg = load(&client)?;
                    let fleet = fleet.unwrap_or_else(|| cfg.fleet.clone());
                    model::rollback(&cfg, &m, &fleet).await
                }
                ModelCommand::Promote { model: m, fleet, client } => {
                    let cfg = load(&client)?;
                    let fleet = fleet.unwrap_or_else(|| cfg.fleet.clone());
                    model::promote(&cfg, &m, &fleet).await
                }
            }
        }
        #[cfg(feature = "cloud")]
        Command::Cloud { config } => {
            let cfg = config::load_cloud(&config)?;
            let _lock = lock::directory(&cfg.cache.disk_dir, "the cache directory")?;
            let node = ferry_cloud_tier::RunningNode::start(&cfg).await.context("cannot start the cache node")?;
            eprintln!("ferry: cache node {} listening on {}", cfg.node_id, node.addr);
            if let Some(m) = node.metrics_addr {
                eprintln!("ferry: metrics at http://{m}/metrics");
            }
            notify::ready(&format!("cache node {} on {}", cfg.node_id, node.addr));
            signal::wait_for_shutdown().await;
            eprintln!("ferry: shutting down");
            notify::stopping();
            node.leave().await;
            Ok(())
        }
        #[cfg(feature = "mount")]
        Command::Mount { dir, staging, local_copies, prefetch, prefetch_budget, metrics_listen, attr_ttl, client } => {
            let t = read::Target { node: None, path: "/".into() };
            let c = read::cluster(&client.load()?, &t).await?;
            let opts = mount::Options {
                staging: staging
                    .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-staging-{}", std::process::id()))),
                local_copies: local_copies.as_u64(),
                prefetch: ferry_mount::prefetch::PrefetchOptions {
                    predictor: prefetch,
                    budget: prefetch_budget.as_u64(),
                },
                metrics_listen,
                attr_ttl,
            };
            mount::run(c, &dir, &opts).await
        }
        #[cfg(feature = "cloud")]
        Command::S3 { listen, client } => s3::run(&client.load()?, listen.as_deref()).await,
        Command::Cat { target, client } => {
            let t = read::parse_target(&target)?;
            let c = read::cluster(&client.load()?, &t).await?;
            let mut out = tokio::io::stdout();
            c.read_to(&t.path, 0, None, &mut out).await.with_context(|| format!("cat {}", t.path))?;
            out.flush().await?;
            Ok(())
        }
        Command::Ls { target, json, client } => {
            let t = read::parse_target(&target)?;
            let c = read::cluster(&client.load()?, &t).await?;
            let info = c.stat(&t.path).await.with_context(|| format!("ls {}", t.path))?;
            let entries = if info.kind == EntryKind::File {
                vec![ferry_protocol::codec::DirEntry { name: t.path.clone(), info }]
            } else {
                c.list(&t.path).await.with_context(|| format!("ls {}", t.path))?
            };
            if json {
                let all: Vec<_> = entries.iter().map(|e| read::entry_json(&e.name, &e.info)).collect();
                println!("{}", serde_json::Value::Array(all));
                return Ok(());
            }
            for e in entries {
                println!("{}", read::describe(&e.name, &e.info));
            }
            Ok(())
        }
        Command::Stat { target, json, client } => {
            let t = read::parse_target(&target)?;
            let c = read::cluster(&client.load()?, &t).await?;
            let info = c.stat(&t.path).await.with_context(|| format!("stat {}", t.path))?;
            if json {
                println!("{}", read::entry_json(&t.path, &info));
                return Ok(());
            }
            println!("path:      {}", t.path);
            println!("kind:      {}", if info.kind == EntryKind::Dir { "directory" } else { "file" });
            println!("size:      {} ({})", info.size, read::human(info.size));
            println!("modified:  {}", read::rfc3339(info.mtime_ms));
            println!("etag:      {}", info.etag);
            println!("persisted: {}", if info.persisted { "yes" } else { "no (write pending)" });
            Ok(())
        }
        #[cfg(feature = "progress")]
        Command::Load { target, replicas, json, client } => {
            let t = read::parse_target(&target)?;
            let c = read::cluster(&client.load()?, &t).await?;
            if replicas == Some(0) {
                anyhow::bail!("--replicas must be at least 1");
            }
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let l = cluster::load(&c, &t.path, replicas, progress && !json)
                .await
                .with_context(|| format!("load {}", t.path))?;
            // The path's mount's (as the nodes told while loading), else the client's.
            let replicas = replicas.unwrap_or_else(|| c.replicas_for(&t.path));
            if json {
                let out = serde_json::json!({
                    "path": t.path,
                    "files": l.files,
                    "replicas": replicas,
                    "fetched_pages": l.fetched_pages,
                    "fetched_bytes": l.fetched_bytes,
                    "cached_pages": l.cached_pages,
                });
                println!("{out}");
                return Ok(());
            }
            println!(
                "loaded {} file(s) on {replicas} owner(s) per page: {} page(s) fetched ({}), {} already cached",
                l.files,
                l.fetched_pages,
                read::human(l.fetched_bytes),
                l.cached_pages
            );
            Ok(())
        }
        #[cfg(feature = "progress")]
        Command::Cluster { command: ClusterCommand::Status { json, client } } => {
            let t = read::Target { node: None, path: "/".into() };
            let c = read::cluster(&client.load()?, &t).await?;
            cluster::status(&c, json).await
        }
        #[cfg(feature = "operator")]
        Command::Cert { command } => match command {
            CertCommand::Init { dir, fleet } => {
                certs::init(&dir, &fleet)?;
                println!("created fleet CA and model-signing key in {}", dir.display());
                println!("next: {} cert issue --dir {} --role cloud --id cloud-1", invoked_as(), dir.display());
                Ok(())
            }
            CertCommand::Issue { dir, role, id, hosts } => {
                certs::issue(&dir, role, &id, &hosts)?;
                println!("issued {role} identity {id}: {0}/{id}.pem, {0}/{id}.key", dir.display());
                Ok(())
            }
        },
    }
}
