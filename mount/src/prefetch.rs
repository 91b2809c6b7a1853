//! Prefetch for the mount: demand reads go to a [`Prefetcher`] per reader
//! (the reading process), and the pages it expects next are fetched into a
//! shared page store under a byte budget, where the reader's next open finds
//! them.
//!
//! The dataset's layout comes from listings: the first read in a directory
//! lists it (once), so "the next frame" is known. A training job may
//! announce its read order (`.ferry-announce` at the mount root); every
//! reader without an order of its own follows it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};

use ferry_predictor::ledger::{Demand, Ledger};
use ferry_predictor::models::ModelError;
use ferry_predictor::online::{AnnounceError, Online, Want};
use ferry_predictor::{PrefetchConfig, ANY_READER};
use ferry_protocol::clock::{Clock, SystemClock};
use ferry_protocol::codec::{listed_files, PageRun};

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

/// The prefetched pages: their fetches, and the ledger that accounts for them.
struct Store {
    pages: HashMap<(String, u64), (PageFuture, String)>,
    ledger: Ledger<(String, u64)>,
    /// The announcement each page fetched for one was fetched for.
    announced_for: HashMap<(String, u64), u32>,
}

impl Store {
    fn forget(&mut self, keys: Vec<(String, u64)>) {
        for k in keys {
            self.pages.remove(&k);
            self.announced_for.remove(&k);
        }
    }
}

/// Which announcement each reading process follows: a process reads by
/// the order the nearest of itself and its ancestors announced (a
/// DataLoader worker by its rank's), else by the latest announcement.
#[derive(Debug, Default)]
struct Followers {
    /// Processes that announced an order.
    announcers: HashSet<u32>,
    /// Reader (thread) id → the announcer it follows, as last worked out
    /// (`None`: none of its lineage announced; it follows the latest).
    of: HashMap<u32, Option<u32>>,
    /// The process that announced last.
    latest: Option<u32>,
    /// Per announcer: demand pages its followers read, and how many of
    /// them were prefetched.
    counts: HashMap<u32, (u64, u64)>,
}

/// Most announcing processes remembered; past it, the oldest are forgotten
/// with their orders (processes that ended).
const MAX_ANNOUNCERS: usize = 1024;

/// The thread group of `pid` and its ancestors, nearest first (from /proc).
fn lineage(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut at = pid;
    for _ in 0..32 {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{at}/status")) else { break };
        let field =
            |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u32>().ok());
        let (Some(tgid), Some(ppid)) = (field("Tgid:"), field("PPid:")) else { break };
        if out.is_empty() && tgid != at {
            out.push(at);
        }
        out.push(tgid);
        if ppid <= 1 {
            break;
        }
        at = ppid;
    }
    out
}

/// This host's name (the nodes tell announcing readers of several hosts apart by it).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

fn announcer_key(pid: u32) -> String {
    format!("announce:{pid}")
}

/// The mount's prefetcher, page store and counters.
pub struct MountPrefetch<N> {
    cluster: N,
    page_size: u64,
    name: String,
    clock: Arc<dyn Clock>,
    brain: Mutex<Online>,
    store: Mutex<Store>,
    followers: Mutex<Followers>,
}

impl<N> std::fmt::Debug for MountPrefetch<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountPrefetch").field("predictor", &self.name).finish()
    }
}

impl<N: Nodes> MountPrefetch<N> {
    /// A prefetcher with `opts` over `cluster`; an unknown or unreadable model is an error.
    pub fn new(cluster: N, page_size: u64, opts: &PrefetchOptions) -> Result<Arc<MountPrefetch<N>>, ModelError> {
        let predictor = ferry_predictor::models::by_name(&opts.predictor)?;
        let name = predictor.name().to_string();
        // Training jobs read many files at once: look further along an announced order.
        let config = PrefetchConfig { announced_depth: 64, ..PrefetchConfig::default() };
        Ok(Arc::new(MountPrefetch {
            cluster,
            page_size,
            name,
            clock: Arc::new(SystemClock),
            brain: Mutex::new(Online::new(predictor, config, page_size)),
            store: Mutex::new(Store {
                pages: HashMap::new(),
                ledger: Ledger::new(opts.budget),
                announced_for: HashMap::new(),
            }),
            followers: Mutex::new(Followers::default()),
        }))
    }

