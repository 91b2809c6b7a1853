//! Cache node configuration (`cloud.toml`). Every key has a default.
//!
//! ```toml
//! node_id = "cloud-1"                 # this node's id; its certificate is CERTS/NODE_ID.pem
//! listen = "127.0.0.1:7400"           # QUIC address of the block protocol
//! metrics_listen = "127.0.0.1:7401"   # Prometheus /metrics; "" turns it off
//! certs = "certs"                     # directory with ca.pem, NODE_ID.pem, NODE_ID.key
//! page_size = "4MiB"                  # cache page size, 1-4 MiB
//! ttl = "10m"                         # how long object metadata is trusted before re-checking the store
//! edge_prefix = "/logs"               # edge devices write only below EDGE_PREFIX/DEVICE_ID/
//! chunk_store = "2GiB"                # bytes of edge chunks kept (in DISK_DIR/chunks) for dedup
//! trace_dir = ""                      # record demand reads as access traces here (docs/PREDICTOR.md); unset: off
//! prefetch = "tree"                   # predictor of the pages read next: tree (shipped model), markov, stride, readahead, none, or a model directory
//! prefetch_budget = "256MiB"          # most bytes of prefetched pages not read yet
//!
//! [cache]
//! memory = "512MiB"                   # memory tier size
//! disk = "10GiB"                      # disk tier size; "0" turns the disk tier off
//! disk_dir = "ferry-cache"            # disk tier directory (pages and index)
//!
//! [mounts."/datasets"]
//! url = "s3://bucket/prefix"          # s3://, gs://, az://, file:///, memory:///
//! quota = "0"                         # most bytes this mount may hold in each tier; 0 = no limit
//! options = { aws_endpoint = "http://127.0.0.1:9000", aws_allow_http = "true" }
//! write_through = false               # true: acknowledge writes only once the store has them
//! write_replicas = 2                  # nodes a write-back write is durable on before it is acknowledged
//!                                     # (default: 2 where the cluster has two nodes or more, else 1)
//! replicas = 1                        # owners of each page; readers use any healthy one (default: the reader's `replicas`)
//!
//! [cluster]
//! advertise = ""                      # address clients reach this node at; "" = listen
//! capacity = 1                        # relative share of the ring (2 = twice the pages of a 1)
//! lease_ttl = "5s"                    # a node etcd stops hearing from leaves the ring after this
//! peers = []                          # without etcd: every node, as ID@HOST:PORT (this one included)
//! takeover_after = "15s"              # without etcd: a writer unreachable this long has its held writes uploaded by their holders
//!
//! [cluster.etcd]                      # membership and the pending-write registry (build feature `etcd`)
//! endpoints = []                      # e.g. ["http://10.0.0.1:2379"]; empty: no etcd
//! prefix = "/ferry"                   # key prefix; clusters sharing an etcd use different ones
//! user = ""                           # etcd authentication, if on
//! password = ""
//! ca = ""                             # CA (PEM) of an etcd serving https
//! cert = ""                           # client certificate and key (PEM) for an etcd that wants one
//! key = ""
//! timeout = "3s"                      # one etcd request or connection attempt
//! ```
//!
//! `options` are passed unchanged to object_store's builder for the URL's
//! scheme (`aws_*`, `google_*`, `azure_*` keys), so every option object_store
//! documents is available.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Default of [`CloudConfig::edge_prefix`].
pub const DEFAULT_EDGE_PREFIX: &str = "/logs";
/// Default of [`CloudConfig::chunk_store`] in bytes.
pub const DEFAULT_CHUNK_STORE: u64 = 2 << 30;

/// A cache node's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// This node's id; the certificate `CERTS/NODE_ID.pem` must carry it.
    pub node_id: String,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Metrics listen address; empty turns the endpoint off.
    pub metrics_listen: String,
    /// Certificate directory.
    pub certs: PathBuf,
    /// Page size (1-4 MiB).
    pub page_size: ByteSize,
    /// Metadata time-to-live.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Cache tiers.
    pub cache: CacheConfig,
    /// Namespace: mount path to store.
    pub mounts: BTreeMap<String, MountConfig>,
    /// Edge devices may write only below `edge_prefix/DEVICE_ID/`.
    pub edge_prefix: String,
    /// Budget of the chunk store edge uploads go through.
    pub chunk_store: ByteSize,
    /// Where to record demand reads as access traces; `None` records nothing.
    pub trace_dir: Option<PathBuf>,
    /// Predictor that prefetches (`none` turns prefetch off).
    pub prefetch: String,
    /// Most bytes of prefetched pages not read yet.
    pub prefetch_budget: ByteSize,
    /// The cluster this node is part of.
    pub cluster: ClusterConfig,
    /// Who may read and write what (`[access]`).
    pub access: crate::node::access::AccessConfig,
}

