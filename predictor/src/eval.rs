//! Replays a trace against a cache and a store to score a predictor:
//! precision, coverage, timeliness, hit ratio and bytes wasted, beside the
//! oracle (exact future for prefetch, Belady for eviction).
//!
//! The model: a page cache of `cache_bytes`; a store link of `bandwidth`
//! bytes per second shared by demand and prefetch fetches, each landing
//! `latency_us` after its last byte crosses; prefetched pages not yet read
//! may hold at most `budget_bytes`. The trace is replayed open-loop: reads
//! happen at their recorded times.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::catalog::{Catalog, FileId};
use crate::trace::{Event, Trace};
use crate::{Fetch, Predictor, PrefetchConfig, Prefetcher};

/// The cache and store a trace is replayed against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    pub cache_bytes: u64,
    pub budget_bytes: u64,
    pub latency_us: u64,
    /// Store bytes per second; 0 means unlimited.
    pub bandwidth: u64,
    pub prefetch: PrefetchConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            cache_bytes: 256 << 20,
            budget_bytes: 64 << 20,
            latency_us: 20_000,
            bandwidth: 100_000_000,
            prefetch: PrefetchConfig::default(),
        }
    }
}

/// Raw counts of one replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Demand page reads.
    pub reads: u64,
    /// Reads served by a page already in the cache.
    pub hits: u64,
    /// Reads that had to wait for the store (no page, or a fetch still on its way).
    pub misses: u64,
    pub prefetched_bytes: u64,
    /// Prefetched bytes later read.
    pub useful_bytes: u64,
    /// Prefetched bytes evicted or never read.
    pub wasted_bytes: u64,
    /// Prefetched pages later read.
    pub useful_pages: u64,
    /// Prefetched pages that had landed when they were read.
    pub timely_pages: u64,
}

/// Figures of one predictor on one trace, with the oracle's beside them.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub trace: String,
    pub predictor: String,
    /// Useful prefetched bytes / prefetched bytes.
    pub precision: f64,
    /// Demand misses removed / misses without prefetch.
    pub coverage: f64,
    /// Useful prefetches that landed before the read / useful prefetches.
    pub timeliness: f64,
    pub hit_ratio: f64,
    pub wasted_bytes: u64,
    pub prefetched_bytes: u64,
    pub oracle_precision: f64,
    pub oracle_coverage: f64,
    pub oracle_timeliness: f64,
    pub oracle_hit_ratio: f64,
    /// Coverage of the jump-blind ceiling ([`run_causal`]).
    pub causal_coverage: f64,
    /// Hit ratio of the jump-blind ceiling.
    pub causal_hit_ratio: f64,
    pub counts: Counts,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Counts {
    pub fn precision(&self) -> f64 {
        ratio(self.useful_bytes, self.prefetched_bytes)
    }
    pub fn timeliness(&self) -> f64 {
        ratio(self.timely_pages, self.useful_pages)
    }
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.hits, self.reads)
    }
    /// Share of `baseline`'s misses these counts avoided.
    pub fn coverage(&self, baseline: &Counts) -> f64 {
        if baseline.misses == 0 {
            return 0.0;
        }
        (baseline.misses as f64 - self.misses as f64) / baseline.misses as f64
    }
}

type Page = u64;

fn page(file: FileId, p: u32) -> Page {
    ((file as u64) << 32) | p as u64
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ready: u64,
    prefetched: bool,
    bytes: u64,
    rank: u64,
}

/// Pages by rank; the lowest rank is evicted first.
#[derive(Debug, Default)]
struct Cache {
    cap: u64,
    used: u64,
    map: HashMap<Page, Entry>,
    order: BTreeSet<(u64, Page)>,
}

impl Cache {
    fn rerank(&mut self, p: Page, rank: u64) {
        if let Some(e) = self.map.get_mut(&p) {
            self.order.remove(&(e.rank, p));
            e.rank = rank;
            self.order.insert((rank, p));
        }
    }