    /// Counts one demand page read by `reader` and where it came from.
    pub fn count(&self, reader: u32, source: Demand) {
        self.store.lock().expect("prefetch lock poisoned").ledger.demand(source);
        let mut f = self.followers.lock().expect("prefetch lock poisoned");
        let followed = match f.of.get(&reader) {
            Some(Some(a)) => Some(*a),
            Some(None) => f.latest,
            None => None,
        };
        if let Some(a) = followed {
            let c = f.counts.entry(a).or_default();
            c.0 += 1;
            c.1 += u64::from(source == Demand::Prefetched);
        }
    }

    /// Page `page` of `path` (version `etag`), if it was prefetched.
    pub fn take(&self, path: &str, etag: &str, page: u64) -> Option<PageFuture> {
        let mut st = self.store.lock().expect("prefetch lock poisoned");
        let key = (path.to_string(), page);
        let (fut, tag) = st.pages.get(&key)?;
        let failed = matches!(fut.peek(), Some(Err(_)));
        if failed || (!etag.is_empty() && !tag.is_empty() && tag != etag) {
            // A failed prefetch is retried by the reader itself; other bytes
            // were fetched for another version of the file.
            st.pages.remove(&key);
            st.ledger.forget(&key);
            return None;
        }
        let fut = fut.clone();
        st.ledger.read(&key);
        Some(fut)
    }

    /// A demand read of `[offset, end)` of `path` by `reader`: learn from
    /// it and start fetching what comes next.
    pub fn access(self: &Arc<Self>, reader: u32, path: &str, offset: u64, end: u64) {
        let key = format!("pid:{reader}");
        let follows = self.follows(reader);
        let mut wants = Vec::new();
        let unknown = {
            let mut brain = self.brain.lock().expect("prefetch lock poisoned");
            if let Some(a) = follows {
                brain.follow(&key, a.map(announcer_key).as_deref());
            }
            brain.access(&key, path, offset, end.saturating_sub(offset), &mut wants)
        };
        if let Some(dir) = unknown {
            let me = self.clone();
            tokio::spawn(async move { me.list(&dir).await });
        }
        self.start_all(&wants, None);
    }

    /// The announcer `reader` follows, when not worked out since the last
    /// announcement (`None`: nothing changed).
    fn follows(&self, reader: u32) -> Option<Option<u32>> {
        {
            let f = self.followers.lock().expect("prefetch lock poisoned");
            if f.announcers.is_empty() || f.of.contains_key(&reader) {
                return None;
            }
        }
        let line = lineage(reader);
        let mut f = self.followers.lock().expect("prefetch lock poisoned");
        let a = line.into_iter().find(|p| f.announcers.contains(p));
        if f.of.len() >= 1 << 16 {
            f.of.clear();
        }
        f.of.insert(reader, a);
        Some(a)
    }

    fn start_all(&self, wants: &[Want], announcer: Option<u32>) {
        for w in wants {
            for page in u64::from(w.first)..u64::from(w.end) {
                if !self.start(&w.path, w.size, &w.tag, page, announcer) {
                    return; // over budget: the rest waits for reads to make room
                }
            }
        }
    }

    /// Starts fetching one page unless it is held; false when over budget.
    fn start(&self, path: &str, size: u64, etag: &str, page: u64, announcer: Option<u32>) -> bool {
        let ps = self.page_size;
        let (start, end) = (page * ps, ((page + 1) * ps).min(size));
        if start >= end && !(page == 0 && size == 0) {
            return true;
        }
        let key = (path.to_string(), page);
        let mut st = self.store.lock().expect("prefetch lock poisoned");
        if st.pages.contains_key(&key) {
            return true;
        }
        let Some(dropped) = st.ledger.issue(key.clone(), end - start, self.clock.now_ms()) else { return false };
        st.forget(dropped);
        let shared = fetch_page(&self.cluster, path, page, ps, size);
        // Fetch now, whether or not anyone asks yet.
        let s2 = shared.clone();
        tokio::spawn(async move {
            let _ = s2.await;
        });
        if let Some(a) = announcer {
            st.announced_for.insert(key.clone(), a);
        }
        st.pages.insert(key, (shared, etag.to_string()));
        true
    }

    async fn list(&self, dir: &str) {
        let files = listed_files(dir, self.cluster.list(dir).await);
        self.brain.lock().expect("prefetch lock poisoned").listed(dir, files);
    }

