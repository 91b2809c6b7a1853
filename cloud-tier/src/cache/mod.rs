//! The page cache: memory tier over disk tier over the object store.
//!
//! A read of page `p` of an object goes:
//!
//! 1. memory tier, then disk tier (a disk hit is promoted to memory; a disk
//!    page failing its checksum is dropped and counted);
//! 2. otherwise a *fetch*: one ranged GET for the page, conditional on the
//!    object's etag so pages of two versions never mix. Concurrent misses on
//!    the same page join the fetch already in flight (single flight), and
//!    every waiter receives the bytes *as they arrive* from the store, so a
//!    cold read is not delayed by filling the cache. When the page is
//!    complete it enters the memory tier, then the disk tier in the
//!    background.
//!
//! Object metadata (size, etag) is cached for `ttl` and persisted beside the
//! disk tier, so a restarted node can serve warm pages without asking the
//! store anything. Pages are keyed by etag: when the store's object changes,
//! the next metadata refresh yields a new etag and old pages are simply
//! never read again (LRU evicts them).
//!
//! The three separable parts are [`eviction::EvictionPolicy`] (what to
//! evict), [`storage::PageStore`] (where bytes live) and the index kept by
//! [`tier::Tier`] (persisted through the self-describing page files).

pub mod announced;
pub mod eviction;
pub mod listing;
pub mod storage;
pub mod tier;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use object_store::{GetOptions, GetRange};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use ferry_protocol::codec::{DirEntry, ObjectInfo};
use ferry_protocol::ids::NsPath;

use crate::clock::Clock;
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::namespace::{Namespace, Resolved};
use eviction::Lru;
use storage::{DiskStore, MemoryStore, PageKey};
use tier::Tier;

/// Sizes of the tiers.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// Page size in bytes.
    pub page_size: u64,
    /// Memory tier capacity.
    pub memory_bytes: u64,
    /// Disk tier capacity (0 = no disk tier).
    pub disk_bytes: u64,
    /// Disk tier directory.
    pub disk_dir: PathBuf,
    /// Metadata time-to-live in milliseconds.
    pub ttl_ms: i64,
    /// What the tiers evict first.
    pub eviction: Eviction,
}

/// What the tiers evict first when they are full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Eviction {
    /// Pages no announced order reads again (least recently used first),
    /// then the page an announced order reads furthest from now (Belady);
    /// plain LRU while no reader announced an order.
    #[default]
    Announced,
    /// Least recently used first, whatever was announced.
    Lru,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FillState {
    Filling(u64),
    Done,
    Failed,
}

#[derive(Debug)]
struct Inflight {
    chunks: Mutex<Vec<Bytes>>,
    error: Mutex<Option<(ferry_protocol::ErrorCode, String)>>,
    state: watch::Sender<FillState>,
}

/// A page being read: whole, or arriving from a fetch in flight.
#[derive(Debug)]
pub enum PageRead {
    /// The whole page, from a tier.
    Ready(Bytes),
    /// The page is being fetched; its bytes arrive in order.
    Filling(PageFill),
}

/// A reader's handle on a fetch in flight.
#[derive(Debug)]
pub struct PageFill {
    inflight: Arc<Inflight>,
    rx: watch::Receiver<FillState>,
    next: usize,
}

