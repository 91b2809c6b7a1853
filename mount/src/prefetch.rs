//! Prefetch for the mount: demand reads go to a [`Prefetcher`] per reader
//! (the reading process), and the pages it expects next are fetched into a
//! shared page store under a byte budget, where the reader's next open finds
//! them.
//!
//! The dataset's layout comes from listings: the first read in a directory
//! lists it (once), so "the next frame" is known. A training job may
//! announce its read order (`.ferry-announce` at the mount root); every
//! reader without an order of its own follows it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};

use ferry_predictor::online::{Online, Want};
use ferry_predictor::{PrefetchConfig, ANY_READER};
use ferry_protocol::codec::listed_files;

use crate::error::{Context, FsError};
use crate::nodes::Nodes;

/// A page being fetched or fetched, shared by whoever needs it.
pub type PageFuture = Shared<BoxFuture<'static, Result<Bytes, FsError>>>;

/// Page `page` (of `page_size` bytes) of the `size`-byte file `path`, fetched once
/// for whoever awaits it.
pub fn fetch_page<N: Nodes>(nodes: &N, path: &str, page: u64, page_size: u64, size: u64) -> PageFuture {
    let (nodes, path) = (nodes.clone(), path.to_string());
    let (start, end) = (page * page_size, ((page + 1) * page_size).min(size));
    let fut: BoxFuture<'static, Result<Bytes, FsError>> = async move {
        nodes.read_page(&path, page, page_size, start, end).await.context(|| format!("read page {page} of {path}"))
    }
    .boxed();
    fut.shared()
}

/// What the mount prefetches with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchOptions {
    /// `none`, `readahead`, `stride`, `markov`, `tree` (the shipped model)
    /// or the directory of a trained model.
    pub predictor: String,
    /// Most bytes of prefetched pages held or in flight, not yet read.
    pub budget: u64,
}

impl Default for PrefetchOptions {
    fn default() -> Self {
        PrefetchOptions { predictor: "tree".into(), budget: 256 << 20 }
    }
}

/// A prefetched page not read within this long is a wrong guess; its bytes may go.
const STALE: Duration = Duration::from_secs(30);

struct Slot {
    page: PageFuture,
    etag: String,
    bytes: u64,
    /// Read at least once (its bytes counted as useful).
    used: bool,
    at: Instant,
}

#[derive(Default)]
struct Store {
    slots: HashMap<(String, u64), Slot>,
    /// Insertion order: pages read or stale go first when room is needed.
    order: VecDeque<(String, u64)>,
    held: u64,
}

impl Store {
    /// Drops pages already read, then stale ones, oldest first, until
    /// `bytes` more fit in `budget`; false if they cannot.
    fn make_room(&mut self, bytes: u64, budget: u64, wasted: &AtomicU64) -> bool {
        if self.held + bytes <= budget {
            return true;
        }
        let mut kept = VecDeque::with_capacity(self.order.len());
        while let Some(k) = self.order.pop_front() {
            if self.held + bytes <= budget {
                kept.push_back(k);
                continue;
            }
            let Some(slot) = self.slots.get(&k) else { continue };
            if slot.used || slot.at.elapsed() > STALE {
                if !slot.used {
                    wasted.fetch_add(slot.bytes, Ordering::Relaxed);
                }
                self.held -= slot.bytes;
                self.slots.remove(&k);
            } else {
                kept.push_back(k);
            }
        }
        self.order = kept;
        self.held + bytes <= budget
    }

    /// Drops every page not read yet (an announcement replaced the order).
    fn drop_unread(&mut self, wasted: &AtomicU64) {
        let held = &mut self.held;
        self.slots.retain(|_, s| {
            if !s.used {
                wasted.fetch_add(s.bytes, Ordering::Relaxed);
                *held -= s.bytes;
            }
            s.used
        });
        let slots = &self.slots;
        self.order.retain(|k| slots.contains_key(k));
    }
}

/// Counters of `.ferry-stats`.
#[derive(Debug, Default)]
struct Counters {
    issued_bytes: AtomicU64,
    useful_bytes: AtomicU64,
    wasted_bytes: AtomicU64,
    demand_pages: AtomicU64,
    prefetch_hits: AtomicU64,
    readahead_hits: AtomicU64,
    fetched_pages: AtomicU64,
}

