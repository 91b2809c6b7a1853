//! The mounted filesystem's logic, without the kernel.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use ferry_protocol::client::Cluster;
use ferry_protocol::codec::{EntryKind, ObjectInfo};
use ferry_protocol::ids::NsPath;
use ferry_protocol::{ErrorCode, ProtocolError};

use super::prefetch::{fetch_page, MountPrefetch, PageFuture, PrefetchOptions, Source};

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;
/// Pages fetched ahead of a sequential reader.
pub const READAHEAD_PAGES: u64 = 4;
/// Pages a read handle keeps.
const HANDLE_PAGES: usize = 12;

/// A failed filesystem call: the errno for the kernel and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    /// The errno to answer.
    pub errno: i32,
    /// What happened.
    pub message: String,
}

impl FsError {
    /// An error answering `errno`, with `message` for the log.
    pub fn new(errno: i32, message: impl Into<String>) -> FsError {
        FsError { errno, message: message.into() }
    }
}

impl From<ProtocolError> for FsError {
    fn from(e: ProtocolError) -> FsError {
        let errno = match &e {
            ProtocolError::Remote { code, .. } => match code {
                ErrorCode::NotFound => libc::ENOENT,
                ErrorCode::InvalidInput => libc::EINVAL,
                ErrorCode::Unauthorized => libc::EACCES,
                ErrorCode::TooLarge => libc::EFBIG,
                ErrorCode::VersionMismatch => libc::EPROTO,
                ErrorCode::Unavailable | ErrorCode::Corrupted | ErrorCode::Internal => libc::EIO,
            },
            ProtocolError::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        };
        FsError { errno, message: e.to_string() }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        FsError { errno: e.raw_os_error().unwrap_or(libc::EIO), message: e.to_string() }
    }
}

/// Result of a filesystem call.
pub type FsResult<T> = Result<T, FsError>;

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

/// Writing paths here (one per line, optionally `OFFSET LENGTH` after it)
/// announces the order readers will read them in; see [`MountPrefetch::announce`].
pub const ANNOUNCE_FILE: &str = "/.ferry-announce";
/// Reading it gives the prefetch counters as one JSON object.
pub const STATS_FILE: &str = "/.ferry-stats";

#[derive(Debug)]
struct LocalEntry {
    file: PathBuf,
    size: u64,
    tick: u64,
    /// The namespace path and version the copy holds.
    path: String,
    etag: String,
}

#[derive(Debug, Default)]
struct LocalState {
    entries: HashMap<String, LocalEntry>,
    /// Bytes held by `entries`.
    used: u64,
    /// Access clock for least-recently-used eviction.
    tick: u64,
    /// Keys being copied now.
    copying: HashSet<String>,
}

/// Whole local copies of files read to the end or written here, served by
/// FUSE passthrough.
#[derive(Debug)]
struct LocalFiles {
    dir: PathBuf,
    budget: u64,
    state: Mutex<LocalState>,
}

impl LocalFiles {
    fn key(path: &str, etag: &str, size: u64) -> String {
        blake3::hash(format!("{path}\0{etag}\0{size}").as_bytes()).to_hex().to_string()
    }

    /// Keeps `file`, just written here, as the copy of `path` at version `etag`.
    fn keep_written(&self, path: &str, etag: &str, size: u64, file: PathBuf) {
        if size == 0 || size > self.budget {
            let _ = std::fs::remove_file(&file);
            return;
        }
        // Older versions of the path are of no use any more.
        self.forget(path);
        let key = Self::key(path, etag, size);
        let mut st = self.state.lock().expect("local files lock poisoned");
        Self::insert(&mut st, self.budget, key, file, size, path, etag);
    }

    /// Moves the copies of `from` to `to` (after a rename, the bytes and version are the same).
    fn rename(&self, from: &str, to: &str) {
        let mut st = self.state.lock().expect("local files lock poisoned");
        let keys: Vec<String> = st.entries.iter().filter(|(_, e)| e.path == from).map(|(k, _)| k.clone()).collect();
        for k in keys {
            let mut e = st.entries.remove(&k).expect("key just listed");
            e.path = to.to_string();
            let key = Self::key(to, &e.etag, e.size);
            if let Some(old) = st.entries.insert(key, e) {
                st.used -= old.size;
                let _ = std::fs::remove_file(&old.file);
            }
        }
    }

