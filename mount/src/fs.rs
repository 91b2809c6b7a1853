//! The filesystem: namespace calls (lookup, attributes, listings,
//! directories, rename, unlink) and the dispatch of each handle's calls to
//! its kind: reads (`read`), writes (`write`) and the
//! control files (`control`).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_protocol::client::Cluster;
use ferry_protocol::codec::{DirEntry, EntryKind, ObjectInfo};
use ferry_protocol::ids::NsPath;

use crate::error::{FsError, FsResult};
use crate::handle::{Attr, Handle, Opened, WriteHandle, READAHEAD_PAGES};
use crate::inodes::Inodes;
use crate::local::LocalFiles;
use crate::nodes::Nodes;
use crate::prefetch::{MountPrefetch, PrefetchOptions};
use ferry_protocol::{ErrorCode, ProtocolError};

/// How long a directory's listing answers lookups of its entries without
/// asking a node (a walk lists a directory, then looks up each entry).
pub const LISTING_TTL: Duration = Duration::from_secs(10);
/// Listings kept for lookups at most.
const LISTED_DIRS: usize = 4096;
/// A lookup in a directory listed within this long, whose listing has
/// expired, lists the directory again rather than asking for the one
/// entry: a walk that comes back to a directory after [`LISTING_TTL`]
/// (`ls -lR` after `find`) costs one listing, not a request per file.
const LISTING_REFRESH: Duration = Duration::from_secs(300);

/// What a recent listing says of an entry.
enum ListedEntry {
    /// Listed, fresh.
    Found(ObjectInfo),
    /// The directory's listing has expired, but it was listed lately.
    Expired,
    /// No listing, or not in a fresh one (it may have been added since).
    Unknown,
}

/// Recent listings, for lookups. Any change made through this mount
/// forgets them all (and a listing fetched across a change is not kept).
#[derive(Debug, Default)]
pub(crate) struct Listed {
    dirs: HashMap<String, (Instant, Arc<Vec<DirEntry>>)>,
    generation: u64,
    /// Directories being listed again for a lookup.
    refreshing: HashSet<String>,
}

/// The filesystem.
#[derive(Debug)]
pub struct MountFs<N: Nodes = Cluster> {
    pub(crate) cluster: N,
    pub(crate) page_size: u64,
    pub(crate) staging: PathBuf,
    pub(crate) inodes: Mutex<Inodes>,
    pub(crate) handles: Mutex<HashMap<u64, Handle>>,
    pub(crate) next_fh: AtomicU64,
    /// Paths open for writing and their current size.
    pub(crate) writing: Mutex<HashMap<String, u64>>,
    /// Directories made with mkdir that hold nothing yet.
    pub(crate) made_dirs: Mutex<HashSet<String>>,
    /// Local whole-file copies for passthrough; `None` when disabled.
    pub(crate) local: Option<Arc<LocalFiles>>,
    /// Pages fetched ahead of a sequential reader.
    pub(crate) readahead: AtomicU64,
    /// How long the kernel may keep attributes and entries (ms).
    pub(crate) attr_ttl_ms: AtomicU64,
    /// Inboxes of same-host nodes already cleared of dead mounts' files.
    pub(crate) swept: Mutex<HashSet<PathBuf>>,
    /// Prefetch across files; `None` when disabled.
    pub(crate) prefetch: Option<Arc<MountPrefetch<N>>>,
    /// When the mount started: the time of directories without one.
    pub(crate) started: SystemTime,
    /// Recent listings, answering lookups.
    pub(crate) listed: Mutex<Listed>,
    /// Counters for `ferry mount --metrics-listen`.
    pub(crate) metrics: crate::metrics::MountMetrics,
}

pub(crate) fn child(parent: &str, name: &str) -> FsResult<String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::new(libc::EINVAL, format!("invalid name {name:?}")));
    }
    let p = if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") };
    NsPath::parse(&p).map_err(|e| FsError::new(libc::EINVAL, e.to_string()))?;
    Ok(p)
}