impl PageFill {
    /// The next bytes of the page, `None` when the page is complete.
    pub async fn next(&mut self) -> Option<Result<Vec<Bytes>, NodeError>> {
        loop {
            let state = *self.rx.borrow_and_update();
            let fresh: Vec<Bytes> = {
                let chunks = self.inflight.chunks.lock().expect("inflight lock poisoned");
                chunks[self.next..].to_vec()
            };
            self.next += fresh.len();
            if !fresh.is_empty() {
                return Some(Ok(fresh));
            }
            match state {
                FillState::Done => return None,
                FillState::Failed => {
                    let (code, msg) = self
                        .inflight
                        .error
                        .lock()
                        .expect("inflight lock poisoned")
                        .clone()
                        .unwrap_or((ferry_protocol::ErrorCode::Internal, "fetch failed".into()));
                    return Some(Err(match code {
                        ferry_protocol::ErrorCode::NotFound => NodeError::NotFound(msg),
                        _ => NodeError::store(msg),
                    }));
                }
                FillState::Filling(_) => {
                    if self.rx.changed().await.is_err() {
                        return Some(Err(NodeError::store("fetch abandoned")));
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct MetaEntry {
    info: ObjectInfo,
    fetched_ms: i64,
}

/// The page cache of one node.
#[derive(Debug)]
pub struct PageCache {
    ns: Namespace,
    memory: Tier,
    disk: Option<Arc<Tier>>,
    meta: Mutex<HashMap<String, MetaEntry>>,
    meta_dir: Option<PathBuf>,
    listings: listing::Listings,
    /// Bumped by every invalidation; a metadata answer that raced one is not cached.
    invalidations: std::sync::atomic::AtomicU64,
    inflight: Mutex<HashMap<PageKey, Arc<Inflight>>>,
    tasks: TaskTracker,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    opts: CacheOptions,
    /// Asked for a missing page before the store.
    peers: std::sync::OnceLock<Arc<dyn PeerPages>>,
    /// The read orders readers announced (ranking pages for eviction).
    future: Arc<announced::Future>,
}

/// Another node that may hold a page this node lacks: after a join, the
/// page's previous owner. Asked before the store (warm hand-off).
pub trait PeerPages: Send + Sync + std::fmt::Debug {
    /// Page `page` of `path` at version `etag`, if a peer has it cached.
    fn page<'a>(&'a self, path: &'a str, etag: &'a str, page: u64) -> futures::future::BoxFuture<'a, Option<Bytes>>;
}

fn quotas(ns: &Namespace) -> HashMap<Arc<str>, u64> {
    ns.mounts().filter(|m| m.quota > 0).map(|m| (m.name.clone(), m.quota)).collect()
}

impl PageCache {
    /// The clock the cache reads time from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Opens the cache (reloading the disk tier and persisted metadata).
    pub fn open(ns: Namespace, opts: CacheOptions, clock: Arc<dyn Clock>) -> Result<PageCache, NodeError> {
        let metrics = ns.metrics().clone();
        let q = quotas(&ns);
        let future = Arc::new(announced::Future::default());
        let policy = || -> Box<dyn eviction::EvictionPolicy<PageKey>> {
            match opts.eviction {
                Eviction::Announced => Box::new(announced::Announced::new(future.clone())),
                Eviction::Lru => Box::new(Lru::default()),
            }
        };
        let memory = Tier::open(Box::new(MemoryStore::default()), policy(), opts.memory_bytes, q.clone());
        let (disk, meta_dir) = if opts.disk_bytes > 0 {
            let store = DiskStore::open(&opts.disk_dir)?;
            let meta_dir = opts.disk_dir.join("meta");
            std::fs::create_dir_all(&meta_dir)?;
            (Some(Arc::new(Tier::open(Box::new(store), policy(), opts.disk_bytes, q))), Some(meta_dir))
        } else {
            (None, None)
        };
        let listings = listing::Listings::open(
            (opts.disk_bytes > 0).then(|| opts.disk_dir.join("listings")),
            opts.ttl_ms,
            clock.clone(),
        )?;
        let cache = PageCache {
            ns,
            memory,
            disk,
            meta: Mutex::new(HashMap::new()),
            meta_dir,
            listings,
            invalidations: std::sync::atomic::AtomicU64::new(0),
            inflight: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            metrics,
            clock,
            opts,
            peers: std::sync::OnceLock::new(),
            future,
        };
        cache.load_meta();
        cache.update_gauges();
        Ok(cache)
    }

    /// `reader` will read `pages` (namespace path, page index) in this
    /// order: replacing its previous order, or with `append` after it. The
    /// tiers evict by these orders (see [`Eviction::Announced`]). Returns
    /// the pages now in `reader`'s order.
    pub fn announce(&self, reader: &str, pages: Vec<announced::Upcoming>, append: bool) -> Result<usize, NodeError> {
        let n = self.future.announce(reader, pages, append).map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        self.update_gauges();
        Ok(n)
    }

    /// A reader asked for page `page` of `path`: announced orders that
    /// read it next move past it (warming and prefetch do not count).
    pub fn saw(&self, path: &NsPath, page: u64) {
        self.future.saw(&(Arc::from(path.as_str()), page));
    }

    /// Asks `peers` for missing pages before the store.
    pub fn ask_peers_first(&self, peers: Arc<dyn PeerPages>) {
        let _ = self.peers.set(peers);
    }

    /// Page `page` of `path` if a tier holds it (nothing is fetched).
    pub fn cached_page(&self, path: &NsPath, info: &ObjectInfo, page: u64) -> Result<Option<Bytes>, NodeError> {
        let resolved = self.ns.resolve(path)?;
        let key = self.key(&resolved, path, info, page);
        if let Some(b) = self.memory.get(&key)? {
            return Ok(Some(b));
        }
        match &self.disk {
            Some(d) if d.contains(&key) => d.get(&key),
            _ => Ok(None),
        }
    }

    /// The namespace behind the cache.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.opts.page_size
    }

    /// Bytes held by the memory and disk tiers.
    pub fn used(&self) -> (u64, u64) {
        (self.memory.used(), self.disk.as_ref().map_or(0, |d| d.used()))
    }

    /// Pages held (a page in both tiers counts once per tier), and the
    /// bytes of the memory and disk tiers.
    pub fn usage(&self) -> (u64, u64, u64) {
        let pages = self.memory.len() + self.disk.as_ref().map_or(0, |d| d.len());
        let (m, d) = self.used();
        (pages as u64, m, d)
    }

    fn update_gauges(&self) {
        let (m, d) = self.used();
        self.metrics.set_used("memory", m);
        self.metrics.set_used("disk", d);
        let (readers, left) = self.future.pending();
        self.metrics.announced_readers.set(readers as i64);
        self.metrics.announced_pages.set(left as i64);
    }

    // ----- metadata -----

    fn meta_file(dir: &Path, path: &str) -> PathBuf {
        dir.join(blake3::hash(path.as_bytes()).to_hex().as_str())
    }

    fn load_meta(&self) {
        let Some(dir) = &self.meta_dir else { return };
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        let mut meta = self.meta.lock().expect("meta lock poisoned");
        for e in rd.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
            let mut lines = text.lines();
            let parsed = (|| {
                let path = lines.next()?.to_string();
                let fetched_ms = lines.next()?.parse().ok()?;
                let size = lines.next()?.parse().ok()?;
                let mtime_ms = lines.next()?.parse().ok()?;
                let etag = lines.next()?.to_string();
                Some((
                    path,
                    MetaEntry {
                        info: ObjectInfo {
                            kind: ferry_protocol::codec::EntryKind::File,
                            size,
                            mtime_ms,
                            etag,
                            persisted: true,
                            origin: String::new(),
                        },
                        fetched_ms,
                    },
                ))
            })();
            match parsed {
                Some((p, m)) => {
                    meta.insert(p, m);
                }
                None => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    fn store_meta(&self, path: &str, entry: &MetaEntry) {
        let Some(dir) = &self.meta_dir else { return };
        let i = &entry.info;
        if i.etag.contains('\n') || path.contains('\n') {
            return;
        }
        let text = format!("{path}\n{}\n{}\n{}\n{}\n", entry.fetched_ms, i.size, i.mtime_ms, i.etag);
        let file = Self::meta_file(dir, path);
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &file)).is_err() {
            tracing::warn!(path, "could not persist object metadata");
        }
    }

    /// Metadata of `path`: from the cache while younger than the TTL, else from the store.
    pub async fn stat(&self, path: &NsPath) -> Result<ObjectInfo, NodeError> {
        let now = self.clock.now_ms();
        if let Some(m) = self.meta.lock().expect("meta lock poisoned").get(path.as_str()) {
            if now - m.fetched_ms < self.opts.ttl_ms {
                return Ok(m.info.clone());
            }
        }
        // A walk lists a directory, then stats each file in it.
        if let Some(info) = self.listings.entry(path) {
            return Ok(info);
        }
        let epoch = self.invalidations.load(std::sync::atomic::Ordering::SeqCst);
        let info = self.ns.head(path).await?;
        if info.kind == ferry_protocol::codec::EntryKind::File {
            // Checked and inserted under the lock `invalidate` takes, so a delete,
            // rename or write that landed while the store answered wins.
            let mut meta = self.meta.lock().expect("meta lock poisoned");
            if self.invalidations.load(std::sync::atomic::Ordering::SeqCst) == epoch {
                let entry = MetaEntry { info: info.clone(), fetched_ms: now };
                self.store_meta(path.as_str(), &entry);
                meta.insert(path.as_str().to_string(), entry);
            }
        }
        Ok(info)
    }

    /// The cached metadata of `path`, however old, without asking the store.
    pub fn cached_info(&self, path: &NsPath) -> Option<ObjectInfo> {
        let meta = self.meta.lock().expect("meta lock poisoned").get(path.as_str()).map(|m| m.info.clone());
        meta.or_else(|| self.listings.entry(path))
    }

    /// The store's entries directly under `dir`: from a fresh cached
    /// listing, else listed now (and kept for the TTL).
    pub async fn list(&self, dir: &NsPath) -> Result<Arc<Vec<DirEntry>>, NodeError> {
        if let Some(entries) = self.listings.get(dir.as_str()) {
            self.metrics.listing("hit");
            return Ok(entries);
        }
        self.metrics.listing("miss");
        let epoch = self.listings.epoch();
        let entries = self.ns.list(dir).await?;
        Ok(self.listings.put(dir.as_str(), entries, epoch))
    }

    /// Forgets cached metadata of `path` (after the store reported a
    /// change), and the listings of its directory and of `path` itself.
    pub fn invalidate(&self, path: &NsPath) {
        if let Some(parent) = listing::parent_of(path) {
            self.listings.invalidate(&parent);
        }
        self.listings.invalidate(path.as_str());
        let mut meta = self.meta.lock().expect("meta lock poisoned");
        self.invalidations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        meta.remove(path.as_str());
        if let Some(dir) = &self.meta_dir {
            let _ = std::fs::remove_file(Self::meta_file(dir, path.as_str()));
        }
    }

    // ----- pages -----

    fn key(&self, resolved: &Resolved, path: &NsPath, info: &ObjectInfo, page: u64) -> PageKey {
        PageKey {
            mount: resolved.mount.name.clone(),
            path: Arc::from(path.as_str()),
            version: Arc::from(info.etag.as_str()),
            page,
        }
    }

    /// Length of page `page` of an object of `size` bytes.
    pub fn page_len(&self, size: u64, page: u64) -> u64 {
        let start = page * self.opts.page_size;
        size.saturating_sub(start).min(self.opts.page_size)
    }

    /// Reads page `page` of `path` (whose metadata is `info`).
    pub async fn page(self: &Arc<Self>, path: &NsPath, info: &ObjectInfo, page: u64) -> Result<PageRead, NodeError> {
        let resolved = self.ns.resolve(path)?;
        let key = self.key(&resolved, path, info, page);
        if let Some(b) = self.memory.get(&key)? {
            self.metrics.hit("memory", &key.mount, b.len() as u64);
            return Ok(PageRead::Ready(b));
        }
        if let Some(disk) = &self.disk {
            if disk.contains(&key) {
                let d = disk.clone();
                let k = key.clone();
                let got = tokio::task::spawn_blocking(move || d.get(&k))
                    .await
                    .map_err(|e| NodeError::task("disk read task", e))?;
                match got {
                    Ok(Some(b)) => {
                        self.metrics.hit("disk", &key.mount, b.len() as u64);
                        let _ = self.memory.insert(key, b.clone());
                        self.update_gauges();
                        return Ok(PageRead::Ready(b));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.corrupt_pages.inc();
                        tracing::warn!(error = %e, "dropped corrupt page; refetching");
                    }
                }
            }
        }
        Ok(PageRead::Filling(self.join_or_fetch(resolved, key, info)))
    }

    /// Starts fetching a page unless it is cached or already in flight;
    /// true if a fetch started.
    pub fn prefetch(self: &Arc<Self>, path: &NsPath, info: &ObjectInfo, page: u64) -> bool {
        self.start_prefetch(path, info, page).is_some()
    }

    /// Like [`PageCache::prefetch`], and waits until the page is filled
    /// (or its fetch failed): for callers that keep few fetches in flight.
    pub async fn prefetch_and_wait(self: &Arc<Self>, path: &NsPath, info: &ObjectInfo, page: u64) -> bool {
        let Some(mut fill) = self.start_prefetch(path, info, page) else { return false };
        while let Some(Ok(_)) = fill.next().await {}
        true
    }

    fn start_prefetch(self: &Arc<Self>, path: &NsPath, info: &ObjectInfo, page: u64) -> Option<PageFill> {
        let resolved = self.ns.resolve(path).ok()?;
        let key = self.key(&resolved, path, info, page);
        if self.memory.contains(&key) || self.disk.as_ref().is_some_and(|d| d.contains(&key)) {
            return None;
        }
        if self.inflight.lock().expect("inflight lock poisoned").contains_key(&key) {
            return None;
        }
        Some(self.join_or_fetch(resolved, key, info))
    }

    /// Whether a page is cached in a tier or being fetched.
    pub fn holds(&self, path: &NsPath, info: &ObjectInfo, page: u64) -> bool {
        let Ok(resolved) = self.ns.resolve(path) else { return false };
        let key = self.key(&resolved, path, info, page);
        self.memory.contains(&key)
            || self.disk.as_ref().is_some_and(|d| d.contains(&key))
            || self.inflight.lock().expect("inflight lock poisoned").contains_key(&key)
    }

    fn join_or_fetch(self: &Arc<Self>, resolved: Resolved, key: PageKey, info: &ObjectInfo) -> PageFill {
        let mut inflight = self.inflight.lock().expect("inflight lock poisoned");
        if let Some(f) = inflight.get(&key) {
            self.metrics.coalesced.inc();
            return PageFill { inflight: f.clone(), rx: f.state.subscribe(), next: 0 };
        }
        // Re-check memory under the lock: a fetch that just finished put its page there first.
        if let Ok(Some(b)) = self.memory.get(&key) {
            let (tx, rx) = watch::channel(FillState::Done);
            let f = Arc::new(Inflight { chunks: Mutex::new(vec![b]), error: Mutex::new(None), state: tx });
            return PageFill { inflight: f, rx, next: 0 };
        }
        self.metrics.misses.inc();
        let (tx, rx) = watch::channel(FillState::Filling(0));
        let f = Arc::new(Inflight { chunks: Mutex::new(Vec::new()), error: Mutex::new(None), state: tx });
        inflight.insert(key.clone(), f.clone());
        drop(inflight);
        let cache = self.clone();
        let fill = f.clone();
        let info = info.clone();
        self.tasks.spawn(async move { cache.fetch(resolved, key, info, fill).await });
        PageFill { inflight: f, rx, next: 0 }
    }

    async fn fetch(self: Arc<Self>, resolved: Resolved, key: PageKey, info: ObjectInfo, fill: Arc<Inflight>) {
        let start = key.page * self.opts.page_size;
        let len = self.page_len(info.size, key.page);
        let result = self.fetch_into(&resolved, &key, &info, &fill, start, len).await;
        match result {
            Ok(page) => {
                let _ = self.memory.insert(key.clone(), page.clone());
                self.inflight.lock().expect("inflight lock poisoned").remove(&key);
                fill.state.send_replace(FillState::Done);
                if let Some(disk) = &self.disk {
                    let d = disk.clone();
                    let k = key.clone();
                    match tokio::task::spawn_blocking(move || d.insert(k, page)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "could not write page to disk tier"),
                        Err(e) => tracing::warn!(error = %e, "disk write task failed"),
                    }
                }
                self.update_gauges();
            }
            Err(e) => {
                if matches!(e, NodeError::Changed(_) | NodeError::NotFound(_)) {
                    if let Ok(p) = NsPath::parse(&key.path) {
                        self.invalidate(&p);
                    }
                }
                tracing::debug!(path = %key.path, page = key.page, error = %e, "page fetch failed");
                *fill.error.lock().expect("inflight lock poisoned") = Some((e.code(), e.to_string()));
                self.inflight.lock().expect("inflight lock poisoned").remove(&key);
                fill.state.send_replace(FillState::Failed);
            }
        }
    }

    async fn fetch_into(
        &self,
        resolved: &Resolved,
        key: &PageKey,
        info: &ObjectInfo,
        fill: &Inflight,
        start: u64,
        len: u64,
    ) -> Result<Bytes, NodeError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        // A journal version lives on its writer, not in a peer's cache.
        if let Some(peers) = self.peers.get().filter(|_| !info.etag.is_empty() && !info.etag.starts_with('~')) {
            if let Some(b) = peers.page(&key.path, &info.etag, key.page).await.filter(|b| b.len() as u64 == len) {
                self.metrics.peer_bytes.inc_by(len);
                fill.chunks.lock().expect("inflight lock poisoned").push(b.clone());
                fill.state.send_replace(FillState::Filling(1));
                return Ok(b);
            }
        }
        self.metrics.store_request("get");
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..start + len)),
            if_match: (!info.etag.is_empty() && !info.etag.starts_with('~')).then(|| info.etag.clone()),
            ..Default::default()
        };
        let result = resolved
            .mount
            .store
            .get_opts(&resolved.location, opts)
            .await
            .map_err(|e| NodeError::from_store(&key.path, e))?;
        let mut stream = crate::payload::into_stream(result);
        let mut got = 0u64;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| NodeError::from_store(&key.path, e))?;
            if chunk.is_empty() {
                continue;
            }
            got += chunk.len() as u64;
            if got > len {
                return Err(NodeError::Changed(key.path.to_string()));
            }
            let mount = crate::metrics::MountLabel { mount: key.mount.to_string() };
            self.metrics.store_bytes.get_or_create(&mount).inc_by(chunk.len() as u64);
            self.metrics.served("store", &key.mount, chunk.len() as u64);
            fill.chunks.lock().expect("inflight lock poisoned").push(chunk);
            n += 1;
            fill.state.send_replace(FillState::Filling(n));
        }
        if got != len {
            return Err(NodeError::Changed(key.path.to_string()));
        }
        let chunks = fill.chunks.lock().expect("inflight lock poisoned");
        if chunks.len() == 1 {
            return Ok(chunks[0].clone());
        }
        let mut whole = Vec::with_capacity(len as usize);
        for c in chunks.iter() {
            whole.extend_from_slice(c);
        }
        Ok(Bytes::from(whole))
    }

    /// Waits until every fetch started so far has finished and its page is on disk.
    pub async fn flush(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}
