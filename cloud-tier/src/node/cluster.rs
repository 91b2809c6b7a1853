//! The node as a member of a cluster: its share of the ring (prefetch only
//! fills pages it owns), copies of write-back writes on other nodes before
//! a write is acknowledged (`write_replicas`), the pending-write registry
//! in etcd (so no node serves the store's older version of a path whose
//! newest data sits on nodes that are gone), holders taking over the
//! upload when the writer is gone, and `Status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_protocol::client::Cluster;
use ferry_protocol::codec::NodeStatus;
use ferry_protocol::ids::NsPath;
use ferry_protocol::membership::Pending;

use crate::error::NodeError;
use crate::journal::Entry;

use super::{parse_path, CacheNode};

/// How long a node waits for a peer's cached copy of a page before going
/// to the store (a peer that does not answer in time is skipped for a while).
const PEEK_LIMIT: Duration = Duration::from_millis(300);
/// The longest a node waits for a peer that keeps sending.
const PEEK_MAX: Duration = Duration::from_secs(5);

/// How often holders look for writers that are gone.
const TAKEOVER_CHECK: Duration = Duration::from_secs(1);

/// The pending-write registry, where the cluster has one (etcd).
#[derive(Debug, Clone)]
pub struct Registry {
    #[cfg(feature = "etcd")]
    etcd: ferry_protocol::etcd::Etcd,
    #[cfg(feature = "etcd")]
    pending: ferry_protocol::etcd::PendingWatch,
}

impl Registry {
    /// A registry in `etcd`.
    #[cfg(feature = "etcd")]
    pub async fn new(etcd: ferry_protocol::etcd::Etcd) -> Result<Registry, ferry_protocol::ProtocolError> {
        let pending = etcd.pending().await?;
        Ok(Registry { etcd, pending })
    }

    fn get(&self, path: &str) -> Option<Pending> {
        #[cfg(feature = "etcd")]
        return self.pending.get(path);
        #[cfg(not(feature = "etcd"))]
        {
            let _ = path;
            None
        }
    }

    fn all(&self) -> Vec<(String, Pending)> {
        #[cfg(feature = "etcd")]
        return self.pending.all();
        #[cfg(not(feature = "etcd"))]
        Vec::new()
    }

    async fn put(&self, path: &str, p: &Pending) -> Result<(), ferry_protocol::ProtocolError> {
        #[cfg(feature = "etcd")]
        return self.etcd.put_pending(path, p).await;
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (path, p);
            Ok(())
        }
    }

    async fn clear(&self, path: &str, seq: u64) -> Result<(), ferry_protocol::ProtocolError> {
        #[cfg(feature = "etcd")]
        return self.etcd.clear_pending(path, seq).await;
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (path, seq);
            Ok(())
        }
    }
}

/// What a node knows of the cluster around it.
#[derive(Debug)]
pub struct Peers {
    /// This node's id.
    pub self_id: String,
    /// A client over the members (this node's identity), for copies and hand-overs.
    pub cluster: Cluster,
    registry: Option<Registry>,
    /// Without a registry: how long a writer must be unreachable before
    /// its held writes are uploaded here.
    takeover_after: Duration,
    /// Holders of this node's pending writes, by path: (write seq, holder ids).
    holders: Mutex<HashMap<String, (u64, Vec<String>)>>,
    /// Writers of held copies first found unreachable, by writer id.
    unreachable_since: Mutex<HashMap<String, Instant>>,
}

impl Peers {
    /// The cluster around node `self_id`, as `cluster` sees it.
    pub fn new(self_id: &str, cluster: Cluster, registry: Option<Registry>, takeover_after: Duration) -> Peers {
        Peers {
            self_id: self_id.to_string(),
            cluster,
            registry,
            takeover_after,
            holders: Mutex::default(),
            unreachable_since: Mutex::default(),
        }
    }

    /// Whether page `page` of `path` is this node's to cache: the owner
    /// readers ask first for it (of a mount with `replicas` owners per
    /// page, readers spread consecutive pages over them).
    pub fn owns(&self, path: &str, page: u64, replicas: usize) -> bool {
        let owners = self.cluster.owners(path, page);
        let r = replicas.clamp(1, owners.len().max(1));
        owners.get((page % r as u64) as usize).is_none_or(|o| *o == self.self_id)
    }

