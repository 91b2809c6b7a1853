//! Writes through the mount.
//!
//! A file opened for writing is staged in a local file (local-disk speed);
//! `flush` (every `close`) and `fsync` send it to the cache node that owns
//! the path, which acknowledges once the bytes are fsynced in its
//! write-back journal and persists them to the object store behind the
//! writer. When that node runs on this host, the staging file lies in the
//! node's inbox: the node adopts it (links it into its journal) instead of
//! receiving its bytes, and the kernel may write it directly (FUSE
//! passthrough), so writes after an adoption are found by the file's length
//! and modification time.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::{Context, FsError, FsResult};
use crate::fs::MountFs;
use crate::handle::{fingerprint, unshare, Attr, Handle, Opened, Staged, WriteHandle};
use crate::local::LocalFiles;
use crate::nodes::Nodes;

/// Prefix of this process's staging files in a node's inbox.
fn inbox_prefix() -> String {
    format!("m{}-", std::process::id())
}

/// Removes staging files that mounts no longer running left in `inbox`.
fn sweep_inbox(inbox: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(inbox) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix('m').and_then(|r| r.split_once('-')).and_then(|(p, _)| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl<N: Nodes> MountFs<N> {
    /// A write handle on `path` (now `attr`); O_TRUNC when `truncate`, else
    /// it starts from the stored bytes.
    pub(crate) async fn open_write(&self, path: &str, attr: &Attr, truncate: bool) -> FsResult<Opened> {
        let (fh, w) = self.new_write_handle(path, true, truncate).await?;
        if !truncate && attr.size > 0 {
            // Read-modify-write: start from the current bytes.
            let mut f = tokio::fs::File::from_std(w.staged().file.try_clone()?);
            self.cluster.read_all_to(path, &mut f).await.context(|| format!("read {path} to change it"))?;
            self.writing.lock().expect("writing lock poisoned").insert(path.to_string(), attr.size);
        }
        self.write_opened(fh, &w)
    }

    /// The last close of write handle `w`: its bytes go to the node; when
    /// no other open shares its file, the file becomes the local copy of
    /// the version the node took (or is removed).
    pub(crate) async fn release_write(&self, w: &Arc<WriteHandle>) -> FsResult<()> {
        let result = self.persist(w).await;
        if self.shares(w) {
            // Another open of the same file goes on writing it.
            return result;
        }
        let path = self.stop_writing(w);
        let s = w.staged();
        match (&self.local, &s.etag) {
            // The node holds these very bytes: keep them as the local copy
            // of that version, so reading them back is local too.
            (Some(local), Some(etag)) if result.is_ok() && !s.dirty && !path.is_empty() => {
                let size = s.file.metadata().map(|m| m.len()).unwrap_or(0);
                local.keep_written(&path, etag, size, s.path.clone());
            }
            _ => {
                let _ = std::fs::remove_file(&s.path);
            }
        }
        result
    }

    /// Where a new staging file goes: in the inbox of `path`'s node when it
    /// runs on this host (the node then adopts the file without a copy),
    /// else in the mount's staging directory.
    pub(crate) async fn staging_file(&self, path: &str) -> PathBuf {
        let n = self.next_fh.fetch_add(1, Ordering::SeqCst);
        match self.cluster.inbox_for(path).await {
            Some(inbox) => {
                if self.swept.lock().expect("swept lock poisoned").insert(inbox.clone()) {
                    sweep_inbox(&inbox);
                }
                inbox.join(format!("{}{n}", inbox_prefix()))
            }
            None => self.staging.join(format!("w{n}")),
        }
    }

    /// A fresh name next to `old` for a copy of a staging file.
    pub(crate) fn sibling(&self, old: &std::path::Path) -> PathBuf {
        let n = self.next_fh.fetch_add(1, Ordering::SeqCst);
        let name = if old.starts_with(&self.staging) { format!("w{n}") } else { format!("{}{n}", inbox_prefix()) };
        old.with_file_name(name)
    }

    pub(crate) async fn new_write_handle(
        &self,
        path: &str,
        truncate: bool,
        dirty: bool,
    ) -> FsResult<(u64, Arc<WriteHandle>)> {
        let staging = self.staging_file(path).await;
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(&staging)?;
        let size = file.metadata()?.len();
        let w = Arc::new(WriteHandle::new(path, Staged::new(file, staging, dirty)));
        self.writing.lock().expect("writing lock poisoned").insert(path.to_string(), size);
        Ok((self.add_handle(Handle::Write(w.clone())), w))
    }

    /// Opens `ino` for writing on the file the kernel already passes the
    /// inode's other opens through to, as two opens of one file share it on a
    /// local disk: another writer's staging file, or else the local copy that
    /// readers have open (from now on a staging file, no longer a copy of the
    /// stored version). `None` when neither is at hand.
    pub async fn open_shared(&self, ino: u64, truncate: bool) -> FsResult<Option<Opened>> {
        let path = self.path_of(ino)?;
        let writer = self.write_handles_of(&path).into_iter().find(|w| w.staged().passthrough);
        let w = match writer {
            Some(w) => w,
            None => {
                let Some(local) = &self.local else { return Ok(None) };
                let attr = self.stat_path(&path).await?;
                let Some(copy) = LocalFiles::keys(&path, &attr).find_map(|k| local.take(&k)) else { return Ok(None) };
                let file = std::fs::OpenOptions::new().read(true).write(true).open(&copy)?;
                let staged = Staged { passthrough: true, ..Staged::new(file, copy, false) };
                Arc::new(WriteHandle::new(&path, staged))
            }
        };
        let file = {
            let s = w.staged();
            if truncate {
                s.file.set_len(0)?;
            }
            s.file.try_clone()?
        };
        let size = file.metadata()?.len();
        self.writing.lock().expect("writing lock poisoned").insert(path, size);
        Ok(Some(Opened::Passthrough { fh: self.add_handle(Handle::Write(w)), file }))
    }

    /// Drops handle `fh`, just opened, without persisting anything (the kernel
    /// could not open the file the way the handle needs).
    pub fn discard(&self, fh: u64) {
        let Some(Handle::Write(w)) = self.handles.lock().expect("handle lock poisoned").remove(&fh) else { return };
        if !self.shares(&w) {
            self.stop_writing(&w);
            let _ = std::fs::remove_file(&w.staged().path);
        }
    }

    /// The last handle of `w` closed: its path is no longer being written
    /// here unless another handle writes it too. Returns the path.
    pub(crate) fn stop_writing(&self, w: &WriteHandle) -> String {
        let path = w.path.lock().expect("path lock poisoned").clone();
        if !path.is_empty() && self.write_handles_of(&path).is_empty() {
            self.writing.lock().expect("writing lock poisoned").remove(&path);
        }
        self.forget_listings();
        path
    }

    /// Whether another open handle writes through `w` too.
    pub(crate) fn shares(&self, w: &Arc<WriteHandle>) -> bool {
        self.handles
            .lock()
            .expect("handle lock poisoned")
            .values()
            .any(|h| matches!(h, Handle::Write(o) if Arc::ptr_eq(o, w)))
    }

    /// A new write handle, offered for passthrough when its node runs on this
    /// host (the node adopts the staging file itself, so the kernel may write
    /// it directly); else a normal handle.
    pub(crate) fn write_opened(&self, fh: u64, w: &WriteHandle) -> FsResult<Opened> {
        let s = w.staged();
        if s.path.starts_with(&self.staging) {
            return Ok(Opened::Handle(fh));
        }
        Ok(Opened::Passthrough { fh, file: s.file.try_clone()? })
    }

    /// The kernel writes handle `fh`'s staging file directly from now on
    /// (FUSE passthrough accepted for it): flush, fsync and release then find
    /// changes by the file's length and modification time.
    pub fn passthrough_writes(&self, fh: u64) {
        if let Ok(Some(Handle::Write(w))) = self.handle(fh) {
            w.staged().passthrough = true;
        }
    }

    /// Writes `data` at `offset` through handle `fh` (into the local staging file).
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let w = match self.handle(fh)? {
            Some(Handle::Write(w)) => w,
            Some(Handle::Announce(a)) => return Self::write_announce(&a, offset, data),
            _ => return Err(FsError::new(libc::EBADF, format!("handle {fh} is not open for writing"))),
        };
        {
            let mut s = w.staged();
            unshare(&mut s, |old| self.sibling(old))?;
            s.file.write_all_at(data, offset)?;
            s.dirty = true;
        }
        self.metrics.written_bytes.inc_by(data.len() as u64);
        let end = offset + data.len() as u64;
        let path = w.path.lock().expect("path lock poisoned").clone();
        let mut writing = self.writing.lock().expect("writing lock poisoned");
        let size = writing.entry(path).or_insert(0);
        *size = (*size).max(end);
        Ok(data.len() as u32)
    }

    /// The staging files the kernel writes directly for `path` (none unless
    /// `path` is being written here).
    pub(crate) fn passthrough_files(&self, path: &str) -> Vec<std::fs::File> {
        if !self.writing.lock().expect("writing lock poisoned").contains_key(path) {
            return Vec::new();
        }
        self.write_handles_of(path)
            .iter()
            .filter_map(|w| {
                let s = w.staged();
                s.passthrough.then(|| s.file.try_clone().ok()).flatten()
            })
            .collect()
    }

    pub(crate) fn write_handles_of(&self, path: &str) -> Vec<Arc<WriteHandle>> {
        self.handles
            .lock()
            .expect("handle lock poisoned")
            .values()
            .filter_map(|h| match h {
                Handle::Write(w) if *w.path.lock().expect("path lock poisoned") == path => Some(w.clone()),
                _ => None,
            })
            .collect()
    }

    /// Sends a dirty write handle's bytes to the cache node (durable there
    /// when this returns). A node on this host adopts the staging file instead.
    pub(crate) async fn persist(&self, w: &WriteHandle) -> FsResult<()> {
        let path = w.path.lock().expect("path lock poisoned").clone();
        if path.is_empty() {
            return Ok(()); // unlinked while open
        }
        let staging = {
            let mut s = w.staged();
            if s.passthrough {
                let now = fingerprint(&s.file)?;
                if s.seen != Some(now) {
                    s.dirty = true;
                }
                s.seen = Some(now);
            }
            if !s.dirty {
                return Ok(());
            }
            // Cleared first so a write racing the upload marks it dirty again;
            // marked adopted first so such a write goes to a copy (except
            // under passthrough, where the next persist finds it by `seen`).
            s.dirty = false;
            s.adopted = !s.path.starts_with(&self.staging);
            s.path.clone()
        };
        let size = std::fs::metadata(&staging).map_or(0, |m| m.len());
        let put = self.cluster.put_file(&path, &staging).await;
        self.forget_listings();
        if put.is_ok() {
            self.metrics.persists.inc();
            self.metrics.persisted_bytes.inc_by(size);
        } else {
            self.metrics.persist_errors.inc();
        }
        match put {
            Ok(written) => {
                let mut s = w.staged();
                if s.path == staging {
                    s.adopted = written.adopted;
                    s.etag = written.adopted.then_some(written.etag);
                }
            }
            Err(e) => {
                let mut s = w.staged();
                s.dirty = true;
                s.seen = None;
                return Err(e.into());
            }
        }
        self.made_dirs.lock().expect("dirs lock poisoned").retain(|d| !path.starts_with(&format!("{d}/")));
        Ok(())
    }

    /// Changes the size of a file open for writing (truncate / ftruncate).
    pub async fn truncate(&self, ino: u64, fh: Option<u64>, size: u64) -> FsResult<Attr> {
        let path = self.path_of(ino)?;
        if self.control(&path) {
            return self.stat_path(&path).await; // `open(..., "w")` of the announce file
        }
        let w = match fh.map(|f| self.handle(f)).transpose()?.flatten() {
            Some(Handle::Write(w)) => Some(w),
            _ => self.handles.lock().expect("handle lock poisoned").values().find_map(|h| match h {
                Handle::Write(w) if *w.path.lock().expect("path lock poisoned") == path => Some(w.clone()),
                _ => None,
            }),
        };
        match w {
            Some(w) => self.set_len(&w, &path, size).await?,
            None if size == 0 => {
                let (fh, _) = self.new_write_handle(&path, true, true).await?;
                self.release(fh).await?;
            }
            None => {
                // `truncate(2)` of a file nobody has open: open it for
                // writing (its bytes come along), cut or extend it, close.
                let fh = self.open(ino, true, false).await?.fh();
                let w = match self.handle(fh)? {
                    Some(Handle::Write(w)) => w,
                    _ => return Err(FsError::new(libc::EIO, "a write open gave no write handle")),
                };
                let cut = self.set_len(&w, &path, size).await;
                let closed = self.release(fh).await;
                cut?;
                closed?;
            }
        }
        self.stat_path(&path).await
    }

    /// Cuts or extends the staged file of `w` (writing `path`) to `size`.
    async fn set_len(&self, w: &Arc<WriteHandle>, path: &str, size: u64) -> FsResult<()> {
        let resend = {
            let mut s = w.staged();
            unshare(&mut s, |old| self.sibling(old))?;
            s.file.set_len(size)?;
            s.dirty = true;
            // A passthrough file the node adopted was just cut in place:
            // hand the node the new length at once.
            s.passthrough && s.adopted
        };
        self.writing.lock().expect("writing lock poisoned").insert(path.to_string(), size);
        if resend {
            self.persist(w).await?;
        }
        Ok(())
    }
}
