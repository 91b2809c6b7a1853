//! [`MountFs`] against an in-memory double of the cache nodes: the
//! filesystem's rules without a kernel or a node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_protocol::client::Written;
use ferry_protocol::codec::{DirEntry, EntryKind, ObjectInfo, PageRun};
use ferry_protocol::{ErrorCode, ProtocolError};

use crate::{MountFs, Nodes, Opened, ROOT_INO};

const PAGE: u64 = 4096;

#[derive(Debug, Default)]
struct State {
    /// Objects by path: bytes and version tag.
    objects: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
    versions: AtomicU64,
    /// Page reads asked of the nodes.
    page_reads: AtomicU64,
    /// Page reads still to fail.
    failing_reads: AtomicU64,
    /// Writes received: path, and whether the file was adopted.
    puts: Mutex<Vec<(String, bool)>>,
    /// The inbox of a node "on this host", if any.
    inbox: Option<PathBuf>,
    /// Directories made in the store (`None`: a store without directories).
    dirs: Option<Mutex<std::collections::BTreeSet<String>>>,
    /// Orders announced to the nodes: reader and page runs.
    announced: Mutex<Vec<(String, Vec<PageRun>)>>,
}

/// Cache nodes in memory.
#[derive(Debug, Clone, Default)]
struct Fake(Arc<State>);

fn not_found(path: &str) -> ProtocolError {
    ProtocolError::Remote { code: ErrorCode::NotFound, message: format!("{path} not found") }
}

fn file_info(body: &[u8], etag: &str) -> ObjectInfo {
    ObjectInfo {
        kind: EntryKind::File,
        size: body.len() as u64,
        mtime_ms: 1_700_000_000_000,
        etag: etag.into(),
        persisted: true,
        origin: String::new(),
    }
}

fn dir_info() -> ObjectInfo {
    ObjectInfo {
        kind: EntryKind::Dir,
        size: 0,
        mtime_ms: 0,
        etag: String::new(),
        persisted: true,
        origin: String::new(),
    }
}

impl Fake {
    fn with_inbox(inbox: PathBuf) -> Fake {
        Fake(Arc::new(State { inbox: Some(inbox), ..State::default() }))
    }

    fn put(&self, path: &str, body: &[u8]) {
        let v = self.0.versions.fetch_add(1, Ordering::SeqCst);
        self.0.objects.lock().expect("lock").insert(path.into(), (body.to_vec(), format!("e{v}")));
    }

    /// A store that keeps directories of its own (local files, S3 markers).
    fn with_dirs() -> Fake {
        Fake(Arc::new(State { dirs: Some(Mutex::default()), ..State::default() }))
    }

    fn has_dir(&self, path: &str) -> bool {
        self.0.dirs.as_ref().is_some_and(|d| d.lock().expect("lock").contains(path))
    }

    fn body(&self, path: &str) -> Option<Vec<u8>> {
        self.0.objects.lock().expect("lock").get(path).map(|(b, _)| b.clone())
    }

    fn page_reads(&self) -> u64 {
        self.0.page_reads.load(Ordering::SeqCst)
    }

    fn puts(&self) -> Vec<(String, bool)> {
        self.0.puts.lock().expect("lock").clone()
    }
}

impl Nodes for Fake {
    async fn page_size(&self) -> Result<u64, ProtocolError> {
        Ok(PAGE)
    }

    async fn stat(&self, path: &str) -> Result<ObjectInfo, ProtocolError> {
        let objects = self.0.objects.lock().expect("lock");
        if let Some((b, e)) = objects.get(path) {
            return Ok(file_info(b, e));
        }
        let prefix = format!("{}/", path.trim_end_matches('/'));
        if path == "/" || objects.keys().any(|k| k.starts_with(&prefix)) || self.has_dir(path) {
            return Ok(dir_info());
        }
        Err(not_found(path))
    }

    async fn list(&self, path: &str) -> Result<Vec<DirEntry>, ProtocolError> {
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        let objects = self.0.objects.lock().expect("lock");
        let mut out: BTreeMap<String, ObjectInfo> = BTreeMap::new();
        for (k, (b, e)) in objects.iter() {
            let Some(rest) = k.strip_prefix(&prefix) else { continue };
            match rest.split_once('/') {
                Some((d, _)) => out.insert(d.to_string(), dir_info()),
                None => out.insert(rest.to_string(), file_info(b, e)),
            };
        }
        for d in self.0.dirs.iter().flat_map(|d| d.lock().expect("lock").clone()) {
            if let Some(rest) = d.strip_prefix(&prefix) {
                out.insert(rest.split('/').next().unwrap_or(rest).to_string(), dir_info());
            }
        }
        if out.is_empty() && path != "/" && !self.has_dir(path) {
            return Err(not_found(path));
        }
        Ok(out.into_iter().map(|(name, info)| DirEntry { name, info }).collect())
    }