    /// Asks the page's other owner (its owner before this node joined, when
    /// this node is the first owner now) for a cached copy.
    async fn peer_page(&self, path: &str, etag: &str, page: u64) -> Option<bytes::Bytes> {
        let owners = self.cluster.owners(path, page);
        let other = owners.iter().take(2).find(|id| **id != self.self_id && self.cluster.healthy(id))?;
        let ask = async { self.cluster.node(other).await.ok()?.peek(path, page, etag).await.ok().flatten() };
        tokio::pin!(ask);
        // A peer still sending is busy (its link full of reads), not gone:
        // wait for it, up to PEEK_MAX; one that sends nothing for
        // PEEK_LIMIT is skipped for a while and the store asked instead.
        let give_up = tokio::time::Instant::now() + PEEK_MAX;
        let mut seen = self.cluster.received(other);
        loop {
            match tokio::time::timeout(PEEK_LIMIT, &mut ask).await {
                Ok(page) => return page,
                Err(_) => {
                    let now = self.cluster.received(other);
                    if now.is_some() && now > seen && tokio::time::Instant::now() < give_up {
                        seen = now;
                        continue;
                    }
                    self.cluster.failed(other);
                    return None;
                }
            }
        }
    }

    fn is_member(&self, id: &str) -> bool {
        self.cluster.membership().view().members.iter().any(|m| m.id == id)
    }
}

impl CacheNode {
    /// Makes this node a member of the cluster `peers` describes.
    pub fn join(&self, peers: Arc<Peers>) {
        if peers.cluster.membership().view().members.len() > 1 || peers.registry.is_some() {
            self.cache.ask_peers_first(Arc::new(PeerSource(peers.clone())));
        }
        if let Some(p) = &self.prefetch {
            let owner = peers.clone();
            let ns = self.cache.namespace().clone();
            p.only_pages(Box::new(move |path, page| {
                let replicas = NsPath::parse(path)
                    .ok()
                    .and_then(|p| ns.resolve(&p).ok())
                    .and_then(|r| r.mount.replicas)
                    .unwrap_or(1);
                owner.owns(path, page, replicas)
            }));
        }
        let _ = self.peers.set(peers);
    }

