//! Request handling of a cache node, and the thin QUIC adapter around it.
//!
//! [`CacheNode`] is plain async logic: `handle_*` methods taking paths and
//! returning data or a [`NodeError`], testable without a socket. [`serve`]
//! only accepts connections, checks the peer's certificate identity, reads
//! one request per stream and writes the answer. [`RunningNode`] wires a
//! configured node together: namespace, cache, QUIC listener, metrics.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::task::JoinHandle;

use ferry_protocol::codec::{ChunkHash, DirEntry, EntryKind, ObjectInfo, Request, Response};
use ferry_protocol::ids::{Identity, NodeId, NsPath, Role};
use ferry_protocol::tls::{self, TlsMaterial};
use ferry_protocol::{transport, wire, ErrorCode, ProtocolError, PROTOCOL_VERSION};

use crate::cache::{CacheOptions, PageCache, PageFill, PageRead};
use crate::chunks::ChunkStore;
use crate::clock::{Clock, SystemClock};
use crate::config::CloudConfig;
use crate::error::{ConfigError, NodeError};
use crate::journal::{journal_etag, Entry, Journal};
use crate::metrics::{self, Metrics};
use crate::namespace::Namespace;

/// Pages fetched ahead of a sequential read inside one request.
pub const READAHEAD_PAGES: u64 = 4;

/// Objects uploaded from the journal whose origin a node remembers; past
/// this the memory is cleared (a client then merely misses its local copy).
const MAX_ORIGINS: usize = 100_000;

/// Where clients on this host leave files for [`CacheNode::handle_adopt`].
#[derive(Debug)]
struct Inbox {
    dir: std::path::PathBuf,
    token: String,
}

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
    /// Where demand reads are recorded as an access trace, if anywhere.
    recorder: Option<Arc<crate::recorder::Recorder>>,
    prefetch: Option<Arc<crate::prefetch::NodePrefetch>>,
}

/// Default of [`CloudConfig::edge_prefix`].
pub const DEFAULT_EDGE_PREFIX: &str = "/logs";
/// Default of [`CloudConfig::chunk_store`] in bytes.
pub const DEFAULT_CHUNK_STORE: u64 = 2 << 30;

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Durable; whether the store has it already, and its version tag.
    Done(bool, String),
    /// Nothing written: these chunks are not here.
    Missing(Vec<ChunkHash>),
}

/// Makes the inbox directory (owner-only) and writes a fresh token into it.
fn open_inbox(dir: &std::path::Path) -> Result<Inbox, NodeError> {
    use rand::Rng;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let token: String = {
        let mut rng = rand::rng();
        (0..16).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
    };
    let tmp = dir.join(".node.tmp");
    std::fs::write(&tmp, &token)?;
    std::fs::rename(&tmp, dir.join(ferry_protocol::client::INBOX_TOKEN_FILE))?;
    Ok(Inbox { dir: dir.to_path_buf(), token })
}

