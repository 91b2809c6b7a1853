//! Reads through the mount.
//!
//! A handle that reads sequentially fetches whole pages from their owners
//! and keeps [`READAHEAD_PAGES`] pages in flight ahead of the reader; a
//! handle that jumps around fetches just the bytes asked for, so random
//! 4 KiB reads do not pull 4 MiB pages. A handle keeps its last
//! [`HANDLE_PAGES`] pages; a page whose fetch failed is fetched again by the
//! next read. A file read to the end is copied whole to local disk in the
//! background ([`crate::local`]), so later opens pass reads through.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use ferry_protocol::codec::EntryKind;
use ferry_protocol::ProtocolError;

use crate::error::{FsError, FsResult};
use crate::fs::MountFs;
use crate::handle::{forget_failed, Attr, Handle, Opened, ReadHandle};
use crate::local::LocalFiles;
use crate::nodes::Nodes;
use ferry_predictor::ledger::Demand;

use crate::prefetch::{fetch_page, PageFuture};

/// Pages a read handle keeps.
const HANDLE_PAGES: usize = 12;

/// How far behind the furthest read a read may start and still be taken
/// for the same sequential stream (pages).
const STREAM_BEHIND_PAGES: u64 = 2;

impl<N: Nodes> MountFs<N> {
    /// A read handle on `path` at version `attr`; offered for passthrough
    /// when a local copy of that version, or a same-host writer's file, is at hand.
    pub(crate) fn open_read(&self, path: String, attr: Attr, store_file: Option<std::fs::File>) -> Opened {
        // Someone is writing the file through passthrough: read what they wrote
        // (and the kernel wants one backing file per inode anyway).
        let writer = self.passthrough_files(&path).into_iter().next();
        let local_copy = || self.local.as_ref().and_then(|l| LocalFiles::keys(&path, &attr).find_map(|k| l.lookup(&k)));
        let (local_file, source) = match writer {
            Some(w) => (Some(w), "writer"),
            None => match local_copy().and_then(|p| std::fs::File::open(p).ok()) {
                Some(c) => (Some(c), "local_copy"),
                None if store_file.is_some() => (store_file, "store_file"),
                None => (None, "cluster"),
            },
        };
        self.metrics.opened(source);
        let h = ReadHandle {
            path,
            size: attr.size,
            etag: attr.etag,
            local: local_file.as_ref().and_then(|f| f.try_clone().ok()),
            last_end: AtomicU64::new(0),
            stream_start: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            pages: Mutex::new((HashMap::new(), Vec::new())),
        };
        let fh = self.add_handle(Handle::Read(Arc::new(h)));
        match local_file {
            Some(file) => Opened::Passthrough { fh, file },
            None => Opened::Handle(fh),
        }
    }

