//! Loading configuration files: TOML, then environment overrides.
//!
//! Each kind of file has its own prefix, so variables meant for one never
//! break another: `FERRY_CLOUD_` for `cloud.toml`, `FERRY_CLIENT_` for
//! `client.toml`, `FERRY_EDGE_` for `edge.toml`. Nested keys use a double underscore:
//! `FERRY_CLOUD_CACHE__MEMORY=2GiB` sets `[cache] memory`. Relative paths inside a file are taken relative to the
//! file's directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Environment prefix of cache node settings.
#[cfg(feature = "cloud")]
pub const CLOUD_ENV: &str = "FERRY_CLOUD_";
/// Environment prefix of client settings.
pub const CLIENT_ENV: &str = "FERRY_CLIENT_";

/// Reads `T` from `path` (if given) over `T::default()`, then applies variables starting with `prefix`.
pub fn load<T>(path: Option<&Path>, prefix: &str) -> Result<T>
where
    T: Serialize + for<'de> Deserialize<'de> + Default,
{
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(p) = path {
        if !p.is_file() {
            bail!("config file {} not found", p.display());
        }
        fig = fig.merge(Toml::file(p));
    }
    fig = fig.merge(Env::prefixed(prefix).split("__"));
    fig.extract().map_err(|e| {
        let mut msg = String::new();
        for (i, err) in e.into_iter().enumerate() {
            if i > 0 {
                msg.push_str("; ");
            }
            msg.push_str(&err.to_string());
        }
        anyhow::anyhow!("invalid config{}: {msg}", path.map(|p| format!(" {}", p.display())).unwrap_or_default())
    })
}

/// Resolves `p` against the directory of the config file.
pub fn relative_to(config: Option<&Path>, p: &Path) -> PathBuf {
    match config.and_then(|c| c.parent()) {
        Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// How a reader reaches the cache (`client.toml`).
///
/// ```toml
/// nodes = ["127.0.0.1:7400"]   # cache nodes (host:port); pages are spread over them by consistent hashing
/// certs = "certs"              # directory with ca.pem and ID.pem / ID.key
/// id = "client"                # identity presented to the nodes
/// fleet = "default"            # fleet for model pushes
/// mqtt = "127.0.0.1:1883"      # MQTT broker model pushes are announced on
/// mqtt_user = ""               # broker credentials, if it wants them
/// mqtt_password = ""
/// mqtt_ca = ""                 # CA (PEM) of a broker serving TLS; "" = plain TCP
/// replicas = 1                 # owners per page: reads are spread over them and go to any healthy one
///
/// [etcd]                       # follow the cluster's membership in etcd instead of `nodes` (build feature `etcd`)
/// endpoints = []               # e.g. ["http://10.0.0.1:2379"]; empty: use `nodes`
/// prefix = "/ferry"            # the nodes' cluster.etcd.prefix
/// user = ""                    # etcd authentication, if on
/// password = ""
/// ca = ""                      # CA (PEM) of an etcd serving https
/// cert = ""                    # client certificate and key (PEM) for an etcd that wants one
/// key = ""
/// timeout = "3s"
///
/// [direct]                     # read the stores themselves when no node answers (off: no mounts)
/// max_requests = 4             # store requests in flight at once in this process
/// [direct.mounts."/datasets"]  # the nodes' mounts this client may read directly (needs [etcd])
/// url = "s3://bucket/prefix"   # as in the nodes' cloud.toml
/// options = {}                 # object_store options (the client's own credentials)
///
/// [s3]                         # the S3-compatible endpoint (`ferry s3`)
/// listen = "127.0.0.1:7480"    # HTTP address to serve on
/// staging = ""                 # uploads in progress; "" = a directory under the system temp dir
/// [[s3.keys]]                  # one per access key clients sign with (SigV4)
/// access_key = "..."
/// secret_key = "..."
/// identity = ""                # ferry identity the key acts as (its certificate in `certs`); "" = `id`
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Cache nodes.
    pub nodes: Vec<String>,
    /// Certificate directory.
    pub certs: PathBuf,
    /// Identity to present.
    pub id: String,
    /// Default fleet.
    pub fleet: String,
    /// MQTT broker (`host:port`) for model announcements.
    pub mqtt: String,
    /// Broker user name (empty: none).
    pub mqtt_user: String,
    /// Broker password.
    pub mqtt_password: String,
    /// CA certificate (PEM) of a broker serving TLS; empty: plain TCP.
    pub mqtt_ca: PathBuf,
    /// Owners per page.
    pub replicas: usize,
    /// The cluster's etcd, to follow its membership.
    pub etcd: ferry_protocol::membership::EtcdConfig,
    /// The S3-compatible endpoint.
    pub s3: S3Config,
    /// Reads from the stores themselves when no node answers.
    pub direct: DirectConfig,
}

/// `[direct]` in `client.toml`: reading the object stores themselves when
/// every node that could serve a read is down. Off while `mounts` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectConfig {
    /// Store requests in flight at once in one process.
    pub max_requests: usize,
    /// The nodes' mounts this client may read directly, by namespace path.
    pub mounts: std::collections::BTreeMap<String, DirectMount>,
}

