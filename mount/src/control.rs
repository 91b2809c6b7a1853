//! The control files at the mount root (only with prefetch on):
//! `.ferry-announce` takes a training job's read order, `.ferry-stats`
//! shows the prefetch counters. Both bypass the kernel's page cache.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{FsError, FsResult};
use crate::fs::MountFs;
use crate::handle::{Announcing, Handle, Opened};
use crate::nodes::Nodes;

/// Writing paths here (one per line, optionally `OFFSET LENGTH` after it)
/// announces the order readers will read them in; see [`MountPrefetch::announce`].
pub const ANNOUNCE_FILE: &str = "/.ferry-announce";
/// Reading it gives the prefetch counters as one JSON object.
pub const STATS_FILE: &str = "/.ferry-stats";

impl<N: Nodes> MountFs<N> {
    /// Opens control file `path`: the announce file for writing, the stats
    /// file for reading (its counters as they are now).
    pub(crate) fn open_control(&self, path: &str, write: bool) -> FsResult<Opened> {
        let h = match (path, write, &self.prefetch) {
            (ANNOUNCE_FILE, true, Some(_)) => Handle::Announce(Arc::default()),
            (STATS_FILE, false, Some(p)) => {
                let mut text = serde_json::to_vec_pretty(&p.stats()).unwrap_or_default();
                text.push(b'\n');
                Handle::Stats(Bytes::from(text))
            }
            _ => return Err(FsError::new(libc::EACCES, format!("{path} is write-only or read-only"))),
        };
        Ok(Opened::Direct(self.add_handle(h)))
    }

    /// Bytes `[offset, offset + size)` of an open stats file.
    pub(crate) fn read_stats(text: &Bytes, offset: u64, size: u32) -> Bytes {
        let s = usize::try_from(offset).unwrap_or(usize::MAX).min(text.len());
        text.slice(s..s.saturating_add(size as usize).min(text.len()))
    }

    /// `data` written at `offset` of an open announce file.
    pub(crate) fn write_announce(a: &Announcing, offset: u64, data: &[u8]) -> FsResult<u32> {
        let mut buf = a.text.lock().expect("announce lock poisoned");
        let at = usize::try_from(offset).map_err(|_| FsError::new(libc::EFBIG, "announcement too large"))?;
        if buf.len() < at + data.len() {
            buf.resize(at + data.len(), 0);
        }
        buf[at..at + data.len()].copy_from_slice(data);
        Ok(data.len() as u32)
    }

    /// Records that process `pid` opened handle `fh` (an announcement is
    /// its and its children's read order).
    pub fn opened_by(&self, fh: u64, pid: u32) {
        if let Ok(Some(Handle::Announce(a))) = self.handle(fh) {
            a.by.store(pid, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Whether `path` is one of the control files (only with prefetch on).
    pub(crate) fn control(&self, path: &str) -> bool {
        self.prefetch.is_some() && (path == ANNOUNCE_FILE || path == STATS_FILE)
    }

    /// Applies what was written to `.ferry-announce` (at each close).
    pub(crate) async fn announce(&self, a: &Announcing) -> FsResult<()> {
        let text = std::mem::take(&mut *a.text.lock().expect("announce lock poisoned"));
        let Some(p) = &self.prefetch else { return Ok(()) };
        if text.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8(text).map_err(|_| FsError::new(libc::EINVAL, "announce: not UTF-8 text"))?;
        match p.announce(a.by.load(std::sync::atomic::Ordering::Relaxed), &text).await {
            Ok(n) => {
                tracing::info!(entries = n, "read order announced");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "announcement refused");
                Err(FsError::new(libc::EINVAL, format!("announce: {e}")))
            }
        }
    }
}