    /// Drops the copies of `path`.
    fn forget(&self, path: &str) {
        let mut st = self.state.lock().expect("local files lock poisoned");
        let keys: Vec<String> = st.entries.iter().filter(|(_, e)| e.path == path).map(|(k, _)| k.clone()).collect();
        for k in keys {
            if let Some(e) = st.entries.remove(&k) {
                st.used -= e.size;
                let _ = std::fs::remove_file(&e.file);
            }
        }
    }

    fn insert(st: &mut LocalState, budget: u64, key: String, file: PathBuf, size: u64, path: &str, etag: &str) {
        st.tick += 1;
        let tick = st.tick;
        st.used += size;
        let entry = LocalEntry { file: file.clone(), size, tick, path: path.to_string(), etag: etag.to_string() };
        // The same version kept twice (written here, and copied by a reader meanwhile): one stays.
        if let Some(old) = st.entries.insert(key, entry) {
            st.used -= old.size;
            if old.file != file {
                let _ = std::fs::remove_file(&old.file);
            }
        }
        while st.used > budget {
            let Some(oldest) = st.entries.iter().min_by_key(|(_, e)| e.tick).map(|(k, _)| k.clone()) else { break };
            if let Some(e) = st.entries.remove(&oldest) {
                st.used -= e.size;
                // An open backing file stays readable after the unlink.
                let _ = std::fs::remove_file(&e.file);
            }
        }
    }

    /// The keys `path`'s copy may have at version `attr`: its etag, and the
    /// journal tag it was uploaded from (a copy written here is kept under that).
    fn keys<'a>(path: &'a str, attr: &Attr) -> impl Iterator<Item = String> + 'a {
        let size = attr.size;
        [attr.etag.clone(), attr.origin.clone()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(move |t| Self::key(path, &t, size))
    }

    /// Takes the copy `key` out of the copies without deleting it (a writer
    /// makes it its staging file); its path, if there was one.
    fn take(&self, key: &str) -> Option<PathBuf> {
        let mut st = self.state.lock().expect("local files lock poisoned");
        let e = st.entries.remove(key)?;
        st.used -= e.size;
        Some(e.file)
    }

    fn lookup(&self, key: &str) -> Option<PathBuf> {
        let mut st = self.state.lock().expect("local files lock poisoned");
        st.tick += 1;
        let tick = st.tick;
        st.entries.get_mut(key).map(|e| {
            e.tick = tick;
            e.file.clone()
        })
    }

    /// Claims `key` for copying; false if present, in progress or too large.
    fn claim(&self, key: &str, size: u64) -> bool {
        if size == 0 || size > self.budget {
            return false;
        }
        let mut st = self.state.lock().expect("local files lock poisoned");
        if st.entries.contains_key(key) || st.copying.contains(key) {
            return false;
        }
        st.copying.insert(key.to_string());
        true
    }

    fn finish(&self, key: &str, file: Option<PathBuf>, size: u64, path: &str, etag: &str) {
        let mut st = self.state.lock().expect("local files lock poisoned");
        st.copying.remove(key);
        let Some(file) = file else { return };
        Self::insert(&mut st, self.budget, key.to_string(), file, size, path, etag);
    }
}

/// A read handle's pages by number (and whether each was prefetched), oldest first in the list.
type HandlePages = (HashMap<u64, (PageFuture, bool)>, Vec<u64>);

/// Drops page `page` from a handle's pages if its fetch failed (a node
/// restarting, a store error): the error went to the read that waited for
/// it, and the next read fetches the page again.
fn forget_failed((map, order): &mut HandlePages, page: u64) {
    if matches!(map.get(&page).and_then(|(f, _)| f.peek()), Some(Err(_))) {
        map.remove(&page);
        order.retain(|p| *p != page);
    }
}

#[derive(Debug)]
struct ReadHandle {
    path: String,
    size: u64,
    etag: String,
    /// A complete local copy, read directly when the kernel does not pass reads through.
    local: Option<std::fs::File>,
    /// Where the last read ended; a read starting there is sequential.
    last_end: AtomicU64,
    /// Bytes read through the handle so far. Reads arrive concurrently and
    /// finish in any order, so this, not `last_end`, tells the whole file was read.
    read_bytes: AtomicU64,
    /// Pages at hand, and whether each came from the prefetched pages.
    pages: Mutex<HandlePages>,
}