    /// Inserts a page, evicting as needed; returns evicted prefetched-unread bytes.
    fn insert(&mut self, p: Page, e: Entry) -> u64 {
        let mut wasted = 0;
        while self.used + e.bytes > self.cap {
            let Some(&(rank, victim)) = self.order.iter().next() else { break };
            self.order.remove(&(rank, victim));
            if let Some(v) = self.map.remove(&victim) {
                self.used -= v.bytes;
                if v.prefetched {
                    wasted += v.bytes;
                }
            }
        }
        self.used += e.bytes;
        self.order.insert((e.rank, p));
        self.map.insert(p, e);
        wasted
    }
}

/// One store link: a FIFO of bytes at `bandwidth`, then `latency`.
#[derive(Debug, Default)]
struct Link {
    free_at: u64,
    latency: u64,
    bandwidth: u64,
}

impl Link {
    fn fetch(&mut self, now: u64, bytes: u64) -> u64 {
        let transfer = (bytes * 1_000_000).checked_div(self.bandwidth).unwrap_or(0);
        self.free_at = self.free_at.max(now) + transfer;
        self.free_at + self.latency
    }
}

enum Mode<'a> {
    Predict(Prefetcher),
    Oracle {
        future: &'a Future,
    },
    /// Each stream's exact next reads up to its next jump (see [`run_causal`]).
    Causal {
        ahead: &'a [Vec<(Page, u64)>],
    },
}

/// For each access, the pages its stream (reader and folder) reads next, up
/// to the stream's next jump and at most `depth` files on: all that a
/// predictor which never foresees a jump could know.
fn causal_ahead(trace: &Trace, depth: usize) -> Vec<Vec<(Page, u64)>> {
    let cat = &trace.catalog;
    let mut accesses: Vec<(FileId, u32, u32)> = Vec::new();
    let mut streams: HashMap<(&str, u32), Vec<usize>> = HashMap::new();
    for a in trace.accesses() {
        let Some(id) = cat.id(&a.path) else { continue };
        let (first, end) = cat.pages_of(id, a.offset, a.len);
        streams.entry((a.reader.as_str(), cat.file(id).dir)).or_default().push(accesses.len());
        accesses.push((id, first, end));
    }
    let mut ahead = vec![Vec::new(); accesses.len()];
    for idxs in streams.values() {
        for (k, &i) in idxs.iter().enumerate() {
            let (mut prev, mut files, mut out) = (accesses[i].0, 0, Vec::new());
            for &j in &idxs[k + 1..] {
                let (file, first, end) = accesses[j];
                if file != prev {
                    let step = crate::Step::between(cat.file(prev).index as i64, cat.file(file).index as i64, first);
                    files += 1;
                    if step == crate::Step::Jump || files > depth {
                        break;
                    }
                    prev = file;
                }
                out.extend((first..end).map(|p| (page(file, p), page_bytes(cat, file, p))));
            }
            ahead[i] = out;
        }
    }
    ahead
}

/// An access's pages with their sizes, and when each is next read.
type PagesAhead = (Vec<(Page, u64)>, Vec<u64>);

/// For each access, its pages and when each is next read (Belady).
struct Future {
    /// Access index → (pages, next use of each page after this access).
    pages: Vec<PagesAhead>,
}

const NEVER: u64 = u64::MAX;

impl Future {
    fn new(trace: &Trace) -> Future {
        let cat = &trace.catalog;
        let mut pages = Vec::new();
        for a in trace.accesses() {
            let Some(id) = cat.id(&a.path) else { continue };
            let (first, end) = cat.pages_of(id, a.offset, a.len);
            let ps: Vec<(Page, u64)> = (first..end).map(|p| (page(id, p), page_bytes(cat, id, p))).collect();
            pages.push((ps, Vec::new()));
        }
        let mut next: HashMap<Page, u64> = HashMap::new();
        for i in (0..pages.len()).rev() {
            let nexts = pages[i].0.iter().map(|(p, _)| next.get(p).copied().unwrap_or(NEVER)).collect();
            for (p, _) in &pages[i].0 {
                next.insert(*p, i as u64);
            }
            pages[i].1 = nexts;
        }
        Future { pages }
    }
}

