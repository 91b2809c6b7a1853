//! Who may read what: rules per role, checked on every request.
//!
//! A rule is a namespace path, `PATH/**` (the path and everything below
//! it) or `/**` (everything); `{id}` in it stands for the peer's own id.
//! Edge identities may by default read models and their own logs; client
//! identities everything; cache node identities only what nodes ask each
//! other (copies of writes, pages, changes, status) unless `access.cloud`
//! lets them act as clients too. Writes keep their own rules: an edge
//! writes only below `EDGE_PREFIX/ID/`, and a client or cloud identity
//! writes only where it may read.

use serde::{Deserialize, Serialize};

use ferry_protocol::codec::Request;
use ferry_protocol::ids::{Identity, NsPath, Role};

use crate::error::{ConfigError, NodeError};

/// `[access]` in `cloud.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// What edge (robot) identities may read.
    pub edge: Vec<String>,
    /// What client identities may read and write.
    pub client: Vec<String>,
    /// What cache node identities may read and write as clients (what
    /// nodes ask each other is always allowed to them).
    pub cloud: Vec<String>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            edge: vec!["/models/**".into(), "/logs/{id}/**".into()],
            client: vec!["/**".into()],
            cloud: Vec::new(),
        }
    }
}

/// One rule: a path, and whether everything below it is included.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    path: String,
    below: bool,
}

impl Rule {
    fn parse(s: &str) -> Result<Rule, String> {
        let (path, below) = match s.strip_suffix("/**") {
            Some("") => ("/", true),
            Some(p) => (p, true),
            None => (s, false),
        };
        if path.contains('*') {
            return Err(format!("rule {s:?}: `**` only as the last segment (PATH/** or /**)"));
        }
        NsPath::parse(&path.replace("{id}", "id")).map_err(|e| format!("rule {s:?}: {e}"))?;
        Ok(Rule { path: path.to_string(), below })
    }

    fn allows(&self, id: &str, path: &NsPath) -> bool {
        let me = self.path.replace("{id}", id);
        let p = path.as_str();
        p == me || (self.below && (me == "/" || p.strip_prefix(me.as_str()).is_some_and(|rest| rest.starts_with('/'))))
    }
}

/// The rules of a node.
#[derive(Debug, Clone)]
pub struct Access {
    edge: Vec<Rule>,
    client: Vec<Rule>,
    cloud: Vec<Rule>,
    shown: AccessConfig,
}

impl Default for Access {
    fn default() -> Self {
        Access::new(&AccessConfig::default()).expect("the default rules parse")
    }
}

impl Access {
    /// The rules of `cfg`.
    pub fn new(cfg: &AccessConfig) -> Result<Access, ConfigError> {
        let parse = |key: &str, v: &[String]| {
            v.iter()
                .map(|s| Rule::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::Invalid(format!("access.{key}: {e}")))
        };
        Ok(Access {
            edge: parse("edge", &cfg.edge)?,
            client: parse("client", &cfg.client)?,
            cloud: parse("cloud", &cfg.cloud)?,
            shown: cfg.clone(),
        })
    }

    fn rules(&self, role: Role) -> (&[Rule], &str, &[String]) {
        match role {
            Role::Edge => (&self.edge, "edge", &self.shown.edge),
            Role::Client => (&self.client, "client", &self.shown.client),
            Role::Cloud => (&self.cloud, "cloud", &self.shown.cloud),
        }
    }

    /// Whether `peer` may read (or, for a client or node, write) `path`.
    pub fn may(&self, peer: &Identity, path: &str, verb: &str) -> Result<(), NodeError> {
        let path = NsPath::parse(path).map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let (rules, key, shown) = self.rules(peer.role);
        if rules.iter().any(|r| r.allows(peer.id.as_str(), &path)) {
            return Ok(());
        }
        let allowed = if shown.is_empty() { "nothing".to_string() } else { shown.join(", ") };
        Err(NodeError::Unauthorized(format!(
            "permission denied: {peer} may {verb} {allowed} (rule access.{key}), not {path}"
        )))
    }