/// Where a demand page came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The handle's own pages (sequential readahead, or read before).
    Handle,
    /// The shared prefetched pages.
    Prefetched,
    /// Fetched from the node now.
    Fetched,
}

/// The mount's prefetcher, page store and counters.
pub struct MountPrefetch<N> {
    cluster: N,
    page_size: u64,
    budget: u64,
    name: String,
    brain: Mutex<Online>,
    store: Mutex<Store>,
    counters: Counters,
}

impl<N> std::fmt::Debug for MountPrefetch<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountPrefetch").field("predictor", &self.name).field("budget", &self.budget).finish()
    }
}

impl<N: Nodes> MountPrefetch<N> {
    /// A prefetcher with `opts` over `cluster`; an unknown or unreadable model is an error.
    pub fn new(cluster: N, page_size: u64, opts: &PrefetchOptions) -> Result<Arc<MountPrefetch<N>>, String> {
        let predictor = ferry_predictor::models::by_name(&opts.predictor).map_err(|e| e.to_string())?;
        let name = predictor.name().to_string();
        // Training jobs read many files at once: look further along an announced order.
        let config = PrefetchConfig { announced_depth: 64, ..PrefetchConfig::default() };
        Ok(Arc::new(MountPrefetch {
            cluster,
            page_size,
            budget: opts.budget,
            name,
            brain: Mutex::new(Online::new(predictor, config, page_size)),
            store: Mutex::new(Store::default()),
            counters: Counters::default(),
        }))
    }