fn parse_path(p: &str) -> Result<NsPath, NodeError> {
    NsPath::parse(p).map_err(NodeError::InvalidInput)
}

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
        Ok(CacheNode {
            cache,
            journal,
            node_id: node_id.to_string(),
            metrics,
            inbox,
            origins: Arc::default(),
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
        let p = crate::prefetch::NodePrefetch::new(self.cache.clone(), self.metrics.clone(), predictor, budget)
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

    /// Sets where edge devices may write (`prefix/DEVICE_ID/...`) and the
    /// chunk store's budget.
    pub fn with_edge(mut self, prefix: &str, chunk_bytes: u64) -> Result<CacheNode, NodeError> {
        let prefix = parse_path(prefix)?;
        self.edge_prefix = if prefix.is_root() { String::new() } else { prefix.to_string() };
        self.chunks.set_budget(chunk_bytes);
        Ok(self)
    }

    /// Whether `peer` may change `path`: edge devices only below their own prefix.
    pub fn may_write(&self, peer: &Identity, path: &str) -> Result<(), NodeError> {
        if peer.role != Role::Edge {
            return Ok(());
        }
        let own = format!("{}/{}/", self.edge_prefix, peer.id);
        let path = parse_path(path)?;
        if path.as_str().starts_with(&own) {
            Ok(())
        } else {
            Err(NodeError::Unauthorized(format!("{peer} may write only below {own}, not {path}")))
        }
    }

    /// Parses and resolves a path that is to be written: it must name a file, not a mount point.
    fn writable(&self, path: &str) -> Result<(NsPath, crate::namespace::Resolved), NodeError> {
        let path = parse_path(path)?;
        let resolved = self.cache.namespace().resolve(&path)?;
        if resolved.location.as_ref().is_empty() {
            return Err(NodeError::InvalidInput(format!("{path} is a mount point, not a file")));
        }
        Ok((path, resolved))
    }

    /// Answers `HasChunks`.
    pub fn handle_has_chunks(&self, chunks: &[ChunkHash]) -> Vec<ChunkHash> {
        self.chunks.missing(chunks)
    }

    /// Answers `PutChunk`: `wire` is the chunk as sent.
    pub async fn handle_put_chunk(
        &self,
        hash: &ChunkHash,
        raw_len: u32,
        codec: ferry_protocol::codec::ChunkCodec,
        wire: &[u8],
    ) -> Result<(), NodeError> {
        if self.chunks.has(hash) {
            return Ok(());
        }
        let raw = crate::chunks::decode(hash, raw_len, codec, wire)?;
        self.metrics.chunk_received(raw.len() as u64, wire.len() as u64);
        self.chunks.put(hash, raw).await
    }

    /// Answers `Commit`: writes `path` from chunks through the journal.
    pub async fn handle_commit(&self, path: &str, size: u64, chunks: &[ChunkHash]) -> Result<Committed, NodeError> {
        let (path, resolved) = self.writable(path)?;
        let missing = self.chunks.missing(chunks);
        if !missing.is_empty() {
            return Ok(Committed::Missing(missing));
        }
        let mut w = self.journal.begin(&path).await?;
        let mut total = 0u64;
        for h in chunks {
            let Some(bytes) = self.chunks.read(h).await? else {
                return Ok(Committed::Missing(vec![*h]));
            };
            total += bytes.len() as u64;
            if total > size {
                break;
            }
            w.write(&bytes).await?;
        }
        if total != size {
            return Err(NodeError::InvalidInput(format!("{path}: chunks hold {total}+ bytes, the commit says {size}")));
        }
        let entry = self.journal.commit(w).await?;
        let (persisted, etag) = self.committed(&path, resolved.mount.write_through, &entry).await?;
        Ok(Committed::Done(persisted, etag))
    }

    /// The write-back journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Uploads journaled writes until the task is dropped.
    pub async fn run_uploader(self: Arc<Self>) {
        let cache = self.cache.clone();
        let ns = self.cache.namespace().clone();
        let origins = self.origins.clone();
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
                    cache.invalidate(&p);
                }
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
        let mut entries = match self.cache.namespace().list(&path).await {
            Ok(e) => e,
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
        use tokio::io::AsyncReadExt;
        let (path, resolved) = self.writable(path)?;
        let mut w = self.journal.begin(&path).await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = body.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(NodeError::InvalidInput(format!("{path}: body ended after {} of {len} bytes", len - left)));
            }
            w.write(&buf[..n]).await?;
            left -= n as u64;
        }
        let entry = self.journal.commit(w).await?;
        self.committed(&path, resolved.mount.write_through, &entry).await
    }

    /// After a journal commit: the answer to the writer (waiting for the
    /// upload on write-through mounts).
    async fn committed(&self, path: &NsPath, write_through: bool, entry: &Entry) -> Result<(bool, String), NodeError> {
        self.cache.invalidate(path);
        if write_through {
            // The uploader picks the entry up at once; wait for it.
            if !self.journal.wait_uploaded(entry, std::time::Duration::from_secs(3600)).await {
                return Err(NodeError::Store(format!("{path}: upload did not finish")));
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

    /// Answers `Adopt`: takes over the file `name` in this node's inbox,
    /// `len` bytes, as the object `path`, without copying it.
    pub async fn handle_adopt(&self, path: &str, name: &str, len: u64) -> Result<(bool, String), NodeError> {
        let (path, resolved) = self.writable(path)?;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 255
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(NodeError::InvalidInput(format!("{name:?} is not a plain file name in the inbox")));
        }
        let entry = self.journal.adopt(&path, &self.inbox.dir.join(name), len).await?;
        self.committed(&path, resolved.mount.write_through, &entry).await
    }

    /// The inbox directory clients on this host may hand files over in.
    pub fn inbox_dir(&self) -> &std::path::Path {
        &self.inbox.dir
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
        self.cache.invalidate(&path);
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
            self.cache.invalidate(&from);
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
        self.cache.invalidate(&from);
        self.cache.invalidate(&to);
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

struct Cursor {
    fill: PageFill,
    /// Offset in the page of the next chunk's first byte.
    at: u64,
    /// Wanted window of the page.
    want: (u64, u64),
    page_start: u64,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor").field("at", &self.at).field("want", &self.want).finish()
    }
}

/// The bytes of a `ReadRange`, page by page, in order.
#[derive(Debug)]
pub struct ReadStream {
    cache: Arc<PageCache>,
    path: NsPath,
    info: ObjectInfo,
    pos: u64,
    end: u64,
    prefetched_to: u64,
    current: Option<Cursor>,
    ready: VecDeque<Bytes>,
    /// Set when the object is served from the write-back journal.
    journal: Option<Arc<std::fs::File>>,
}

impl ReadStream {
    fn new(cache: Arc<PageCache>, path: NsPath, info: ObjectInfo, pos: u64, end: u64) -> ReadStream {
        ReadStream {
            cache,
            path,
            info,
            pos,
            end,
            prefetched_to: 0,
            current: None,
            ready: VecDeque::new(),
            journal: None,
        }
    }

    async fn next_from_journal(&mut self) -> Option<Result<Bytes, NodeError>> {
        let file = self.journal.clone().expect("journal read");
        if self.pos >= self.end {
            return None;
        }
        let n = (self.end - self.pos).min(self.cache.page_size());
        let pos = self.pos;
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; n as usize];
            file.read_exact_at(&mut buf, pos)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| NodeError::Store(format!("journal read task: {e}")))
        .and_then(|r| r.map_err(NodeError::Io));
        self.pos += n;
        Some(r)
    }

    /// The next piece of the range; `None` at its end.
    pub async fn next(&mut self) -> Option<Result<Bytes, NodeError>> {
        if self.journal.is_some() {
            return self.next_from_journal().await;
        }
        let ps = self.cache.page_size();
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Some(Ok(b));
            }
            if let Some(cur) = &mut self.current {
                match cur.fill.next().await {
                    Some(Ok(chunks)) => {
                        for c in chunks {
                            let (s, e) = (cur.at, cur.at + c.len() as u64);
                            cur.at = e;
                            let lo = s.max(cur.want.0);
                            let hi = e.min(cur.want.1);
                            if lo < hi {
                                self.ready.push_back(c.slice((lo - s) as usize..(hi - s) as usize));
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.current = None;
                        return Some(Err(e));
                    }
                    None => {
                        if cur.at < cur.want.1 {
                            let msg = format!("{} page {} ended early", self.path, cur.page_start / ps);
                            self.current = None;
                            return Some(Err(NodeError::Changed(msg)));
                        }
                        self.pos = cur.page_start + cur.want.1;
                        self.current = None;
                        continue;
                    }
                }
            }
            if self.pos >= self.end {
                return None;
            }
            let page = self.pos / ps;
            let page_start = page * ps;
            let want = (self.pos - page_start, (self.end - page_start).min(ps));
            // Read ahead within this request.
            let last_page = (self.end - 1) / ps;
            let ahead_to = (page + READAHEAD_PAGES).min(last_page);
            let from = self.prefetched_to.max(page + 1);
            for p in from..=ahead_to {
                self.cache.prefetch(&self.path, &self.info, p);
            }
            self.prefetched_to = self.prefetched_to.max(ahead_to + 1);
            match self.cache.page(&self.path, &self.info, page).await {
                Ok(PageRead::Ready(b)) => {
                    if (b.len() as u64) < want.1 {
                        return Some(Err(NodeError::Corrupt(format!("{} page {page} is short", self.path))));
                    }
                    self.pos = page_start + want.1;
                    return Some(Ok(b.slice(want.0 as usize..want.1 as usize)));
                }
                Ok(PageRead::Filling(fill)) => {
                    self.current = Some(Cursor { fill, at: 0, want, page_start });
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

fn error_response(e: &NodeError) -> Response {
    Response::Error { code: e.code(), message: e.to_string() }
}

async fn handle_stream(
    node: Arc<CacheNode>,
    peer: Arc<Identity>,
    reader: Arc<str>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<(), ProtocolError> {
    let req = match wire::read_request(&mut recv).await {
        Ok(r) => r,
        Err(ProtocolError::Malformed(m)) => {
            wire::write_response(&mut send, &Response::Error { code: ErrorCode::InvalidInput, message: m }).await?;
            send.finish()?;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let t0 = Instant::now();
    let op = match &req {
        Request::Hello { .. } => "hello",
        Request::Stat { .. } => "stat",
        Request::List { .. } => "list",
        Request::ReadRange { .. } => "read",
        Request::Load { .. } => "load",
        Request::Put { .. } => "put",
        Request::Delete { .. } => "delete",
        Request::Rename { .. } => "rename",
        Request::Adopt { .. } => "adopt",
        Request::HasChunks { .. } => "has_chunks",
        Request::PutChunk { .. } => "put_chunk",
        Request::Commit { .. } => "commit",
    };
    // Edge devices change only their own prefix.
    let writes: Vec<&str> = match &req {
        Request::Put { path, .. } | Request::Adopt { path, .. } | Request::Delete { path } => vec![path],
        Request::Commit { path, .. } => vec![path],
        Request::Rename { from, to } => vec![from, to],
        _ => Vec::new(),
    };
    if let Some(e) = writes.iter().find_map(|p| node.may_write(&peer, p).err()) {
        tracing::warn!(%peer, error = %e, "refused a write");
        wire::write_response(&mut send, &error_response(&e)).await?;
        send.finish()?;
        let _ = recv.stop(quinn::VarInt::from_u32(ErrorCode::Unauthorized as u32));
        return Ok(());
    }
    let resp = match req {
        Request::Hello { version } if version == PROTOCOL_VERSION => Response::HelloOk {
            version: PROTOCOL_VERSION,
            node_id: node.node_id.clone(),
            page_size: u32::try_from(node.cache.page_size()).unwrap_or(u32::MAX),
            inbox: node.inbox.dir.to_string_lossy().into_owned(),
            inbox_token: node.inbox.token.clone(),
        },
        Request::Hello { version } => Response::Error {
            code: ErrorCode::VersionMismatch,
            message: format!("this node speaks protocol version {PROTOCOL_VERSION}, not {version}"),
        },
        Request::Stat { path } => node.handle_stat(&path).await.map_or_else(|e| error_response(&e), Response::StatOk),
        Request::List { path } => node.handle_list(&path).await.map_or_else(|e| error_response(&e), Response::ListOk),
        Request::Put { path, len } => node
            .handle_put(&path, len, &mut recv)
            .await
            .map_or_else(|e| error_response(&e), |(persisted, etag)| Response::Done { persisted, etag }),
        Request::Adopt { path, file, len } => node
            .handle_adopt(&path, &file, len)
            .await
            .map_or_else(|e| error_response(&e), |(persisted, etag)| Response::Done { persisted, etag }),
        Request::HasChunks { chunks } => Response::Missing { chunks: node.handle_has_chunks(&chunks) },
        Request::PutChunk { hash, raw_len, codec, len } => {
            if len > ferry_protocol::codec::MAX_CHUNK + (64 << 10) {
                error_response(&NodeError::InvalidInput(format!("chunk of {len} bytes on the wire is too large")))
            } else {
                match recv.read_to_end(len as usize + 1).await {
                    Ok(wire) if wire.len() == len as usize => {
                        node.handle_put_chunk(&hash, raw_len, codec, &wire).await.map_or_else(
                            |e| error_response(&e),
                            |()| Response::Done { persisted: false, etag: String::new() },
                        )
                    }
                    Ok(wire) => error_response(&NodeError::InvalidInput(format!(
                        "chunk announced {len} bytes, {} arrived",
                        wire.len()
                    ))),
                    Err(e) => return Err(ProtocolError::Malformed(format!("chunk body: {e}"))),
                }
            }
        }
        Request::Commit { path, size, chunks } => match node.handle_commit(&path, size, &chunks).await {
            Ok(Committed::Done(persisted, etag)) => Response::Done { persisted, etag },
            Ok(Committed::Missing(chunks)) => Response::Missing { chunks },
            Err(e) => error_response(&e),
        },
        Request::Delete { path } => node
            .handle_delete(&path)
            .await
            .map_or_else(|e| error_response(&e), |()| Response::Done { persisted: true, etag: String::new() }),
        Request::Rename { from, to } => node
            .handle_rename(&from, &to)
            .await
            .map_or_else(|e| error_response(&e), |persisted| Response::Done { persisted, etag: String::new() }),
        Request::Load { path } => node
            .handle_load(&path)
            .await
            .map_or_else(|e| error_response(&e), |(objects, bytes)| Response::LoadOk { objects, bytes }),
        Request::ReadRange { path, offset, len } => {
            match node.handle_read(&path, offset, len).await.inspect(|(n, stream)| {
                node.on_read(&reader, &path, &stream.info, offset, *n);
            }) {
                Err(e) => error_response(&e),
                Ok((n, mut stream)) => {
                    wire::write_response(&mut send, &Response::Data { len: n }).await?;
                    while let Some(piece) = stream.next().await {
                        match piece {
                            Ok(b) => send.write_chunk(b).await?,
                            Err(e) => {
                                tracing::warn!(%path, error = %e, "read failed mid-stream");
                                let _ = send.reset(quinn::VarInt::from_u32(u32::from(e.code() as u16)));
                                return Ok(());
                            }
                        }
                    }
                    send.finish()?;
                    node.metrics.observe(op, t0.elapsed().as_secs_f64());
                    return Ok(());
                }
            }
        }
    };
    wire::write_response(&mut send, &resp).await?;
    send.finish()?;
    node.metrics.observe(op, t0.elapsed().as_secs_f64());
    Ok(())
}

async fn handle_connection(node: Arc<CacheNode>, incoming: quinn::Incoming) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "refused connection");
            return;
        }
    };
    let peer = match tls::peer_identity(&conn) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(remote = %conn.remote_address(), error = %e, "peer without a usable identity");
            conn.close(quinn::VarInt::from_u32(ErrorCode::Unauthorized as u32), b"no identity");
            return;
        }
    };
    tracing::debug!(remote = %conn.remote_address(), %peer, "connection");
    let reader: Arc<str> = format!("{peer}@{}", conn.stable_id()).into();
    let peer = Arc::new(peer);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let (node, peer, reader) = (node.clone(), peer.clone(), reader.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle_stream(node, peer, reader, send, recv).await {
                        tracing::debug!(error = %e, "stream ended with an error");
                    }
                });
            }
            Err(_) => return,
        }
    }
}

