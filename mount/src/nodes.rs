//! The seam between the mount and the cache nodes it talks to.
//!
//! [`MountFs`](crate::MountFs) is generic over [`Nodes`], so its logic runs
//! in unit tests against an in-memory double, and in production against
//! [`Cluster`] (each call goes to the owner of the path or page).

use std::future::Future;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ferry_protocol::client::{Cluster, Written};
use ferry_protocol::codec::{DirEntry, ObjectInfo, PageRun};
use ferry_protocol::ProtocolError;

/// What the mount asks of the cache nodes.
pub trait Nodes: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The nodes' page size.
    fn page_size(&self) -> impl Future<Output = Result<u64, ProtocolError>> + Send;
    /// Metadata of `path`.
    fn stat(&self, path: &str) -> impl Future<Output = Result<ObjectInfo, ProtocolError>> + Send;
    /// Entries directly under `path`.
    fn list(&self, path: &str) -> impl Future<Output = Result<Vec<DirEntry>, ProtocolError>> + Send;
    /// Bytes `[start, end)` of `path`, all within page `page` (`page_size` bytes a page).
    fn read_page(
        &self,
        path: &str,
        page: u64,
        page_size: u64,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Bytes, ProtocolError>> + Send;
    /// The whole of `path` into `out`; the bytes written.
    fn read_all_to(
        &self,
        path: &str,
        out: &mut tokio::fs::File,
    ) -> impl Future<Output = Result<u64, ProtocolError>> + Send;
    /// Writes the file at `local` as `path`: durable on the node when this
    /// returns. A node whose inbox holds `local` adopts the file itself.
    fn put_file(&self, path: &str, local: &Path) -> impl Future<Output = Result<Written, ProtocolError>> + Send;
    /// The inbox of `path`'s node, when that node runs on this host.
    fn inbox_for(&self, path: &str) -> impl Future<Output = Option<PathBuf>> + Send;
    /// Deletes `path`.
    fn delete(&self, path: &str) -> impl Future<Output = Result<(), ProtocolError>> + Send;
    /// Renames `from` to `to`.
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = Result<bool, ProtocolError>> + Send;
    /// The file of persisted object `path` on this host, when its node runs
    /// here over a `file://` store.
    fn locate(&self, path: &str) -> impl Future<Output = Option<ferry_protocol::codec::Located>> + Send;
    /// Makes directory `path` in the store.
    fn mkdir(&self, path: &str) -> impl Future<Output = Result<(), ProtocolError>> + Send;
    /// Removes empty directory `path` from the store.
    fn rmdir(&self, path: &str) -> impl Future<Output = Result<(), ProtocolError>> + Send;
    /// Tells the nodes caching these pages that `reader` reads them in this
    /// order (they evict by it); the members that could not be told.
    fn announce(&self, reader: &str, runs: Vec<PageRun>) -> impl Future<Output = Vec<(String, ProtocolError)>> + Send;
}

impl Nodes for Cluster {
    async fn page_size(&self) -> Result<u64, ProtocolError> {
        Cluster::page_size(self, "/").await
    }
    async fn stat(&self, path: &str) -> Result<ObjectInfo, ProtocolError> {
        Cluster::stat(self, path).await
    }
    async fn list(&self, path: &str) -> Result<Vec<DirEntry>, ProtocolError> {
        Cluster::list(self, path).await
    }
    async fn read_page(
        &self,
        path: &str,
        page: u64,
        page_size: u64,
        start: u64,
        end: u64,
    ) -> Result<Bytes, ProtocolError> {
        Cluster::read_page(self, path, page, page_size, start, end).await
    }
    async fn read_all_to(&self, path: &str, out: &mut tokio::fs::File) -> Result<u64, ProtocolError> {
        Cluster::read_to(self, path, 0, None, out).await
    }
    async fn put_file(&self, path: &str, local: &Path) -> Result<Written, ProtocolError> {
        Cluster::put_file(self, path, local).await
    }
    async fn inbox_for(&self, path: &str) -> Option<PathBuf> {
        Cluster::inbox_for(self, path).await
    }
    async fn delete(&self, path: &str) -> Result<(), ProtocolError> {
        Cluster::delete(self, path).await
    }
    async fn rename(&self, from: &str, to: &str) -> Result<bool, ProtocolError> {
        Cluster::rename(self, from, to).await
    }
    async fn locate(&self, path: &str) -> Option<ferry_protocol::codec::Located> {
        Cluster::locate(self, path).await
    }
    async fn mkdir(&self, path: &str) -> Result<(), ProtocolError> {
        Cluster::mkdir(self, path).await
    }
    async fn rmdir(&self, path: &str) -> Result<(), ProtocolError> {
        Cluster::rmdir(self, path).await
    }
    async fn announce(&self, reader: &str, runs: Vec<PageRun>) -> Vec<(String, ProtocolError)> {
        Cluster::announce(self, reader, &runs).await
    }
}