    async fn read_page(&self, path: &str, _page: u64, _ps: u64, start: u64, end: u64) -> Result<Bytes, ProtocolError> {
        self.0.page_reads.fetch_add(1, Ordering::SeqCst);
        let failing = self.0.failing_reads.load(Ordering::SeqCst);
        if failing > 0 {
            self.0.failing_reads.store(failing - 1, Ordering::SeqCst);
            return Err(ProtocolError::Remote { code: ErrorCode::Unavailable, message: "node restarting".into() });
        }
        let body = self.body(path).ok_or_else(|| not_found(path))?;
        Ok(Bytes::copy_from_slice(&body[start as usize..end as usize]))
    }

    async fn read_all_to(&self, path: &str, out: &mut tokio::fs::File) -> Result<u64, ProtocolError> {
        use tokio::io::AsyncWriteExt;
        let body = self.body(path).ok_or_else(|| not_found(path))?;
        out.write_all(&body).await?;
        out.flush().await?;
        Ok(body.len() as u64)
    }

    async fn put_file(&self, path: &str, local: &Path) -> Result<Written, ProtocolError> {
        let body = std::fs::read(local)?;
        let adopted = self.0.inbox.as_deref().is_some_and(|i| local.parent() == Some(i));
        self.put(path, &body);
        self.0.puts.lock().expect("lock").push((path.into(), adopted));
        let etag = self.0.objects.lock().expect("lock")[path].1.clone();
        Ok(Written { persisted: false, etag, adopted })
    }

    async fn inbox_for(&self, _path: &str) -> Option<PathBuf> {
        self.0.inbox.clone()
    }

    async fn delete(&self, path: &str) -> Result<(), ProtocolError> {
        self.0.objects.lock().expect("lock").remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<bool, ProtocolError> {
        let mut objects = self.0.objects.lock().expect("lock");
        let o = objects.remove(from).ok_or_else(|| not_found(from))?;
        objects.insert(to.into(), o);
        Ok(true)
    }

    async fn locate(&self, _path: &str) -> Option<ferry_protocol::codec::Located> {
        None
    }

    async fn mkdir(&self, path: &str) -> Result<(), ProtocolError> {
        let Some(dirs) = &self.0.dirs else {
            return Err(ProtocolError::Remote { code: ErrorCode::Unsupported, message: "no directories".into() });
        };
        dirs.lock().expect("lock").insert(path.into());
        Ok(())
    }

    async fn rmdir(&self, path: &str) -> Result<(), ProtocolError> {
        let Some(dirs) = &self.0.dirs else { return Err(not_found(path)) };
        if dirs.lock().expect("lock").remove(path) {
            Ok(())
        } else {
            Err(not_found(path))
        }
    }

    async fn announce(&self, reader: &str, runs: Vec<PageRun>) -> Vec<(String, ProtocolError)> {
        self.0.announced.lock().expect("lock").push((reader.to_string(), runs));
        Vec::new()
    }
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn fs_over(nodes: &Fake, dir: &Path, copies: u64) -> MountFs<Fake> {
    MountFs::with_local_copies(nodes.clone(), dir.join("staging"), copies).await.expect("mount fs")
}

async fn read_whole(fs: &MountFs<Fake>, fh: u64, size: u64, chunk: u32) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let b = fs.read(fh, out.len() as u64, chunk, 1).await.expect("read");
        assert!(!b.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&b);
    }
    out
}

#[tokio::test]
async fn open_read_and_list_what_the_nodes_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let want = body(3 * PAGE as usize + 100, 1);
    nodes.put("/data/a.bin", &want);
    nodes.put("/data/sub/b.bin", b"bee");
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let d = fs.lookup(ROOT_INO, "data").await.expect("lookup dir");
    assert_eq!(d.kind, EntryKind::Dir);
    let mut names: Vec<String> = fs.readdir(d.ino).await.expect("readdir").into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["a.bin", "sub"]);
    let a = fs.lookup(d.ino, "a.bin").await.expect("lookup file");
    assert_eq!((a.kind, a.size), (EntryKind::File, want.len() as u64));
    let err = fs.lookup(d.ino, "missing").await.expect_err("no such file");
    assert_eq!(err.errno(), libc::ENOENT);
    assert_eq!(fs.open(d.ino, false, false).await.expect_err("a directory").errno(), libc::EISDIR);
    let fh = match fs.open(a.ino, false, false).await.expect("open") {
        Opened::Handle(fh) => fh,
        other => panic!("no local copy yet, so no passthrough: {other:?}"),
    };
    assert_eq!(read_whole(&fs, fh, a.size, 1000).await, want);
    // Sequential reads fetch each page once (whole pages, read ahead).
    assert_eq!(nodes.page_reads(), 4);
    // Past the end: nothing.
    assert!(fs.read(fh, a.size + 10, 100, 1).await.expect("read past end").is_empty());
    fs.release(fh).await.expect("release");
    for bad in ["..", "x/y", ""] {
        assert_eq!(fs.lookup(d.ino, bad).await.expect_err("bad name").errno(), libc::EINVAL, "{bad:?}");
    }
}

