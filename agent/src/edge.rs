//! `ferry edge`: the robot agent, and `ferry edge status`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use ferry_edge_tier::agent::{status, Status};
use ferry_edge_tier::models::ModelsConfig;
use ferry_edge_tier::spool::Spool;
use ferry_edge_tier::{EdgeAgent, EdgeConfig};

use crate::config::{load, relative_to, ClientConfig};

/// Environment prefix of edge agent settings.
pub const EDGE_ENV: &str = "FERRY_EDGE_";

/// Loads `edge.toml`, resolving paths against its directory.
pub fn load_edge(path: &Path) -> Result<EdgeConfig> {
    let mut c: EdgeConfig = load(Some(path), EDGE_ENV)?;
    c.certs = relative_to(Some(path), &c.certs);
    c.spool = relative_to(Some(path), &c.spool);
    for w in &mut c.watch {
        w.dir = relative_to(Some(path), &w.dir);
    }
    c.models.dir = relative_to(Some(path), &c.models.dir);
    c.models.signing_key = relative_to(Some(path), &c.models.signing_key);
    if !c.models.mqtt_ca.as_os_str().is_empty() {
        c.models.mqtt_ca = relative_to(Some(path), &c.models.mqtt_ca);
    }
    c.validate().map_err(anyhow::Error::msg).with_context(|| format!("invalid config {}", path.display()))?;
    Ok(c)
}

/// A configured edge agent: the uploader and, with `[models] mqtt`, the model receiver.
#[derive(Debug)]
pub struct Edge {
    _lock: crate::lock::Lock,
    agent: Arc<EdgeAgent>,
    receiver: Option<(ModelsConfig, String, ferry_protocol::client::Cluster)>,
    metrics: Option<crate::metrics_http::Endpoint>,
}

/// Builds the agent over `cfg`.
pub async fn start(cfg: EdgeConfig) -> Result<Edge> {
    let lock = crate::lock::file(&spool_lock(&cfg.spool), &format!("the spool {}", cfg.spool.display()))?;
    let client = ClientConfig {
        nodes: cfg.nodes.clone(),
        certs: cfg.certs.clone(),
        id: cfg.id.clone(),
        etcd: cfg.etcd.clone(),
        ..Default::default()
    };
    let cluster = crate::read::connect_over(&client, ferry_protocol::transport::Link::Robot).await?;
    let receiver = (!cfg.models.mqtt.is_empty()).then(|| (cfg.models.clone(), cfg.id.clone(), cluster.clone()));
    if let Some((m, _, _)) = &receiver {
        ferry_edge_tier::models::load_key(&m.signing_key)?;
    }
    let metrics = if cfg.metrics_listen.is_empty() {
        None
    } else {
        // Read from the spool and model directory at each scrape: what the agent has durably done.
        let c = cfg.clone();
        let render = move || ferry_edge_tier::metrics::render(&c).map_err(|e| e.to_string());
        Some(crate::metrics_http::Endpoint::start("metrics_listen", &cfg.metrics_listen, render, || true)?)
    };
    let agent = Arc::new(EdgeAgent::new(cfg, cluster).context("cannot start the edge agent")?);
    Ok(Edge { _lock: lock, agent, receiver, metrics })
}

impl Edge {
    /// Runs until `stop` completes.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let upload = tokio::spawn(self.agent.run(stopped(rx.clone())));
        let receive = self.receiver.map(|(cfg, device, cluster)| {
            tokio::spawn(ferry_edge_tier::models::Receiver::run(cfg, device, cluster, stopped(rx.clone())))
        });
        stop.await;
        let _ = tx.send(true);
        upload.await??;
        if let Some(r) = receive {
            r.await??;
        }
        if let Some(m) = self.metrics {
            m.stop();
        }
        Ok(())
    }
}

/// Runs the agent until Ctrl-C or SIGTERM.
pub async fn run(config: &Path) -> Result<()> {
    let cfg = load_edge(config)?;
    for w in &cfg.watch {
        eprintln!("ferry: watching {} ({}, {:?} priority)", w.dir.display(), w.pattern, w.priority);
    }
    if !cfg.models.mqtt.is_empty() {
        eprintln!("ferry: following models of fleet {} on {}", cfg.models.fleet, cfg.models.mqtt);
    }
    let id = cfg.id.clone();
    let agent = start(cfg).await?;
    crate::notify::ready(&format!("edge agent {id}"));
    agent
        .run(async {
            crate::signal::wait_for_shutdown().await;
            crate::notify::stopping();
        })
        .await?;
    eprintln!("ferry: edge agent stopped");
    Ok(())
}

