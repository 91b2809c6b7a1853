//! ferry's cache node.
//!
//! A tour of the modules:
//!
//! - [`config`]: `cloud.toml`, every key with its default.
//! - [`namespace`]: several object stores (S3, GCS, Azure, local files) in
//!   one namespace of mounts; [`confined`]: the `file://` store, kept
//!   inside its root whatever links it holds.
//! - [`direct`]: a client's reads straight from the stores when no node
//!   answers (opt-in, capped, never a path with pending writes).
//! - [`cache`]: the page cache — eviction policy, memory and disk page
//!   stores, the persisted index, metadata TTL, single flight and streaming
//!   cold reads.
//! - [`journal`]: the write-back journal — writes acknowledged after fsync,
//!   uploaded to the store behind the writer, resumed after a crash.
//! - [`chunks`]: content-addressed chunks sent by edge agents, from which
//!   objects are committed.
//! - [`node`]: request handling ([`node::CacheNode`], plain async logic) and
//!   the thin QUIC adapter that serves it.
//! - `testing` (feature `test-support`, never in a shipped binary): an
//!   object store wrapper adding latency, a bandwidth cap and injected
//!   errors, and helpers that start nodes and clients for tests and
//!   benchmarks.
//! - [`metrics`]: Prometheus counters and the `/metrics` endpoint.
//! - [`s3`]: the S3-compatible endpoint over the namespace (`ferry s3`).
//! - [`clock`]: the injected wall clock.
//! - [`payload`]: GET results as streams of large chunks.
//! - [`prefetch`]: the node's prefetcher (a predictor per connection,
//!   pages fetched ahead into the cache under a byte budget); [`recorder`]
//!   writes demand reads as traces to train it on.

pub mod cache;
pub mod chunks;
pub use ferry_protocol::clock;
pub mod config;
pub mod confined;
pub mod direct;
pub mod dirs;
pub mod error;
pub mod journal;
pub mod metrics;
pub mod namespace;
pub mod node;
pub mod payload;
pub mod prefetch;
pub mod recorder;
pub mod s3;
#[cfg(feature = "test-support")]
pub mod testing;

pub use config::CloudConfig;
pub use error::{ConfigError, NodeError};
pub use node::{CacheNode, RunningNode};