#[tokio::test]
async fn random_reads_fetch_only_what_was_asked_and_a_failed_page_is_fetched_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let want = body(8 * PAGE as usize, 2);
    nodes.put("/r.bin", &want);
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let a = fs.lookup(ROOT_INO, "r.bin").await.expect("lookup");
    let fh = fs.open(a.ino, false, false).await.expect("open").fh();
    let at = 5 * PAGE + 7;
    let got = fs.read(fh, at, 10, 1).await.expect("random read");
    assert_eq!(&got[..], &want[at as usize..at as usize + 10]);
    assert_eq!(nodes.page_reads(), 1, "a random read asks for its bytes, no readahead");
    nodes.0.failing_reads.store(1, Ordering::SeqCst);
    let e = fs.read(fh, 2 * PAGE + 1, 10, 1).await.expect_err("the node failed");
    assert_eq!(e.errno(), libc::EIO);
    let again = fs.read(fh, 2 * PAGE + 1, 10, 1).await.expect("the next read asks again");
    assert_eq!(&again[..], &want[2 * PAGE as usize + 1..2 * PAGE as usize + 11]);
}

#[tokio::test]
async fn a_ranged_read_inside_a_file_reads_ahead_only_as_its_stream_proves_long() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let want = body(20 * PAGE as usize, 4);
    nodes.put("/big.bin", &want);
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let a = fs.lookup(ROOT_INO, "big.bin").await.expect("lookup");
    let fh = fs.open(a.ino, false, false).await.expect("open").fh();
    // Two pages from page 8, in small pieces as the kernel sends them: the
    // first piece, then the two pages, and nothing past them.
    let at = 8 * PAGE;
    let mut got = Vec::new();
    while (got.len() as u64) < 2 * PAGE {
        got.extend_from_slice(&fs.read(fh, at + got.len() as u64, 1024, 1).await.expect("read"));
    }
    assert!(got == want[at as usize..(at + 2 * PAGE) as usize]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(nodes.page_reads(), 3, "a 2-page range read ahead");
    // Read on to the end: readahead grows, and each page is fetched once.
    while (got.len() as u64) < 12 * PAGE {
        got.extend_from_slice(&fs.read(fh, at + got.len() as u64, 1024, 1).await.expect("read"));
    }
    assert!(got == want[at as usize..]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(nodes.page_reads(), 3 + 10, "pages 10-19 once each");
}

#[tokio::test]
async fn create_write_fsync_rename_unlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let ck = fs.mkdir(ROOT_INO, "ck").await.expect("mkdir");
    assert_eq!(fs.mkdir(ROOT_INO, "ck").await.expect_err("exists").errno(), libc::EEXIST);
    let (attr, opened) = fs.create(ck.ino, "step1.pt").await.expect("create");
    let fh = opened.fh();
    assert!(matches!(opened, Opened::Handle(_)), "no node on this host: written through the mount");
    let part1 = body(10_000, 3);
    assert_eq!(fs.write(fh, 0, &part1).expect("write"), 10_000);
    fs.write(fh, 10_000, b"tail").expect("write");
    // Before the fsync the node has nothing; the file is visible here with its size.
    assert!(nodes.body("/ck/step1.pt").is_none());
    assert_eq!(fs.getattr(attr.ino).await.expect("getattr").size, 10_004);
    fs.fsync(fh).await.expect("fsync");
    let mut want = part1.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(nodes.body("/ck/step1.pt"), Some(want.clone()));
    // A second fsync with nothing new sends nothing.
    fs.fsync(fh).await.expect("fsync");
    assert_eq!(nodes.puts().len(), 1);
    // Reading back through the write handle sees the staged bytes.
    assert_eq!(&fs.read(fh, 9_998, 10, 1).await.expect("read")[..], &want[9_998..]);
    fs.release(fh).await.expect("release");
    assert_eq!(nodes.puts().len(), 1, "release of a clean handle sends nothing");

    fs.rename(ck.ino, "step1.pt", ck.ino, "latest.pt").await.expect("rename");
    assert!(nodes.body("/ck/step1.pt").is_none());
    assert_eq!(nodes.body("/ck/latest.pt"), Some(want));
    fs.unlink(ck.ino, "latest.pt").await.expect("unlink");
    assert!(nodes.body("/ck/latest.pt").is_none());
    assert_eq!(fs.lookup(ck.ino, "latest.pt").await.expect_err("gone").errno(), libc::ENOENT);
    assert_eq!(fs.unlink(ck.ino, "latest.pt").await.expect_err("gone").errno(), libc::ENOENT);
}

