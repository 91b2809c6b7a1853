//! The write-back journal: writes are acknowledged once durable on this
//! node's disk and reach the object store behind the writer.
//!
//! How an object is written:
//!
//! 1. its bytes stream into `SEQ.data.tmp`, which is fsynced;
//! 2. `SEQ.meta.tmp` (target path, size) is written and fsynced;
//! 3. `SEQ.data.tmp` is renamed to `SEQ.data`, then `SEQ.meta.tmp` to
//!    `SEQ.meta` — that rename is the commit point — and the directory is
//!    fsynced;
//! 4. only then is the writer told "done".
//!
//! A client on the node's own host may instead hand over a finished file
//! ([`Journal::adopt`]): it is fsynced and hard-linked as `SEQ.data`, so the
//! bytes are not copied; steps 2–4 are the same. The client may go on
//! writing that file (FUSE passthrough writes reach it directly), so an
//! entry is its first `size` bytes: a data file may be longer than its
//! entry, and bytes written after the hand-over may be uploaded with it
//! (as a file system may persist any write early); the client's next hand-
//! over makes a newer entry that replaces this one.
//!
//! Sequence numbers start above the current time in microseconds, so a
//! version tag `~journal-SEQ` is never reused after a restart.
//!
//! A crash before step 3 leaves temporary files that the next start deletes;
//! after it, the entry is found by scanning the directory and its upload
//! resumes. When two entries name the same path, the higher sequence number
//! wins and the other is dropped. The uploader copies each entry to its
//! mount's store (multipart for large objects), then deletes the entry if it
//! is still the current one for that path. Until then the node serves the
//! object from the journal (read-your-writes) and reports it as not yet
//! persisted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use ferry_protocol::ids::NsPath;

use crate::clock::{Clock, SystemClock};
use crate::error::NodeError;
use crate::namespace::Namespace;

/// One journaled object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number; higher is newer.
    pub seq: u64,
    /// Target namespace path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was committed, ms since the Unix epoch.
    pub mtime_ms: i64,
    /// A copy of another node's entry, held for that node (its id and its
    /// sequence number of the write): served, but uploaded only once
    /// [`Journal::promote`]d. `None` for this node's own writes.
    pub held_for: Option<(String, u64)>,
    /// A held copy this node uploads, its writer being gone.
    pub promoted: bool,
}

impl Entry {
    /// Whether this node uploads the entry.
    pub fn uploads_here(&self) -> bool {
        self.held_for.is_none() || self.promoted
    }

    /// The write's sequence number where it was first written (the
    /// writer's, for a held copy): what the cluster's records name.
    pub fn write_seq(&self) -> u64 {
        self.held_for.as_ref().map_or(self.seq, |(_, s)| *s)
    }
}

/// The journal of one node.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    next_seq: AtomicU64,
    /// By path, in order: the entries below a directory are one range.
    pending: Mutex<BTreeMap<String, Entry>>,
    wake: Notify,
    /// Signalled whenever an entry leaves the journal (uploaded, discarded, replaced).
    left: Notify,
    /// The path whose upload is in flight.
    uploading: Mutex<Option<String>>,
    /// Paths deleted while their upload was in flight: absent until the
    /// uploader has removed what it just wrote.
    tombstones: Mutex<std::collections::HashSet<String>>,
    /// Entries committed but not to be uploaded yet ([`Journal::ready`]):
    /// their copies on other nodes and their pending record come first, so
    /// an upload never races the bookkeeping of who holds the write. In
    /// memory only: after a restart every entry is uploaded.
    unready: Mutex<std::collections::HashSet<u64>>,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The version tag of a pending entry.