/// The staging file behind a write handle.
#[derive(Debug)]
struct Staged {
    file: std::fs::File,
    path: PathBuf,
    /// Written since the node last took the bytes.
    dirty: bool,
    /// The node took this very file over (it lies in the node's inbox): it
    /// must not change any more, so the next write copies it first.
    adopted: bool,
    /// The object's version tag after the last adoption.
    etag: Option<String>,
    /// The kernel writes `file` directly (FUSE passthrough): writes never
    /// reach [`MountFs::write`], so changes are found by `seen`.
    passthrough: bool,
    /// Length and modification time of `file` when the node last took it.
    seen: Option<(u64, SystemTime)>,
}

impl Staged {
    /// A staging file the node has not taken yet.
    fn new(file: std::fs::File, path: PathBuf, dirty: bool) -> Staged {
        Staged { file, path, dirty, adopted: false, etag: None, passthrough: false, seen: None }
    }
}

/// Length and modification time: what tells a passthrough file changed.
fn fingerprint(file: &std::fs::File) -> std::io::Result<(u64, SystemTime)> {
    let m = file.metadata()?;
    Ok((m.len(), m.modified()?))
}

#[derive(Debug)]
struct WriteHandle {
    path: Mutex<String>,
    staged: Mutex<Staged>,
}

impl WriteHandle {
    fn new(path: &str, staged: Staged) -> WriteHandle {
        WriteHandle { path: Mutex::new(path.to_string()), staged: Mutex::new(staged) }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().expect("staging lock poisoned")
    }
}

/// Makes `s` safe to change: after an adoption the bytes move to a fresh
/// copy (`fresh` names it), leaving the node's file alone.
fn unshare(s: &mut Staged, fresh: impl FnOnce(&std::path::Path) -> PathBuf) -> std::io::Result<()> {
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

#[derive(Debug)]
enum Handle {
    Read(Arc<ReadHandle>),
    Write(Arc<WriteHandle>),
    /// `.ferry-announce` open for writing: what was written so far.
    Announce(Arc<Mutex<Vec<u8>>>),
    /// `.ferry-stats`: the counters when it was opened.
    Stats(Bytes),
}

#[derive(Debug, Default)]
struct Inodes {
    by_ino: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
    /// References the kernel holds to each inode (one per entry replied,
    /// less those it forgot); an inode it holds none of is dropped.
    lookups: HashMap<u64, u64>,
    next: u64,
}

impl Inodes {
    /// Just the root.
    fn new() -> Inodes {
        let mut i = Inodes { next: ROOT_INO, ..Default::default() };
        i.by_ino.insert(ROOT_INO, "/".into());
        i.by_path.insert("/".into(), ROOT_INO);
        i
    }

    /// The kernel took one more reference to `ino`, the inode of `path`
    /// (an entry was replied). Puts the inode back if a forget raced it.
    fn remember(&mut self, ino: u64, path: &str) {
        *self.lookups.entry(ino).or_insert(0) += 1;
        self.by_ino.entry(ino).or_insert_with(|| path.to_string());
        self.by_path.entry(path.to_string()).or_insert(ino);
    }

    /// The kernel dropped `n` references to `ino`; at none left it is
    /// forgotten here too (a later lookup of its path makes a new inode).
    fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let left = self.lookups.get_mut(&ino).map_or(0, |c| {
            *c = c.saturating_sub(n);
            *c
        });
        if left > 0 {
            return;
        }
        self.lookups.remove(&ino);
        if let Some(path) = self.by_ino.remove(&ino) {
            if self.by_path.get(&path) == Some(&ino) {
                self.by_path.remove(&path);
            }
        }
    }

    /// The inode a listing shows for `path`: its own when the kernel knows
    /// it, else a number derived from the path (listings take no reference,
    /// so they make no inode that nothing would ever forget).
    fn listed(&self, path: &str) -> u64 {
        if let Some(i) = self.by_path.get(path) {
            return *i;
        }
        let h = blake3::hash(path.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b) | (1 << 63)
    }

    fn ino(&mut self, path: &str) -> u64 {
        if let Some(i) = self.by_path.get(path) {
            return *i;
        }
        self.next += 1;
        let i = self.next;
        self.by_ino.insert(i, path.to_string());
        self.by_path.insert(path.to_string(), i);
        i
    }
    fn rename(&mut self, from: &str, to: &str) {
        if let Some(i) = self.by_path.remove(from) {
            if let Some(old) = self.by_path.insert(to.to_string(), i) {
                self.by_ino.remove(&old);
            }
            self.by_ino.insert(i, to.to_string());
        }
    }
}

