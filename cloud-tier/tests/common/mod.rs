//! Helpers shared by the cache node's integration tests (they live in the
//! crate's `testing` module, so the mount's and the benchmarks' tests use
//! the same ones).
#![allow(dead_code, unused_imports)]

pub use ferry_cloud_tier::testing::*;
