//! ferry's robot agent: streams sensor logs to the cloud.
//!
//! - [`config`]: `edge.toml`, every key with its default.
//! - `bandwidth`: the upload cap, a token bucket over the time-of-day rate.
//! - [`error`]: the agent's error type, [`EdgeError`].
//! - [`names`]: how a file name (bytes) becomes an object path.
//! - [`spool`]: the SQLite spool of watched files, their chunks and progress.
//! - [`agent`]: the upload loop — scan, content-defined chunking, zstd,
//!   bandwidth cap, priorities, commits, retention — and `ferry edge status`.
//! - [`models`]: the model receiver — MQTT announcements, signed manifests,
//!   delta fetch, atomic install, rollback, status reports.

pub mod agent;
mod bandwidth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod models;
pub mod names;
pub mod spool;

pub use agent::EdgeAgent;
pub use config::EdgeConfig;
pub use error::EdgeError;
