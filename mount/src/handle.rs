//! The kinds of open handle and what each holds, and the attributes and
//! open results the filesystem gives the kernel. Plain data: the rules for
//! each kind are in `read`, `write` and `control`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use ferry_protocol::codec::EntryKind;

use crate::prefetch::PageFuture;

pub use ferry_predictor::ledger::READAHEAD_PAGES;

/// Attributes of a file or directory, as the kernel needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// The object's version tag ("" for directories and files being written).
    pub etag: String,
    /// The journal version tag the object was uploaded from, if the node knows it.
    pub origin: String,
}

/// What `open` produced.
#[derive(Debug)]
pub enum Opened {
    /// Reads and writes come through this handle.
    Handle(u64),
    /// The kernel may read (and, for a write handle, write) `file` directly
    /// (FUSE passthrough): a complete local copy, or the staging file of a
    /// write handle whose node runs on this host. `fh` works as a normal
    /// handle as well, for kernels that refuse passthrough; a write handle
    /// goes over to passthrough only through [`MountFs::passthrough_writes`].
    Passthrough {
        /// The handle.
        fh: u64,
        /// The local copy or staging file.
        file: std::fs::File,
    },
    /// A control file: reads and writes bypass the kernel's page cache.
    Direct(u64),
}

impl Opened {
    /// The handle, whatever the kind.
    pub fn fh(&self) -> u64 {
        match self {
            Opened::Handle(fh) | Opened::Direct(fh) | Opened::Passthrough { fh, .. } => *fh,
        }
    }

    /// The file offered for passthrough, if any.
    pub fn file(&self) -> Option<&std::fs::File> {
        match self {
            Opened::Passthrough { file, .. } => Some(file),
            Opened::Handle(_) | Opened::Direct(_) => None,
        }
    }
}

/// An open `.ferry-announce`: what was written so far, and by whom.
#[derive(Debug, Default)]
pub(crate) struct Announcing {
    pub(crate) text: Mutex<Vec<u8>>,
    /// The process that opened it (0: unknown).
    pub(crate) by: std::sync::atomic::AtomicU32,
}

#[derive(Debug)]
pub(crate) enum Handle {
    Read(Arc<ReadHandle>),
    Write(Arc<WriteHandle>),
    /// `.ferry-announce` open for writing.
    Announce(Arc<Announcing>),
    /// `.ferry-stats`: the counters when it was opened.
    Stats(Bytes),
}

/// A read handle's pages by number (and whether each was prefetched), oldest first in the list.
type HandlePages = (HashMap<u64, (PageFuture, bool)>, Vec<u64>);

/// Drops page `page` from a handle's pages if its fetch failed (a node
/// restarting, a store error): the error went to the read that waited for
/// it, and the next read fetches the page again.
pub(crate) fn forget_failed((map, order): &mut HandlePages, page: u64) {
    if matches!(map.get(&page).and_then(|(f, _)| f.peek()), Some(Err(_))) {
        map.remove(&page);
        order.retain(|p| *p != page);
    }
}

#[derive(Debug)]
pub(crate) struct ReadHandle {
    pub(crate) path: String,
    pub(crate) size: u64,
    pub(crate) etag: String,
    /// A complete local copy, read directly when the kernel does not pass reads through.
    pub(crate) local: Option<std::fs::File>,
    /// The furthest any read ended; a read near it continues a sequential stream.
    pub(crate) last_end: AtomicU64,
    /// Where the current sequential stream began (the last read that was
    /// not sequential); readahead grows with the stream's length from there.
    pub(crate) stream_start: AtomicU64,
    /// Bytes read through the handle so far. Reads arrive concurrently and
    /// finish in any order, so this, not `last_end`, tells the whole file was read.
    pub(crate) read_bytes: AtomicU64,
    /// Pages at hand, and whether each came from the prefetched pages.
    pub(crate) pages: Mutex<HandlePages>,
}

/// The staging file behind a write handle.
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) file: std::fs::File,
    pub(crate) path: PathBuf,
    /// Written since the node last took the bytes.
    pub(crate) dirty: bool,
    /// The node took this very file over (it lies in the node's inbox): it
    /// must not change any more, so the next write copies it first.
    pub(crate) adopted: bool,
    /// The object's version tag after the last adoption.
    pub(crate) etag: Option<String>,
    /// The kernel writes `file` directly (FUSE passthrough): writes never
    /// reach [`MountFs::write`], so changes are found by `seen`.
    pub(crate) passthrough: bool,
    /// Length and modification time of `file` when the node last took it.
    pub(crate) seen: Option<(u64, SystemTime)>,
}

impl Staged {
    /// A staging file the node has not taken yet.
    pub(crate) fn new(file: std::fs::File, path: PathBuf, dirty: bool) -> Staged {
        Staged { file, path, dirty, adopted: false, etag: None, passthrough: false, seen: None }
    }
}

/// Length and modification time: what tells a passthrough file changed.
pub(crate) fn fingerprint(file: &std::fs::File) -> std::io::Result<(u64, SystemTime)> {
    let m = file.metadata()?;
    Ok((m.len(), m.modified()?))
}

#[derive(Debug)]
pub(crate) struct WriteHandle {
    pub(crate) path: Mutex<String>,
    pub(crate) staged: Mutex<Staged>,
}

impl WriteHandle {
    pub(crate) fn new(path: &str, staged: Staged) -> WriteHandle {
        WriteHandle { path: Mutex::new(path.to_string()), staged: Mutex::new(staged) }
    }

    pub(crate) fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().expect("staging lock poisoned")
    }
}

/// Makes `s` safe to change: after an adoption the bytes move to a fresh
/// copy (`fresh` names it), leaving the node's file alone.
pub(crate) fn unshare(s: &mut Staged, fresh: impl FnOnce(&std::path::Path) -> PathBuf) -> std::io::Result<()> {
    // A passthrough file cannot move: the kernel keeps writing the one it was given.
    if !s.adopted || s.passthrough {
        return Ok(());
    }
    let fresh = fresh(&s.path);
    std::fs::copy(&s.path, &fresh)?;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&fresh)?;
    let _ = std::fs::remove_file(&s.path);
    *s = Staged::new(file, fresh, s.dirty);
    Ok(())
}