/// `[cluster]`: how this node finds the others and is found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Address clients reach this node at; empty means the listen address.
    pub advertise: String,
    /// Relative share of the ring.
    pub capacity: u32,
    /// Registration lease in etcd.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Without etcd: every node of the cluster (`ID@HOST:PORT`), this one included.
    pub peers: Vec<String>,
    /// Without etcd: how long a writer must be unreachable before the
    /// holders of its pending writes upload them.
    #[serde(with = "humantime_serde")]
    pub takeover_after: Duration,
    /// etcd, for membership and the pending-write registry.
    pub etcd: ferry_protocol::membership::EtcdConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            advertise: String::new(),
            capacity: 1,
            lease_ttl: Duration::from_secs(5),
            peers: Vec::new(),
            takeover_after: Duration::from_secs(15),
            etcd: ferry_protocol::membership::EtcdConfig::default(),
        }
    }
}

/// Sizes and place of the cache tiers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory tier size.
    pub memory: ByteSize,
    /// Disk tier size; 0 disables the disk tier.
    pub disk: ByteSize,
    /// Disk tier directory.
    pub disk_dir: PathBuf,
    /// What a full tier evicts first: `announced` (pages no announced read
    /// order reads again, then the one read furthest from now; LRU when
    /// nothing was announced) or `lru`.
    pub eviction: crate::cache::Eviction,
}

/// One mount of the namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Store URL.
    pub url: String,
    /// Per-tier quota; 0 means no limit.
    #[serde(default)]
    pub quota: ByteSize,
    /// object_store builder options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Acknowledge writes only once the object store has them (default: once the node's journal has them).
    #[serde(default)]
    pub write_through: bool,
    /// Nodes a write-back write is durable on before it is acknowledged
    /// (default: 2 where the cluster has two nodes or more).
    #[serde(default)]
    pub write_replicas: Option<usize>,
    /// Owners of each page of this mount: readers spread over them and
    /// use any healthy one (default: the reader's `replicas`, 1).
    #[serde(default)]
    pub replicas: Option<usize>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: ByteSize::mib(512),
            disk: ByteSize::gib(10),
            disk_dir: PathBuf::from("ferry-cache"),
            eviction: crate::cache::Eviction::default(),
        }
    }
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            node_id: "cloud-1".into(),
            listen: "127.0.0.1:7400".parse().expect("literal address"),
            metrics_listen: "127.0.0.1:7401".into(),
            certs: PathBuf::from("certs"),
            page_size: ByteSize::mib(4),
            ttl: Duration::from_secs(600),
            cache: CacheConfig::default(),
            mounts: BTreeMap::new(),
            edge_prefix: DEFAULT_EDGE_PREFIX.into(),
            chunk_store: ByteSize::b(DEFAULT_CHUNK_STORE),
            trace_dir: None,
            prefetch: "tree".into(),
            prefetch_budget: ByteSize::mib(256),
            cluster: ClusterConfig::default(),
            access: crate::node::access::AccessConfig::default(),
        }
    }
}

impl CloudConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ferry_protocol::ids::NodeId::new(&self.node_id).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let ps = self.page_size.as_u64();
        if !((1 << 20)..=(4 << 20)).contains(&ps) {
            return Err(ConfigError::Invalid(format!("page_size must be 1-4 MiB, got {}", self.page_size)));
        }
        if self.cache.memory.as_u64() < ps {
            return Err(ConfigError::Invalid(format!(
                "cache.memory ({}) must hold at least one page",
                self.cache.memory
            )));
        }
        if self.mounts.is_empty() {
            return Err(ConfigError::Invalid(
                "no mounts configured: add a [mounts.\"/name\"] section with a url".into(),
            ));
        }
        ferry_protocol::ids::NsPath::parse(&self.edge_prefix)
            .map_err(|e| ConfigError::Invalid(format!("edge_prefix {:?}: {e}", self.edge_prefix)))?;
        let c = &self.cluster;
        if c.capacity == 0 {
            return Err(ConfigError::Invalid("cluster.capacity must be at least 1".into()));
        }
        if c.lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(format!("cluster.lease_ttl must be at least 1s, got {:?}", c.lease_ttl)));
        }
        if c.etcd.timeout.is_zero() {
            return Err(ConfigError::Invalid("cluster.etcd.timeout must be above 0".into()));
        }
        if !c.etcd.endpoints.is_empty() && !c.peers.is_empty() {
            return Err(ConfigError::Invalid("give cluster.peers or cluster.etcd.endpoints, not both".into()));
        }
        if !c.peers.is_empty() {
            let peers = ferry_protocol::membership::parse_static(&c.peers)
                .map_err(|e| ConfigError::Invalid(format!("cluster.peers: {e}")))?;
            if !peers.iter().any(|p| p.id == self.node_id) {
                return Err(ConfigError::Invalid(format!(
                    "cluster.peers must list this node too (as {}@HOST:PORT)",
                    self.node_id
                )));
            }
        }
        for (name, m) in &self.mounts {
            if m.write_replicas == Some(0) {
                return Err(ConfigError::Invalid(format!("mounts.{name:?}.write_replicas must be at least 1")));
            }
            if m.replicas == Some(0) {
                return Err(ConfigError::Invalid(format!("mounts.{name:?}.replicas must be at least 1")));
            }
        }
        if !self.metrics_listen.is_empty() {
            self.metrics_listen
                .parse::<SocketAddr>()
                .map_err(|e| ConfigError::Invalid(format!("metrics_listen {:?}: {e}", self.metrics_listen)))?;
        }
        Ok(())
    }
}
