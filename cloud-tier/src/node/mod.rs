//! Request handling of a cache node, and the thin QUIC adapter around it.
//!
//! Files: this one (the node and its read, write and namespace requests),
//! `edge` (chunks and commits from robots), `inbox` (same-host adoption),
//! `read_stream` (the bytes of one read), `adapter` (QUIC), `running`
//! (a configured node wired together).
//!
//! [`CacheNode`] is plain async logic: `handle_*` methods taking paths and
//! returning data or a [`NodeError`], testable without a socket. [`serve`]
//! only accepts connections, checks the peer's certificate identity, reads
//! one request per stream and writes the answer. [`RunningNode`] wires a
//! configured node together: namespace, cache, QUIC listener, metrics.

use std::sync::Arc;

use ferry_protocol::codec::{DirEntry, EntryKind, ObjectInfo, PageRun};
use ferry_protocol::ids::NsPath;

use crate::cache::{CacheOptions, PageCache};
use crate::chunks::ChunkStore;
use crate::clock::Clock;
pub use crate::config::{DEFAULT_CHUNK_STORE, DEFAULT_EDGE_PREFIX};
use crate::error::NodeError;
use crate::journal::{journal_etag, Entry, Journal};
use crate::metrics::Metrics;
use crate::namespace::Namespace;

pub use ferry_predictor::ledger::READAHEAD_PAGES;

/// Objects uploaded from the journal whose origin a node remembers; past
/// this the memory is cleared (a client then merely misses its local copy).
const MAX_ORIGINS: usize = 100_000;

pub mod access;
mod adapter;
mod cluster;
mod edge;
mod inbox;
mod read_stream;
mod running;

pub use adapter::serve;
pub use cluster::{Peers, Registry};
pub use edge::{Committed, MAX_CHUNK_WIRE};
pub use read_stream::ReadStream;
pub use running::{RunningNode, StartError};

use inbox::{open_inbox, Inbox};

/// A cache node's request logic.
#[derive(Debug)]
pub struct CacheNode {
    cache: Arc<PageCache>,
    journal: Arc<Journal>,
    node_id: String,
    metrics: Arc<Metrics>,
    inbox: Inbox,
    /// Path → (store version tag, journal version tag it was uploaded from).
    origins: Arc<std::sync::Mutex<std::collections::HashMap<String, (String, String)>>>,
    chunks: ChunkStore,
    /// Edge devices write only below `EDGE_PREFIX/DEVICE_ID/`.
    edge_prefix: String,
    /// Who may read and write what.
    access: access::Access,
    /// Where demand reads are recorded as an access trace, if anywhere.
    recorder: Option<Arc<crate::recorder::Recorder>>,
    prefetch: Option<Arc<crate::prefetch::NodePrefetch>>,
    /// The cluster around the node, once it joined one.
    peers: std::sync::OnceLock<Arc<Peers>>,
    /// (path, write seq) of each upload, for the cluster task.
    uploaded: tokio::sync::mpsc::UnboundedSender<(String, u64)>,
    uploaded_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(String, u64)>>>,
}

pub(crate) fn parse_path(p: &str) -> Result<NsPath, NodeError> {
    NsPath::parse(p).map_err(|e| NodeError::InvalidInput(e.to_string()))
}

/// Longest file name a `file://` store's file system takes.
const LOCAL_NAME_MAX: usize = 255;

/// How long a node tries to tell a peer of a change in the store.
const CHANGED_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `dir` as the start of the paths below it.
fn dir_prefix(dir: &NsPath) -> String {
    if dir.is_root() {
        "/".to_string()
    } else {
        format!("{dir}/")
    }
}

/// A directory that exists only because writes below it are pending.
fn pending_dir() -> ObjectInfo {
    ObjectInfo {
        kind: EntryKind::Dir,
        size: 0,
        mtime_ms: 0,
        etag: String::new(),
        persisted: false,
        origin: String::new(),
    }
}