#[tokio::test]
async fn a_new_file_reaches_the_node_only_with_its_bytes_or_at_its_last_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let fs = fs_over(&nodes, dir.path(), 0).await;
    // A forked child closing its copy of the descriptor flushes before any write.
    let (_, opened) = fs.create(ROOT_INO, "ckpt.pt").await.expect("create");
    fs.flush(opened.fh()).await.expect("flush");
    assert!(nodes.puts().is_empty(), "an empty new file was sent at a flush");
    fs.write(opened.fh(), 0, b"weights").expect("write");
    fs.flush(opened.fh()).await.expect("flush");
    assert_eq!(nodes.body("/ckpt.pt").as_deref(), Some(&b"weights"[..]));
    fs.release(opened.fh()).await.expect("release");
    // A file meant to stay empty arrives when its last descriptor closes.
    let (_, opened) = fs.create(ROOT_INO, "empty").await.expect("create");
    fs.flush(opened.fh()).await.expect("flush");
    assert!(nodes.body("/empty").is_none());
    fs.release(opened.fh()).await.expect("release");
    assert_eq!(nodes.body("/empty").as_deref(), Some(&b""[..]));
}

#[tokio::test]
async fn a_file_unlinked_while_open_is_not_brought_back_by_its_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let (_, opened) = fs.create(ROOT_INO, "tmp").await.expect("create");
    fs.write(opened.fh(), 0, b"scratch").expect("write");
    fs.fsync(opened.fh()).await.expect("fsync");
    fs.write(opened.fh(), 0, b"more").expect("write");
    fs.unlink(ROOT_INO, "tmp").await.expect("unlink");
    fs.release(opened.fh()).await.expect("release");
    assert!(nodes.body("/tmp").is_none());
}

#[tokio::test]
async fn an_open_for_writing_without_truncate_starts_from_the_stored_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    nodes.put("/log.txt", b"hello world");
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let a = fs.lookup(ROOT_INO, "log.txt").await.expect("lookup");
    let fh = fs.open(a.ino, true, false).await.expect("open rw").fh();
    fs.write(fh, 6, b"WORLD").expect("write");
    fs.release(fh).await.expect("release");
    assert_eq!(nodes.body("/log.txt").as_deref(), Some(&b"hello WORLD"[..]));
    let fh = fs.open(a.ino, true, true).await.expect("open with O_TRUNC").fh();
    fs.write(fh, 0, b"new").expect("write");
    fs.release(fh).await.expect("release");
    assert_eq!(nodes.body("/log.txt").as_deref(), Some(&b"new"[..]));
}

#[tokio::test]
async fn a_file_read_to_the_end_is_kept_and_offered_for_passthrough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let want = body(2 * PAGE as usize, 4);
    nodes.put("/w.bin", &want);
    let fs = fs_over(&nodes, dir.path(), 1 << 20).await;
    let a = fs.lookup(ROOT_INO, "w.bin").await.expect("lookup");
    let fh = fs.open(a.ino, false, false).await.expect("open").fh();
    assert_eq!(read_whole(&fs, fh, a.size, 4096).await, want);
    fs.release(fh).await.expect("release");
    // The copy is made in the background.
    let t0 = std::time::Instant::now();
    let file = loop {
        match fs.open(a.ino, false, false).await.expect("open") {
            Opened::Passthrough { fh, file } => {
                fs.release(fh).await.expect("release");
                break file;
            }
            other => fs.release(other.fh()).await.expect("release"),
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "no local copy");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut got).expect("read the copy");
    assert_eq!(got, want);
    // A new version of the file does not meet the old copy.
    nodes.put("/w.bin", b"changed");
    assert!(matches!(fs.open(a.ino, false, false).await.expect("open"), Opened::Handle(_)));
}