/// Serves the block protocol on `endpoint` until it is closed.
pub async fn serve(endpoint: quinn::Endpoint, node: Arc<CacheNode>) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(handle_connection(node.clone(), incoming));
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificates or the listener.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The cache could not open.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The metrics listener.
    #[error("metrics listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A node serving on its sockets.
#[derive(Debug)]
pub struct RunningNode {
    /// The QUIC address it listens on.
    pub addr: SocketAddr,
    /// The metrics address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The node's logic.
    pub node: Arc<CacheNode>,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningNode {
    /// Starts a node from its configuration.
    pub async fn start(cfg: &CloudConfig) -> Result<RunningNode, StartError> {
        cfg.validate()?;
        let metrics = Arc::new(Metrics::new());
        let ns = Namespace::open(&cfg.mounts, metrics)?;
        let id = NodeId::new(&cfg.node_id).map_err(ConfigError::Invalid)?;
        let tls = TlsMaterial::load_dir(&cfg.certs, &id)?;
        Self::start_with(cfg, ns, tls, Arc::new(SystemClock)).await
    }

    /// Starts a node over an already built namespace (tests and benchmarks
    /// use this to put wrapper stores under it).
    pub async fn start_with(
        cfg: &CloudConfig,
        ns: Namespace,
        tls: TlsMaterial,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningNode, StartError> {
        let opts = CacheOptions {
            page_size: cfg.page_size.as_u64(),
            memory_bytes: cfg.cache.memory.as_u64(),
            disk_bytes: cfg.cache.disk.as_u64(),
            disk_dir: cfg.cache.disk_dir.clone(),
            ttl_ms: i64::try_from(cfg.ttl.as_millis()).unwrap_or(i64::MAX),
        };
        let node = Arc::new(
            match &cfg.trace_dir {
                Some(dir) => {
                    CacheNode::new(ns, opts, clock, &cfg.node_id)?.with_trace_dir(dir, cfg.page_size.as_u64())?
                }
                None => CacheNode::new(ns, opts, clock, &cfg.node_id)?,
            }
            .with_edge(&cfg.edge_prefix, cfg.chunk_store.as_u64())?
            .with_prefetch(&cfg.prefetch, cfg.prefetch_budget.as_u64())?,
        );
        let endpoint = transport::server_endpoint(cfg.listen, &tls)?;
        let addr = endpoint.local_addr()?;
        let mut tasks =
            vec![tokio::spawn(serve(endpoint.clone(), node.clone())), tokio::spawn(node.clone().run_uploader())];
        let mut metrics_addr = None;
        if !cfg.metrics_listen.is_empty() {
            let ma: SocketAddr = cfg
                .metrics_listen
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("metrics_listen {:?}: {e}", cfg.metrics_listen)))?;
            let listener = tokio::net::TcpListener::bind(ma).await?;
            metrics_addr = Some(listener.local_addr()?);
            let m = node.metrics.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = metrics::serve_on(listener, m).await {
                    tracing::warn!(error = %e, "metrics endpoint stopped");
                }
            }));
        }
        tracing::info!(%addr, node = %cfg.node_id, "cache node listening");
        Ok(RunningNode { addr, metrics_addr, node, endpoint, tasks })
    }

    /// Stops accepting, closes connections and waits for pending cache writes.
    pub async fn shutdown(self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"node shutting down");
        for t in &self.tasks {
            t.abort();
        }
        self.node.cache.flush().await;
        self.endpoint.wait_idle().await;
    }
}