fn page_bytes(cat: &Catalog, file: FileId, p: u32) -> u64 {
    let size = cat.file(file).size;
    let ps = cat.page_size();
    size.saturating_sub(p as u64 * ps).min(ps).max(1)
}

/// How far ahead (in accesses) the oracle looks.
const ORACLE_LOOKAHEAD: usize = 512;

fn replay(trace: &Trace, cfg: &SimConfig, mut mode: Mode<'_>) -> Counts {
    let cat = &trace.catalog;
    let mut cache = Cache { cap: cfg.cache_bytes.max(cat.page_size()), ..Default::default() };
    let mut link = Link { latency: cfg.latency_us, bandwidth: cfg.bandwidth, ..Default::default() };
    let mut c = Counts::default();
    let mut outstanding: u64 = 0;
    let mut tick: u64 = 0;
    let mut fetches: Vec<Fetch> = Vec::new();
    let mut access_index = 0usize;
    let future = match &mode {
        Mode::Oracle { future } => Some(*future),
        Mode::Predict(_) | Mode::Causal { .. } => None,
    };
    // Prefetch-unread bytes evicted or fetched count against the budget;
    // each issue records (page, bytes, rank).
    for ev in &trace.events {
        let now = ev.time_us();
        let a = match ev {
            Event::Announce(an) => {
                if let Mode::Predict(pf) = &mut mode {
                    let ids: Vec<FileId> = an.announce.iter().filter_map(|p| cat.id(p)).collect();
                    pf.announce(&an.reader, ids);
                }
                continue;
            }
            Event::Access(a) => a,
        };
        let Some(id) = cat.id(&a.path) else { continue };
        let (first, end) = cat.pages_of(id, a.offset, a.len);
        for (k, p) in (first..end).enumerate() {
            let key = page(id, p);
            let bytes = page_bytes(cat, id, p);
            tick += 1;
            let rank = match future {
                Some(f) => NEVER - f.pages[access_index].1[k],
                None => tick,
            };
            c.reads += 1;
            match cache.map.get_mut(&key) {
                Some(e) => {
                    let timely = e.ready <= now;
                    if timely {
                        c.hits += 1;
                    } else {
                        c.misses += 1;
                    }
                    if e.prefetched {
                        e.prefetched = false;
                        outstanding = outstanding.saturating_sub(e.bytes);
                        c.useful_bytes += e.bytes;
                        c.useful_pages += 1;
                        if timely {
                            c.timely_pages += 1;
                        }
                    }
                    cache.rerank(key, rank);
                }
                None => {
                    c.misses += 1;
                    let ready = link.fetch(now, bytes);
                    let wasted = cache.insert(key, Entry { ready, prefetched: false, bytes, rank });
                    c.wasted_bytes += wasted;
                    outstanding = outstanding.saturating_sub(wasted);
                }
            }
        }
        // What to fetch ahead.
        fetches.clear();
        let mut wanted: Vec<(Page, u64, u64)> = Vec::new();
        match &mut mode {
            Mode::Predict(pf) => {
                pf.access(cat, &a.reader, id, a.offset, a.len, &mut fetches);
                for f in &fetches {
                    for p in f.first..f.end {
                        tick += 1;
                        wanted.push((page(f.file, p), page_bytes(cat, f.file, p), tick));
                    }
                }
            }
            Mode::Causal { ahead } => {
                for &(p, bytes) in &ahead[access_index] {
                    tick += 1;
                    wanted.push((p, bytes, tick));
                }
            }
            Mode::Oracle { future } => {
                // Every reader's next reads, in the order they will happen,
                // so the link carries first what is needed first.
                'ahead: for j in access_index + 1..(access_index + 1 + ORACLE_LOOKAHEAD).min(future.pages.len()) {
                    for &(p, bytes) in &future.pages[j].0 {
                        if cache.map.contains_key(&p) {
                            continue;
                        }
                        if outstanding + bytes > cfg.budget_bytes {
                            break 'ahead;
                        }
                        wanted.push((p, bytes, NEVER - j as u64));
                        outstanding += bytes;
                    }
                }
                for (_, bytes, _) in &wanted {
                    outstanding -= bytes;
                }
            }
        }
        for (p, bytes, rank) in wanted {
            if cache.map.contains_key(&p) || outstanding + bytes > cfg.budget_bytes {
                continue;
            }
            let ready = link.fetch(now, bytes);
            c.prefetched_bytes += bytes;
            outstanding += bytes;
            let wasted = cache.insert(p, Entry { ready, prefetched: true, bytes, rank });
            c.wasted_bytes += wasted;
            outstanding = outstanding.saturating_sub(wasted);
        }
        access_index += 1;
    }
    c.wasted_bytes += cache.map.values().filter(|e| e.prefetched).map(|e| e.bytes).sum::<u64>();
    c
}

