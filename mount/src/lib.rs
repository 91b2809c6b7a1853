//! ferry on a training host: the namespace of the cache nodes as a local
//! filesystem (`ferry mount`).
//!
//! A tour of the modules:
//!
//! - [`fs`]: [`MountFs`], the filesystem — plain async methods that return
//!   [`FsError`]s carrying an errno; namespace calls and the dispatch of
//!   each handle to its kind.
//! - [`nodes`]: the [`Nodes`] trait, all the filesystem asks of the cache
//!   nodes; [`ferry_protocol::client::Cluster`] implements it, and the unit
//!   tests use an in-memory double.
//! - `handle`: what each kind of open handle holds, and the attributes
//!   and open results given to the kernel.
//! - `inodes`: inode numbers, kept while the kernel holds a reference.
//! - `read`: read handles — sequential readahead, random reads of just the
//!   bytes asked, retry of failed pages.
//! - `write`: write handles — staging files, persistence on flush and fsync,
//!   adoption by a node on this host, passthrough writes.
//! - `local`: whole local copies of files read to the end or written here,
//!   evicted least recently used first.
//! - `control`: `.ferry-announce` and `.ferry-stats` at the mount root.
//! - `metrics`: the Prometheus counters of [`MountFs::metrics_text`].
//! - [`passthrough`]: how each open reaches the kernel (backing file or
//!   page cache), decided against the inode's other opens.
//! - [`prefetch`]: [`prefetch::MountPrefetch`], predictions per reading
//!   process, fetched ahead into a shared page store under a byte budget.
//! - [`fuse`]: the kernel adapter; it only translates requests into
//!   [`MountFs`] and [`passthrough`] calls and their results into replies.

mod control;
pub mod error;
pub mod fs;
pub mod fuse;
mod handle;
mod inodes;
mod local;
mod metrics;
pub mod nodes;
pub mod passthrough;
pub mod prefetch;
mod read;
#[cfg(test)]
mod tests;
mod write;

pub use control::{ANNOUNCE_FILE, STATS_FILE};
pub use error::{FsError, FsResult};
pub use fs::MountFs;
pub use handle::{Attr, Opened, READAHEAD_PAGES};
pub use inodes::ROOT_INO;
pub use nodes::Nodes;