impl CacheNode {
    /// A node over `ns` with the given cache options.
    pub fn new(
        ns: Namespace,
        opts: CacheOptions,
        clock: Arc<dyn Clock>,
        node_id: &str,
    ) -> Result<CacheNode, NodeError> {
        let metrics = ns.metrics().clone();
        let journal_dir = opts.disk_dir.join("journal");
        let journal = Arc::new(Journal::open(&journal_dir)?);
        let inbox = open_inbox(&journal_dir.join("inbox"))?;
        let chunks = ChunkStore::open(&opts.disk_dir.join("chunks"), DEFAULT_CHUNK_STORE)?;
        let cache = Arc::new(PageCache::open(ns, opts, clock)?);
        let (uploaded, uploaded_rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(CacheNode {
            peers: std::sync::OnceLock::new(),
            uploaded,
            uploaded_rx: std::sync::Mutex::new(Some(uploaded_rx)),
            cache,
            journal,
            node_id: node_id.to_string(),
            metrics,
            inbox,
            origins: Arc::default(),
            access: access::Access::default(),
            chunks,
            edge_prefix: DEFAULT_EDGE_PREFIX.to_string(),
            recorder: None,
            prefetch: None,
        })
    }

    /// Records demand reads as an access trace in `dir` (see `recorder`).
    pub fn with_trace_dir(mut self, dir: &std::path::Path, page_size: u64) -> Result<CacheNode, NodeError> {
        let rec = crate::recorder::Recorder::create(dir, &self.node_id, page_size)
            .map_err(|e| NodeError::InvalidInput(format!("trace_dir {}: {e}", dir.display())))?;
        tracing::info!(path = %rec.path().display(), "recording reads as an access trace");
        self.recorder = Some(Arc::new(rec));
        Ok(self)
    }

    /// Prefetches with `predictor` (see `ferry_predictor::models::by_name`;
    /// `none` turns prefetch off), holding at most `budget` bytes of
    /// prefetched pages not read yet.
    pub fn with_prefetch(mut self, predictor: &str, budget: u64) -> Result<CacheNode, NodeError> {
        if predictor == "none" {
            self.prefetch = None;
            return Ok(self);
        }
        let p = crate::prefetch::NodePrefetch::new(
            self.cache.clone(),
            self.metrics.clone(),
            self.cache.clock().clone(),
            predictor,
            budget,
        )
        .map_err(|e| NodeError::InvalidInput(format!("prefetch: {e}")))?;
        self.prefetch = Some(Arc::new(p));
        Ok(self)
    }

    /// Notes a demand read: in the trace and for the prefetcher. The first
    /// read in a folder lists it once for both of them.
    fn on_read(self: &Arc<Self>, reader: &str, path: &str, info: &ObjectInfo, offset: u64, len: u64) {
        let for_trace = self.recorder.as_ref().and_then(|rec| {
            rec.access(reader, path, offset, len);
            rec.first_in_folder(path).map(|dir| (rec.clone(), dir))
        });
        let for_prefetch = self.prefetch.as_ref().and_then(|p| {
            let nspath = NsPath::parse(path).ok()?;
            p.access(reader, &nspath, info, offset, len).map(|dir| (p.clone(), dir))
        });
        let Some(dir) = for_trace.as_ref().map(|(_, d)| d).or(for_prefetch.as_ref().map(|(_, d)| d)).cloned() else {
            return;
        };
        let node = self.clone();
        tokio::spawn(async move {
            let listed = node.handle_list(&dir).await;
            if let Some((rec, _)) = for_trace {
                match &listed {
                    Ok(entries) => rec.files(entries.iter().filter(|e| e.info.kind == EntryKind::File).map(|e| {
                        let full = if dir == "/" { format!("/{}", e.name) } else { format!("{dir}/{}", e.name) };
                        (full, e.info.size)
                    })),
                    Err(e) => tracing::warn!(%dir, error = %e, "trace: folder not listed"),
                }
            }
            if let Some((p, _)) = for_prefetch {
                p.add_dir(&dir, listed.map_err(|e| e.to_string()));
            }
        });
    }

    /// Parses and resolves a path that is to be written: it must name a file, not a mount point.
    fn writable(&self, path: &str) -> Result<(NsPath, crate::namespace::Resolved), NodeError> {
        let path = parse_path(path)?;
        let resolved = self.cache.namespace().resolve(&path)?;
        if resolved.location.as_ref().is_empty() || path.as_str() == &*resolved.mount.name {
            return Err(NodeError::InvalidInput(format!("{path} is a mount point, not a file")));
        }
        // Refused now, not at upload: a write acknowledged here must reach the store.
        if let Some(crate::dirs::Dirs::Local(_)) = &resolved.mount.dirs {
            if let Some(long) = resolved.location.parts().find(|p| p.as_ref().len() > LOCAL_NAME_MAX) {
                return Err(NodeError::InvalidInput(format!(
                    "{path}: the name {:?}... is longer than a local store's {LOCAL_NAME_MAX} bytes",
                    long.as_ref().chars().take(32).collect::<String>()
                )));
            }
            if resolved.mount.dirs.as_ref().and_then(|d| d.local_path(&resolved.location)).is_none() {
                return Err(NodeError::Unauthorized(crate::confined::Outside(path.to_string()).to_string()));
            }
        }
        Ok((path, resolved))
    }

    /// `path` changed in the store through this node: forgets what this
    /// node cached of it (metadata, listings of it and its directory) and
    /// tells the other members to do the same.
    fn store_changed(&self, path: &NsPath) {
        self.cache.invalidate(path);
        let Some(peers) = self.peers().cloned() else { return };
        let others: Vec<String> = peers
            .cluster
            .membership()
            .view()
            .members
            .iter()
            .filter(|m| m.id != peers.self_id)
            .map(|m| m.id.clone())
            .collect();
        if others.is_empty() {
            return;
        }
        let path = path.to_string();
        tokio::spawn(async move {
            let tell = |id: String| {
                let (peers, path) = (peers.clone(), path.clone());
                async move {
                    let told = tokio::time::timeout(CHANGED_LIMIT, async {
                        peers.cluster.node(&id).await?.changed(&path).await
                    })
                    .await;
                    if !matches!(told, Ok(Ok(()))) {
                        tracing::debug!(node = %id, %path, "a peer was not told of a change; its listing expires by TTL");
                    }
                }
            };
            futures::future::join_all(others.into_iter().map(tell)).await;
        });
    }

    /// Answers `Changed` (from a peer): forgets what is cached of `path`.
    pub fn handle_changed(&self, path: &str) -> Result<(), NodeError> {
        self.cache.invalidate(&parse_path(path)?);
        Ok(())
    }

    /// Answers `Announce`: `reader` (of client `client`) will read these
    /// pages in this order; the tiers evict by it. Paths must be namespace
    /// paths; nothing changes when one is not or the order is too long.
    pub fn handle_announce(
        &self,
        client: &str,
        reader: &str,
        append: bool,
        runs: &[PageRun],
    ) -> Result<usize, NodeError> {
        use crate::cache::announced::{FutureError, MAX_POSITIONS};
        // Refused before the pages are spelled out, so a forged frame cannot
        // make the node allocate them.
        let pages: u64 = runs.iter().map(|r| r.end - r.first).sum();
        if pages > MAX_POSITIONS as u64 {
            return Err(NodeError::InvalidInput(FutureError::TooLong(pages as usize).to_string()));
        }
        let mut order = Vec::with_capacity(pages as usize);
        for run in runs {
            let path: Arc<str> = Arc::from(parse_path(&run.path)?.as_str());
            order.extend((run.first..run.end).map(|p| (path.clone(), p)));
        }
        self.cache.announce(&format!("{client}/{reader}"), order, append)
    }

    /// Sets who may read and write what (`[access]`).
    pub fn with_access(mut self, cfg: &access::AccessConfig) -> Result<CacheNode, crate::error::ConfigError> {
        self.access = access::Access::new(cfg)?;
        Ok(self)
    }

    /// The node's access rules.
    pub fn access(&self) -> &access::Access {
        &self.access
    }

    /// The write-back journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Uploads journaled writes until the task is dropped.
    pub async fn run_uploader(self: Arc<Self>) {
        let node = self.clone();
        let ns = self.cache.namespace().clone();
        let origins = self.origins.clone();
        let uploaded = self.uploaded.clone();
        if let Some(rx) = self.uploaded_rx.lock().expect("uploaded lock poisoned").take() {
            tokio::spawn(self.clone().run_cluster(rx));
        }
        self.journal
            .clone()
            .run_uploader(ns, move |e, etag| {
                if let Some(etag) = etag {
                    let mut o = origins.lock().expect("origins lock poisoned");
                    if o.len() >= MAX_ORIGINS {
                        o.clear();
                    }
                    o.insert(e.path.clone(), (etag, journal_etag(e.seq)));
                }
                if let Ok(p) = NsPath::parse(&e.path) {
                    node.store_changed(&p);
                }
                let _ = uploaded.send((e.path.clone(), e.write_seq()));
            })
            .await;
    }

    fn pending_info(e: &Entry) -> ObjectInfo {
        ObjectInfo {
            kind: EntryKind::File,
            size: e.size,
            mtime_ms: e.mtime_ms,
            etag: journal_etag(e.seq),
            persisted: false,
            origin: String::new(),
        }
    }

    /// Whether some pending write lies below `dir`.
    fn pending_below(&self, dir: &NsPath) -> Vec<(String, ObjectInfo)> {
        let prefix = dir_prefix(dir);
        let mut out = Vec::new();
        for e in self.journal.entries() {
            if let Some(rest) = e.path.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    Some((d, _)) => out.push((d.to_string(), pending_dir())),
                    None => out.push((rest.to_string(), Self::pending_info(&e))),
                }
            }
        }
        out
    }

    /// The node's page cache.
    pub fn cache(&self) -> &Arc<PageCache> {
        &self.cache
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers `Stat`.
    pub async fn handle_stat(&self, path: &str) -> Result<ObjectInfo, NodeError> {
        let path = parse_path(path)?;
        if let Some(e) = self.journal.pending(path.as_str()) {
            return Ok(Self::pending_info(&e));
        }
        if self.journal.is_tombstoned(path.as_str()) {
            return Err(NodeError::NotFound(path.to_string()));
        }
        self.check_not_elsewhere(&path)?;
        // Asked before the store: a write below `path` may finish uploading
        // (and leave the journal) while the store is asked, and the store may
        // have answered before the upload landed.
        let prefix = dir_prefix(&path);
        let pending_below = self.journal.has_below(&prefix);
        match self.cache.stat(&path).await {
            Err(NodeError::NotFound(m)) => {
                if pending_below || self.journal.has_below(&prefix) {
                    Ok(pending_dir())
                } else {
                    Err(NodeError::NotFound(m))
                }
            }
            Ok(mut info) => {
                if let Some((store, journal)) = self.origins.lock().expect("origins lock poisoned").get(path.as_str()) {
                    if *store == info.etag {
                        info.origin = journal.clone();
                    }
                }
                Ok(info)
            }
            other => other,
        }
    }

    /// Answers `List`.
    pub async fn handle_list(&self, path: &str) -> Result<Vec<DirEntry>, NodeError> {
        let path = parse_path(path)?;
        let pending = self.pending_below(&path);
        let mut entries = match self.cache.list(&path).await {
            Ok(e) => e.to_vec(),
            Err(NodeError::NotFound(_)) if !pending.is_empty() => Vec::new(),
            Err(e) => return Err(e),
        };
        let tomb = |name: &str| {
            let p = if path.is_root() { format!("/{name}") } else { format!("{path}/{name}") };
            self.journal.is_tombstoned(&p)
        };
        entries.retain(|e| !tomb(&e.name));
        for (name, info) in pending {
            match entries.iter_mut().find(|e| e.name == name) {
                Some(e) if info.kind == EntryKind::File => e.info = info,
                Some(_) => {}
                None => entries.push(DirEntry { name, info }),
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Answers `Put`: stores exactly `len` bytes from `body` at `path`.
    /// Returns whether the object store already has them, and the object's version tag.
    pub async fn handle_put<R>(&self, path: &str, len: u64, body: &mut R) -> Result<(bool, String), NodeError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        let (path, resolved) = self.writable(path)?;
        let mut w = self.journal.begin(&path).await?;
        w.write_from(body, len).await?;
        let entry = self.journal.commit(w).await?;
        self.committed(&path, &resolved.mount, &entry).await
    }

    /// After a journal commit: the answer to the writer (waiting for the
    /// upload on write-through mounts).
    async fn committed(
        &self,
        path: &NsPath,
        mount: &crate::namespace::Mount,
        entry: &Entry,
    ) -> Result<(bool, String), NodeError> {
        self.cache.invalidate(path);
        if !mount.write_through {
            self.spread_write(path, mount.write_replicas, entry).await?;
        }
        self.journal.ready(entry.seq);
        if mount.write_through {
            // The uploader picks the entry up at once; wait for it.
            if !self.journal.wait_uploaded(entry, std::time::Duration::from_secs(3600)).await {
                return Err(NodeError::store(format!("{path}: upload did not finish")));
            }
            let j = journal_etag(entry.seq);
            let etag = match self.origins.lock().expect("origins lock poisoned").get(path.as_str()) {
                Some((store, origin)) if *origin == j => store.clone(),
                _ => String::new(),
            };
            return Ok((true, etag));
        }
        Ok((false, journal_etag(entry.seq)))
    }

    /// Answers `Locate`: the file of a persisted object of a `file://`
    /// store. Objects with writes pending here or elsewhere, and objects of
    /// other stores, are refused (the client reads them the usual way).
    pub async fn handle_locate(&self, path: &str) -> Result<ferry_protocol::codec::Located, NodeError> {
        let path = parse_path(path)?;
        if self.journal.pending(path.as_str()).is_some() {
            return Err(NodeError::Unavailable(format!("{path} is not in the store yet")));
        }
        self.check_not_elsewhere(&path)?;
        let r = self.cache.namespace().resolve(&path)?;
        let Some(file) = r.mount.dirs.as_ref().and_then(|d| d.local_path(&r.location)) else {
            return Err(NodeError::Unsupported(format!("{path}: not a file:// store")));
        };
        // The store now, not the cached metadata: the file named must be
        // the version whose tag is given.
        let info = self.cache.namespace().head(&path).await?;
        if info.kind != EntryKind::File {
            return Err(NodeError::InvalidInput(format!("{path} is a directory")));
        }
        if self.cache.cached_info(&path).is_some_and(|cached| cached.etag != info.etag) {
            // Replaced in the store behind the cache's back.
            self.cache.invalidate(&path);
        }
        let meta = std::fs::metadata(&file)?;
        if !meta.is_file() || meta.len() != info.size {
            return Err(NodeError::Changed(path.to_string()));
        }
        Ok(ferry_protocol::codec::Located::of(file.to_string_lossy().into_owned(), &meta, info.etag))
    }

    /// Answers `Mkdir`.
    pub async fn handle_mkdir(&self, path: &str) -> Result<(), NodeError> {
        let (path, _) = self.writable(path)?;
        if self.journal.pending(path.as_str()).is_some() || self.journal.has_below(&dir_prefix(&path)) {
            return Err(NodeError::Exists(path.to_string()));
        }
        self.cache.namespace().mkdir(&path).await?;
        self.store_changed(&path);
        Ok(())
    }

    /// Answers `Rmdir`.
    pub async fn handle_rmdir(&self, path: &str) -> Result<(), NodeError> {
        let (path, _) = self.writable(path)?;
        if self.journal.has_below(&dir_prefix(&path)) {
            return Err(NodeError::NotEmpty(path.to_string()));
        }
        if self.journal.pending(path.as_str()).is_some() {
            return Err(NodeError::InvalidInput(format!("{path} is a file, not a directory")));
        }
        self.cache.namespace().rmdir(&path).await?;
        self.store_changed(&path);
        Ok(())
    }

    /// Answers `Delete`.
    pub async fn handle_delete(&self, path: &str) -> Result<(), NodeError> {
        use object_store::ObjectStoreExt;
        let path = parse_path(path)?;
        let r = self.cache.namespace().resolve(&path)?;
        let was_pending = self.journal.discard(path.as_str());
        self.cache.invalidate(&path);
        if !was_pending {
            // Stores differ on deleting a missing object; ask first so every store answers alike.
            let info = self.cache.namespace().head(&path).await?;
            if info.kind == EntryKind::Dir {
                return Err(NodeError::InvalidInput(format!("{path} is a directory")));
            }
        }
        let result = match r.mount.store.delete(&r.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(NodeError::from_store(path.as_str(), e)),
        };
        // Again after the store changed: a stat that raced the delete must not stay cached.
        self.store_changed(&path);
        result
    }

    /// Answers `Rename`; returns whether the renamed object is already in the store.
    pub async fn handle_rename(&self, from: &str, to: &str) -> Result<bool, NodeError> {
        use object_store::ObjectStoreExt;
        let from = parse_path(from)?;
        let to = parse_path(to)?;
        let rf = self.cache.namespace().resolve(&from)?;
        let rt = self.cache.namespace().resolve(&to)?;
        self.cache.invalidate(&from);
        self.cache.invalidate(&to);
        if self.journal.rename(from.as_str(), to.as_str())? {
            // An older persisted copy at the old name goes away with the rename.
            let _ = rf.mount.store.delete(&rf.location).await;
            self.store_changed(&from);
            return Ok(false);
        }
        let info = self.cache.namespace().head(&from).await?;
        if info.kind == EntryKind::Dir {
            return Err(NodeError::InvalidInput(format!("{from} is a directory; only files can be renamed")));
        }
        self.journal.discard(to.as_str());
        if Arc::ptr_eq(&rf.mount.store, &rt.mount.store) {
            rf.mount
                .store
                .copy(&rf.location, &rt.location)
                .await
                .map_err(|e| NodeError::from_store(from.as_str(), e))?;
        } else {
            let bytes = rf.mount.store.get(&rf.location).await.map_err(|e| NodeError::from_store(from.as_str(), e))?;
            let bytes = bytes.bytes().await.map_err(|e| NodeError::from_store(from.as_str(), e))?;
            rt.mount.store.put(&rt.location, bytes.into()).await.map_err(|e| NodeError::from_store(to.as_str(), e))?;
        }
        rf.mount.store.delete(&rf.location).await.map_err(|e| NodeError::from_store(from.as_str(), e))?;
        self.store_changed(&from);
        self.store_changed(&to);
        // Uploaded from the journal: the copy keeps that origin, so a writer's
        // local copy of those bytes still matches under the new name.
        let origin = self.origins.lock().expect("origins lock poisoned").remove(from.as_str());
        if let Some((_, journal)) = origin.filter(|(store, _)| *store == info.etag) {
            if let Ok(moved) = self.cache.namespace().head(&to).await {
                self.origins.lock().expect("origins lock poisoned").insert(to.to_string(), (moved.etag, journal));
            }
        }
        Ok(true)
    }

    /// Answers `ReadRange`: the number of bytes that will follow and a stream of them.
    pub async fn handle_read(&self, path: &str, offset: u64, len: u64) -> Result<(u64, ReadStream), NodeError> {
        let path = parse_path(path)?;
        if self.journal.is_tombstoned(path.as_str()) {
            return Err(NodeError::NotFound(path.to_string()));
        }
        if let Some(e) = self.journal.pending(path.as_str()) {
            // Open now: the upload may finish and unlink the entry at any moment,
            // and an open file stays readable. If it is already gone, the store has it.
            match std::fs::File::open(self.journal.data_path(&e)) {
                Ok(file) => {
                    let end = offset.saturating_add(len).min(e.size);
                    let start = offset.min(end);
                    let mut stream = ReadStream::new(self.cache.clone(), path, Self::pending_info(&e), start, end);
                    stream.journal = Some(Arc::new(file));
                    return Ok((end - start, stream));
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.check_not_elsewhere(&path)?;
        let info = self.cache.stat(&path).await?;
        if info.kind == EntryKind::Dir {
            return Err(NodeError::InvalidInput(format!("{path} is a directory")));
        }
        let end = offset.saturating_add(len).min(info.size);
        let start = offset.min(end);
        Ok((end - start, ReadStream::new(self.cache.clone(), path, info, start, end)))
    }

    /// Answers `Load`: brings a file, or every file under a directory, into the cache.
    pub async fn handle_load(&self, path: &str) -> Result<(u64, u64), NodeError> {
        let path = parse_path(path)?;
        let info = self.cache.stat(&path).await?;
        let files = if info.kind == EntryKind::Dir {
            self.cache.namespace().walk(&path).await?
        } else {
            vec![(path, info.size)]
        };
        let mut bytes = 0;
        for (p, _) in &files {
            let (_, mut s) = self.handle_read(p.as_str(), 0, u64::MAX).await?;
            while let Some(b) = s.next().await {
                bytes += b?.len() as u64;
            }
        }
        Ok((files.len() as u64, bytes))
    }
}
