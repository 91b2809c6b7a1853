//! `ferry cat|ls|stat|load`: reading through the cache.

use anyhow::{bail, Context, Result};
use ferry_protocol::client::Cluster;
use ferry_protocol::codec::{EntryKind, ObjectInfo};
use ferry_protocol::ids::{NodeId, NsPath};
use ferry_protocol::tls::TlsMaterial;
use ferry_protocol::transport;

use crate::config::ClientConfig;

/// A target given on the command line: `ferry://HOST:PORT/PATH` or `/PATH`.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// Node named in the URL, if any.
    pub node: Option<String>,
    /// Namespace path.
    pub path: String,
}

/// Parses a target.
pub fn parse_target(s: &str) -> Result<Target> {
    if let Some(rest) = s.strip_prefix("ferry://") {
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() || !host.contains(':') {
            bail!("{s:?}: expected ferry://HOST:PORT/PATH");
        }
        let p = NsPath::parse(path).map_err(anyhow::Error::msg)?;
        return Ok(Target { node: Some(host.to_string()), path: p.to_string() });
    }
    if s.contains("://") {
        bail!("{s:?}: only ferry:// URLs or absolute namespace paths are understood");
    }
    let p = NsPath::parse(s)
        .map_err(|e| anyhow::anyhow!("{e} (give ferry://HOST:PORT/PATH or an absolute path with --config)"))?;
    Ok(Target { node: None, path: p.to_string() })
}

/// Connects a client for `target` using `cfg`.
pub async fn cluster(cfg: &ClientConfig, target: &Target) -> Result<Cluster> {
    match &target.node {
        // One node named in the URL: no membership.
        Some(n) => Ok(endpoint(cfg, transport::Link::Bulk).map(|ep| Cluster::new(ep, std::slice::from_ref(n)))??),
        None => connect(cfg).await,
    }
}

/// A client presenting `cfg`'s identity to the cluster `cfg` names.
pub async fn connect(cfg: &ClientConfig) -> Result<Cluster> {
    connect_over(cfg, transport::Link::Bulk).await
}

fn endpoint(cfg: &ClientConfig, link: transport::Link) -> Result<ferry_protocol::quinn::Endpoint> {
    let id = NodeId::new(&cfg.id).map_err(anyhow::Error::msg)?;
    let tls = TlsMaterial::load_dir(&cfg.certs, &id)
        .with_context(|| format!("loading identity {id} from {} (see `ferry cert issue`)", cfg.certs.display()))?;
    Ok(transport::client_endpoint_for(&tls, link)?)
}

/// A client presenting `cfg`'s identity to the cluster `cfg` names (its
/// etcd, else its node list), tuned for `link`.
pub async fn connect_over(cfg: &ClientConfig, link: transport::Link) -> Result<Cluster> {
    let ep = endpoint(cfg, link)?;
    let cluster = if cfg.etcd.endpoints.is_empty() {
        Cluster::new(ep, &cfg.nodes)?
    } else {
        #[cfg(feature = "etcd")]
        {
            let etcd = ferry_protocol::etcd::Etcd::connect(&cfg.etcd).await?;
            let cluster = Cluster::over(ep, etcd.members().await?);
            if cfg.direct.mounts.is_empty() {
                cluster
            } else {
                cluster.with_direct(direct(cfg, &etcd).await?)
            }
        }
        #[cfg(not(feature = "etcd"))]
        anyhow::bail!("etcd.endpoints is set, but this ferry was built without etcd (build feature `etcd`)")
    };
    Ok(cluster.with_replicas(cfg.replicas))
}

/// The stores of `cfg`'s `[direct]` mounts, refusing paths the registry
/// in `etcd` lists as pending.
#[cfg(feature = "etcd")]
async fn direct(
    cfg: &ClientConfig,
    etcd: &ferry_protocol::etcd::Etcd,
) -> Result<std::sync::Arc<dyn ferry_protocol::client::Direct>> {
    #[cfg(feature = "direct")]
    {
        let pending = etcd.pending().await?;
        let mounts = cfg
            .direct
            .mounts
            .iter()
            .map(|(name, m)| {
                let mount = ferry_cloud_tier::config::MountConfig {
                    url: m.url.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                };
                (name.clone(), mount)
            })
            .collect();
        let store = ferry_cloud_tier::direct::DirectStore::open(
            &mounts,
            cfg.direct.max_requests,
            std::sync::Arc::new(move |p: &str| pending.get(p)),
        )
        .context("[direct] in the client config")?;
        Ok(std::sync::Arc::new(store))
    }
    #[cfg(not(feature = "direct"))]
    {
        let _ = (cfg, etcd);
        anyhow::bail!(
            "direct.mounts is set, but this ferry build has no direct store reads (features `mount` or `cloud`)"
        )
    }
}

/// Formats a size for people.
pub fn human(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// `ms` since the Unix epoch as an RFC 3339 time (UTC); "unknown" for 0.
pub fn rfc3339(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
        }
        _ => "unknown".to_string(),
    }
}

/// An entry as `ls --json` and `stat --json` give it.
pub fn entry_json(name: &str, info: &ObjectInfo) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "kind": if info.kind == EntryKind::Dir { "directory" } else { "file" },
        "size": info.size,
        "modified": rfc3339(info.mtime_ms),
        "modified_ms": info.mtime_ms,
        "etag": info.etag,
        "persisted": info.persisted,
    })
}

/// One line describing an entry, for `ls -l` style output.
pub fn describe(name: &str, info: &ObjectInfo) -> String {
    let kind = if info.kind == EntryKind::Dir { "d" } else { "-" };
    let persisted = if info.persisted { "" } else { "  (not yet persisted)" };
    format!("{kind} {:>12} {name}{persisted}", info.size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("ferry://127.0.0.1:7400/datasets/a.bin").expect("valid"),
            Target { node: Some("127.0.0.1:7400".into()), path: "/datasets/a.bin".into() }
        );
        assert_eq!(parse_target("ferry://h:1").expect("valid").path, "/");
        assert_eq!(parse_target("/x/y").expect("valid"), Target { node: None, path: "/x/y".into() });
        for bad in ["x/y", "s3://b/k", "ferry:///x", "ferry://host/x", "/a/../b"] {
            assert!(parse_target(bad).is_err(), "{bad} accepted");
        }
    }
}