/// The filesystem.
#[derive(Debug)]
pub struct MountFs {
    cluster: Cluster,
    page_size: u64,
    staging: PathBuf,
    inodes: Mutex<Inodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Paths open for writing and their current size.
    writing: Mutex<HashMap<String, u64>>,
    /// Directories made with mkdir that hold nothing yet.
    made_dirs: Mutex<HashSet<String>>,
    /// Local whole-file copies for passthrough; `None` when disabled.
    local: Option<Arc<LocalFiles>>,
    /// Pages fetched ahead of a sequential reader.
    readahead: AtomicU64,
    /// Inboxes of same-host nodes already cleared of dead mounts' files.
    swept: Mutex<HashSet<PathBuf>>,
    /// Prefetch across files; `None` when disabled.
    prefetch: Option<Arc<MountPrefetch>>,
}

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

fn child(parent: &str, name: &str) -> FsResult<String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(FsError::new(libc::EINVAL, format!("invalid name {name:?}")));
    }
    let p = if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") };
    NsPath::parse(&p).map_err(|e| FsError::new(libc::EINVAL, e))?;
    Ok(p)
}

fn mtime(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl MountFs {
    /// A filesystem over `cluster`, staging writes in `staging` (created, emptied).
    pub async fn new(cluster: Cluster, staging: PathBuf) -> FsResult<MountFs> {
        Self::with_local_copies(cluster, staging, 0).await
    }

    /// Like [`MountFs::new`], also keeping up to `budget` bytes of whole-file
    /// copies (under `staging/files`) of files read to the end, which later
    /// opens may serve through FUSE passthrough at local-disk speed.
    pub async fn with_local_copies(cluster: Cluster, staging: PathBuf, budget: u64) -> FsResult<MountFs> {
        let page_size = cluster.page_size("/").await?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        let local = if budget > 0 {
            let dir = staging.join("files");
            std::fs::create_dir_all(&dir)?;
            Some(Arc::new(LocalFiles { dir, budget, state: Mutex::new(LocalState::default()) }))
        } else {
            None
        };
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
            swept: Mutex::new(HashSet::new()),
            prefetch: None,
        })
    }

    /// Prefetches across files with `opts` (a model that cannot be loaded is an error).
    pub fn enable_prefetch(&mut self, opts: &PrefetchOptions) -> FsResult<()> {
        let p = MountPrefetch::new(self.cluster.clone(), self.page_size, opts)
            .map_err(|e| FsError::new(libc::EINVAL, format!("prefetch: {e}")))?;
        self.prefetch = Some(p);
        Ok(())
    }

    /// The prefetch counters (as `.ferry-stats` shows them), when prefetch is on.
    pub fn prefetch_stats(&self) -> Option<serde_json::Value> {
        self.prefetch.as_ref().map(|p| p.stats())
    }

    /// Whether `path` is one of the control files (only with prefetch on).
    fn control(&self, path: &str) -> bool {
        self.prefetch.is_some() && (path == ANNOUNCE_FILE || path == STATS_FILE)
    }

    fn path_of(&self, ino: u64) -> FsResult<String> {
        self.inodes
            .lock()
            .expect("inode lock poisoned")
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or_else(|| FsError::new(libc::ENOENT, format!("unknown inode {ino}")))
    }

    fn ino_of(&self, path: &str) -> u64 {
        self.inodes.lock().expect("inode lock poisoned").ino(path)
    }

    /// `a`, the attributes of `path`, goes to the kernel as an entry: it
    /// holds one more reference to the inode.
    fn entry(&self, path: &str, a: Attr) -> Attr {
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

    fn dir_attr(&self, path: &str) -> Attr {
        Attr {
            ino: self.ino_of(path),
            kind: EntryKind::Dir,
            size: 0,
            mtime: UNIX_EPOCH,
            etag: String::new(),
            origin: String::new(),
        }
    }

    /// Attributes of a file that exists only here so far (being written, or a control file).
    fn local_file_attr(&self, path: &str, size: u64) -> Attr {
        Attr {
            ino: self.ino_of(path),
            kind: EntryKind::File,
            size,
            mtime: SystemTime::now(),
            etag: String::new(),
            origin: String::new(),
        }
    }

    fn attr_of(&self, path: &str, info: &ObjectInfo) -> Attr {
        self.attr_of_ino(self.ino_of(path), info)
    }

    fn attr_of_ino(&self, ino: u64, info: &ObjectInfo) -> Attr {
        Attr {
            ino,
            kind: info.kind,
            size: info.size,
            mtime: mtime(info.mtime_ms),
            etag: info.etag.clone(),
            origin: info.origin.clone(),
        }
    }

    async fn stat_path(&self, path: &str) -> FsResult<Attr> {
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

    /// Looks up `name` in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let path = child(&self.path_of(parent)?, name)?;
        let a = self.stat_path(&path).await?;
        Ok(self.entry(&path, a))
    }

    /// Attributes of `ino`.
    pub async fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let path = self.path_of(ino)?;
        self.stat_path(&path).await
    }

    /// Entries of directory `ino` (without `.` and `..`).
    pub async fn readdir(&self, ino: u64) -> FsResult<Vec<(String, Attr)>> {
        let path = self.path_of(ino)?;
        let mut out: Vec<(String, Attr)> = match self.cluster.list(&path).await {
            Ok(entries) => entries
                .into_iter()
                .map(|e| {
                    let p = child(&path, &e.name).unwrap_or_default();
                    let ino = self.inodes.lock().expect("inode lock poisoned").listed(&p);
                    (e.name, self.attr_of_ino(ino, &e.info))
                })
                .collect(),
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

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.handles.lock().expect("handle lock poisoned").insert(fh, h);
        fh
    }

    /// Where a new staging file goes: in the inbox of `path`'s node when it
    /// runs on this host (the node then adopts the file without a copy),
    /// else in the mount's staging directory.
    async fn staging_file(&self, path: &str) -> PathBuf {
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
    fn sibling(&self, old: &std::path::Path) -> PathBuf {
        let n = self.next_fh.fetch_add(1, Ordering::SeqCst);
        let name = if old.starts_with(&self.staging) { format!("w{n}") } else { format!("{}{n}", inbox_prefix()) };
        old.with_file_name(name)
    }

    async fn new_write_handle(&self, path: &str, truncate: bool, dirty: bool) -> FsResult<(u64, Arc<WriteHandle>)> {
        let staging = self.staging_file(path).await;
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(truncate).open(&staging)?;
        let size = file.metadata()?.len();
        let w = Arc::new(WriteHandle::new(path, Staged::new(file, staging, dirty)));
        self.writing.lock().expect("writing lock poisoned").insert(path.to_string(), size);
        Ok((self.add_handle(Handle::Write(w.clone())), w))
    }

    /// Opens `ino`; `write` for write access, `truncate` for O_TRUNC.
    pub async fn open(&self, ino: u64, write: bool, truncate: bool) -> FsResult<Opened> {
        let path = self.path_of(ino)?;
        if let (true, Some(p)) = (self.control(&path), &self.prefetch) {
            let h = match (path.as_str(), write) {
                (ANNOUNCE_FILE, true) => Handle::Announce(Arc::default()),
                (STATS_FILE, false) => {
                    let mut text = serde_json::to_vec_pretty(&p.stats()).unwrap_or_default();
                    text.push(b'\n');
                    Handle::Stats(Bytes::from(text))
                }
                _ => return Err(FsError::new(libc::EACCES, format!("{path} is write-only or read-only"))),
            };
            return Ok(Opened::Direct(self.add_handle(h)));
        }
        let attr = self.stat_path(&path).await?;
        if attr.kind == EntryKind::Dir {
            return Err(FsError::new(libc::EISDIR, format!("{path} is a directory")));
        }
        if write {
            let (fh, w) = self.new_write_handle(&path, true, truncate).await?;
            if !truncate && attr.size > 0 {
                // Read-modify-write: start from the current bytes.
                let mut f = tokio::fs::File::from_std(w.staged().file.try_clone()?);
                self.cluster.read_to(&path, 0, None, &mut f).await?;
                self.writing.lock().expect("writing lock poisoned").insert(path.clone(), attr.size);
            }
            return self.write_opened(fh, &w);
        }
        // Someone is writing the file through passthrough: read what they wrote
        // (and the kernel wants one backing file per inode anyway).
        let writer = self.passthrough_files(&path).into_iter().next();
        let local_copy = self.local.as_ref().and_then(|l| LocalFiles::keys(&path, &attr).find_map(|k| l.lookup(&k)));
        let local_file = writer.or_else(|| local_copy.and_then(|p| std::fs::File::open(p).ok()));
        let h = ReadHandle {
            path,
            size: attr.size,
            etag: attr.etag,
            local: local_file.as_ref().and_then(|f| f.try_clone().ok()),
            last_end: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            pages: Mutex::new((HashMap::new(), Vec::new())),
        };
        let fh = self.add_handle(Handle::Read(Arc::new(h)));
        match local_file {
            Some(file) => Ok(Opened::Passthrough { fh, file }),
            None => Ok(Opened::Handle(fh)),
        }
    }

    /// Keeps a local copy of a file a reader went through to the end.
    fn materialize(&self, h: &ReadHandle) {
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
                let n = cluster.read_to(&path, 0, None, &mut f).await?;
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

    /// Creates and opens `name` in `parent` for writing.
    pub async fn create(&self, parent: u64, name: &str) -> FsResult<(Attr, Opened)> {
        let path = child(&self.path_of(parent)?, name)?;
        let (fh, w) = self.new_write_handle(&path, true, true).await?;
        let opened = self.write_opened(fh, &w)?;
        Ok((self.entry(&path, self.local_file_attr(&path, 0)), opened))
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
    fn stop_writing(&self, w: &WriteHandle) -> String {
        let path = w.path.lock().expect("path lock poisoned").clone();
        if !path.is_empty() && self.write_handles_of(&path).is_empty() {
            self.writing.lock().expect("writing lock poisoned").remove(&path);
        }
        path
    }

    /// Whether another open handle writes through `w` too.
    fn shares(&self, w: &Arc<WriteHandle>) -> bool {
        self.handles
            .lock()
            .expect("handle lock poisoned")
            .values()
            .any(|h| matches!(h, Handle::Write(o) if Arc::ptr_eq(o, w)))
    }

    /// A new write handle, offered for passthrough when its node runs on this
    /// host (the node adopts the staging file itself, so the kernel may write
    /// it directly); else a normal handle.
    fn write_opened(&self, fh: u64, w: &WriteHandle) -> FsResult<Opened> {
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

    fn handle(&self, fh: u64) -> FsResult<Option<Handle>> {
        Ok(self.handles.lock().expect("handle lock poisoned").get(&fh).map(|h| match h {
            Handle::Read(r) => Handle::Read(r.clone()),
            Handle::Write(w) => Handle::Write(w.clone()),
            Handle::Announce(a) => Handle::Announce(a.clone()),
            Handle::Stats(b) => Handle::Stats(b.clone()),
        }))
    }

    /// Page `page` if the handle or the prefetched pages hold it. A fetch
    /// that failed is not held: the next read asks again.
    fn held_page(&self, h: &ReadHandle, page: u64) -> Option<(PageFuture, Source)> {
        let held = {
            let mut guard = h.pages.lock().expect("page lock poisoned");
            forget_failed(&mut guard, page);
            guard.0.get(&page).map(|(f, prefetched)| (f.clone(), *prefetched))
        };
        match held {
            Some((f, prefetched)) => Some((f, if prefetched { Source::Prefetched } else { Source::Handle })),
            None => self.prefetch.as_ref()?.take(&h.path, &h.etag, page).map(|f| (f, Source::Prefetched)),
        }
    }

    fn page(&self, h: &Arc<ReadHandle>, page: u64) -> (PageFuture, Source) {
        let mut guard = h.pages.lock().expect("page lock poisoned");
        forget_failed(&mut guard, page);
        let (map, order) = &mut *guard;
        if let Some((f, prefetched)) = map.get(&page) {
            return (f.clone(), if *prefetched { Source::Prefetched } else { Source::Handle });
        }
        let (shared, source) = match self.prefetch.as_ref().and_then(|p| p.take(&h.path, &h.etag, page)) {
            Some(f) => (f, Source::Prefetched),
            None => (fetch_page(&self.cluster, &h.path, page, self.page_size, h.size), Source::Fetched),
        };
        map.insert(page, (shared.clone(), source == Source::Prefetched));
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
            Some(Handle::Stats(b)) => {
                let s = (offset as usize).min(b.len());
                return Ok(b.slice(s..(s + size as usize).min(b.len())));
            }
            Some(Handle::Announce(_)) => return Err(FsError::new(libc::EBADF, "the announce file is write-only")),
            None => return Err(FsError::new(libc::EBADF, format!("unknown handle {fh}"))),
        };
        let end = (offset + u64::from(size)).min(h.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        if let Some(f) = &h.local {
            let mut buf = vec![0u8; (end - offset) as usize];
            f.read_exact_at(&mut buf, offset)?;
            return Ok(Bytes::from(buf));
        }
        let sequential = offset == 0 || offset == h.last_end.load(Ordering::Relaxed);
        h.last_end.store(end, Ordering::Relaxed);
        h.read_bytes.fetch_add(end - offset, Ordering::Relaxed);
        let ps = self.page_size;
        let (first, last) = (offset / ps, (end - 1) / ps);
        // Predictions first, so the handle's own readahead finds their pages.
        if let Some(p) = &self.prefetch {
            p.access(reader, &h.path, offset, end);
        }
        let count = |source| {
            if let Some(p) = &self.prefetch {
                p.count(source);
            }
        };
        if !sequential {
            // Random access: fetch only what was asked, unless whole pages are at hand.
            let mut parts = Vec::new();
            for p in first..=last {
                let s = offset.max(p * ps);
                let e = end.min((p + 1) * ps);
                let held = self.held_page(&h, p);
                count(held.as_ref().map_or(Source::Fetched, |(_, source)| *source));
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
        let ahead = self.readahead.load(Ordering::Relaxed);
        for p in (last + 1)..=(last + ahead).min(last_page) {
            let (f, _) = self.page(&h, p);
            tokio::spawn(async move {
                let _ = f.await;
            });
        }
        let mut parts = Vec::new();
        for p in first..=last {
            let (f, source) = self.page(&h, p);
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

    /// Writes `data` at `offset` through handle `fh` (into the local staging file).
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let w = match self.handle(fh)? {
            Some(Handle::Write(w)) => w,
            Some(Handle::Announce(a)) => {
                let mut buf = a.lock().expect("announce lock poisoned");
                let at = offset as usize;
                if buf.len() < at + data.len() {
                    buf.resize(at + data.len(), 0);
                }
                buf[at..at + data.len()].copy_from_slice(data);
                return Ok(data.len() as u32);
            }
            _ => return Err(FsError::new(libc::EBADF, format!("handle {fh} is not open for writing"))),
        };
        {
            let mut s = w.staged();
            unshare(&mut s, |old| self.sibling(old))?;
            s.file.write_all_at(data, offset)?;
            s.dirty = true;
        }
        let end = offset + data.len() as u64;
        let path = w.path.lock().expect("path lock poisoned").clone();
        let mut writing = self.writing.lock().expect("writing lock poisoned");
        let size = writing.entry(path).or_insert(0);
        *size = (*size).max(end);
        Ok(data.len() as u32)
    }

    /// The staging files the kernel writes directly for `path` (none unless
    /// `path` is being written here).
    fn passthrough_files(&self, path: &str) -> Vec<std::fs::File> {
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

    fn write_handles_of(&self, path: &str) -> Vec<Arc<WriteHandle>> {
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
    async fn persist(&self, w: &WriteHandle) -> FsResult<()> {
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
        match self.cluster.put_file(&path, &staging).await {
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

    /// `flush` (each close) and `fsync`: make written bytes durable on the node.
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        match self.handle(fh)? {
            Some(Handle::Write(w)) => self.persist(&w).await,
            Some(Handle::Announce(a)) => self.announce(&a).await,
            Some(Handle::Read(_) | Handle::Stats(_)) => Ok(()),
            None => Err(FsError::new(libc::EBADF, format!("unknown handle {fh}"))),
        }
    }

    /// Applies what was written to `.ferry-announce` (at each close).
    async fn announce(&self, a: &Mutex<Vec<u8>>) -> FsResult<()> {
        let text = std::mem::take(&mut *a.lock().expect("announce lock poisoned"));
        let Some(p) = &self.prefetch else { return Ok(()) };
        if text.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8(text).map_err(|_| FsError::new(libc::EINVAL, "announce: not UTF-8 text"))?;
        match p.announce(&text).await {
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

    /// Closes a handle for good.
    pub async fn release(&self, fh: u64) -> FsResult<()> {
        let h = self.handles.lock().expect("handle lock poisoned").remove(&fh);
        if let Some(Handle::Read(r)) = &h {
            self.materialize(r);
        }
        if let Some(Handle::Write(w)) = h {
            let result = self.persist(&w).await;
            if self.shares(&w) {
                // Another open of the same file goes on writing it.
                return result;
            }
            let path = self.stop_writing(&w);
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
            drop(s);
            result?;
        }
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
            Some(w) => {
                let resend = {
                    let mut s = w.staged();
                    unshare(&mut s, |old| self.sibling(old))?;
                    s.file.set_len(size)?;
                    s.dirty = true;
                    // A passthrough file the node adopted was just cut in place:
                    // hand the node the new length at once.
                    s.passthrough && s.adopted
                };
                self.writing.lock().expect("writing lock poisoned").insert(path.clone(), size);
                if resend {
                    self.persist(&w).await?;
                }
            }
            None if size == 0 => {
                let (fh, _) = self.new_write_handle(&path, true, true).await?;
                self.release(fh).await?;
            }
            None => return Err(FsError::new(libc::EOPNOTSUPP, "truncate to a non-zero size needs an open handle")),
        }
        self.stat_path(&path).await
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
        match self.cluster.delete(&path).await {
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
        if self.made_dirs.lock().expect("dirs lock poisoned").contains(&from) {
            return Err(FsError::new(libc::EXDEV, "renaming directories is not supported"));
        }
        self.cluster.rename(&from, &to).await?;
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

    /// Makes directory `name` in `parent`.
    pub async fn mkdir(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let path = child(&self.path_of(parent)?, name)?;
        if self.stat_path(&path).await.is_ok() {
            return Err(FsError::new(libc::EEXIST, format!("{path} exists")));
        }
        self.made_dirs.lock().expect("dirs lock poisoned").insert(path.clone());
        Ok(self.entry(&path, self.dir_attr(&path)))
    }

    /// Removes empty directory `name` from `parent`.
    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        let path = child(&self.path_of(parent)?, name)?;
        let ino = self.ino_of(&path);
        if !self.readdir(ino).await?.is_empty() {
            return Err(FsError::new(libc::ENOTEMPTY, format!("{path} is not empty")));
        }
        self.made_dirs.lock().expect("dirs lock poisoned").remove(&path);
        Ok(())
    }

    /// Sets how many pages are fetched ahead of a sequential reader (0: none).
    pub fn set_readahead(&self, pages: u64) {
        self.readahead.store(pages, Ordering::Relaxed);
    }

    /// Block size reported to readers (`st_blksize`): the page size.
    pub fn block_size(&self) -> u32 {
        u32::try_from(self.page_size).unwrap_or(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inode_lives_until_the_kernel_forgets_every_reference() {
        let mut i = Inodes::new();
        let a = i.ino("/a");
        i.remember(a, "/a");
        i.remember(a, "/a");
        i.forget(a, 1);
        assert_eq!(i.by_ino.get(&a).map(String::as_str), Some("/a"));
        i.forget(a, 1);
        assert!(!i.by_ino.contains_key(&a) && !i.by_path.contains_key("/a"));
        // Looked up again: a new inode for the same path.
        let b = i.ino("/a");
        assert_ne!(a, b);
        // The root is never forgotten.
        i.forget(ROOT_INO, 5);
        assert_eq!(i.by_ino.get(&ROOT_INO).map(String::as_str), Some("/"));
    }

    #[test]
    fn a_forget_racing_a_lookup_reply_leaves_the_replied_inode_known() {
        let mut i = Inodes::new();
        let a = i.ino("/a");
        i.remember(a, "/a");
        // A lookup found `a`; the kernel's forget of its last reference is
        // handled before the lookup's reply takes the new one.
        let found = i.ino("/a");
        i.forget(a, 1);
        i.remember(found, "/a");
        assert_eq!(i.by_ino.get(&a).map(String::as_str), Some("/a"));
        assert_eq!(i.by_path.get("/a"), Some(&a));
        i.forget(a, 1);
        assert!(!i.by_ino.contains_key(&a));
    }

    #[test]
    fn listings_make_no_inodes() {
        let mut i = Inodes::new();
        let listed = i.listed("/x/y");
        assert_eq!(listed, i.listed("/x/y"));
        assert_ne!(listed, i.listed("/x/z"));
        assert_eq!(i.by_ino.len(), 1);
        let y = i.ino("/x/y");
        assert_eq!(i.listed("/x/y"), y);
    }
}