pub fn journal_etag(seq: u64) -> String {
    format!("~journal-{seq}")
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// A first sequence number above any this journal gave out before a
/// restart that lost its entries (milliseconds, in microsecond units).
fn seq_floor() -> u64 {
    u64::try_from(SystemClock.now_ms()).unwrap_or(0).saturating_mul(1000)
}

/// Removes what an interrupted upload to a `file://` store left next to
/// `dest`: object_store stages there as `NAME#N` and renames on completion,
/// so a node killed mid-upload leaves the staging file behind. Called by
/// the one uploader of the path, before it uploads again.
fn remove_staged_uploads(dest: &Path) {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        let staged = f
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('#'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if staged {
            tracing::info!(file = %e.path().display(), "removing an interrupted upload's staging file");
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Object size up to which an upload is one PUT; larger ones go in parts of this size.
const UPLOAD_PART: usize = 8 << 20;
/// Parts of one multipart upload in flight.
const UPLOAD_CONCURRENCY: usize = 4;

/// Writes an entry's meta file durably (temporary name, fsync, rename).
fn write_meta(dir: &Path, e: &Entry) -> std::io::Result<()> {
    let tmp = dir.join(format!("{}.meta.tmp", e.seq));
    let mut f = std::fs::File::create(&tmp)?;
    write!(f, "{}\n{}\n{}\n", e.path, e.size, e.mtime_ms)?;
    if let Some((node, seq)) = &e.held_for {
        writeln!(f, "held-for {node} {seq}{}", if e.promoted { " promoted" } else { "" })?;
    }
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(format!("{}.meta", e.seq)))
}

/// A write in progress. Dropping it without [`JournalWrite::commit`] discards it.
#[derive(Debug)]
pub struct JournalWrite {
    seq: u64,
    path: String,
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    written: u64,
    held_for: Option<(String, u64)>,
    mtime_ms: Option<i64>,
}

impl JournalWrite {
    /// Appends exactly `len` bytes read from `body` (a request's body).
    pub async fn write_from<R>(&mut self, body: &mut R, len: u64) -> Result<(), NodeError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; (1 << 20).min(len as usize).max(1)];
        let mut left = len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = body.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(NodeError::InvalidInput(format!(
                    "{}: body ended after {} of {len} bytes",
                    self.path,
                    len - left
                )));
            }
            self.write(&buf[..n]).await?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Appends bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), NodeError> {
        let f = self.file.as_mut().expect("file is present until commit");
        f.write_all(data).await?;
        self.written += data.len() as u64;
        Ok(())
    }
}