    /// Counts one demand page and where it came from.
    pub fn count(&self, source: Source) {
        let c = &self.counters;
        c.demand_pages.fetch_add(1, Ordering::Relaxed);
        match source {
            Source::Handle => c.readahead_hits.fetch_add(1, Ordering::Relaxed),
            Source::Prefetched => c.prefetch_hits.fetch_add(1, Ordering::Relaxed),
            Source::Fetched => c.fetched_pages.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Page `page` of `path` (version `etag`), if it was prefetched.
    pub fn take(&self, path: &str, etag: &str, page: u64) -> Option<PageFuture> {
        let mut st = self.store.lock().expect("prefetch lock poisoned");
        let key = (path.to_string(), page);
        let slot = st.slots.get_mut(&key)?;
        let failed = matches!(slot.page.peek(), Some(Err(_)));
        if failed || (!etag.is_empty() && !slot.etag.is_empty() && slot.etag != etag) {
            // A failed prefetch is retried by the reader itself; other bytes
            // were fetched for another version of the file.
            let slot = st.slots.remove(&key).expect("just found");
            st.held -= slot.bytes;
            if !slot.used {
                self.counters.wasted_bytes.fetch_add(slot.bytes, Ordering::Relaxed);
            }
            return None;
        }
        if !slot.used {
            slot.used = true;
            self.counters.useful_bytes.fetch_add(slot.bytes, Ordering::Relaxed);
        }
        Some(slot.page.clone())
    }

    /// A demand read of `[offset, end)` of `path` by `reader`: learn from
    /// it and start fetching what comes next.
    pub fn access(self: &Arc<Self>, reader: u32, path: &str, offset: u64, end: u64) {
        let mut wants = Vec::new();
        let unknown = self.brain.lock().expect("prefetch lock poisoned").access(
            &format!("pid:{reader}"),
            path,
            offset,
            end.saturating_sub(offset),
            &mut wants,
        );
        if let Some(dir) = unknown {
            let me = self.clone();
            tokio::spawn(async move { me.list(&dir).await });
        }
        self.start_all(&wants);
    }

    fn start_all(&self, wants: &[Want]) {
        for w in wants {
            for page in u64::from(w.first)..u64::from(w.end) {
                if !self.start(&w.path, w.size, &w.tag, page) {
                    return; // over budget: the rest waits for reads to make room
                }
            }
        }
    }

    /// Starts fetching one page unless it is held; false when over budget.
    fn start(&self, path: &str, size: u64, etag: &str, page: u64) -> bool {
        let ps = self.page_size;
        let (start, end) = (page * ps, ((page + 1) * ps).min(size));
        if start >= end && !(page == 0 && size == 0) {
            return true;
        }
        let key = (path.to_string(), page);
        let mut st = self.store.lock().expect("prefetch lock poisoned");
        if st.slots.contains_key(&key) {
            return true;
        }
        let bytes = end - start;
        if !st.make_room(bytes, self.budget, &self.counters.wasted_bytes) {
            return false;
        }
        let shared = fetch_page(&self.cluster, path, page, ps, size);
        // Fetch now, whether or not anyone asks yet.
        let s2 = shared.clone();
        tokio::spawn(async move {
            let _ = s2.await;
        });
        st.slots
            .insert(key.clone(), Slot { page: shared, etag: etag.to_string(), bytes, used: false, at: Instant::now() });
        st.order.push_back(key);
        st.held += bytes;
        self.counters.issued_bytes.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    async fn list(&self, dir: &str) {
        let files = listed_files(dir, self.cluster.list(dir).await);
        self.brain.lock().expect("prefetch lock poisoned").listed(dir, files);
    }

    /// Applies an announcement: lines of `PATH` or `PATH OFFSET LENGTH`
    /// (paths from the mount root) that every reader will read in this
    /// order. Returns how many entries were taken; malformed lines and
    /// paths that do not exist are errors that change nothing.
    pub async fn announce(self: &Arc<Self>, text: &str) -> Result<usize, String> {
        let mut wanted: Vec<(String, Option<(u64, u64)>)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.rsplitn(3, ' ');
            let bad = || format!("line {}: expected PATH or PATH OFFSET LENGTH, got {line:?}", i + 1);
            let (last, mid, first) = (parts.next(), parts.next(), parts.next());
            let number = |x: Option<&str>| x.and_then(|v| v.parse::<u64>().ok());
            let (path, range) = match (first, number(mid), number(last)) {
                (Some(p), Some(o), Some(n)) => (p, Some((o, n))),
                _ => (line, None),
            };
            let path = format!("/{}", path.trim_start_matches('/'));
            if ferry_protocol::ids::NsPath::parse(&path).is_err() {
                return Err(bad());
            }
            wanted.push((path, range));
        }
        let unknown =
            self.brain.lock().expect("prefetch lock poisoned").unknown_dirs(wanted.iter().map(|(p, _)| p.as_str()));
        for dir in unknown {
            self.list(&dir).await;
        }
        let mut wants = Vec::new();
        let n = self.brain.lock().expect("prefetch lock poisoned").announce(ANY_READER, &wanted, &mut wants)?;
        // An old order's pages are of no use any more; the new one's first
        // entries are fetched before anyone reads.
        self.store.lock().expect("prefetch lock poisoned").drop_unread(&self.counters.wasted_bytes);
        self.start_all(&wants);
        Ok(n)
    }

    /// The counters as `.ferry-stats` shows them (one JSON object).
    pub fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (issued, useful) = (get(&c.issued_bytes), get(&c.useful_bytes));
        let (demand, pre, ra, fetched) =
            (get(&c.demand_pages), get(&c.prefetch_hits), get(&c.readahead_hits), get(&c.fetched_pages));
        let (held, streams, files) = {
            let st = self.store.lock().expect("prefetch lock poisoned");
            let b = self.brain.lock().expect("prefetch lock poisoned");
            (st.held, b.streams(), b.files())
        };
        serde_json::json!({
            "predictor": self.name,
            "budget_bytes": self.budget,
            "held_bytes": held,
            "prefetched_bytes": issued,
            "useful_bytes": useful,
            "wasted_bytes": get(&c.wasted_bytes),
            "demand_pages": demand,
            "prefetch_hits": pre,
            "readahead_hits": ra,
            "fetched_pages": fetched,
            "precision": ratio(useful, issued),
            "coverage": ratio(pre, pre + fetched),
            "hit_ratio": ratio(pre + ra, demand),
            "streams": streams,
            "catalog_files": files,
        })
    }
}
