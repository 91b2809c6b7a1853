//! Who is in the cluster: a member list that is either fixed (a static
//! `nodes = [...]` list) or kept current from etcd (feature `etcd`, see
//! [`crate::etcd`]).
//!
//! A [`Membership`] hands out [`View`]s; each change of the member list
//! makes a view with a higher `epoch`, so a reader can tell in one
//! comparison whether its ring is still current.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::ProtocolError;

/// Default etcd key prefix.
pub const DEFAULT_PREFIX: &str = "/ferry";

/// How to reach etcd (`[cluster.etcd]` in cloud.toml, `[etcd]` in client.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// Endpoints (`http://host:2379` or `https://…`); empty means no etcd.
    pub endpoints: Vec<String>,
    /// Key prefix; clusters sharing one etcd use different prefixes.
    pub prefix: String,
    /// User name, when etcd has authentication on ("" = none).
    pub user: String,
    /// Its password.
    pub password: String,
    /// CA certificate (PEM) of an etcd serving TLS ("" = the system's roots).
    pub ca: String,
    /// Client certificate (PEM) for an etcd that wants one (`--client-cert-auth`); "" = none.
    pub cert: String,
    /// Its private key (PEM).
    pub key: String,
    /// How long one etcd request or connection attempt may take.
    #[serde(with = "humantime_serde")]
    pub timeout: std::time::Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            prefix: DEFAULT_PREFIX.into(),
            user: String::new(),
            password: String::new(),
            ca: String::new(),
            cert: String::new(),
            key: String::new(),
            timeout: std::time::Duration::from_secs(3),
        }
    }
}

/// A path's data held by nodes and not yet in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The sequence number of the write where it was written (higher is newer).
    pub seq: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Ids of the nodes holding it.
    pub holders: Vec<String>,
}

/// One cache node as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id: what the ring is keyed by, so every client agrees on
    /// owners whatever address it reaches the node at.
    pub id: String,
    /// Where clients reach it (`host:port`).
    pub addr: String,
    /// Relative share of the ring (a node with 2 holds about twice the pages of a node with 1).
    #[serde(default = "one")]
    pub capacity: u32,
}

fn one() -> u32 {
    1
}

/// The member list at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Members, sorted by id.
    pub members: Vec<Member>,
    /// Grows with every change.
    pub epoch: u64,
    /// Where the list comes from, for messages ("etcd at http://…", "the configured node list").
    pub source: String,
}

/// A member list that can change while it is used.
#[derive(Debug, Clone)]
pub struct Membership {
    rx: watch::Receiver<Arc<View>>,
    /// Keeps the task that feeds `rx` alive as long as a clone is in use.
    #[cfg(feature = "etcd")]
    _feed: Option<Arc<Feed>>,
}

/// Aborts the task feeding a membership when the last user is gone.
#[cfg(feature = "etcd")]
#[derive(Debug)]
pub(crate) struct Feed(pub(crate) tokio::task::JoinHandle<()>);

#[cfg(feature = "etcd")]
impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Membership {
    /// A list that never changes.
    pub fn fixed(mut members: Vec<Member>) -> Membership {
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let view = View { members, epoch: 1, source: "the configured node list".into() };
        let (tx, rx) = watch::channel(Arc::new(view));
        drop(tx); // a receiver keeps the last value
        Membership {
            rx,
            #[cfg(feature = "etcd")]
            _feed: None,
        }
    }

    /// A list fed by `rx`, which `feed` keeps current.
    #[cfg(feature = "etcd")]
    pub(crate) fn fed(rx: watch::Receiver<Arc<View>>, feed: Feed) -> Membership {
        Membership { rx, _feed: Some(Arc::new(feed)) }
    }

    /// The list now.
    pub fn view(&self) -> Arc<View> {
        self.rx.borrow().clone()
    }

    /// Waits for the next change; `false` once the list can no longer change.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// Parses a static node list: each entry is `ID@HOST:PORT`, or `HOST:PORT`
/// (then the address is the id, so every client must spell it the same way).
pub fn parse_static(nodes: &[String]) -> Result<Vec<Member>, ProtocolError> {
    let mut out: Vec<Member> = Vec::with_capacity(nodes.len());
    for entry in nodes {
        let (id, addr) = match entry.split_once('@') {
            Some((id, addr)) => (id.trim(), addr.trim()),
            None => (entry.trim(), entry.trim()),
        };
        if id.is_empty() || addr.is_empty() || !addr.contains(':') {
            return Err(ProtocolError::connection(format!("node {entry:?}: give HOST:PORT or ID@HOST:PORT")));
        }
        if out.iter().any(|m| m.id == id) {
            return Err(ProtocolError::connection(format!("node {id:?} is listed twice")));
        }
        out.push(Member { id: id.to_string(), addr: addr.to_string(), capacity: 1 });
    }
    Ok(out)
}

/// Exponential backoff with jitter (0.5-1.5x), from 200 ms up to about
/// 10 s after `failures` failures in a row, so a fleet of clients does not
/// come back in lockstep.
pub fn backoff(failures: u32) -> std::time::Duration {
    let base = std::time::Duration::from_millis(200)
        .saturating_mul(1 << failures.min(6))
        .min(std::time::Duration::from_secs(10));
    base.mul_f64(0.5 + rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_lists_name_nodes_by_id_or_address() {
        let m = parse_static(&["a@10.0.0.1:7400".into(), "10.0.0.2:7400".into()]).expect("valid");
        assert_eq!(m[0], Member { id: "a".into(), addr: "10.0.0.1:7400".into(), capacity: 1 });
        assert_eq!(m[1].id, "10.0.0.2:7400");
        for bad in
            [vec!["@h:1".to_string()], vec!["a@".into()], vec!["nohost".into()], vec!["x@h:1".into(), "x@h:2".into()]]
        {
            assert!(parse_static(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_fixed_list_is_sorted_and_does_not_change() {
        let mut m = Membership::fixed(vec![
            Member { id: "b".into(), addr: "h:2".into(), capacity: 1 },
            Member { id: "a".into(), addr: "h:1".into(), capacity: 1 },
        ]);
        assert_eq!(m.view().members[0].id, "a");
        assert!(!futures::executor::block_on(m.changed()));
    }
}
