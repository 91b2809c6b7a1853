//! Names that cross the wire, as newtypes.

use std::fmt;
use std::str::FromStr;

/// What a node is, as named in its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A cache node in front of object stores.
    Cloud,
    /// A robot's agent.
    Edge,
    /// A reader: training machine, CLI.
    Client,
}

impl Role {
    /// The role's name as written in certificates and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cloud => "cloud",
            Role::Edge => "edge",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cloud" => Ok(Role::Cloud),
            "edge" => Ok(Role::Edge),
            "client" => Ok(Role::Client),
            other => Err(format!("unknown role {other:?} (expected cloud, edge or client)")),
        }
    }
}

/// A node's id: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// Validates and wraps an id.
    pub fn new(s: &str) -> Result<NodeId, IdError> {
        let ok =
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(NodeId(s.to_string()))
        } else {
            Err(IdError(format!("invalid node id {s:?}: use 1-64 characters of A-Z a-z 0-9 - _")))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a peer is, taken from its verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The peer's role.
    pub role: Role,
    /// The peer's id.
    pub id: NodeId,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.id)
    }
}

/// A node id or namespace path that breaks the rules; the message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(String);

/// A validated absolute namespace path such as `/datasets/a/b.bin`.
///
/// Rules: starts with `/`; no empty, `.` or `..` segments; no NUL or
/// backslash; at most 4096 bytes. The root is `/`. A trailing slash is
/// dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsPath(String);

impl NsPath {
    /// Validates a path.
    pub fn parse(s: &str) -> Result<NsPath, IdError> {
        if !s.starts_with('/') {
            return Err(IdError(format!("path {s:?} must start with '/'")));
        }
        if s.len() > 4096 {
            return Err(IdError("path longer than 4096 bytes".into()));
        }
        if s.contains('\0') || s.contains('\\') {
            return Err(IdError(format!("path {s:?} contains a NUL or backslash")));
        }
        let trimmed = s.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(NsPath("/".into()));
        }
        for seg in trimmed[1..].split('/') {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(IdError(format!("path {s:?} has an empty, '.' or '..' segment")));
            }
        }
        Ok(NsPath(trimmed.to_string()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments after the root.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }
}

impl fmt::Display for NsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_reject_traversal() {
        for bad in ["", "a/b", "/a/../b", "/..", "/a//b", "/./a", "/a\\b", "/a\0"] {
            assert!(NsPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(NsPath::parse("/a/b/").expect("valid").as_str(), "/a/b");
        assert!(NsPath::parse("///").expect("root").is_root());
        assert_eq!(NsPath::parse("/x/y.bin").expect("valid").segments().collect::<Vec<_>>(), ["x", "y.bin"]);
    }

    #[test]
    fn node_ids_are_restricted() {
        assert!(NodeId::new("robot-17").is_ok());
        for bad in ["", "a b", "a/b", "a.b", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
