//! Prometheus metrics of a cache node, and the thin HTTP endpoint that serves them.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label naming a cache tier or the store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    /// `memory`, `disk` or `store`.
    pub tier: &'static str,
}

/// Labels of bytes served: the tier and the namespace mount (`/datasets`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServedLabel {
    /// `memory`, `disk` or `store`.
    pub tier: &'static str,
    /// The mount's name in the namespace.
    pub mount: String,
}

/// Label naming a namespace mount.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MountLabel {
    /// The mount's name in the namespace.
    pub mount: String,
}

/// Label naming an operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// Operation name.
    pub op: &'static str,
}

/// Label of a counter split by outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// All metrics of one node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Page lookups served by a tier.
    pub hits: Family<ServedLabel, Counter>,
    /// Page lookups that no tier could serve.
    pub misses: Counter,
    /// Bytes served, by the tier they came from and the mount.
    pub bytes_served: Family<ServedLabel, Counter>,
    /// Bytes served per tier (memory, disk, store), over every mount.
    served_total: [std::sync::atomic::AtomicU64; 3],
    /// Bytes held, per tier.
    pub used_bytes: Family<TierLabel, Gauge>,
    /// Requests sent to object stores, by operation.
    pub store_requests: Family<OpLabel, Counter>,
    /// Bytes read from object stores, by mount.
    pub store_bytes: Family<MountLabel, Counter>,
    /// Directory listings answered, by `result` (hit: from the listing cache).
    pub listings: Family<ResultLabel, Counter>,
    /// Bytes of pages taken from another node's cache instead of the store.
    pub peer_bytes: Counter,
    /// Disk pages that failed their checksum.
    pub corrupt_pages: Counter,
    /// Page fetches that joined one already in flight.
    pub coalesced: Counter,
    /// Latency of protocol requests, by operation.
    pub request_seconds: Family<OpLabel, Histogram>,
    /// Chunks received from edge agents (not already held).
    pub chunks_received: Counter,
    /// Decoded bytes of those chunks.
    pub chunk_bytes: Counter,
    /// Bytes of those chunks as sent (after compression).
    pub chunk_wire_bytes: Counter,
    /// Bytes of pages prefetch asked for.
    pub prefetch_bytes: Counter,
    /// Of those, bytes a reader then read.
    pub prefetch_useful_bytes: Counter,
    /// Of those, bytes given up unread.
    pub prefetch_wasted_bytes: Counter,
    /// Prefetch requests that started a store fetch (the rest were cached or in flight).
    pub prefetch_fetches: Counter,
    /// Pages demand reads touched.
    pub prefetch_demand_pages: Counter,
    /// Demand pages that prefetch had asked for.
    pub prefetch_hits: Counter,
    /// Demand pages neither cached, in flight, nor prefetched.
    pub prefetch_demand_misses: Counter,
    /// Useful / prefetched bytes, at the last scrape.
    pub prefetch_precision: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Prefetch hits / (prefetch hits + demand misses), at the last scrape.
    pub prefetch_coverage: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Demand pages at hand (cached, in flight or prefetched) / demand pages, at the last scrape.
    pub demand_hit_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Readers whose announced read order ranks the cache's pages.
    pub announced_readers: Gauge,
    /// Pages those orders have still to read.
    pub announced_pages: Gauge,
}

