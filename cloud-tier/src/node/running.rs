//! [`RunningNode`]: a configured node wired together — namespace, cache,
//! journal and its uploader, QUIC listener, metrics endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use ferry_protocol::client::Cluster;
use ferry_protocol::ids::NodeId;
use ferry_protocol::membership::{self, Member, Membership};
use ferry_protocol::tls::TlsMaterial;
use ferry_protocol::{transport, ProtocolError};

use crate::cache::CacheOptions;
use crate::clock::{Clock, SystemClock};
use crate::config::CloudConfig;
use crate::error::{ConfigError, NodeError};
use crate::metrics::{self, Metrics};
use crate::namespace::Namespace;

use super::{serve, CacheNode, Peers, Registry};

/// How long the start-up check of a store may take.
const STORE_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks each mount's store for one page of its listing, all at once, and
/// says clearly which do not answer: a node over a store it cannot reach
/// still starts (the store may come back), but not silently.
async fn check_stores(ns: &Namespace, cfg: &CloudConfig) {
    let checks = ns.mounts().map(|m| async move {
        use futures::StreamExt;
        let mut listing = m.store.list(Some(&m.prefix));
        let answer = tokio::time::timeout(STORE_CHECK, listing.next()).await;
        let url = cfg.mounts.iter().find(|(k, _)| k.trim_end_matches('/') == m.name.trim_end_matches('/'));
        let url = url.map_or("", |(_, c)| c.url.as_str());
        match answer {
            Ok(None | Some(Ok(_))) => tracing::debug!(mount = %m.name, url, "store answers"),
            Ok(Some(Err(e))) => {
                tracing::warn!(mount = %m.name, url, error = %e, "the store refused a listing; reads under this mount will fail until it answers")
            }
            Err(_) => tracing::warn!(
                mount = %m.name,
                url,
                "the store did not answer a listing within {}s; reads under this mount will fail until it answers (options.timeout, options.connect_timeout)",
                STORE_CHECK.as_secs()
            ),
        }
    });
    futures::future::join_all(checks).await;
}

/// How long a node leaving on SIGTERM waits for its pending uploads.
pub const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// An address to listen on is taken (or not this machine's).
    #[error("cannot listen on {addr} (`{key}`)")]
    Bind {
        /// The config key naming the address.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
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
    #[cfg(feature = "etcd")]
    registration: Option<ferry_protocol::etcd::Registration>,
}

