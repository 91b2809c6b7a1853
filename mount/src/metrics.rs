//! The mount's Prometheus metrics (`ferry mount --metrics-listen`): opens
//! by where their bytes come from, reads through the mount and their
//! latency, demand pages by source, writes, local copies, and the
//! prefetcher's counters, per announcing reader too.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Where an open's bytes, or a demand page, came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabel {
    pub(crate) source: &'static str,
}

/// One announcing reader (the process that wrote its read order).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReaderLabel {
    pid: String,
}

type Ratio = Gauge<f64, AtomicU64>;

/// The mount's counters. Counting costs an atomic add; the prefetcher's
/// figures are read from it at each scrape.
#[derive(Debug)]
pub(crate) struct MountMetrics {
    registry: Registry,
    /// One scrape at a time (the per-reader families are rebuilt in it).
    scrape: std::sync::Mutex<()>,
    pub(crate) opens: Family<SourceLabel, Counter>,
    pub(crate) reads: Counter,
    pub(crate) read_bytes: Counter,
    pub(crate) read_errors: Counter,
    pub(crate) read_seconds: Histogram,
    pub(crate) demand_pages: Family<SourceLabel, Counter>,
    pub(crate) written_bytes: Counter,
    pub(crate) persists: Counter,
    pub(crate) persisted_bytes: Counter,
    pub(crate) persist_errors: Counter,
    local_copy_bytes: Gauge,
    prefetch_budget: Gauge,
    prefetch_held: Gauge,
    prefetched_bytes: Counter,
    prefetch_useful_bytes: Counter,
    prefetch_wasted_bytes: Counter,
    prefetch_precision: Ratio,
    prefetch_hit_ratio: Ratio,
    reader_demand_pages: Family<ReaderLabel, Counter>,
    reader_prefetch_hits: Family<ReaderLabel, Counter>,
    reader_hit_ratio: Family<ReaderLabel, Ratio>,
}

impl Default for MountMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Sets counter `c` to `v` (the prefetcher keeps its own totals; they only grow).
fn catch_up(c: &Counter, v: u64) {
    let now = c.get();
    if v > now {
        c.inc_by(v - now);
    }
}

