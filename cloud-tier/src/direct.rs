//! Reading the object stores themselves when no cache node answers.
//!
//! A client with `[direct]` mounts in client.toml (off by default) reads
//! through [`DirectStore`] once every owner of what it asks for is
//! unreachable: the same [`Namespace`] rules as a node (mount resolution,
//! directories of the store, `file://` confinement), with the reader's own
//! store credentials. Two rules keep it safe:
//!
//! - a path with writes that the nodes hold and the store does not have
//!   yet (the pending-write registry names it) is `Unavailable`, never its
//!   older version from the store;
//! - at most `max_requests` store requests are in flight in one process,
//!   so readers that all lost their nodes at once do not all fall on the
//!   store at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use object_store::{GetOptions, GetRange};

use ferry_protocol::client::Direct;
use ferry_protocol::codec::{DirEntry, ObjectInfo};
use ferry_protocol::ids::NsPath;
use ferry_protocol::membership::Pending;
use ferry_protocol::{ErrorCode, ProtocolError};

use crate::config::MountConfig;
use crate::error::{ConfigError, NodeError};
use crate::metrics::Metrics;
use crate::namespace::Namespace;

/// Default of [`DirectStore`]'s cap on store requests in flight.
pub const DEFAULT_MAX_REQUESTS: usize = 4;

/// Which paths have data on the nodes that the store does not have yet.
pub type PendingLookup = Arc<dyn Fn(&str) -> Option<Pending> + Send + Sync>;

/// The stores of a client's `[direct]` mounts.
pub struct DirectStore {
    ns: Namespace,
    permits: tokio::sync::Semaphore,
    pending: PendingLookup,
}

impl std::fmt::Debug for DirectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectStore")
            .field("mounts", &self.ns.mounts().map(|m| m.name.to_string()).collect::<Vec<_>>())
            .field("max_requests", &self.permits.available_permits())
            .finish()
    }
}

fn remote(e: NodeError) -> ProtocolError {
    ProtocolError::Remote { code: e.code(), message: format!("{e} (read from the store directly)") }
}

impl DirectStore {
    /// Opens `mounts` (the same keys as a node's `[mounts]`); at most
    /// `max_requests` store requests at once; `pending` tells which paths
    /// must not be read from the store.
    pub fn open(
        mounts: &BTreeMap<String, MountConfig>,
        max_requests: usize,
        pending: PendingLookup,
    ) -> Result<DirectStore, ConfigError> {
        if max_requests == 0 {
            return Err(ConfigError::Invalid("direct.max_requests must be at least 1".into()));
        }
        let ns = Namespace::open(mounts, Arc::new(Metrics::new()))?;
        Ok(DirectStore { ns, permits: tokio::sync::Semaphore::new(max_requests), pending })
    }

    /// The path, refused while nodes hold data of it the store lacks.
    fn readable(&self, path: &str) -> Result<NsPath, ProtocolError> {
        let p = NsPath::parse(path)
            .map_err(|e| ProtocolError::Remote { code: ErrorCode::InvalidInput, message: e.to_string() })?;
        if let Some(pending) = (self.pending)(p.as_str()) {
            return Err(ProtocolError::Remote {
                code: ErrorCode::Unavailable,
                message: format!(
                    "{p}: its newest {} bytes are not in the store yet and none of the nodes holding them ({}) answers",
                    pending.size,
                    pending.holders.join(", ")
                ),
            });
        }
        Ok(p)
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits.acquire().await.expect("the semaphore is never closed")
    }

    async fn stat_of(&self, path: &str) -> Result<ObjectInfo, ProtocolError> {
        let p = self.readable(path)?;
        let _permit = self.permit().await;
        self.ns.head(&p).await.map_err(remote)
    }

    async fn list_of(&self, path: &str) -> Result<Vec<DirEntry>, ProtocolError> {
        let p = self.readable(path)?;
        let _permit = self.permit().await;
        self.ns.list(&p).await.map_err(remote)
    }

    async fn range_of(&self, path: &str, offset: u64, len: u64) -> Result<Vec<Bytes>, ProtocolError> {
        let p = self.readable(path)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let r = self.ns.resolve(&p).map_err(remote)?;
        let _permit = self.permit().await;
        let opts = GetOptions { range: Some(GetRange::Bounded(offset..offset + len)), ..Default::default() };
        let result =
            r.mount.store.get_opts(&r.location, opts).await.map_err(|e| remote(NodeError::from_store(path, e)))?;
        let mut stream = crate::payload::into_stream(result);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.push(chunk.map_err(|e| remote(NodeError::from_store(path, e)))?);
        }
        Ok(out)
    }
}

impl Direct for DirectStore {
    fn stat<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<ObjectInfo, ProtocolError>> {
        Box::pin(self.stat_of(path))
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, ProtocolError>> {
        Box::pin(self.list_of(path))
    }

    fn read_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<Bytes>, ProtocolError>> {
        Box::pin(self.range_of(path, offset, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(dir: &std::path::Path) -> BTreeMap<String, MountConfig> {
        let cfg: MountConfig =
            toml::from_str(&format!("url = \"file://{}\"", dir.display())).expect("mount config parses");
        BTreeMap::from([("/d".to_string(), cfg)])
    }

    #[tokio::test]
    async fn reads_the_store_and_refuses_pending_paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("sub/empty")).expect("mkdir");
        std::fs::write(tmp.path().join("sub/a.bin"), b"0123456789").expect("write");
        std::fs::write(tmp.path().join("sub/b.bin"), b"old").expect("write");
        let pending: PendingLookup = Arc::new(|p: &str| {
            (p == "/d/sub/b.bin").then(|| Pending { seq: 7, size: 5, holders: vec!["cloud-2".into()] })
        });
        let d = DirectStore::open(&mounts(tmp.path()), 2, pending).expect("open");
        let info = Direct::stat(&d, "/d/sub/a.bin").await.expect("stat");
        assert_eq!(info.size, 10);
        let bytes: Vec<u8> = Direct::read_range(&d, "/d/sub/a.bin", 3, 4).await.expect("read").concat();
        assert_eq!(bytes, b"3456");
        let names: Vec<String> = Direct::list(&d, "/d/sub").await.expect("list").into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a.bin", "b.bin", "empty"]);
        // The store's old version of a path with pending writes is never served.
        for e in [
            Direct::stat(&d, "/d/sub/b.bin").await.expect_err("pending stat"),
            Direct::read_range(&d, "/d/sub/b.bin", 0, 3).await.expect_err("pending read"),
        ] {
            assert!(
                matches!(&e, ProtocolError::Remote { code: ErrorCode::Unavailable, message } if message.contains("cloud-2")),
                "{e}"
            );
        }
        let e = Direct::stat(&d, "/d/../etc/passwd").await.expect_err("traversal");
        assert!(matches!(e, ProtocolError::Remote { code: ErrorCode::InvalidInput, .. }), "{e}");
        assert!(matches!(
            Direct::stat(&d, "/d/nothing").await,
            Err(ProtocolError::Remote { code: ErrorCode::NotFound, .. })
        ));
        assert!(DirectStore::open(&mounts(tmp.path()), 0, Arc::new(|_: &str| None)).is_err());
    }
}