fn tier(t: &'static str) -> TierLabel {
    TierLabel { tier: t }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ferry");
        let m = Metrics {
            hits: Family::default(),
            misses: Counter::default(),
            bytes_served: Family::default(),
            used_bytes: Family::default(),
            store_requests: Family::default(),
            store_bytes: Family::default(),
            served_total: Default::default(),
            listings: Family::default(),
            peer_bytes: Counter::default(),
            corrupt_pages: Counter::default(),
            coalesced: Counter::default(),
            chunks_received: Counter::default(),
            chunk_bytes: Counter::default(),
            chunk_wire_bytes: Counter::default(),
            prefetch_bytes: Counter::default(),
            prefetch_useful_bytes: Counter::default(),
            prefetch_wasted_bytes: Counter::default(),
            prefetch_fetches: Counter::default(),
            prefetch_demand_pages: Counter::default(),
            prefetch_hits: Counter::default(),
            prefetch_demand_misses: Counter::default(),
            prefetch_precision: Gauge::default(),
            prefetch_coverage: Gauge::default(),
            demand_hit_ratio: Gauge::default(),
            announced_readers: Gauge::default(),
            announced_pages: Gauge::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18))),
            registry: Registry::default(),
        };
        registry.register("cache_hits", "Page lookups served by a cache tier, by mount", m.hits.clone());
        registry.register("cache_misses", "Page lookups served by no tier", m.misses.clone());
        registry.register("bytes_served", "Bytes served to readers by origin tier and mount", m.bytes_served.clone());
        registry.register("cache_used_bytes", "Bytes held per cache tier", m.used_bytes.clone());
        registry.register("store_requests", "Requests sent to object stores", m.store_requests.clone());
        registry.register(
            "listings",
            "Directory listings answered, by result (hit: from the listing cache, miss: listed in the store)",
            m.listings.clone(),
        );
        registry.register("store_read_bytes", "Bytes read from object stores, by mount", m.store_bytes.clone());
        registry.register(
            "peer_read_bytes",
            "Bytes of pages taken from another node's cache instead of the store (hand-off after a join)",
            m.peer_bytes.clone(),
        );
        registry.register(
            "announced_readers",
            "Readers whose announced read order ranks cached pages for eviction",
            m.announced_readers.clone(),
        );
        registry.register("announced_pages", "Pages announced orders have still to read", m.announced_pages.clone());
        registry.register("corrupt_pages", "Disk pages that failed their checksum", m.corrupt_pages.clone());
        registry.register(
            "coalesced_fetches",
            "Page misses that joined a fetch already in flight",
            m.coalesced.clone(),
        );
        registry.register("request_duration_seconds", "Protocol request latency", m.request_seconds.clone());
        registry.register("edge_chunks_received", "Chunks received from edge agents", m.chunks_received.clone());
        registry.register("edge_chunk_bytes", "Decoded bytes of chunks received", m.chunk_bytes.clone());
        registry.register("edge_chunk_wire_bytes", "Bytes of chunks received as sent", m.chunk_wire_bytes.clone());
        registry.register("prefetch_bytes", "Bytes of pages prefetch asked for", m.prefetch_bytes.clone());
        registry.register(
            "prefetch_useful_bytes",
            "Prefetched bytes a reader then read",
            m.prefetch_useful_bytes.clone(),
        );
        registry.register("prefetch_wasted_bytes", "Prefetched bytes given up unread", m.prefetch_wasted_bytes.clone());
        registry.register("prefetch_fetches", "Prefetches that started a store fetch", m.prefetch_fetches.clone());
        registry.register("demand_pages", "Pages demand reads touched", m.prefetch_demand_pages.clone());
        registry.register("prefetch_hits", "Demand pages prefetch had asked for", m.prefetch_hits.clone());
        registry.register(
            "demand_misses",
            "Demand pages neither cached, in flight nor prefetched",
            m.prefetch_demand_misses.clone(),
        );
        registry.register("prefetch_precision_ratio", "Useful / prefetched bytes", m.prefetch_precision.clone());
        registry.register(
            "prefetch_coverage_ratio",
            "Prefetch hits / (prefetch hits + demand misses)",
            m.prefetch_coverage.clone(),
        );
        registry.register("demand_hit_ratio", "Demand pages at hand / demand pages", m.demand_hit_ratio.clone());
        let build: Family<Vec<(String, String)>, Gauge> = Family::default();
        build.get_or_create(&vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]).set(1);
        registry.register("build_info", "The running ferry's version (always 1)", build);
        Metrics { registry, ..m }
    }

    /// Counts one chunk received: `raw` bytes decoded, `wire` as sent.
    pub fn chunk_received(&self, raw: u64, wire: u64) {
        self.chunks_received.inc();
        self.chunk_bytes.inc_by(raw);
        self.chunk_wire_bytes.inc_by(wire);
    }

    /// Counts a hit in `t` of `bytes` of a page of `mount`.
    pub fn hit(&self, t: &'static str, mount: &str, bytes: u64) {
        let label = ServedLabel { tier: t, mount: mount.to_string() };
        self.hits.get_or_create(&label).inc();
        self.served(t, mount, bytes);
    }

    /// Counts `bytes` served from `t` (`memory`, `disk`, `store`) for `mount`.
    pub fn served(&self, t: &'static str, mount: &str, bytes: u64) {
        self.bytes_served.get_or_create(&ServedLabel { tier: t, mount: mount.to_string() }).inc_by(bytes);
        if let Some(i) = ["memory", "disk", "store"].iter().position(|x| *x == t) {
            self.served_total[i].fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Bytes served from tier `t` over every mount.
    pub fn served_from(&self, t: &str) -> u64 {
        ["memory", "disk", "store"]
            .iter()
            .position(|x| *x == t)
            .map_or(0, |i| self.served_total[i].load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Counts one store request of kind `op`.
    pub fn store_request(&self, op: &'static str) {
        self.store_requests.get_or_create(&OpLabel { op }).inc();
    }

    /// Counts one directory listing answered (`hit` from the cache, `miss`).
    pub fn listing(&self, result: &'static str) {
        self.listings.get_or_create(&ResultLabel { result }).inc();
    }

    /// Sum of store requests of every kind.
    pub fn store_requests_total(&self) -> u64 {
        ["head", "get", "list"].iter().map(|op| self.store_requests.get_or_create(&OpLabel { op }).get()).sum()
    }

    /// Sets the bytes held by tier `t`.
    pub fn set_used(&self, t: &'static str, bytes: u64) {
        self.used_bytes.get_or_create(&tier(t)).set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records the latency of one request.
    pub fn observe(&self, op: &'static str, seconds: f64) {
        self.request_seconds.get_or_create(&OpLabel { op }).observe(seconds);
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (hits, misses, demand) =
            (self.prefetch_hits.get(), self.prefetch_demand_misses.get(), self.prefetch_demand_pages.get());
        self.prefetch_precision.set(ratio(self.prefetch_useful_bytes.get(), self.prefetch_bytes.get()));
        self.prefetch_coverage.set(ratio(hits, hits + misses));
        self.demand_hit_ratio.set(ratio(demand - misses.min(demand), demand));
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener, metrics).await
}

/// Serves `GET /metrics` on an already bound listener, and `GET /healthz`
/// and `/readyz` (`ok` while the process serves).
pub async fn serve_on(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = health(axum::Router::new()).route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    m.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

/// `router` with `GET /healthz` and `GET /readyz`, both `ok`: the process
/// answers, and it answers only once it serves (its listener is bound
/// after start).
pub fn health(router: axum::Router) -> axum::Router {
    router
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ok\n" }))
}
