//! ferry's predictor: access sequences in, prefetch decisions out.
//!
//! Not built yet. The crate depends on no other ferry crate.