/// Replays `trace` with `predictor` choosing prefetches (LRU eviction).
pub fn run(trace: &Trace, cfg: &SimConfig, predictor: Box<dyn Predictor>) -> Counts {
    replay(trace, cfg, Mode::Predict(Prefetcher::new(predictor, cfg.prefetch)))
}

/// Replays `trace` with exact knowledge of each reader's future reads and
/// Belady eviction: the ceiling.
pub fn run_oracle(trace: &Trace, cfg: &SimConfig) -> Counts {
    let future = Future::new(trace);
    replay(trace, cfg, Mode::Oracle { future: &future })
}

/// Replays `trace` prefetching, for each stream, exactly what it reads next
/// until its next jump (`cfg.prefetch.depth` files at most), with LRU
/// eviction: the ceiling of any predictor that cannot foresee where a
/// reader jumps (a new clip, a new scene), unlike [`run_oracle`].
pub fn run_causal(trace: &Trace, cfg: &SimConfig) -> Counts {
    let ahead = causal_ahead(trace, cfg.prefetch.depth);
    replay(trace, cfg, Mode::Causal { ahead: &ahead })
}

/// Makes a fresh predictor (online learners start empty on each trace).
pub type Factory<'a> = &'a dyn Fn() -> Result<Box<dyn Predictor>, crate::models::ModelError>;

/// Scores each predictor on `trace`, with the oracle's figures beside them.
pub fn evaluate(
    trace: &Trace,
    cfg: &SimConfig,
    predictors: &[(String, Factory<'_>)],
) -> Result<Vec<Row>, crate::models::ModelError> {
    let none = run(trace, cfg, Box::new(crate::models::NonePredictor));
    let oracle = run_oracle(trace, cfg);
    let causal = run_causal(trace, cfg);
    let mut rows = Vec::new();
    for (name, make) in predictors {
        let counts = if name == "none" { none.clone() } else { run(trace, cfg, make()?) };
        rows.push(Row {
            trace: trace.name.clone(),
            predictor: name.clone(),
            precision: counts.precision(),
            coverage: counts.coverage(&none),
            timeliness: counts.timeliness(),
            hit_ratio: counts.hit_ratio(),
            wasted_bytes: counts.wasted_bytes,
            prefetched_bytes: counts.prefetched_bytes,
            oracle_precision: oracle.precision(),
            oracle_coverage: oracle.coverage(&none),
            oracle_timeliness: oracle.timeliness(),
            oracle_hit_ratio: oracle.hit_ratio(),
            causal_coverage: causal.coverage(&none),
            causal_hit_ratio: causal.hit_ratio(),
            counts,
        });
    }
    Ok(rows)
}

/// Next-step accuracy of a predictor on the streams of `traces`: the share
/// of steps (jumps included) it names exactly, learning online as it goes.
pub fn step_accuracy(predictor: &mut dyn Predictor, traces: &[Trace]) -> f64 {
    let (mut right, mut all) = (0u64, 0u64);
    for (ctx, next) in crate::models::samples(traces) {
        let guess = predictor.predict(&ctx, 1).first().copied().unwrap_or(crate::Step::Jump);
        right += u64::from(guess == next);
        all += 1;
        predictor.observe(&ctx, next);
    }
    ratio(right, all)
}