impl Default for DirectConfig {
    fn default() -> Self {
        DirectConfig { max_requests: 4, mounts: std::collections::BTreeMap::new() }
    }
}

/// One `[direct.mounts."/PATH"]`: the store behind a namespace mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectMount {
    /// Store URL, as in the nodes' `cloud.toml`.
    pub url: String,
    /// object_store builder options (the client's own credentials).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

/// `[s3]` in `client.toml`: the S3-compatible endpoint (`ferry s3`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// HTTP address to serve on.
    pub listen: String,
    /// Directory for uploads in progress ("" = one under the system temp dir).
    pub staging: PathBuf,
    /// The access keys clients sign with.
    pub keys: Vec<S3KeyConfig>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config { listen: "127.0.0.1:7480".into(), staging: PathBuf::new(), keys: Vec::new() }
    }
}

/// One `[[s3.keys]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3KeyConfig {
    /// Access key id.
    pub access_key: String,
    /// Its secret.
    pub secret_key: String,
    /// The ferry identity requests signed with this key act as ("" = the config's `id`).
    #[serde(default)]
    pub identity: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            nodes: vec!["127.0.0.1:7400".into()],
            certs: PathBuf::from("certs"),
            id: "client".into(),
            fleet: "default".into(),
            mqtt: "127.0.0.1:1883".into(),
            mqtt_user: String::new(),
            mqtt_password: String::new(),
            mqtt_ca: PathBuf::new(),
            replicas: 1,
            etcd: ferry_protocol::membership::EtcdConfig::default(),
            s3: S3Config::default(),
            direct: DirectConfig::default(),
        }
    }
}

impl ClientConfig {
    /// Loads and resolves paths.
    pub fn load(path: Option<&Path>) -> Result<ClientConfig> {
        let mut c: ClientConfig = load(path, CLIENT_ENV)?;
        c.certs = relative_to(path, &c.certs);
        if !c.mqtt_ca.as_os_str().is_empty() {
            c.mqtt_ca = relative_to(path, &c.mqtt_ca);
        }
        if c.nodes.is_empty() && c.etcd.endpoints.is_empty() {
            bail!("client config lists no nodes and no etcd endpoints");
        }
        if c.replicas == 0 {
            bail!("replicas must be at least 1");
        }
        if c.direct.max_requests == 0 {
            bail!("direct.max_requests must be at least 1");
        }
        if !c.direct.mounts.is_empty() && c.etcd.endpoints.is_empty() {
            bail!(
                "[direct] needs [etcd]: without the cluster's pending-write registry a direct read could return \
                 the store's older version of a file whose newest bytes are on a node that is down"
            );
        }
        if !c.s3.staging.as_os_str().is_empty() {
            c.s3.staging = relative_to(path, &c.s3.staging);
        }
        for (i, k) in c.s3.keys.iter().enumerate() {
            if k.access_key.is_empty() || k.secret_key.is_empty() {
                bail!("s3.keys[{i}]: access_key and secret_key must both be set");
            }
            if c.s3.keys[..i].iter().any(|o| o.access_key == k.access_key) {
                bail!("s3.keys[{i}]: access key {:?} is listed twice", k.access_key);
            }
        }
        Ok(c)
    }
}

/// Loads a cache node's configuration and resolves its paths.
#[cfg(feature = "cloud")]
pub fn load_cloud(path: &Path) -> Result<ferry_cloud_tier::CloudConfig> {
    let mut c: ferry_cloud_tier::CloudConfig = load(Some(path), CLOUD_ENV)?;
    c.certs = relative_to(Some(path), &c.certs);
    c.cache.disk_dir = relative_to(Some(path), &c.cache.disk_dir);
    anyhow::Context::with_context(c.validate(), || format!("invalid config {}", path.display()))?;
    Ok(c)
}
