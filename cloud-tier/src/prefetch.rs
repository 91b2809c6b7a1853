//! Prefetch in the cache node: every client connection is a reader, its
//! demand reads go to a [`Prefetcher`], and the pages it expects next are
//! fetched from the store into the page cache, with at most a byte budget
//! of prefetched pages not read yet.
//!
//! A folder becomes part of the catalog the first time it is read in (one
//! listing). The node's metrics count what prefetch fetched, what of it was
//! read, and what demand reads found (`ferry_prefetch_*`).

use std::sync::{Arc, Mutex};

use ferry_predictor::ledger::Ledger;
use ferry_predictor::online::Online;
use ferry_predictor::PrefetchConfig;
use ferry_protocol::codec::{listed_files, DirEntry, ObjectInfo};
use ferry_protocol::ids::NsPath;

use crate::cache::PageCache;
use crate::clock::Clock;
use crate::metrics::Metrics;

/// The node's prefetcher.
pub struct NodePrefetch {
    cache: Arc<PageCache>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    name: String,
    brain: Mutex<Online>,
    /// Prefetched pages not read yet (a page read leaves the ledger: the
    /// page cache holds its bytes).
    issued: Mutex<Ledger<(String, u64)>>,
    /// Which pages this node may fill (in a cluster: those it owns).
    only: std::sync::OnceLock<OwnedPages>,
    /// Prefetch fetches in flight at once: predictions wait their turn, so
    /// a reader's own (demand) reads keep the store's bandwidth.
    slots: Arc<tokio::sync::Semaphore>,
}

/// Pages a node prefetches from its stores at once. Without a limit, one
/// first read in a folder started a whole budget of predicted pages at once
/// and the reader's own pages queued behind them (a cold read ran at a third
/// of the store's speed).
pub const PREFETCH_FETCHES: usize = 4;

/// Whether page `page` of a path is this node's to fill.
pub type OwnedPages = Box<dyn Fn(&str, u64) -> bool + Send + Sync>;

impl std::fmt::Debug for NodePrefetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePrefetch").field("predictor", &self.name).finish()
    }
}

impl NodePrefetch {
    /// A prefetcher using `predictor` (a name or model directory, see
    /// `ferry_predictor::models::by_name`) with `budget` bytes.
    pub fn new(
        cache: Arc<PageCache>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        predictor: &str,
        budget: u64,
    ) -> Result<NodePrefetch, ferry_predictor::models::ModelError> {
        let p = ferry_predictor::models::by_name(predictor)?;
        let name = p.name().to_string();
        let page_size = cache.page_size();
        Ok(NodePrefetch {
            cache,
            metrics,
            clock,
            name,
            brain: Mutex::new(Online::new(p, PrefetchConfig::default(), page_size)),
            issued: Mutex::new(Ledger::new(budget)),
            only: std::sync::OnceLock::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(PREFETCH_FETCHES)),
        })
    }

    /// Fills only the pages `owned` accepts (a node in a cluster prefetches
    /// its own pages, so no page is fetched from the store by two nodes
    /// that both predicted it).
    pub fn only_pages(&self, owned: OwnedPages) {
        let _ = self.only.set(owned);
    }

    /// A demand read of `[offset, offset + len)` of `path` (metadata `info`)
    /// by `reader`: counts it, learns from it, starts fetching what comes
    /// next. Returns a folder the caller should list and hand to
    /// [`NodePrefetch::add_dir`] before this reader's reads there are predicted.
    pub fn access(
        self: &Arc<Self>,
        reader: &str,
        path: &NsPath,
        info: &ObjectInfo,
        offset: u64,
        len: u64,
    ) -> Option<String> {
        let ps = self.cache.page_size();
        let end = offset.saturating_add(len).min(info.size);
        if info.size > 0 && offset < end {
            let mut issued = self.issued.lock().expect("prefetch lock poisoned");
            for page in offset / ps..=(end - 1) / ps {
                self.metrics.prefetch_demand_pages.inc();
                let key = (path.as_str().to_string(), page);
                if let Some(useful) = issued.read(&key) {
                    issued.forget(&key);
                    self.metrics.prefetch_useful_bytes.inc_by(useful);
                    self.metrics.prefetch_hits.inc();
                } else if !self.cache.holds(path, info, page) {
                    self.metrics.prefetch_demand_misses.inc();
                }
            }
        }
        let mut wants = Vec::new();
        let unknown =
            self.brain.lock().expect("prefetch lock poisoned").access(reader, path.as_str(), offset, len, &mut wants);
        for w in wants {
            let mut pages: Vec<u64> = (u64::from(w.first)..u64::from(w.end)).collect();
            if let Some(owned) = self.only.get() {
                pages.retain(|&p| owned(&w.path, p));
            }
            let wanted = self.claim(&w.path, w.size, &pages);
            if wanted.is_empty() {
                continue;
            }
            let Ok(nspath) = NsPath::parse(&w.path) else { continue };
            let me = self.clone();
            tokio::spawn(async move {
                let Ok(info) = me.cache.stat(&nspath).await else { return };
                for page in wanted {
                    let Ok(_slot) = me.slots.clone().acquire_owned().await else { return };
                    if me.cache.prefetch_and_wait(&nspath, &info, page).await {
                        me.metrics.prefetch_fetches.inc();
                    }
                }
            });
        }
        unknown
    }

    /// Marks the pages of `path` to prefetch (those not asked for already,
    /// within the budget); returns them.
    fn claim(&self, path: &str, size: u64, pages: &[u64]) -> Vec<u64> {
        let ps = self.cache.page_size();
        let now = self.clock.now_ms();
        let mut issued = self.issued.lock().expect("prefetch lock poisoned");
        let mut out = Vec::new();
        for &page in pages {
            let bytes = size.saturating_sub(page * ps).min(ps);
            let key = (path.to_string(), page);
            if bytes == 0 || issued.contains(&key) {
                continue;
            }
            let wasted = issued.counts().wasted_bytes;
            // Wrong guesses make room once they are stale.
            let fits = issued.issue(key, bytes, now).is_some();
            self.metrics.prefetch_wasted_bytes.inc_by(issued.counts().wasted_bytes - wasted);
            if !fits {
                break;
            }
            self.metrics.prefetch_bytes.inc_by(bytes);
            out.push(page);
        }
        out
    }

    /// Adds a listed folder to the catalog.
    pub fn add_dir(&self, dir: &str, entries: Result<Vec<DirEntry>, impl std::fmt::Display>) {
        self.brain.lock().expect("prefetch lock poisoned").listed(dir, listed_files(dir, entries));
    }
}