impl Drop for JournalWrite {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Journal {
    /// Opens (creating) a journal directory and finds the entries committed before a restart.
    pub fn open(dir: &Path) -> Result<Journal, NodeError> {
        std::fs::create_dir_all(dir)?;
        let mut best: BTreeMap<String, Entry> = BTreeMap::new();
        let mut max_seq = 0;
        let mut stale = Vec::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.ends_with(".tmp") {
                stale.push(p);
                continue;
            }
            let Some(seq) = name.strip_suffix(".meta").and_then(|s| s.parse::<u64>().ok()) else { continue };
            max_seq = max_seq.max(seq);
            let text = std::fs::read_to_string(&p)?;
            let mut lines = text.lines();
            let parsed = (|| {
                let path = lines.next()?.to_string();
                let size = lines.next()?.parse::<u64>().ok()?;
                let mtime_ms = lines.next()?.parse::<i64>().ok()?;
                let (held_for, promoted) = match lines.next() {
                    None => (None, false),
                    Some(l) => {
                        let mut w = l.strip_prefix("held-for ")?.split(' ');
                        let held = (w.next()?.to_string(), w.next()?.parse::<u64>().ok()?);
                        (Some(held), w.next() == Some("promoted"))
                    }
                };
                Some((path, size, mtime_ms, held_for, promoted))
            })();
            let data = dir.join(format!("{seq}.data"));
            match parsed {
                Some((path, size, mtime_ms, held_for, promoted))
                    if std::fs::metadata(&data).is_ok_and(|m| m.len() >= size) =>
                {
                    let entry = Entry { seq, path: path.clone(), size, mtime_ms, held_for, promoted };
                    match best.get(&path) {
                        Some(old) if old.seq > seq => stale.extend([p.clone(), data]),
                        Some(old) => {
                            stale.push(dir.join(format!("{}.meta", old.seq)));
                            stale.push(dir.join(format!("{}.data", old.seq)));
                            best.insert(path, entry);
                        }
                        None => {
                            best.insert(path, entry);
                        }
                    }
                }
                _ => {
                    tracing::warn!(entry = %p.display(), "dropping unreadable journal entry");
                    stale.extend([p.clone(), data]);
                }
            }
        }
        // Data files without a committed meta file never were acknowledged.
        for e in std::fs::read_dir(dir)?.flatten() {
            let p = e.path();
            if let Some(seq) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".data"))
                .and_then(|s| s.parse::<u64>().ok())
            {
                max_seq = max_seq.max(seq);
                if !dir.join(format!("{seq}.meta")).exists() {
                    stale.push(p);
                }
            }
        }
        for p in stale {
            let _ = std::fs::remove_file(p);
        }
        if !best.is_empty() {
            tracing::info!(entries = best.len(), "resuming uploads from the write-back journal");
        }
        Ok(Journal {
            dir: dir.to_path_buf(),
            next_seq: AtomicU64::new((max_seq + 1).max(seq_floor())),
            pending: Mutex::new(best),
            wake: Notify::new(),
            left: Notify::new(),
            uploading: Mutex::new(None),
            tombstones: Mutex::new(std::collections::HashSet::new()),
            unready: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Starts writing `path`.
    pub async fn begin(&self, path: &NsPath) -> Result<JournalWrite, NodeError> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let tmp = self.dir.join(format!("{seq}.data.tmp"));
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(JournalWrite {
            seq,
            path: path.as_str().to_string(),
            file: Some(file),
            tmp,
            written: 0,
            held_for: None,
            mtime_ms: None,
        })
    }

    /// Starts writing a copy of node `node`'s entry `seq` for `path`,
    /// written there at `mtime_ms` (see [`Entry::held_for`]).
    pub async fn begin_held(
        &self,
        path: &NsPath,
        node: &str,
        seq: u64,
        mtime_ms: i64,
    ) -> Result<JournalWrite, NodeError> {
        let mut w = self.begin(path).await?;
        w.held_for = Some((node.to_string(), seq));
        w.mtime_ms = Some(mtime_ms);
        Ok(w)
    }

    fn remove_files(&self, seq: u64) {
        let _ = std::fs::remove_file(self.dir.join(format!("{seq}.meta")));
        let _ = std::fs::remove_file(self.dir.join(format!("{seq}.data")));
        self.unready.lock().expect("journal lock poisoned").remove(&seq);
        self.left.notify_waiters();
    }

    /// Waits until `gone()` holds, re-checking whenever an entry leaves the
    /// journal; false if `limit` passes first.
    async fn wait_for(&self, limit: std::time::Duration, gone: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the check, so a removal in between is not missed.
            let left = self.left.notified();
            if gone(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, left).await.is_err() {
                return gone(self);
            }
        }
    }

    /// Waits until entry `e` has left the journal (uploaded, or replaced by a newer write).
    pub async fn wait_uploaded(&self, e: &Entry, limit: std::time::Duration) -> bool {
        self.wait_for(limit, |j| j.entries().iter().all(|c| c.seq != e.seq)).await
    }

    /// Makes a write durable and current. Returns once it would survive a crash.
    pub async fn commit(&self, mut w: JournalWrite) -> Result<Entry, NodeError> {
        let mut file = w.file.take().expect("file is present until commit");
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let entry = Entry {
            seq: w.seq,
            path: w.path.clone(),
            size: w.written,
            mtime_ms: w.mtime_ms.unwrap_or_else(now_ms),
            held_for: w.held_for.clone(),
            promoted: false,
        };
        let dir = self.dir.clone();
        let tmp = w.tmp.clone();
        let e2 = entry.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::rename(&tmp, dir.join(format!("{}.data", e2.seq)))?;
            write_meta(&dir, &e2)?;
            fsync_dir(&dir)
        })
        .await
        .map_err(|e| NodeError::task("journal task", e))??;
        self.install(&entry);
        Ok(entry)
    }

    /// Lets the uploader take entry `seq` (committed by [`Journal::commit`]
    /// or [`Journal::adopt`], which hold new entries back until this).
    pub fn ready(&self, seq: u64) {
        self.unready.lock().expect("journal lock poisoned").remove(&seq);
        self.wake.notify_one();
    }

    /// Makes a committed entry the current one for its path.
    fn install(&self, entry: &Entry) {
        if entry.held_for.is_none() {
            self.unready.lock().expect("journal lock poisoned").insert(entry.seq);
        }
        self.tombstones.lock().expect("journal lock poisoned").remove(&entry.path);
        let old = self.pending.lock().expect("journal lock poisoned").insert(entry.path.clone(), entry.clone());
        if let Some(old) = old {
            self.remove_files(old.seq);
        }
        self.wake.notify_one();
    }

    /// Takes the regular file `src` (on the journal's filesystem, `len`
    /// bytes) over as the new content of `path` without copying it: fsync,
    /// hard link, commit. Whoever wrote `src` must not change it afterwards.
    pub async fn adopt(&self, path: &NsPath, src: &Path, len: u64) -> Result<Entry, NodeError> {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let entry = Entry {
            seq,
            path: path.as_str().to_string(),
            size: len,
            mtime_ms: now_ms(),
            held_for: None,
            promoted: false,
        };
        let (dir, src, e2) = (self.dir.clone(), src.to_path_buf(), entry.clone());
        tokio::task::spawn_blocking(move || -> Result<(), NodeError> {
            // Link first, then check what was linked: the journal's own name
            // cannot be swapped for something else between check and use.
            let tmp = dir.join(format!("{seq}.data.tmp"));
            std::fs::hard_link(&src, &tmp)
                .map_err(|e| NodeError::InvalidInput(format!("cannot take over {}: {e}", src.display())))?;
            let checked = (|| {
                let meta = std::fs::symlink_metadata(&tmp)?;
                if !meta.file_type().is_file() {
                    return Err(NodeError::InvalidInput(format!("{} is not a regular file", src.display())));
                }
                // Longer is fine: the writer went on writing after it asked.
                if meta.len() < len {
                    return Err(NodeError::InvalidInput(format!(
                        "{} holds {} bytes, fewer than the announced {len}",
                        src.display(),
                        meta.len()
                    )));
                }
                std::fs::File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, dir.join(format!("{seq}.data")))?;
                Ok(())
            })();
            if checked.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            checked?;
            write_meta(&dir, &e2)?;
            fsync_dir(&dir)?;
            Ok(())
        })
        .await
        .map_err(|e| NodeError::task("journal task", e))??;
        self.install(&entry);
        Ok(entry)
    }

    /// Whether the uploader may take `e` now.
    fn uploadable(&self, e: &Entry) -> bool {
        e.uploads_here() && !self.unready.lock().expect("journal lock poisoned").contains(&e.seq)
    }

    /// The pending entry for `path`, if any.
    pub fn pending(&self, path: &str) -> Option<Entry> {
        self.pending.lock().expect("journal lock poisoned").get(path).cloned()
    }

    /// Every pending entry.
    pub fn entries(&self) -> Vec<Entry> {
        let mut v: Vec<Entry> = self.pending.lock().expect("journal lock poisoned").values().cloned().collect();
        v.sort_by_key(|e| e.seq);
        v
    }

    /// Whether a pending entry lies below directory `prefix` (which ends in `/`).
    pub fn has_below(&self, prefix: &str) -> bool {
        let pending = self.pending.lock().expect("journal lock poisoned");
        pending
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .next()
            .is_some_and(|(p, _)| p.starts_with(prefix))
    }

    /// Makes the held copy of `path` this node's own write, to be uploaded
    /// (its writer is gone); false if no held copy is there.
    pub fn promote(&self, path: &str) -> Result<bool, NodeError> {
        let mut pending = self.pending.lock().expect("journal lock poisoned");
        let Some(e) = pending.get_mut(path).filter(|e| !e.uploads_here()) else { return Ok(false) };
        e.promoted = true;
        write_meta(&self.dir, e)?;
        fsync_dir(&self.dir)?;
        drop(pending);
        self.wake.notify_one();
        Ok(true)
    }

    /// Drops the held copy of `path` if it is a copy of write `seq` (that
    /// write is in the store now); true if one was dropped.
    pub fn release(&self, path: &str, seq: u64) -> bool {
        let mut pending = self.pending.lock().expect("journal lock poisoned");
        let held = pending.get(path).is_some_and(|e| e.held_for.as_ref().is_some_and(|(_, s)| *s == seq));
        if !held {
            return false;
        }
        let old = pending.remove(path).expect("checked above");
        drop(pending);
        self.remove_files(old.seq);
        true
    }

    /// The data file of an entry.
    pub fn data_path(&self, e: &Entry) -> PathBuf {
        self.dir.join(format!("{}.data", e.seq))
    }

    /// Whether `path` was deleted while its upload was in flight (treat it as absent).
    pub fn is_tombstoned(&self, path: &str) -> bool {
        self.tombstones.lock().expect("journal lock poisoned").contains(path)
    }

    /// Drops the pending entry for `path`; true if there was one.
    pub fn discard(&self, path: &str) -> bool {
        if self.uploading.lock().expect("journal lock poisoned").as_deref() == Some(path) {
            self.tombstones.lock().expect("journal lock poisoned").insert(path.to_string());
        }
        let old = self.pending.lock().expect("journal lock poisoned").remove(path);
        if let Some(old) = &old {
            self.remove_files(old.seq);
        }
        old.is_some()
    }

    /// Points the pending entry for `from` at `to` (durably); false if none.
    pub fn rename(&self, from: &str, to: &str) -> Result<bool, NodeError> {
        let mut pending = self.pending.lock().expect("journal lock poisoned");
        let Some(mut e) = pending.remove(from) else { return Ok(false) };
        if self.uploading.lock().expect("journal lock poisoned").as_deref() == Some(from) {
            self.tombstones.lock().expect("journal lock poisoned").insert(from.to_string());
        }
        self.tombstones.lock().expect("journal lock poisoned").remove(to);
        e.path = to.to_string();
        write_meta(&self.dir, &e)?;
        fsync_dir(&self.dir)?;
        if let Some(old) = pending.insert(to.to_string(), e) {
            self.remove_files(old.seq);
        }
        self.wake.notify_one();
        Ok(true)
    }

    /// Copies an entry's bytes to the store; returns the store's version tag.
    async fn put_to_store(
        &self,
        store: &Arc<dyn object_store::ObjectStore>,
        location: &object_store::path::Path,
        e: &Entry,
    ) -> Result<Option<String>, NodeError> {
        use tokio::io::AsyncReadExt;
        let err = |x: &dyn std::fmt::Display| NodeError::store(format!("upload {}: {x}", e.path));
        let store_err = |x: object_store::Error| NodeError::Store {
            message: format!("upload {}: {x}", e.path),
            source: Some(Box::new(x)),
        };
        // The entry is the first `size` bytes (an adopted file may have grown since).
        let mut file = tokio::fs::File::open(self.data_path(e)).await?.take(e.size);
        if e.size <= UPLOAD_PART as u64 {
            let mut bytes = Vec::with_capacity(e.size as usize);
            file.read_to_end(&mut bytes).await?;
            if bytes.len() as u64 != e.size {
                return Err(err(&format!("journal file holds {} bytes, expected {}", bytes.len(), e.size)));
            }
            let put = store.put(location, bytes.into()).await.map_err(store_err)?;
            return Ok(put.e_tag);
        }
        let upload = store.put_multipart(location).await.map_err(store_err)?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART);
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        let copied: Result<(), NodeError> = async {
            loop {
                w.wait_for_capacity(UPLOAD_CONCURRENCY).await.map_err(store_err)?;
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                sent += n as u64;
                w.write(&buf[..n]);
            }
            if sent != e.size {
                return Err(err(&format!("journal file holds {sent} bytes, expected {}", e.size)));
            }
            Ok(())
        }
        .await;
        if let Err(x) = copied {
            let _ = w.abort().await;
            return Err(x);
        }
        Ok(w.finish().await.map_err(store_err)?.e_tag)
    }

    /// Uploads one entry; on success removes it if it is still current,
    /// calling `done` with the store's version tag (if it gave one) before
    /// the entry leaves the pending set, under the same lock: whoever finds
    /// the entry gone also finds what `done` recorded.
    async fn upload(
        &self,
        ns: &Namespace,
        e: &Entry,
        done: &(impl Fn(&Entry, Option<String>) + Send + Sync),
    ) -> Result<(), NodeError> {
        let path = NsPath::parse(&e.path).map_err(|e| NodeError::InvalidInput(e.to_string()))?;
        let r = ns.resolve(&path)?;
        if let Some(dest) = r.mount.dirs.as_ref().and_then(|d| d.local_path(&r.location)) {
            remove_staged_uploads(&dest);
        }
        ns.metrics().store_request("put");
        let etag = self.put_to_store(&r.mount.store, &r.location, e).await?;
        enum After {
            Done,
            Moved,
            Superseded,
        }
        let after = {
            let mut pending = self.pending.lock().expect("journal lock poisoned");
            match pending.get(&e.path) {
                Some(cur) if cur.seq == e.seq => {
                    done(e, etag);
                    pending.remove(&e.path);
                    After::Done
                }
                // A newer write of the same path: it uploads next and replaces this one.
                Some(_) => After::Superseded,
                // Renamed (the entry lives on under another path) or deleted during the upload.
                None => After::Moved,
            }
        };
        match after {
            After::Done => {
                self.remove_files(e.seq);
                Ok(())
            }
            // What was just uploaded no longer belongs at this path.
            After::Moved => {
                r.mount.store.delete(&r.location).await.map_err(|err| NodeError::from_store(&e.path, err))?;
                self.tombstones.lock().expect("journal lock poisoned").remove(&e.path);
                Ok(())
            }
            After::Superseded => Ok(()),
        }
    }

    /// Uploads pending entries until the task is dropped; failed uploads are
    /// retried. `on_persisted` gets each uploaded entry that is still current
    /// and the store's version tag of the object it became (when known),
    /// while the journal's lock is held: it must not call the journal.
    pub async fn run_uploader(
        self: Arc<Self>,
        ns: Namespace,
        on_persisted: impl Fn(&Entry, Option<String>) + Send + Sync + 'static,
    ) {
        let mut backoff = std::time::Duration::from_millis(200);
        loop {
            let entries: Vec<Entry> = self.entries().into_iter().filter(|e| self.uploadable(e)).collect();
            let mut failed = false;
            for e in &entries {
                *self.uploading.lock().expect("journal lock poisoned") = Some(e.path.clone());
                let result = self.upload(&ns, e, &on_persisted).await;
                *self.uploading.lock().expect("journal lock poisoned") = None;
                match result {
                    Ok(()) => {}
                    Err(err) => {
                        tracing::warn!(path = %e.path, error = %err, "upload failed; will retry");
                        failed = true;
                    }
                }
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            } else {
                backoff = std::time::Duration::from_millis(200);
                let wake = self.wake.notified();
                if !self.entries().iter().any(|e| self.uploadable(e)) {
                    wake.await;
                }
            }
        }
    }

    /// Waits until none of this node's own writes is pending (held copies
    /// of other nodes' writes stay).
    pub async fn drain(&self, limit: std::time::Duration) -> bool {
        self.wait_for(limit, |j| !j.entries().iter().any(Entry::uploads_here)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::namespace::Namespace;
    use object_store::ObjectStoreExt;

    /// A file handed over and then written on (FUSE passthrough writes reach
    /// it directly): the entry stays its first `size` bytes, across a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_adopted_file_that_grows_later_is_uploaded_as_handed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jdir = dir.path().join("journal");
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).expect("inbox");
        let staged = inbox.join("w1");
        std::fs::write(&staged, b"version one").expect("write");
        let path = NsPath::parse("/ck.pt").expect("path");
        {
            let j = Journal::open(&jdir).expect("journal");
            j.adopt(&path, &staged, 11).await.expect("adopt");
            // Fewer bytes than announced is refused and leaves nothing behind.
            let err = j.adopt(&path, &staged, 12).await.expect_err("short file");
            assert!(err.to_string().contains("fewer than the announced 12"), "{err}");
        }
        // The writer goes on after the hand-over, then the node restarts.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&staged)
            .and_then(|mut f| f.write_all(b" and more"))
            .expect("append");
        let j = Arc::new(Journal::open(&jdir).expect("reopen"));
        let e = j.pending("/ck.pt").expect("the entry survives the restart");
        assert_eq!(e.size, 11);

        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir).expect("store dir");
        let store: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&store_dir).expect("store"));
        let mut ns = Namespace::empty(Arc::new(Metrics::new()));
        ns.add("/", store.clone(), object_store::path::Path::default(), 0).expect("mount");
        let uploader = tokio::spawn(j.clone().run_uploader(ns, |_, _| {}));
        assert!(j.drain(std::time::Duration::from_secs(30)).await);
        uploader.abort();
        let got =
            store.get(&object_store::path::Path::from("ck.pt")).await.expect("stored").bytes().await.expect("bytes");
        assert_eq!(&got[..], b"version one");
    }

    /// A node killed mid-upload to a `file://` store leaves object_store's
    /// `NAME#N` staging file; the next upload of that path removes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_uploads_staging_file_goes_with_the_next_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(store_dir.join("ck")).expect("store dir");
        std::fs::write(store_dir.join("ck/step.pt#1"), b"half of an old upl").expect("leftover");
        std::fs::write(store_dir.join("ck/step.pt#x"), b"not ours").expect("other file");
        let mut mounts = BTreeMap::new();
        mounts.insert(
            "/".to_string(),
            crate::config::MountConfig { url: format!("file://{}", store_dir.display()), ..Default::default() },
        );
        let ns = Namespace::open(&mounts, Arc::new(Metrics::new())).expect("namespace");
        let j = Arc::new(Journal::open(&dir.path().join("journal")).expect("journal"));
        let mut w = j.begin(&NsPath::parse("/ck/step.pt").expect("path")).await.expect("begin");
        w.write(b"whole checkpoint").await.expect("write");
        let e = j.commit(w).await.expect("commit");
        j.ready(e.seq);
        let uploader = tokio::spawn(j.clone().run_uploader(ns, |_, _| {}));
        assert!(j.drain(std::time::Duration::from_secs(30)).await);
        uploader.abort();
        assert_eq!(std::fs::read(store_dir.join("ck/step.pt")).expect("stored"), b"whole checkpoint");
        assert!(!store_dir.join("ck/step.pt#1").exists(), "the staging file of the interrupted upload is still there");
        assert!(store_dir.join("ck/step.pt#x").exists(), "a file that is no staging file was removed");
        // Odd names: on disk as they are (`%41` is not `A`).
        std::fs::write(store_dir.join("ck/run#2%41.pt#1"), b"half").expect("leftover");
        let mut w = j.begin(&NsPath::parse("/ck/run#2%41.pt").expect("path")).await.expect("begin");
        w.write(b"second").await.expect("write");
        let e = j.commit(w).await.expect("commit");
        j.ready(e.seq);
        let uploader = tokio::spawn(j.clone().run_uploader(ns_again(&store_dir), |_, _| {}));
        assert!(j.drain(std::time::Duration::from_secs(30)).await);
        uploader.abort();
        assert_eq!(std::fs::read(store_dir.join("ck/run#2%41.pt")).expect("stored"), b"second");
        assert!(!store_dir.join("ck/run#2%41.pt#1").exists(), "the staging file of an odd name is still there");
    }

    fn ns_again(store_dir: &Path) -> Namespace {
        let mut mounts = BTreeMap::new();
        mounts.insert(
            "/".to_string(),
            crate::config::MountConfig { url: format!("file://{}", store_dir.display()), ..Default::default() },
        );
        Namespace::open(&mounts, Arc::new(Metrics::new())).expect("namespace")
    }
}