#[tokio::test]
async fn same_host_writes_are_adopted_and_offered_for_passthrough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let nodes = Fake::with_inbox(inbox.clone());
    let fs = fs_over(&nodes, dir.path(), 1 << 20).await;
    let (_, opened) = fs.create(ROOT_INO, "ck.pt").await.expect("create");
    let Opened::Passthrough { fh, file } = opened else { panic!("a same-host write handle offers its file") };
    // The kernel writes the staging file itself; the mount never sees the bytes.
    std::os::unix::fs::FileExt::write_all_at(&file, b"weights", 0).expect("write staging file");
    fs.passthrough_writes(fh);
    fs.fsync(fh).await.expect("fsync");
    assert_eq!(nodes.puts(), [("/ck.pt".to_string(), true)], "the node adopted the file in its inbox");
    assert_eq!(nodes.body("/ck.pt").as_deref(), Some(&b"weights"[..]));
    // Written again after the adoption: found by length and mtime at the next flush.
    std::os::unix::fs::FileExt::write_all_at(&file, b"-v2", 7).expect("write again");
    fs.release(fh).await.expect("release");
    assert_eq!(nodes.body("/ck.pt").as_deref(), Some(&b"weights-v2"[..]));
}

#[tokio::test]
async fn mkdir_reaches_the_store_and_outlives_the_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::with_dirs();
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let a = fs.mkdir(ROOT_INO, "a").await.expect("mkdir a");
    let b = fs.mkdir(a.ino, "b").await.expect("mkdir a/b");
    assert_eq!(b.kind, EntryKind::Dir);
    assert!(b.mtime > std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000), "{:?}", b.mtime);
    assert!(nodes.has_dir("/a/b"), "the store has the directory");
    drop(fs);
    // A new mount over the same store sees the empty directories.
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let a = fs.lookup(ROOT_INO, "a").await.expect("a after remount");
    let names: Vec<String> = fs.readdir(a.ino).await.expect("readdir").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["b"]);
    let b = fs.lookup(a.ino, "b").await.expect("a/b after remount");
    assert!(fs.readdir(b.ino).await.expect("empty dir lists").is_empty());
    assert_eq!(fs.rmdir(ROOT_INO, "a").await.expect_err("not empty").errno(), libc::ENOTEMPTY);
    fs.rmdir(a.ino, "b").await.expect("rmdir a/b");
    assert!(!nodes.has_dir("/a/b"), "rmdir reached the store");
    assert_eq!(fs.lookup(a.ino, "b").await.expect_err("gone").errno(), libc::ENOENT);
}

#[tokio::test]
async fn mkdir_on_a_store_without_directories_lasts_as_long_as_the_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    let fs = fs_over(&nodes, dir.path(), 0).await;
    let a = fs.mkdir(ROOT_INO, "a").await.expect("mkdir");
    assert!(fs.readdir(a.ino).await.expect("empty").is_empty());
    assert_eq!(fs.lookup(ROOT_INO, "a").await.expect("lookup").kind, EntryKind::Dir);
    fs.rmdir(ROOT_INO, "a").await.expect("rmdir");
    assert_eq!(fs.lookup(ROOT_INO, "a").await.expect_err("gone").errno(), libc::ENOENT);
}

#[tokio::test]
async fn an_announced_order_reaches_the_nodes_as_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes = Fake::default();
    nodes.put("/ds/a", &body(3 * PAGE as usize + 1, 1));
    nodes.put("/ds/b", &body(10, 2));
    nodes.put("/ds/rec", &body(8 * PAGE as usize, 3));
    let mut fs = fs_over(&nodes, dir.path(), 0).await;
    fs.enable_prefetch(&crate::prefetch::PrefetchOptions { predictor: "none".into(), budget: 1 << 20 })
        .expect("prefetch");
    let p = fs.prefetch.clone().expect("prefetch on");
    let n = p.announce(77, "ds/b\n/ds/a\n/ds/rec 8192 4096\n").await.expect("announce");
    assert_eq!(n, 3);
    let told = nodes.0.announced.lock().expect("lock").clone();
    assert_eq!(told.len(), 1);
    assert!(told[0].0.ends_with("/announce:77"), "{}", told[0].0);
    let runs: Vec<(String, u64, u64)> = told[0].1.iter().map(|r| (r.path.clone(), r.first, r.end)).collect();
    assert_eq!(runs, [("/ds/b".into(), 0, 1), ("/ds/a".into(), 0, 4), ("/ds/rec".into(), 2, 3)]);
    // A refused announcement tells the nodes nothing.
    assert!(p.announce(77, "/ds/nope\n").await.is_err());
    assert_eq!(nodes.0.announced.lock().expect("lock").len(), 1);
}