    /// Applies an announcement by process `announcer` (0: unknown): lines
    /// of `PATH` or `PATH OFFSET LENGTH` (paths from the mount root) that
    /// it and the processes it started (its DataLoader workers) will read
    /// in this order, as will readers that follow no announcement of
    /// their own. Each process's order is its own: two ranks announcing
    /// do not replace each other's. Returns how many entries were taken;
    /// malformed lines and paths that do not exist are errors that change
    /// nothing.
    pub async fn announce(self: &Arc<Self>, announcer: u32, text: &str) -> Result<usize, AnnounceError> {
        let mut wanted: Vec<(String, Option<(u64, u64)>)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.rsplitn(3, ' ');
            let bad = || AnnounceError::Malformed { line: i + 1, text: line.to_string() };
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
        let (n, runs) = {
            let mut brain = self.brain.lock().expect("prefetch lock poisoned");
            let runs = brain.page_runs(&wanted)?;
            let n = brain.announce(ANY_READER, &wanted, &mut wants)?;
            if announcer != 0 {
                wants.clear();
                brain.announce(&announcer_key(announcer), &wanted, &mut wants)?;
            }
            (n, runs)
        };
        // The nodes caching these pages evict by the order.
        let reader = format!("{}/{}", host_name(), announcer_key(announcer));
        let runs: Vec<PageRun> = runs.into_iter().map(|(path, first, end)| PageRun { path, first, end }).collect();
        for (node, e) in self.cluster.announce(&reader, runs).await {
            tracing::warn!(%node, error = %e, "announced order not passed on; the node evicts by recency");
        }
        if announcer != 0 {
            let mut f = self.followers.lock().expect("prefetch lock poisoned");
            if f.announcers.len() >= MAX_ANNOUNCERS {
                f.announcers.clear();
                f.counts.clear();
            }
            f.announcers.insert(announcer);
            f.latest = Some(announcer);
            f.of.clear();
        }
        // This announcer's old order's pages are of no use any more (other
        // announcers' are); the new one's first entries are fetched before
        // anyone reads.
        let mut guard = self.store.lock().expect("prefetch lock poisoned");
        let st = &mut *guard;
        let dropped = if announcer == 0 {
            st.ledger.drop_unread()
        } else {
            let mine = &st.announced_for;
            st.ledger.drop_unread_where(|k| mine.get(k) == Some(&announcer))
        };
        st.forget(dropped);
        drop(guard);
        self.start_all(&wants, (announcer != 0).then_some(announcer));
        Ok(n)
    }

    /// The counters as `.ferry-stats` shows them (one JSON object).
    pub fn stats(&self) -> serde_json::Value {
        let (c, budget, held, streams, files) = {
            let st = self.store.lock().expect("prefetch lock poisoned");
            let b = self.brain.lock().expect("prefetch lock poisoned");
            (st.ledger.counts(), st.ledger.budget(), st.ledger.held(), b.streams(), b.files())
        };
        let announcers: Vec<serde_json::Value> = {
            let f = self.followers.lock().expect("prefetch lock poisoned");
            let mut pids: Vec<u32> = f.announcers.iter().copied().collect();
            pids.sort_unstable();
            pids.into_iter()
                .map(|pid| {
                    let (demand, hits) = f.counts.get(&pid).copied().unwrap_or_default();
                    serde_json::json!({
                        "pid": pid,
                        "demand_pages": demand,
                        "prefetch_hits": hits,
                        "hit_ratio": if demand == 0 { 0.0 } else { hits as f64 / demand as f64 },
                    })
                })
                .collect()
        };
        serde_json::json!({
            "predictor": self.name,
            "budget_bytes": budget,
            "held_bytes": held,
            "prefetched_bytes": c.issued_bytes,
            "useful_bytes": c.useful_bytes,
            "wasted_bytes": c.wasted_bytes,
            "demand_pages": c.demand_pages,
            "prefetch_hits": c.prefetch_hits,
            "readahead_hits": c.readahead_hits,
            "fetched_pages": c.fetched_pages,
            "precision": c.precision(),
            "coverage": c.coverage(),
            "hit_ratio": c.hit_ratio(),
            "streams": streams,
            "catalog_files": files,
            "announcers": announcers,
        })
    }
}