    /// The store's own file of `path`, opened read-only, when the path's
    /// node runs on this host over a `file://` store and the object is in
    /// the store (no write pending anywhere), and the attributes of the
    /// version it holds: reads of it then cost what reads of the store cost
    /// (the kernel reads the file itself, through passthrough). The file
    /// opened is checked to be the one the node described (inode, size,
    /// time). Like local copies, off when they are.
    pub(crate) async fn located(&self, path: &str) -> Option<(Attr, std::fs::File)> {
        // Off with local copies (`--local-copies 0`: every read through the node).
        if self.local.is_none()
            || self.control(path)
            || self.writing.lock().expect("writing lock poisoned").contains_key(path)
        {
            return None;
        }
        let l = self.cluster.locate(path).await?;
        let file = std::fs::File::open(&l.file).ok()?;
        if !l.describes(&file.metadata().ok()?) {
            return None;
        }
        let attr = Attr {
            ino: self.ino_of(path),
            kind: EntryKind::File,
            size: l.size,
            mtime: std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(l.mtime_ns).unwrap_or(0)),
            etag: l.etag,
            origin: String::new(),
        };
        Some((attr, file))
    }

    /// Keeps a local copy of a file a reader went through to the end.
    pub(crate) fn read_to_the_end(&self, h: &ReadHandle) {
        let Some(local) = self.local.clone() else { return };
        if h.etag.is_empty() || h.read_bytes.load(Ordering::Relaxed) < h.size {
            return;
        }
        // Being written here: the writer keeps its own file as the copy.
        if self.writing.lock().expect("writing lock poisoned").contains_key(&h.path) {
            return;
        }
        let key = LocalFiles::key(&h.path, &h.etag, h.size);
        if !local.claim(&key, h.size) {
            return;
        }
        let cluster = self.cluster.clone();
        let (path, size, etag) = (h.path.clone(), h.size, h.etag.clone());
        tokio::spawn(async move {
            let tmp = local.dir.join(format!(".{key}.tmp"));
            let done = local.dir.join(&key);
            let result = async {
                let mut f = tokio::fs::File::create(&tmp).await?;
                let n = cluster.read_all_to(&path, &mut f).await?;
                if n != size {
                    return Err(ProtocolError::Malformed(format!("{path} changed while copying")));
                }
                tokio::fs::rename(&tmp, &done).await?;
                Ok::<_, ProtocolError>(())
            }
            .await;
            match result {
                Ok(()) => local.finish(&key, Some(done), size, &path, &etag),
                Err(e) => {
                    tracing::debug!(%path, error = %e, "no local copy");
                    let _ = tokio::fs::remove_file(&tmp).await;
                    local.finish(&key, None, size, &path, &etag);
                }
            }
        });
    }

    /// Page `page` if the handle or the prefetched pages hold it. A fetch
    /// that failed is not held: the next read asks again.
    pub(crate) fn held_page(&self, h: &ReadHandle, page: u64) -> Option<(PageFuture, Demand)> {
        let held = {
            let mut guard = h.pages.lock().expect("page lock poisoned");
            forget_failed(&mut guard, page);
            guard.0.get(&page).map(|(f, prefetched)| (f.clone(), *prefetched))
        };
        match held {
            Some((f, prefetched)) => Some((f, if prefetched { Demand::Prefetched } else { Demand::Readahead })),
            None => self.prefetch.as_ref()?.take(&h.path, &h.etag, page).map(|f| (f, Demand::Prefetched)),
        }
    }

    pub(crate) fn page(&self, h: &Arc<ReadHandle>, page: u64) -> (PageFuture, Demand) {
        let mut guard = h.pages.lock().expect("page lock poisoned");
        forget_failed(&mut guard, page);
        let (map, order) = &mut *guard;
        if let Some((f, prefetched)) = map.get(&page) {
            return (f.clone(), if *prefetched { Demand::Prefetched } else { Demand::Readahead });
        }
        let (shared, source) = match self.prefetch.as_ref().and_then(|p| p.take(&h.path, &h.etag, page)) {
            Some(f) => (f, Demand::Prefetched),
            None => (fetch_page(&self.cluster, &h.path, page, self.page_size, h.size), Demand::Fetched),
        };
        map.insert(page, (shared.clone(), source == Demand::Prefetched));
        order.push(page);
        while order.len() > HANDLE_PAGES {
            let old = order.remove(0);
            map.remove(&old);
        }
        (shared, source)
    }

    /// Reads up to `size` bytes at `offset` through handle `fh` for process `reader`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32, reader: u32) -> FsResult<Bytes> {
        let h = match self.handle(fh)? {
            Some(Handle::Read(h)) => h,
            Some(Handle::Write(w)) => {
                let mut buf = vec![0u8; size as usize];
                let n = w.staged().file.read_at(&mut buf, offset)?;
                buf.truncate(n);
                return Ok(Bytes::from(buf));
            }
            Some(Handle::Stats(b)) => return Ok(Self::read_stats(&b, offset, size)),
            Some(Handle::Announce(_)) => return Err(FsError::new(libc::EBADF, "the announce file is write-only")),
            None => return Err(FsError::new(libc::EBADF, format!("unknown handle {fh}"))),
        };
        let t0 = std::time::Instant::now();
        let out = self.read_file(&h, offset, size, reader).await;
        let m = &self.metrics;
        m.reads.inc();
        m.read_seconds.observe(t0.elapsed().as_secs_f64());
        match &out {
            Ok(b) => m.read_bytes.inc_by(b.len() as u64),
            Err(_) => m.read_errors.inc(),
        };
        out
    }

    async fn read_file(&self, h: &Arc<ReadHandle>, offset: u64, size: u32, reader: u32) -> FsResult<Bytes> {
        let end = (offset + u64::from(size)).min(h.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        if let Some(f) = &h.local {
            let mut buf = vec![0u8; (end - offset) as usize];
            f.read_exact_at(&mut buf, offset)?;
            return Ok(Bytes::from(buf));
        }
        // The kernel sends a sequential reader's reads (its own readahead
        // among them) several at a time, and they arrive in any order: a
        // read that starts at most a page past the furthest read so far, and
        // not far behind it, continues the stream.
        let furthest = h.last_end.fetch_max(end, Ordering::Relaxed);
        let ps = self.page_size;
        let sequential = offset == 0 || (offset <= furthest + ps && offset + STREAM_BEHIND_PAGES * ps >= furthest);
        h.read_bytes.fetch_add(end - offset, Ordering::Relaxed);
        let (first, last) = (offset / ps, (end - 1) / ps);
        // Predictions first, so the handle's own readahead finds their pages.
        if let Some(p) = &self.prefetch {
            p.access(reader, &h.path, offset, end);
        }
        let count = |source| {
            self.metrics.page(match source {
                Demand::Fetched => "fetched",
                Demand::Readahead => "readahead",
                Demand::Prefetched => "prefetched",
            });
            if let Some(p) = &self.prefetch {
                p.count(reader, source);
            }
        };
        if !sequential {
            h.stream_start.store(offset, Ordering::Relaxed);
            // Random access: fetch only what was asked, unless whole pages are at hand.
            let mut parts = Vec::new();
            for p in first..=last {
                let s = offset.max(p * ps);
                let e = end.min((p + 1) * ps);
                let held = self.held_page(h, p);
                count(held.as_ref().map_or(Demand::Fetched, |(_, source)| *source));
                parts.push(match held {
                    Some((f, _)) => f.await?.slice((s - p * ps) as usize..(e - p * ps) as usize),
                    // One request per page touched, straight to its owner: the handle
                    // already knows the size, so no stat round trip per small read.
                    None => self.cluster.read_page(&h.path, p, ps, s, e).await?,
                });
            }
            return Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { Bytes::from(parts.concat()) });
        }
        let last_page = (h.size - 1) / ps;
        // A stream from the start of the file reads ahead in full at once
        // (a training sample, a copy); one that began at an offset (a ranged
        // read: a Parquet column chunk, an S3-style GET through the mount)
        // only as it proves long: one page more for each page read past its
        // second, so an 8 MiB range costs no page it does not use.
        let start = h.stream_start.load(Ordering::Relaxed);
        let proven = if start == 0 { u64::MAX } else { (offset.saturating_sub(start) / ps).saturating_sub(1) };
        let ahead = self.readahead.load(Ordering::Relaxed).min(proven);
        for p in (last + 1)..=(last + ahead).min(last_page) {
            let (f, _) = self.page(h, p);
            tokio::spawn(async move {
                let _ = f.await;
            });
        }
        let mut parts = Vec::new();
        for p in first..=last {
            let (f, source) = self.page(h, p);
            count(source);
            let page = f.await?;
            let s = offset.max(p * ps) - p * ps;
            let e = end.min((p + 1) * ps) - p * ps;
            parts.push(page.slice(s as usize..e as usize));
        }
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one part"));
        }
        Ok(Bytes::from(parts.concat()))
    }
}
