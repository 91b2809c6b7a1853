//! Directory listings of the stores, cached.
//!
//! Walking a dataset (`find`, `ls -lR`, `os.walk`, `ImageFolder`) lists
//! every directory and stats every file. A listing is kept for the
//! metadata TTL and answers both: the directory's entries, and the
//! metadata of each file in it, so a warm walk asks the store nothing.
//! Listings are persisted beside the disk tier (one file per directory),
//! so a restarted node does not list the store again while they are
//! fresh. A write, delete, rename, `mkdir` or `rmdir` through this node,
//! an upload landing, or a peer's word of one forgets the listing of the
//! directory it changed.
//!
//! What is cached is the store's listing only: pending write-back writes
//! and deletes are laid over it when a listing is answered.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use lru::LruCache;

use ferry_protocol::codec::{DirEntry, EntryKind, ObjectInfo, Response};
use ferry_protocol::ids::NsPath;

use crate::clock::Clock;

/// Entries held in memory at most (about 150 bytes each); older listings
/// stay on disk and are read back when asked for.
pub const MEMORY_ENTRIES: usize = 1_000_000;

const MAGIC: &[u8] = b"ferry-listing 1\n";

#[derive(Debug, Clone)]
struct Listed {
    entries: Arc<Vec<DirEntry>>,
    fetched_ms: i64,
}

#[derive(Debug)]
struct Inner {
    map: LruCache<String, Listed>,
    /// Entries of the listings in `map`.
    held: usize,
    /// Bumped by every invalidation: a listing fetched across one is not kept.
    epoch: u64,
    /// Names of the listing files on disk: a directory with none costs no
    /// file system call (every stat of a file asks for its directory's listing).
    stored: HashSet<String>,
}