fn human_rate(bps: f64) -> String {
    format!("{}/s", crate::read::human(bps as u64))
}

/// Prints the agent's progress from its spool.
pub fn print_status(config: &Path, json: bool) -> Result<()> {
    let cfg = load_edge(config)?;
    if !cfg.spool.exists() {
        anyhow::bail!("no spool at {}: the agent has not run with this config yet", cfg.spool.display());
    }
    let spool = Spool::open_read_only(&cfg.spool).with_context(|| format!("open {}", cfg.spool.display()))?;
    let s: Status = status(&spool)?;
    let running = crate::lock::held(&spool_lock(&cfg.spool));
    let stuck = stuck(&s, running, config);
    if json {
        let mut v = serde_json::to_value(&s)?;
        v["agent_running"] = running.into();
        v["stuck"] = stuck.into();
        println!("{v}");
        return Ok(());
    }
    println!(
        "queued:     {} in {} file(s){}",
        crate::read::human(s.queued_bytes),
        s.files_pending,
        if s.files_settling > 0 {
            format!("; {} more stored, watched until they stop changing", s.files_settling)
        } else {
            String::new()
        }
    );
    println!("uploaded:   {} in {} file(s)", crate::read::human(s.uploaded_bytes), s.files_uploaded);
    println!(
        "sent:       {} on the wire for {} of chunks{}",
        crate::read::human(s.wire_bytes),
        crate::read::human(s.raw_bytes),
        if s.raw_bytes > 0 {
            format!(" ({:.2}x compression)", s.raw_bytes as f64 / s.wire_bytes.max(1) as f64)
        } else {
            String::new()
        }
    );
    println!("rate:       {}", human_rate(s.rate_bps));
    match s.eta_secs {
        Some(e) => {
            println!("eta:        {}", humantime::format_duration(std::time::Duration::from_secs(e.ceil() as u64)))
        }
        None if s.queued_bytes == 0 => println!("eta:        nothing queued"),
        None => println!("eta:        unknown (nothing sent recently)"),
    }
    match &s.oldest_pending {
        Some((p, age)) => println!(
            "oldest:     {p} (changed {} ago)",
            humantime::format_duration(std::time::Duration::from_secs(*age as u64))
        ),
        None => println!("oldest:     -"),
    }
    println!("retention:  {} uploaded file(s) deleted, {} dropped before upload", s.files_deleted, s.files_dropped);
    if s.files_quarantined > 0 {
        println!("quarantined: {} file(s) not uploaded (tried again when the agent starts):", s.files_quarantined);
        for (path, reason) in &s.quarantined {
            println!("  {path}: {reason}");
        }
        if s.files_quarantined > s.quarantined.len() as u64 {
            println!("  ... and {} more", s.files_quarantined - s.quarantined.len() as u64);
        }
    }
    if s.updated_ms > 0 {
        let age = (ferry_protocol::clock::Clock::now_ms(&ferry_protocol::clock::SystemClock) - s.updated_ms).max(0);
        println!(
            "agent:      {}, last seen {} ago",
            if running { "running" } else { "not running" },
            humantime::format_duration(std::time::Duration::from_secs((age / 1000) as u64))
        );
    }
    if let Some(why) = stuck {
        println!("stuck:      {why}");
    }
    Ok(())
}

/// The lock file of the spool at `spool` (held by the agent while it runs).
fn spool_lock(spool: &Path) -> std::path::PathBuf {
    let mut lock_file = spool.as_os_str().to_owned();
    lock_file.push(".lock");
    lock_file.into()
}

/// Why nothing moves, when files wait and something stops them.
fn stuck(s: &Status, running: bool, config: &Path) -> Option<String> {
    if s.files_pending == 0 {
        return None;
    }
    if !running {
        return Some(format!(
            "the agent is not running (start it: systemctl start ferry-edge, or ferry edge --config {})",
            config.display()
        ));
    }
    if let Some(e) = &s.last_error {
        let since = (ferry_protocol::clock::Clock::now_ms(&ferry_protocol::clock::SystemClock) - s.error_since_ms)
            .max(0) as u64
            / 1000;
        return Some(format!(
            "uploads have failed for {}, retrying: {e}",
            humantime::format_duration(std::time::Duration::from_secs(since))
        ));
    }
    None
}