fn mtime(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl<N: Nodes> MountFs<N> {
    /// A filesystem over `cluster`, staging writes in `staging` (created, emptied).
    pub async fn new(cluster: N, staging: PathBuf) -> FsResult<MountFs<N>> {
        Self::with_local_copies(cluster, staging, 0).await
    }

    /// Like [`MountFs::new`], also keeping up to `budget` bytes of whole-file
    /// copies (under `staging/files`) of files read to the end, which later
    /// opens may serve through FUSE passthrough at local-disk speed.
    pub async fn with_local_copies(cluster: N, staging: PathBuf, budget: u64) -> FsResult<MountFs<N>> {
        let page_size = cluster.page_size().await?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        let local = if budget > 0 { Some(Arc::new(LocalFiles::new(staging.join("files"), budget)?)) } else { None };
        Ok(MountFs {
            cluster,
            page_size,
            staging,
            inodes: Mutex::new(Inodes::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            writing: Mutex::new(HashMap::new()),
            made_dirs: Mutex::new(HashSet::new()),
            local,
            readahead: AtomicU64::new(READAHEAD_PAGES),
            attr_ttl_ms: AtomicU64::new(crate::fuse::ATTR_TTL.as_millis() as u64),
            swept: Mutex::new(HashSet::new()),
            prefetch: None,
            started: SystemTime::now(),
            listed: Mutex::new(Listed::default()),
            metrics: crate::metrics::MountMetrics::new(),
        })
    }

    /// Prefetches across files with `opts` (a model that cannot be loaded is an error).
    pub fn enable_prefetch(&mut self, opts: &PrefetchOptions) -> FsResult<()> {
        let p = MountPrefetch::new(self.cluster.clone(), self.page_size, opts)
            .map_err(|e| FsError::new(libc::EINVAL, format!("prefetch: {e}")))?;
        self.prefetch = Some(p);
        Ok(())
    }

    /// The mount's metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let local = self.local.as_ref().map_or(0, |l| l.used());
        self.metrics.encode(local, self.prefetch_stats().as_ref())
    }

    /// The prefetch counters (as `.ferry-stats` shows them), when prefetch is on.
    pub fn prefetch_stats(&self) -> Option<serde_json::Value> {
        self.prefetch.as_ref().map(|p| p.stats())
    }

    pub(crate) fn path_of(&self, ino: u64) -> FsResult<String> {
        self.inodes
            .lock()
            .expect("inode lock poisoned")
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or_else(|| FsError::new(libc::ENOENT, format!("unknown inode {ino}")))
    }

    pub(crate) fn ino_of(&self, path: &str) -> u64 {
        self.inodes.lock().expect("inode lock poisoned").ino(path)
    }

    /// `a`, the attributes of `path`, goes to the kernel as an entry: it
    /// holds one more reference to the inode.
    pub(crate) fn entry(&self, path: &str, a: Attr) -> Attr {
        self.inodes.lock().expect("inode lock poisoned").remember(a.ino, path);
        a
    }

    /// The kernel forgot `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.lock().expect("inode lock poisoned").forget(ino, n);
    }

    /// Inodes known here (the kernel's, the root, and a few in use by
    /// handles or recent renames).
    pub fn inode_count(&self) -> usize {
        self.inodes.lock().expect("inode lock poisoned").by_ino.len()
    }

    pub(crate) fn dir_attr(&self, path: &str) -> Attr {
        Attr {
            ino: self.ino_of(path),
            kind: EntryKind::Dir,
            size: 0,
            mtime: self.started,
            etag: String::new(),
            origin: String::new(),
        }
    }

    /// Attributes of a file that exists only here so far (being written, or a control file).
    pub(crate) fn local_file_attr(&self, path: &str, size: u64) -> Attr {
        Attr {
            ino: self.ino_of(path),
            kind: EntryKind::File,
            size,
            mtime: SystemTime::now(),
            etag: String::new(),
            origin: String::new(),
        }
    }

    pub(crate) fn attr_of(&self, path: &str, info: &ObjectInfo) -> Attr {
        self.attr_of_ino(self.ino_of(path), info)
    }

    pub(crate) fn attr_of_ino(&self, ino: u64, info: &ObjectInfo) -> Attr {
        Attr {
            ino,
            kind: info.kind,
            size: info.size,
            // A directory the store keeps no time for (a prefix that
            // objects share) shows when the mount started, not 1970.
            mtime: if info.kind == EntryKind::Dir && info.mtime_ms == 0 { self.started } else { mtime(info.mtime_ms) },
            etag: info.etag.clone(),
            origin: info.origin.clone(),
        }
    }

    pub(crate) async fn stat_path(&self, path: &str) -> FsResult<Attr> {
        if path == "/" {
            return Ok(self.dir_attr(path));
        }
        if self.control(path) {
            return Ok(self.local_file_attr(path, 0));
        }
        let writing = self.writing.lock().expect("writing lock poisoned").get(path).copied();
        if let Some(size) = writing {
            // Passthrough writes bypass `write`: their files tell the size.
            let written = self.passthrough_files(path).iter().filter_map(|f| f.metadata().ok()).map(|m| m.len()).max();
            return Ok(self.local_file_attr(path, size.max(written.unwrap_or(0))));
        }
        match self.cluster.stat(path).await {
            Ok(info) => Ok(self.attr_of(path, &info)),
            Err(ProtocolError::Remote { code: ErrorCode::NotFound, .. })
                if self.made_dirs.lock().expect("dirs lock poisoned").contains(path) =>
            {
                Ok(self.dir_attr(path))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Looks up `name` in directory `parent`: from the directory's recent
    /// listing when there is one, else from a node.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let dir = self.path_of(parent)?;
        let path = child(&dir, name)?;
        let mut listed = self.listed_info(&dir, name, &path);
        if matches!(listed, ListedEntry::Expired) && self.refresh_listing(&dir).await {
            listed = self.listed_info(&dir, name, &path);
        }
        if let ListedEntry::Found(info) = listed {
            return Ok(self.entry(&path, self.attr_of(&path, &info)));
        }
        let a = self.stat_path(&path).await?;
        Ok(self.entry(&path, a))
    }

    /// What the recent listing of `dir` says of its entry `name` (`path`).
    fn listed_info(&self, dir: &str, name: &str, path: &str) -> ListedEntry {
        if self.control(path) || self.writing.lock().expect("writing lock poisoned").contains_key(path) {
            return ListedEntry::Unknown;
        }
        let listed = self.listed.lock().expect("listing lock poisoned");
        let Some((at, entries)) = listed.dirs.get(dir) else { return ListedEntry::Unknown };
        if at.elapsed() >= LISTING_TTL {
            return if at.elapsed() < LISTING_REFRESH { ListedEntry::Expired } else { ListedEntry::Unknown };
        }
        match entries.binary_search_by(|e| e.name.as_str().cmp(name)) {
            Ok(i) => ListedEntry::Found(entries[i].info.clone()),
            Err(_) => ListedEntry::Unknown,
        }
    }

    /// Lists `dir` again for lookups, unless another lookup is doing so
    /// (that one then asks for its entry alone). Whether it was listed.
    async fn refresh_listing(&self, dir: &str) -> bool {
        let generation = {
            let mut listed = self.listed.lock().expect("listing lock poisoned");
            if !listed.refreshing.insert(dir.to_string()) {
                return false;
            }
            listed.generation
        };
        let entries = self.cluster.list(dir).await;
        let ok = entries.is_ok();
        if let Ok(entries) = entries {
            self.keep_listing(dir, Arc::new(entries), generation);
        }
        self.listed.lock().expect("listing lock poisoned").refreshing.remove(dir);
        ok
    }

    /// Keeps `entries`, listed from `dir` since `generation`, for lookups.
    fn keep_listing(&self, dir: &str, entries: Arc<Vec<DirEntry>>, generation: u64) {
        if !entries.is_sorted_by(|a, b| a.name < b.name) {
            return;
        }
        let mut listed = self.listed.lock().expect("listing lock poisoned");
        if listed.generation != generation {
            return;
        }
        if listed.dirs.len() >= LISTED_DIRS {
            listed.dirs.retain(|_, (at, _)| at.elapsed() < LISTING_REFRESH);
            if listed.dirs.len() >= LISTED_DIRS {
                listed.dirs.clear();
            }
        }
        listed.dirs.insert(dir.to_string(), (Instant::now(), entries));
    }

    /// Forgets every recent listing: something changed through this mount.
    pub(crate) fn forget_listings(&self) {
        let mut listed = self.listed.lock().expect("listing lock poisoned");
        listed.generation += 1;
        listed.dirs.clear();
    }

    /// Attributes of `ino`.
    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let path = self.path_of(ino)?;
        self.stat_path(&path).await
    }

    /// Entries of directory `ino` (without `.` and `..`).
    pub async fn readdir(&self, ino: u64) -> FsResult<Vec<(String, Attr)>> {
        let path = self.path_of(ino)?;
        let generation = self.listed.lock().expect("listing lock poisoned").generation;
        let mut out: Vec<(String, Attr)> = match self.cluster.list(&path).await {
            Ok(entries) => {
                let entries = Arc::new(entries);
                self.keep_listing(&path, entries.clone(), generation);
                entries
                    .iter()
                    .map(|e| {
                        let p = child(&path, &e.name).unwrap_or_default();
                        let ino = self.inodes.lock().expect("inode lock poisoned").listed(&p);
                        (e.name.clone(), self.attr_of_ino(ino, &e.info))
                    })
                    .collect()
            }
            Err(ProtocolError::Remote { code: ErrorCode::NotFound, .. })
                if self.made_dirs.lock().expect("dirs lock poisoned").contains(&path) =>
            {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        let extra: Vec<String> = {
            let dirs = self.made_dirs.lock().expect("dirs lock poisoned");
            let writing = self.writing.lock().expect("writing lock poisoned");
            dirs.iter()
                .chain(writing.keys())
                .filter_map(|p| p.strip_prefix(&prefix))
                .filter(|r| !r.contains('/'))
                .map(str::to_string)
                .collect()
        };
        for name in extra {
            if !out.iter().any(|(n, _)| *n == name) {
                let p = child(&path, &name)?;
                if let Ok(a) = self.stat_path(&p).await {
                    out.push((name, a));
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.handles.lock().expect("handle lock poisoned").insert(fh, h);
        fh
    }

    pub(crate) fn handle(&self, fh: u64) -> FsResult<Option<Handle>> {
        Ok(self.handles.lock().expect("handle lock poisoned").get(&fh).map(|h| match h {
            Handle::Read(r) => Handle::Read(r.clone()),
            Handle::Write(w) => Handle::Write(w.clone()),
            Handle::Announce(a) => Handle::Announce(a.clone()),
            Handle::Stats(b) => Handle::Stats(b.clone()),
        }))
    }

    /// Opens `ino`; `write` for write access, `truncate` for O_TRUNC.
    pub async fn open(&self, ino: u64, write: bool, truncate: bool) -> FsResult<Opened> {
        let path = self.path_of(ino)?;
        if self.control(&path) {
            return self.open_control(&path, write);
        }
        if !write {
            // A same-host store's file describes the version it holds: one
            // request to the node instead of a stat and then a locate.
            if let Some((attr, file)) = self.located(&path).await {
                return Ok(self.open_read(path, attr, Some(file)));
            }
        }
        let attr = self.stat_path(&path).await?;
        if attr.kind == EntryKind::Dir {
            return Err(FsError::new(libc::EISDIR, format!("{path} is a directory")));
        }
        if write {
            return self.open_write(&path, &attr, truncate).await;
        }
        Ok(self.open_read(path, attr, None))
    }

    /// Creates and opens `name` in `parent` for writing.
    pub async fn create(&self, parent: u64, name: &str) -> FsResult<(Attr, Opened)> {
        let path = child(&self.path_of(parent)?, name)?;
        let (fh, w) = self.new_write_handle(&path, true, true).await?;
        let opened = self.write_opened(fh, &w)?;
        Ok((self.entry(&path, self.local_file_attr(&path, 0)), opened))
    }

    /// `flush` (each close of a descriptor): like [`MountFs::fsync`], except
    /// that an empty file is left for `release` (or an fsync) to send. A
    /// process that forks while writing a file closes its copy of the
    /// descriptor in the child, which flushes: sent then, a new checkpoint
    /// would reach the store as an empty object under its name before its
    /// data. An empty file a program means to leave empty is sent when its
    /// last descriptor closes.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        if let Some(Handle::Write(w)) = self.handle(fh)? {
            let empty = w.staged().file.metadata().is_ok_and(|m| m.len() == 0);
            if empty {
                return Ok(());
            }
        }
        self.fsync(fh).await
    }

    /// `fsync`, and `flush` of a file with bytes in it: make written bytes durable on the node.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        match self.handle(fh)? {
            Some(Handle::Write(w)) => self.persist(&w).await,
            Some(Handle::Announce(a)) => self.announce(&a).await,
            Some(Handle::Read(_) | Handle::Stats(_)) => Ok(()),
            None => Err(FsError::new(libc::EBADF, format!("unknown handle {fh}"))),
        }
    }

    /// Closes a handle for good.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let h = self.handles.lock().expect("handle lock poisoned").remove(&fh);
        if let Some(Handle::Read(r)) = &h {
            self.read_to_the_end(r);
        }
        if let Some(Handle::Write(w)) = h {
            self.release_write(&w).await?;
        }
        Ok(())
    }

    /// Removes file `name` from `parent`.
    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        let path = child(&self.path_of(parent)?, name)?;
        // Handles still open on the file write nowhere from now on (POSIX
        // unlink semantics): a late flush or release must not bring it back.
        let open: Vec<Arc<WriteHandle>> = self.write_handles_of(&path);
        for w in &open {
            w.staged().dirty = false;
            w.path.lock().expect("path lock poisoned").clear();
        }
        if let Some(local) = &self.local {
            local.forget(&path);
        }
        let was_writing = self.writing.lock().expect("writing lock poisoned").remove(&path).is_some();
        let deleted = self.cluster.delete(&path).await;
        self.forget_listings();
        match deleted {
            Ok(()) => {}
            // Created here but never sent to the node: nothing to delete there.
            Err(ProtocolError::Remote { code: ErrorCode::NotFound, .. }) if was_writing => {}
            Err(e) => return Err(e.into()),
        }
        // A file made again under this name is a new inode: the kernel may
        // still hold the old one open (with a backing file of its own).
        self.inodes.lock().expect("inode lock poisoned").by_path.remove(&path);
        Ok(())
    }

    /// Renames `name` in `parent` to `newname` in `newparent`.
    pub async fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str) -> FsResult<()> {
        let from = child(&self.path_of(parent)?, name)?;
        let to = child(&self.path_of(newparent)?, newname)?;
        // Bytes still only on this machine go to the node first.
        let open = self.write_handles_of(&from);
        for w in &open {
            self.persist(w).await?;
        }
        // A directory is every object below it: it is not renamed in place.
        // EXDEV, as between file systems, makes `mv` copy it and remove
        // the original; over a directory with entries, ENOTEMPTY first.
        let is_dir = self.made_dirs.lock().expect("dirs lock poisoned").contains(&from)
            || self.stat_path(&from).await.is_ok_and(|a| a.kind == EntryKind::Dir);
        if is_dir {
            if let Ok(target) = self.stat_path(&to).await {
                if target.kind == EntryKind::Dir && !self.cluster.list(&to).await.map_err(FsError::from)?.is_empty() {
                    return Err(FsError::new(libc::ENOTEMPTY, format!("{to} is not empty")));
                }
                if target.kind != EntryKind::Dir {
                    return Err(FsError::new(libc::ENOTDIR, format!("{to} is not a directory")));
                }
            }
            return Err(FsError::new(libc::EXDEV, "directories are not renamed in place; copy and remove"));
        }
        let renamed = self.cluster.rename(&from, &to).await;
        self.forget_listings();
        renamed?;
        for w in &open {
            *w.path.lock().expect("path lock poisoned") = to.clone();
        }
        let mut writing = self.writing.lock().expect("writing lock poisoned");
        if let Some(s) = writing.remove(&from) {
            writing.insert(to.clone(), s);
        }
        drop(writing);
        if let Some(local) = &self.local {
            local.forget(&to);
            local.rename(&from, &to);
        }
        self.inodes.lock().expect("inode lock poisoned").rename(&from, &to);
        Ok(())
    }

    /// Makes directory `name` in `parent`: in the store (a directory or
    /// folder marker, so it outlives the mount), or, for stores without
    /// directories of their own, here until a file is written below it.
    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let path = child(&self.path_of(parent)?, name)?;
        if self.stat_path(&path).await.is_ok() {
            return Err(FsError::new(libc::EEXIST, format!("{path} exists")));
        }
        let made = self.cluster.mkdir(&path).await;
        self.forget_listings();
        match made {
            Ok(()) => {}
            Err(ProtocolError::Remote { code: ErrorCode::Unsupported, message }) => {
                tracing::info!(path, "{message}; the directory lasts as long as this mount");
                self.made_dirs.lock().expect("dirs lock poisoned").insert(path.clone());
            }
            Err(e) => return Err(e.into()),
        }
        let attr = match self.cluster.stat(&path).await {
            Ok(info) if info.kind == EntryKind::Dir => self.attr_of(&path, &info),
            _ => self.dir_attr(&path),
        };
        Ok(self.entry(&path, attr))
    }

    /// Removes empty directory `name` from `parent`.
    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        let path = child(&self.path_of(parent)?, name)?;
        let ino = self.ino_of(&path);
        if !self.readdir(ino).await?.is_empty() {
            return Err(FsError::new(libc::ENOTEMPTY, format!("{path} is not empty")));
        }
        let made_here = self.made_dirs.lock().expect("dirs lock poisoned").remove(&path);
        let removed = self.cluster.rmdir(&path).await;
        self.forget_listings();
        match removed {
            Ok(()) => Ok(()),
            Err(ProtocolError::Remote { code: ErrorCode::NotFound, .. }) if made_here => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets how many pages are fetched ahead of a sequential reader (0: none).
    pub fn set_readahead(&self, pages: u64) {
        self.readahead.store(pages, Ordering::Relaxed);
    }

    /// Sets how long the kernel may keep attributes and entries before it
    /// asks again (default [`crate::fuse::ATTR_TTL`]). Longer makes walks
    /// of big trees (`ls -lR`) cheaper; a file changed through another
    /// client may show its old size and time that much longer.
    pub fn set_attr_ttl(&self, ttl: std::time::Duration) {
        self.attr_ttl_ms.store(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long the kernel may keep attributes and entries.
    pub fn attr_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.attr_ttl_ms.load(Ordering::Relaxed))
    }

    /// Block size reported to readers (`st_blksize`): the page size.
    pub fn block_size(&self) -> u32 {
        u32::try_from(self.page_size).unwrap_or(1 << 20)
    }
}