impl MountMetrics {
    pub(crate) fn new() -> MountMetrics {
        let mut top = Registry::with_prefix("ferry");
        let m = MountMetrics {
            registry: Registry::default(),
            scrape: std::sync::Mutex::new(()),
            opens: Family::default(),
            reads: Counter::default(),
            read_bytes: Counter::default(),
            read_errors: Counter::default(),
            read_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 18)),
            demand_pages: Family::default(),
            written_bytes: Counter::default(),
            persists: Counter::default(),
            persisted_bytes: Counter::default(),
            persist_errors: Counter::default(),
            local_copy_bytes: Gauge::default(),
            prefetch_budget: Gauge::default(),
            prefetch_held: Gauge::default(),
            prefetched_bytes: Counter::default(),
            prefetch_useful_bytes: Counter::default(),
            prefetch_wasted_bytes: Counter::default(),
            prefetch_precision: Ratio::default(),
            prefetch_hit_ratio: Ratio::default(),
            reader_demand_pages: Family::default(),
            reader_prefetch_hits: Family::default(),
            reader_hit_ratio: Family::default(),
        };
        let r = top.sub_registry_with_prefix("mount");
        r.register(
            "opens",
            "Files opened for reading, by where reads go: local_copy, store_file and writer are read \
             by the kernel from a local file (passthrough), cluster through the cache nodes",
            m.opens.clone(),
        );
        r.register("reads", "Read requests answered by the mount (not passthrough)", m.reads.clone());
        r.register("read_bytes", "Bytes those reads returned", m.read_bytes.clone());
        r.register("read_errors", "Read requests that failed", m.read_errors.clone());
        r.register("read_duration_seconds", "Latency of reads answered by the mount", m.read_seconds.clone());
        r.register(
            "demand_pages",
            "Pages reads touched, by source: fetched (asked then), readahead, prefetched",
            m.demand_pages.clone(),
        );
        r.register(
            "written_bytes",
            "Bytes written through the mount (not counting passthrough writes, which go to the staging file)",
            m.written_bytes.clone(),
        );
        r.register("persisted_bytes", "Bytes of written files made durable on a node", m.persisted_bytes.clone());
        r.register("persists", "Written files made durable on a node (fsync, close)", m.persists.clone());
        r.register("persist_errors", "fsyncs and closes that could not make a file durable", m.persist_errors.clone());
        r.register("local_copy_bytes", "Bytes of whole-file local copies kept", m.local_copy_bytes.clone());
        r.register("prefetch_budget_bytes", "Most prefetched bytes held unread", m.prefetch_budget.clone());
        r.register("prefetch_held_bytes", "Prefetched bytes held or in flight, unread", m.prefetch_held.clone());
        r.register("prefetched_bytes", "Bytes prefetched", m.prefetched_bytes.clone());
        r.register("prefetch_useful_bytes", "Prefetched bytes a reader then read", m.prefetch_useful_bytes.clone());
        r.register("prefetch_wasted_bytes", "Prefetched bytes given up unread", m.prefetch_wasted_bytes.clone());
        r.register("prefetch_precision_ratio", "Useful / prefetched bytes", m.prefetch_precision.clone());
        r.register(
            "prefetch_hit_ratio",
            "Demand pages at hand (prefetched or read ahead) / demand pages",
            m.prefetch_hit_ratio.clone(),
        );
        r.register(
            "reader_demand_pages",
            "Pages read by the processes following an announced order, per announcing process",
            m.reader_demand_pages.clone(),
        );
        r.register(
            "reader_prefetch_hits",
            "Of those, pages that were prefetched, per announcing process",
            m.reader_prefetch_hits.clone(),
        );
        r.register(
            "reader_hit_ratio",
            "Prefetch hits / demand pages, per announcing process",
            m.reader_hit_ratio.clone(),
        );
        let build: Family<Vec<(String, String)>, Gauge> = Family::default();
        build.get_or_create(&vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]).set(1);
        top.register("build_info", "The running ferry's version (always 1)", build);
        MountMetrics { registry: top, ..m }
    }

    pub(crate) fn opened(&self, source: &'static str) {
        self.opens.get_or_create(&SourceLabel { source }).inc();
    }

    pub(crate) fn page(&self, source: &'static str) {
        self.demand_pages.get_or_create(&SourceLabel { source }).inc();
    }

    /// The metrics in Prometheus text format, with the local copies'
    /// size and the prefetcher's `stats` (see `.ferry-stats`) as of now.
    pub(crate) fn encode(&self, local_copy_bytes: u64, stats: Option<&serde_json::Value>) -> String {
        let _one = self.scrape.lock().expect("scrape lock poisoned");
        self.local_copy_bytes.set(i64::try_from(local_copy_bytes).unwrap_or(i64::MAX));
        if let Some(s) = stats {
            let n = |k: &str| s[k].as_u64().unwrap_or(0);
            self.prefetch_budget.set(i64::try_from(n("budget_bytes")).unwrap_or(i64::MAX));
            self.prefetch_held.set(i64::try_from(n("held_bytes")).unwrap_or(i64::MAX));
            catch_up(&self.prefetched_bytes, n("prefetched_bytes"));
            catch_up(&self.prefetch_useful_bytes, n("useful_bytes"));
            catch_up(&self.prefetch_wasted_bytes, n("wasted_bytes"));
            self.prefetch_precision.set(s["precision"].as_f64().unwrap_or(0.0));
            self.prefetch_hit_ratio.set(s["hit_ratio"].as_f64().unwrap_or(0.0));
            // The announcers the prefetcher still remembers, with its totals.
            self.reader_demand_pages.clear();
            self.reader_prefetch_hits.clear();
            self.reader_hit_ratio.clear();
            for a in s["announcers"].as_array().into_iter().flatten() {
                let label = ReaderLabel { pid: a["pid"].as_u64().unwrap_or(0).to_string() };
                self.reader_demand_pages.get_or_create(&label).inc_by(a["demand_pages"].as_u64().unwrap_or(0));
                self.reader_prefetch_hits.get_or_create(&label).inc_by(a["prefetch_hits"].as_u64().unwrap_or(0));
                self.reader_hit_ratio.get_or_create(&label).set(a["hit_ratio"].as_f64().unwrap_or(0.0));
            }
        }
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