impl RunningNode {
    /// Starts a node from its configuration.
    pub async fn start(cfg: &CloudConfig) -> Result<RunningNode, StartError> {
        cfg.validate()?;
        let metrics = Arc::new(Metrics::new());
        let ns = Namespace::open(&cfg.mounts, metrics)?;
        check_stores(&ns, cfg).await;
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
            eviction: cfg.cache.eviction,
        };
        let node = Arc::new(
            match &cfg.trace_dir {
                Some(dir) => {
                    CacheNode::new(ns, opts, clock, &cfg.node_id)?.with_trace_dir(dir, cfg.page_size.as_u64())?
                }
                None => CacheNode::new(ns, opts, clock, &cfg.node_id)?,
            }
            .with_edge(&cfg.edge_prefix, cfg.chunk_store.as_u64())?
            .with_prefetch(&cfg.prefetch, cfg.prefetch_budget.as_u64())?
            .with_access(&cfg.access)?,
        );
        let endpoint = transport::server_endpoint(cfg.listen, &tls).map_err(|e| match e {
            ProtocolError::Io(source) => StartError::Bind { key: "listen", addr: cfg.listen, source },
            other => StartError::Protocol(other),
        })?;
        let addr = endpoint.local_addr()?;
        let mut tasks =
            vec![tokio::spawn(serve(endpoint.clone(), node.clone())), tokio::spawn(node.clone().run_uploader())];
        #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
        let mut registry: Option<Registry> = None;
        let advertise = if cfg.cluster.advertise.is_empty() {
            if addr.ip().is_unspecified() && !cfg.cluster.etcd.endpoints.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "listen {addr} is no address clients can reach: set cluster.advertise"
                ))
                .into());
            }
            addr.to_string()
        } else {
            cfg.cluster.advertise.clone()
        };
        let me = Member { id: cfg.node_id.clone(), addr: advertise, capacity: cfg.cluster.capacity };
        #[cfg(feature = "etcd")]
        let mut registration = None;
        let membership = if !cfg.cluster.etcd.endpoints.is_empty() {
            #[cfg(feature = "etcd")]
            {
                let etcd = ferry_protocol::etcd::Etcd::connect(&cfg.cluster.etcd).await?;
                registration = Some(etcd.register(&me, cfg.cluster.lease_ttl).await?);
                let members = etcd.members().await?;
                registry = Some(Registry::new(etcd).await?);
                members
            }
            #[cfg(not(feature = "etcd"))]
            return Err(ConfigError::Invalid(
                "cluster.etcd.endpoints is set, but this ferry was built without etcd (build feature `etcd`)".into(),
            )
            .into());
        } else if !cfg.cluster.peers.is_empty() {
            Membership::fixed(
                membership::parse_static(&cfg.cluster.peers)
                    .map_err(|e| ConfigError::Invalid(format!("cluster.peers: {e}")))?,
            )
        } else {
            Membership::fixed(vec![me])
        };
        let peer_client = Cluster::over(transport::client_endpoint(&tls)?, membership);
        node.join(Arc::new(Peers::new(&cfg.node_id, peer_client, registry, cfg.cluster.takeover_after)));
        let mut metrics_addr = None;
        if !cfg.metrics_listen.is_empty() {
            let ma: SocketAddr = cfg
                .metrics_listen
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("metrics_listen {:?}: {e}", cfg.metrics_listen)))?;
            let listener = tokio::net::TcpListener::bind(ma).await.map_err(|source| StartError::Bind {
                key: "metrics_listen",
                addr: ma,
                source,
            })?;
            metrics_addr = Some(listener.local_addr()?);
            let m = node.metrics.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = metrics::serve_on(listener, m).await {
                    tracing::warn!(error = %e, "metrics endpoint stopped");
                }
            }));
        }
        tracing::info!(%addr, node = %cfg.node_id, "cache node listening");
        Ok(RunningNode {
            addr,
            metrics_addr,
            node,
            endpoint,
            tasks,
            #[cfg(feature = "etcd")]
            registration,
        })
    }

    /// Leaves the cluster on purpose (SIGTERM): each pending write held by
    /// no other member is copied to its next owner, then the node leaves
    /// the ring (clients stop sending here, and the holders upload what it
    /// does not), then its own writes are uploaded (up to [`DRAIN_LIMIT`]),
    /// then [`RunningNode::shutdown`].
    /// What could not be uploaded stays in the journal for the next start,
    /// and its copies on other nodes stay too.
    #[cfg_attr(not(feature = "etcd"), allow(unused_mut))]
    pub async fn leave(mut self) {
        let handed = self.node.hand_over().await;
        if handed > 0 {
            tracing::info!(handed, "pending writes copied to other nodes before leaving");
        }
        #[cfg(feature = "etcd")]
        if let Some(r) = self.registration.take() {
            match r.leave().await {
                Ok(()) => tracing::info!("left the cluster"),
                Err(e) => tracing::warn!(error = %e, "could not deregister; the lease expires instead"),
            }
        }
        let pending = self.node.journal().entries().iter().filter(|e| e.uploads_here()).count();
        if pending > 0 {
            tracing::info!(pending, "uploading pending writes before leaving");
            if !self.node.journal().drain(DRAIN_LIMIT).await {
                tracing::warn!("pending writes not all uploaded; they resume at the next start");
            }
        }
        self.shutdown().await;
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