    /// The cluster around this node, if it is in one.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.get()
    }

    /// Nodes a write-back write under a mount must be durable on.
    fn write_copies(&self, configured: Option<usize>) -> usize {
        let members = self.peers().map_or(1, |p| p.cluster.membership().view().members.len());
        configured.unwrap_or(if members >= 2 { 2 } else { 1 })
    }

    /// After a write-back entry is durable here: copies it to other nodes
    /// until `write_replicas` nodes hold it, and records it as pending in
    /// the registry. On failure the entry is dropped and the writer told why.
    pub(super) async fn spread_write(
        &self,
        path: &NsPath,
        configured: Option<usize>,
        entry: &Entry,
    ) -> Result<(), NodeError> {
        let copies = self.write_copies(configured);
        let Some(peers) = self.peers().cloned() else {
            if copies > 1 {
                self.journal.discard(path.as_str());
                return Err(NodeError::Unavailable(format!(
                    "{path}: the write needs {copies} copies and this node is in no cluster"
                )));
            }
            return Ok(());
        };
        let mut holders = vec![peers.self_id.clone()];
        if copies > 1 {
            let candidates: Vec<String> =
                peers.cluster.owners(path.as_str(), 0).into_iter().filter(|id| *id != peers.self_id).collect();
            let mut errors = Vec::new();
            for id in candidates {
                if holders.len() >= copies {
                    break;
                }
                match self.copy_to(&peers.cluster, &id, entry).await {
                    Ok(()) => holders.push(id),
                    Err(e) => {
                        tracing::warn!(%path, node = %id, error = %e, "could not copy a write to a replica");
                        errors.push(format!("{id}: {e}"));
                    }
                }
            }
            if holders.len() < copies {
                self.journal.discard(path.as_str());
                for id in holders.iter().skip(1) {
                    if let Ok(c) = peers.cluster.node(id).await {
                        let _ = c.release(path.as_str(), entry.seq).await;
                    }
                }
                return Err(NodeError::Unavailable(format!(
                    "{path}: the write needs {copies} copies, only {} node(s) took one{}",
                    holders.len(),
                    if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
                )));
            }
        }
        if let Some(reg) = &peers.registry {
            let record = Pending { seq: entry.seq, size: entry.size, holders: holders.clone() };
            if let Err(e) = reg.put(path.as_str(), &record).await {
                // Still acknowledged: the copies are durable; only the
                // warning to other nodes is missing while etcd is away.
                tracing::warn!(%path, error = %e, "could not record a pending write in etcd");
            }
        }
        peers.holders.lock().expect("holders lock poisoned").insert(path.to_string(), (entry.seq, holders));
        Ok(())
    }

    async fn copy_to(&self, cluster: &Cluster, id: &str, entry: &Entry) -> Result<(), NodeError> {
        let conn = cluster.node(id).await.map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let mut file =
            tokio::io::AsyncReadExt::take(tokio::fs::File::open(self.journal.data_path(entry)).await?, entry.size);
        conn.hold(&entry.path, entry.seq, entry.mtime_ms, entry.size, &mut file)
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))
    }

    /// Before this node leaves: every write of its own not yet in the store
    /// and held by no other member gets a copy on the path's next owner
    /// (recorded as a holder), which uploads it once this node is out of
    /// the ring. Returns the writes handed over.
    pub async fn hand_over(&self) -> usize {
        let Some(peers) = self.peers().cloned() else { return 0 };
        let mut handed = 0;
        for e in self.journal.entries().into_iter().filter(|e| e.held_for.is_none()) {
            let known = peers.holders.lock().expect("holders lock poisoned").get(&e.path).cloned();
            let mut holders = known
                .filter(|(s, _)| *s == e.seq)
                .map(|(_, h)| h)
                .or_else(|| {
                    peers.registry.as_ref().and_then(|r| r.get(&e.path)).filter(|p| p.seq == e.seq).map(|p| p.holders)
                })
                .unwrap_or_else(|| vec![peers.self_id.clone()]);
            if holders.iter().any(|h| *h != peers.self_id && peers.is_member(h)) {
                continue;
            }
            let targets: Vec<String> =
                peers.cluster.owners(&e.path, 0).into_iter().filter(|id| *id != peers.self_id).collect();
            for id in targets {
                match self.copy_to(&peers.cluster, &id, &e).await {
                    Ok(()) => {
                        holders.push(id.clone());
                        if let Some(reg) = &peers.registry {
                            let record = Pending { seq: e.seq, size: e.size, holders: holders.clone() };
                            if let Err(err) = reg.put(&e.path, &record).await {
                                tracing::warn!(path = %e.path, error = %err, "could not record a handed-over write");
                            }
                        }
                        peers
                            .holders
                            .lock()
                            .expect("holders lock poisoned")
                            .insert(e.path.clone(), (e.seq, holders.clone()));
                        tracing::info!(path = %e.path, node = %id, "handed a pending write over before leaving");
                        handed += 1;
                        break;
                    }
                    Err(err) => tracing::warn!(path = %e.path, node = %id, error = %err, "could not hand a write over"),
                }
            }
        }
        handed
    }

    /// Answers `Hold` from node `writer`: keeps a durable copy of its write.
    pub async fn handle_hold<R>(
        &self,
        writer: &str,
        path: &str,
        seq: u64,
        mtime_ms: i64,
        len: u64,
        body: &mut R,
    ) -> Result<(), NodeError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        let (path, _) = self.writable(path)?;
        let mut w = self.journal.begin_held(&path, writer, seq, mtime_ms).await?;
        w.write_from(body, len).await?;
        self.journal.commit(w).await?;
        self.cache.invalidate(&path);
        Ok(())
    }

    /// Answers `Release`: write `seq` of `path` is in the store.
    pub fn handle_release(&self, path: &str, seq: u64) -> Result<(), NodeError> {
        let path = parse_path(path)?;
        if self.journal.release(path.as_str(), seq) {
            self.cache.invalidate(&path);
        }
        Ok(())
    }

    /// Answers `Warm`: fetches the pages of `path` in `[first, first +
    /// count)` it does not hold, a few at a time.
    pub async fn handle_warm(&self, path: &str, first: u64, count: u64) -> Result<(u64, u64), NodeError> {
        use futures::StreamExt;
        let path = parse_path(path)?;
        self.check_not_elsewhere(&path)?;
        let info = self.cache.stat(&path).await?;
        if info.kind == ferry_protocol::codec::EntryKind::Dir {
            return Err(NodeError::InvalidInput(format!("{path} is a directory")));
        }
        let ps = self.cache.page_size();
        let pages = info.size.div_ceil(ps);
        let end = first.saturating_add(count).min(pages);
        let wanted: Vec<u64> = (first.min(end)..end).filter(|&p| !self.cache.holds(&path, &info, p)).collect();
        let fetched = futures::stream::iter(wanted)
            .map(|p| {
                let (path, info) = (&path, &info);
                async move {
                    let n = match self.cache.page(path, info, p).await? {
                        crate::cache::PageRead::Ready(b) => b.len() as u64,
                        crate::cache::PageRead::Filling(mut fill) => {
                            let mut n = 0u64;
                            while let Some(piece) = fill.next().await {
                                n += piece?.iter().map(|b| b.len() as u64).sum::<u64>();
                            }
                            n
                        }
                    };
                    Ok::<u64, NodeError>(n)
                }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        let mut out = (0, 0);
        for r in fetched {
            out.0 += 1;
            out.1 += r?;
        }
        Ok(out)
    }

    /// Answers `Peek`: the page if this node has it cached at `etag`.
    pub async fn handle_peek(&self, path: &str, page: u64, etag: &str) -> Result<bytes::Bytes, NodeError> {
        let path = parse_path(path)?;
        let info = self.cache.stat(&path).await?;
        if info.etag != etag {
            return Err(NodeError::NotFound(format!("{path} at version {etag}")));
        }
        self.cache
            .cached_page(&path, &info, page)?
            .ok_or_else(|| NodeError::NotFound(format!("{path} page {page} (not cached)")))
    }

    /// Answers `Status`.
    pub fn handle_status(&self) -> NodeStatus {
        let (pages, memory_bytes, disk_bytes) = self.cache.usage();
        let mut st =
            NodeStatus { node_id: self.node_id.clone(), pages, memory_bytes, disk_bytes, ..NodeStatus::default() };
        for e in self.journal.entries() {
            if e.uploads_here() {
                st.pending += 1;
                st.pending_bytes += e.size;
            } else {
                st.held += 1;
                st.held_bytes += e.size;
            }
        }
        st
    }

    /// Refuses to answer for `path` from the store when the registry says
    /// its newest data sits on other nodes (which the client should ask).
    pub(super) fn check_not_elsewhere(&self, path: &NsPath) -> Result<(), NodeError> {
        let Some(peers) = self.peers() else { return Ok(()) };
        let Some(reg) = &peers.registry else { return Ok(()) };
        match reg.get(path.as_str()) {
            Some(p) if !p.holders.contains(&peers.self_id) => {
                tracing::warn!(%path, holders = %p.holders.join(","), "asked for a path whose newest write is on other nodes");
                Err(NodeError::Unavailable(format!(
                    "{path}: its newest write ({} bytes) is held by {}, not by this node; ask them, or retry once they are back",
                    p.size,
                    p.holders.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// After an upload: the holders drop their copies and the registry
    /// forgets the write.
    pub(super) async fn uploaded(&self, path: &str, seq: u64) {
        let Some(peers) = self.peers().cloned() else { return };
        let known = {
            let mut map = peers.holders.lock().expect("holders lock poisoned");
            match map.get(path) {
                Some((s, _)) if *s == seq => map.remove(path).map(|(_, h)| h),
                _ => None,
            }
        };
        let holders = known
            .or_else(|| peers.registry.as_ref().and_then(|r| r.get(path)).filter(|p| p.seq == seq).map(|p| p.holders))
            .unwrap_or_default();
        tracing::debug!(%path, seq, holders = %holders.join(","), "uploaded; releasing the copies");
        for id in holders.iter().filter(|id| **id != peers.self_id) {
            let released = match peers.cluster.node(id).await {
                Ok(c) => c.release(path, seq).await,
                Err(e) => Err(e),
            };
            if let Err(e) = released {
                tracing::info!(%path, node = %id, error = %e, "holder not told of the upload; it checks the registry itself");
            }
        }
        if let Some(reg) = &peers.registry {
            if let Err(e) = reg.clear(path, seq).await {
                tracing::warn!(%path, error = %e, "could not clear a pending write in etcd");
            }
        }
    }

    /// Watches the cluster for what this node must do: upload the held
    /// copies of writers that are gone, drop copies of writes that reached
    /// the store without word reaching this node.
    pub async fn run_cluster(self: Arc<Self>, mut uploaded: tokio::sync::mpsc::UnboundedReceiver<(String, u64)>) {
        let mut tick = tokio::time::interval(TAKEOVER_CHECK);
        loop {
            tokio::select! {
                done = uploaded.recv() => match done {
                    Some((path, seq)) => self.uploaded(&path, seq).await,
                    None => return,
                },
                _ = tick.tick() => self.take_over().await,
            }
        }
    }

    async fn take_over(&self) {
        let Some(peers) = self.peers().cloned() else { return };
        // Records of this node's writes that left its journal without the
        // record being cleared (a crash between upload and clearing).
        if let Some(reg) = &peers.registry {
            for (path, record) in reg.all() {
                if record.holders.first() == Some(&peers.self_id) && self.journal.pending(&path).is_none() {
                    tracing::info!(%path, "clearing the pending record of a write already uploaded");
                    self.uploaded(&path, record.seq).await;
                }
            }
        }
        // Per writer, asked once a round however many of its writes are held here.
        let mut gone_by_writer: HashMap<String, bool> = HashMap::new();
        for e in self.journal.entries() {
            let Some((writer, seq)) = e.held_for.clone() else { continue };
            if e.promoted {
                continue;
            }
            let record = peers.registry.as_ref().map(|r| r.get(&e.path));
            if let Some(record) = &record {
                // The registry knows: no record or a newer one means this
                // copy reached the store or was replaced.
                if record.as_ref().is_none_or(|r| r.seq != seq) {
                    if self.journal.release(&e.path, seq) {
                        tracing::info!(path = %e.path, "dropped a held copy the store has now");
                    }
                    continue;
                }
            }
            let gone = match gone_by_writer.get(&writer) {
                Some(g) => *g,
                None => {
                    let g = if record.is_some() {
                        !peers.is_member(&writer)
                    } else {
                        self.unreachable_for(&peers, &writer).await >= peers.takeover_after
                    };
                    gone_by_writer.insert(writer.clone(), g);
                    g
                }
            };
            if gone {
                tracing::warn!(path = %e.path, %writer, "writer is gone; uploading its write from the copy here");
                if let Err(err) = self.journal.promote(&e.path) {
                    tracing::warn!(path = %e.path, error = %err, "could not take a held write over");
                }
            }
        }
    }

    /// How long `writer` has been unreachable (zero if it answers now).
    async fn unreachable_for(&self, peers: &Peers, writer: &str) -> Duration {
        let reachable = match peers.cluster.node(writer).await {
            Ok(c) => tokio::time::timeout(Duration::from_secs(2), c.status()).await.is_ok_and(|r| r.is_ok()),
            Err(_) => false,
        };
        let mut since = peers.unreachable_since.lock().expect("unreachable lock poisoned");
        if reachable {
            since.remove(writer);
            return Duration::ZERO;
        }
        since.entry(writer.to_string()).or_insert_with(Instant::now).elapsed()
    }
}

/// Missing pages asked of other nodes first.
#[derive(Debug)]
struct PeerSource(Arc<Peers>);

impl crate::cache::PeerPages for PeerSource {
    fn page<'a>(
        &'a self,
        path: &'a str,
        etag: &'a str,
        page: u64,
    ) -> futures::future::BoxFuture<'a, Option<bytes::Bytes>> {
        Box::pin(self.0.peer_page(path, etag, page))
    }
}