/// Listings by directory, in memory and on disk.
#[derive(Debug)]
pub struct Listings {
    dir: Option<PathBuf>,
    ttl_ms: i64,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

/// The namespace path of the directory holding `path` (`None` for the root).
pub fn parent_of(path: &NsPath) -> Option<String> {
    if path.is_root() {
        return None;
    }
    let s = path.as_str();
    let cut = s.rfind('/').unwrap_or(0);
    Some(if cut == 0 { "/".to_string() } else { s[..cut].to_string() })
}

impl Listings {
    /// Listings trusted for `ttl_ms`, persisted in `dir` when given.
    pub fn open(dir: Option<PathBuf>, ttl_ms: i64, clock: Arc<dyn Clock>) -> std::io::Result<Listings> {
        let mut stored = HashSet::new();
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)?;
            for e in std::fs::read_dir(d)?.flatten() {
                if e.path().extension().is_some_and(|x| x == "tmp") {
                    // A crash between write and rename leaves a temporary file behind.
                    let _ = std::fs::remove_file(e.path());
                } else if let Ok(name) = e.file_name().into_string() {
                    stored.insert(name);
                }
            }
        }
        let inner = Inner { map: LruCache::unbounded(), held: 0, epoch: 0, stored };
        Ok(Listings { dir, ttl_ms, clock, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("listing lock poisoned")
    }

    /// The current invalidation epoch; pass it to [`Listings::put`] with
    /// the listing fetched after reading it.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// The name of `dir`'s listing file, and its path (when persisted).
    fn file(&self, dir: &str) -> Option<(String, PathBuf)> {
        let d = self.dir.as_ref()?;
        let name = blake3::hash(dir.as_bytes()).to_hex().to_string();
        let path = d.join(&name);
        Some((name, path))
    }

    /// Removes `dir`'s listing file, if there is one.
    fn unstore(&self, dir: &str) {
        if let Some((name, path)) = self.file(dir) {
            if self.lock().stored.remove(&name) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn fresh(&self, fetched_ms: i64) -> bool {
        self.clock.now_ms() - fetched_ms < self.ttl_ms
    }

    /// The listing of `dir`, while it is fresh.
    pub fn get(&self, dir: &str) -> Option<Arc<Vec<DirEntry>>> {
        let epoch = {
            let mut inner = self.lock();
            if let Some(l) = inner.map.get(dir) {
                if self.fresh(l.fetched_ms) {
                    return Some(l.entries.clone());
                }
                let l = inner.map.pop(dir).expect("listing just seen");
                inner.held -= l.entries.len();
                return None;
            }
            inner.epoch
        };
        let (name, file) = self.file(dir)?;
        if !self.lock().stored.contains(&name) {
            return None;
        }
        match std::fs::read(&file).ok().and_then(|b| decode(&b)) {
            Some((d, fetched_ms, entries)) if d == dir && self.fresh(fetched_ms) => {
                let entries = Arc::new(entries);
                self.hold(dir, Listed { entries: entries.clone(), fetched_ms }, epoch);
                Some(entries)
            }
            // Expired, damaged or gone.
            Some((d, _, _)) if d != dir => None,
            _ => {
                self.unstore(dir);
                None
            }
        }
    }

    fn hold(&self, dir: &str, listed: Listed, epoch: u64) -> bool {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return false;
        }
        inner.held += listed.entries.len();
        if let Some(old) = inner.map.put(dir.to_string(), listed) {
            inner.held -= old.entries.len();
        }
        while inner.held > MEMORY_ENTRIES && inner.map.len() > 1 {
            if let Some((_, l)) = inner.map.pop_lru() {
                inner.held -= l.entries.len();
            }
        }
        true
    }

    /// Keeps `entries` as the listing of `dir`, fetched now, unless an
    /// invalidation happened since `epoch` was read.
    pub fn put(&self, dir: &str, entries: Vec<DirEntry>, epoch: u64) -> Arc<Vec<DirEntry>> {
        let entries = Arc::new(entries);
        let fetched_ms = self.clock.now_ms();
        if self.hold(dir, Listed { entries: entries.clone(), fetched_ms }, epoch) {
            if let Some((name, file)) = self.file(dir) {
                let tmp = file.with_extension("tmp");
                let bytes = encode(dir, fetched_ms, &entries);
                match std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &file)) {
                    Ok(()) => {
                        self.lock().stored.insert(name);
                    }
                    Err(e) => {
                        tracing::warn!(dir, error = %e, "could not persist a listing");
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
            }
        }
        entries
    }

    /// What the fresh listing of `path`'s directory says of file `path`: `None`
    /// when there is no fresh listing or `path` is not in it (a file may
    /// have been added since; the store is asked then).
    pub fn entry(&self, path: &NsPath) -> Option<ObjectInfo> {
        let parent = parent_of(path)?;
        let name = path.segments().last()?;
        let entries = self.get(&parent)?;
        let i = entries.binary_search_by(|e| e.name.as_str().cmp(name)).ok()?;
        let info = &entries[i].info;
        // Files only: a directory's time changes with what is below it,
        // which its parent's listing does not follow. A file's version tag
        // is what its pages are keyed by; without one, ask the store.
        (info.kind == EntryKind::File && !info.etag.is_empty()).then(|| info.clone())
    }

    /// Forgets the listing of `dir`.
    pub fn invalidate(&self, dir: &str) {
        {
            let mut inner = self.lock();
            inner.epoch += 1;
            if let Some(l) = inner.map.pop(dir) {
                inner.held -= l.entries.len();
            }
        }
        self.unstore(dir);
    }
}

fn encode(dir: &str, fetched_ms: i64, entries: &[DirEntry]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    Response::ListOk(entries.to_vec()).encode(&mut frame);
    let mut out = Vec::with_capacity(MAGIC.len() + 12 + dir.len() + frame.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&u32::try_from(dir.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(dir.as_bytes());
    out.extend_from_slice(&fetched_ms.to_be_bytes());
    out.extend_from_slice(&frame);
    out
}

fn decode(bytes: &[u8]) -> Option<(String, i64, Vec<DirEntry>)> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let dir = std::str::from_utf8(rest.get(..len)?).ok()?.to_string();
    let (fetched, rest) = rest.get(len..)?.split_first_chunk::<8>()?;
    match Response::decode(rest) {
        Ok((Response::ListOk(entries), used)) if used == rest.len() => {
            Some((dir, i64::from_be_bytes(*fetched), entries))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn file(name: &str, etag: &str) -> DirEntry {
        DirEntry {
            name: name.into(),
            info: ObjectInfo {
                kind: EntryKind::File,
                size: 7,
                mtime_ms: 1,
                etag: etag.into(),
                persisted: true,
                origin: String::new(),
            },
        }
    }

    #[test]
    fn listings_persist_expire_and_are_forgotten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(1_000));
        let l = Listings::open(Some(tmp.path().into()), 60_000, clock.clone()).expect("open");
        let e = l.epoch();
        l.put("/d/odd\tname", vec![file("a", "e1"), file("b\nc", "e2")], e);
        // Another process (a restarted node) reads it from disk.
        let again = Listings::open(Some(tmp.path().into()), 60_000, clock.clone()).expect("open");
        let got = again.get("/d/odd\tname").expect("persisted listing");
        assert_eq!(got.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "b\nc"]);
        assert_eq!(again.entry(&NsPath::parse("/d/odd\tname/a").expect("path")).expect("entry").etag, "e1");
        assert!(again.entry(&NsPath::parse("/d/odd\tname/zz").expect("path")).is_none());
        // Forgotten on disk too.
        again.invalidate("/d/odd\tname");
        let third = Listings::open(Some(tmp.path().into()), 60_000, clock.clone()).expect("open");
        assert!(third.get("/d/odd\tname").is_none());
        // Expired after the TTL.
        let e = l.epoch();
        l.put("/x", vec![file("a", "e1")], e);
        clock.advance(60_001);
        assert!(l.get("/x").is_none());
        assert!(Listings::open(Some(tmp.path().into()), 60_000, clock).expect("open").get("/x").is_none());
    }

    #[test]
    fn a_listing_fetched_across_an_invalidation_is_not_kept() {
        let l = Listings::open(None, 60_000, Arc::new(ManualClock::new(0))).expect("open");
        let e = l.epoch();
        l.invalidate("/d");
        l.put("/d", vec![file("a", "e1")], e);
        assert!(l.get("/d").is_none());
    }

    #[test]
    fn a_damaged_listing_file_is_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(ManualClock::new(0));
        let l = Listings::open(Some(tmp.path().into()), 60_000, clock.clone()).expect("open");
        let e = l.epoch();
        l.put("/d", vec![file("a", "e1")], e);
        for f in std::fs::read_dir(tmp.path()).expect("read dir").flatten() {
            let mut b = std::fs::read(f.path()).expect("read");
            b.truncate(b.len() - 3);
            std::fs::write(f.path(), b).expect("write");
        }
        assert!(Listings::open(Some(tmp.path().into()), 60_000, clock).expect("open").get("/d").is_none());
    }

    #[test]
    fn parents() {
        assert_eq!(parent_of(&NsPath::parse("/a").expect("path")).as_deref(), Some("/"));
        assert_eq!(parent_of(&NsPath::parse("/a/b/c").expect("path")).as_deref(), Some("/a/b"));
        assert_eq!(parent_of(&NsPath::parse("/").expect("path")), None);
    }
}