    /// Checks `req` from `peer` against the rules.
    pub fn check(&self, peer: &Identity, req: &Request) -> Result<(), NodeError> {
        let reads: Vec<&str> = match req {
            // What nodes ask each other.
            Request::Hold { .. } | Request::Release { .. } | Request::Changed { .. } | Request::Peek { .. } => {
                return if peer.role == Role::Cloud {
                    Ok(())
                } else {
                    Err(NodeError::Unauthorized(format!("{peer} is not a cache node; only cache nodes ask this")))
                };
            }
            Request::Hello { .. } | Request::Status => return Ok(()),
            Request::Stat { path }
            | Request::List { path }
            | Request::ReadRange { path, .. }
            | Request::Load { path }
            | Request::Warm { path, .. }
            | Request::Locate { path } => vec![path],
            Request::Announce { entries, .. } => {
                let mut paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
                paths.sort_unstable();
                paths.dedup();
                paths
            }
            // Robots' uploads; what they commit is checked as a write.
            Request::HasChunks { .. } | Request::PutChunk { .. } => {
                return if peer.role == Role::Cloud && self.cloud.is_empty() {
                    self.may(peer, "/", "upload to")
                } else {
                    Ok(())
                };
            }
            _ => Vec::new(),
        };
        for p in reads {
            self.may(peer, p, "read")?;
        }
        // Edge writes follow the edge prefix (checked by the node); others
        // write where they may read.
        if peer.role != Role::Edge {
            for p in req.written_paths() {
                self.may(peer, p, "write")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_protocol::ids::NodeId;

    fn who(role: Role, id: &str) -> Identity {
        Identity { role, id: NodeId::new(id).expect("id") }
    }

    fn read(path: &str) -> Request {
        Request::ReadRange { path: path.into(), offset: 0, len: 1 }
    }

    #[test]
    fn robots_read_models_and_their_own_logs_only() {
        let a = Access::default();
        let robot = who(Role::Edge, "robot-17");
        for ok in ["/models/chunks/ab", "/models", "/logs/robot-17/cam/a.mcap", "/logs/robot-17"] {
            a.check(&robot, &read(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for no in ["/logs/robot-18/cam/a.mcap", "/logs/robot-170/x", "/datasets/a", "/", "/modelsx/a"] {
            let e = a.check(&robot, &read(no)).expect_err(no).to_string();
            assert!(e.contains("access.edge") && e.contains("permission denied"), "{e}");
        }
        assert!(a.check(&robot, &Request::List { path: "/logs".into() }).is_err());
    }

    #[test]
    fn clients_read_everything_and_nodes_only_ask_what_nodes_ask() {
        let a = Access::default();
        let client = who(Role::Client, "client");
        a.check(&client, &read("/datasets/a")).expect("a client reads");
        a.check(&client, &Request::Put { path: "/ckpt/a".into(), len: 1 }).expect("a client writes");
        let node = who(Role::Cloud, "cloud-2");
        let e = a.check(&node, &read("/datasets/a")).expect_err("a node reading as a client").to_string();
        assert!(e.contains("access.cloud"), "{e}");
        a.check(&node, &Request::Peek { path: "/datasets/a".into(), page: 0, etag: "e".into() }).expect("peek");
        assert!(a.check(&client, &Request::Peek { path: "/datasets/a".into(), page: 0, etag: "e".into() }).is_err());
        a.check(&node, &Request::Status).expect("status");
    }

    #[test]
    fn rules_are_checked_when_the_config_is_read() {
        for bad in ["/a/*/b", "logs/**", "/a/../b/**"] {
            let cfg = AccessConfig { client: vec![bad.into()], ..AccessConfig::default() };
            assert!(Access::new(&cfg).is_err(), "{bad} accepted");
        }
        let open = AccessConfig { cloud: vec!["/**".into()], ..AccessConfig::default() };
        Access::new(&open).expect("valid").check(&who(Role::Cloud, "cloud-2"), &read("/x")).expect("allowed");
    }
}
