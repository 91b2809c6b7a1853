//! [`RunningNode`]: a configured node wired together — namespace, cache,
//! journal and its uploader, QUIC listener, metrics endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use ferry_protocol::ids::NodeId;
use ferry_protocol::tls::TlsMaterial;
use ferry_protocol::{transport, ProtocolError};

use crate::cache::CacheOptions;
use crate::clock::{Clock, SystemClock};
use crate::config::CloudConfig;
use crate::error::{ConfigError, NodeError};
use crate::metrics::{self, Metrics};
use crate::namespace::Namespace;

use super::{serve, CacheNode};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificates or the listener.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The cache could not open.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The metrics listener.
    #[error("metrics listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A node serving on its sockets.
#[derive(Debug)]
pub struct RunningNode {
    /// The QUIC address it listens on.
    pub addr: SocketAddr,
    /// The metrics address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The node's logic.
    pub node: Arc<CacheNode>,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Starts a node from its configuration.
    pub async fn start(cfg: &CloudConfig) -> Result<RunningNode, StartError> {
        cfg.validate()?;
        let metrics = Arc::new(Metrics::new());
        let ns = Namespace::open(&cfg.mounts, metrics)?;
        let id = NodeId::new(&cfg.node_id).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let tls = TlsMaterial::load_dir(&cfg.certs, &id)?;
        Self::start_with(cfg, ns, tls, Arc::new(SystemClock)).await
    }

    /// Starts a node over an already built namespace (tests and benchmarks
    /// use this to put wrapper stores under it).
    pub async fn start_with(
        cfg: &CloudConfig,
        ns: Namespace,
        tls: TlsMaterial,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningNode, StartError> {
        let opts = CacheOptions {
            page_size: cfg.page_size.as_u64(),
            memory_bytes: cfg.cache.memory.as_u64(),
            disk_bytes: cfg.cache.disk.as_u64(),
            disk_dir: cfg.cache.disk_dir.clone(),
            ttl_ms: i64::try_from(cfg.ttl.as_millis()).unwrap_or(i64::MAX),
        };
        let node = Arc::new(
            match &cfg.trace_dir {
                Some(dir) => {
                    CacheNode::new(ns, opts, clock, &cfg.node_id)?.with_trace_dir(dir, cfg.page_size.as_u64())?
                }
                None => CacheNode::new(ns, opts, clock, &cfg.node_id)?,
            }
            .with_edge(&cfg.edge_prefix, cfg.chunk_store.as_u64())?
            .with_prefetch(&cfg.prefetch, cfg.prefetch_budget.as_u64())?,
        );
        let endpoint = transport::server_endpoint(cfg.listen, &tls)?;
        let addr = endpoint.local_addr()?;
        let mut tasks =
            vec![tokio::spawn(serve(endpoint.clone(), node.clone())), tokio::spawn(node.clone().run_uploader())];
        let mut metrics_addr = None;
        if !cfg.metrics_listen.is_empty() {
            let ma: SocketAddr = cfg
                .metrics_listen
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("metrics_listen {:?}: {e}", cfg.metrics_listen)))?;
            let listener = tokio::net::TcpListener::bind(ma).await?;
            metrics_addr = Some(listener.local_addr()?);
            let m = node.metrics.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = metrics::serve_on(listener, m).await {
                    tracing::warn!(error = %e, "metrics endpoint stopped");
                }
            }));
        }
        tracing::info!(%addr, node = %cfg.node_id, "cache node listening");
        Ok(RunningNode { addr, metrics_addr, node, endpoint, tasks })
    }

    /// Stops accepting, closes connections and waits for pending cache writes.
    pub async fn shutdown(self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"node shutting down");
        for t in &self.tasks {
            t.abort();
        }
        self.node.cache.flush().await;
        self.endpoint.wait_idle().await;
    }
}
