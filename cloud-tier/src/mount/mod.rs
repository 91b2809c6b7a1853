//! `ferry mount`: the namespace as a local filesystem on a training machine.
//!
//! [`fs::MountFs`] is the filesystem: plain async methods over a
//! [`ferry_protocol::client::Cluster`] that return [`fs::FsError`]s carrying
//! an errno. [`fuse`] is the thin adapter that turns kernel requests into
//! those calls and their results into replies; it holds no logic.
//!
//! Reads: a handle that reads sequentially fetches whole pages from their
//! owners and keeps [`fs::READAHEAD_PAGES`] pages in flight ahead of the
//! reader; a handle that jumps around fetches just the bytes asked for, so
//! random 4 KiB reads do not pull 4 MiB pages.
//!
//! Writes: a file opened for writing is staged in a local file (local-disk
//! speed); `flush` (every `close`) and `fsync` send it to the cache node that
//! owns the path, which acknowledges once the bytes are fsynced in its
//! write-back journal and persists them to the object store behind the
//! writer. `rename` and `unlink` go to the node. Directories are prefixes in
//! object stores; `mkdir` makes an empty one that exists until something is
//! written under it.
//!
//! Prefetch: every demand read also goes to a [`prefetch::MountPrefetch`],
//! which keeps a stream per reading process and directory, predicts the
//! files that come next and fetches their first pages into a shared store
//! under a byte budget. `.ferry-announce` at the mount root takes a read
//! order from a training job; `.ferry-stats` shows precision, coverage and
//! hit ratio.

pub mod fs;
pub mod fuse;
pub mod prefetch;
