//! Whole local copies of files read to the end or written here, which
//! later opens serve through FUSE passthrough at local-disk speed.
//!
//! A copy is keyed by path, version and size, so a changed object never
//! meets an old copy. Copies are evicted least recently used first once
//! their bytes pass the budget; an evicted copy a reader still holds open
//! stays readable (the file is unlinked, not truncated).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use lru::LruCache;

use crate::handle::Attr;

#[derive(Debug)]
struct Entry {
    file: PathBuf,
    size: u64,
    /// The namespace path and version the copy holds.
    path: String,
    etag: String,
}

#[derive(Debug)]
struct State {
    entries: LruCache<String, Entry>,
    /// Bytes held by `entries`.
    used: u64,
    /// Keys being copied now.
    copying: HashSet<String>,
}

/// The local copies.
#[derive(Debug)]
pub(crate) struct LocalFiles {
    pub(crate) dir: PathBuf,
    budget: u64,
    state: Mutex<State>,
}

impl LocalFiles {
    /// Copies under `dir` (created), at most `budget` bytes of them.
    pub(crate) fn new(dir: PathBuf, budget: u64) -> std::io::Result<LocalFiles> {
        std::fs::create_dir_all(&dir)?;
        let state = State { entries: LruCache::unbounded(), used: 0, copying: HashSet::new() };
        Ok(LocalFiles { dir, budget, state: Mutex::new(state) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("local files lock poisoned")
    }

    /// The key of `path`'s copy at version `etag` and `size` bytes.
    pub(crate) fn key(path: &str, etag: &str, size: u64) -> String {
        blake3::hash(format!("{path}\0{etag}\0{size}").as_bytes()).to_hex().to_string()
    }

    /// Keeps `file`, just written here, as the copy of `path` at version `etag`.
    pub(crate) fn keep_written(&self, path: &str, etag: &str, size: u64, file: PathBuf) {
        if size == 0 || size > self.budget {
            let _ = std::fs::remove_file(&file);
            return;
        }
        // Older versions of the path are of no use any more.
        self.forget(path);
        let key = Self::key(path, etag, size);
        self.insert(&mut self.state(), key, Entry { file, size, path: path.into(), etag: etag.into() });
    }

    /// Moves the copies of `from` to `to` (after a rename, the bytes and version are the same).
    pub(crate) fn rename(&self, from: &str, to: &str) {
        let mut st = self.state();
        for key in Self::keys_of(&st, from) {
            let mut e = st.entries.pop(&key).expect("key just listed");
            st.used -= e.size;
            e.path = to.to_string();
            let key = Self::key(to, &e.etag, e.size);
            self.insert(&mut st, key, e);
        }
    }

    /// Drops the copies of `path`.
    pub(crate) fn forget(&self, path: &str) {
        let mut st = self.state();
        for key in Self::keys_of(&st, path) {
            if let Some(e) = st.entries.pop(&key) {
                st.used -= e.size;
                let _ = std::fs::remove_file(&e.file);
            }
        }
    }

    fn keys_of(st: &State, path: &str) -> Vec<String> {
        st.entries.iter().filter(|(_, e)| e.path == path).map(|(k, _)| k.clone()).collect()
    }

    fn insert(&self, st: &mut State, key: String, entry: Entry) {
        st.used += entry.size;
        let file = entry.file.clone();
        // The same version kept twice (written here, and copied by a reader meanwhile): one stays.
        if let Some(old) = st.entries.put(key, entry) {
            st.used -= old.size;
            if old.file != file {
                let _ = std::fs::remove_file(&old.file);
            }
        }
        while st.used > self.budget {
            let Some((_, e)) = st.entries.pop_lru() else { break };
            st.used -= e.size;
            // An open backing file stays readable after the unlink.
            let _ = std::fs::remove_file(&e.file);
        }
    }

    /// The keys `path`'s copy may have at version `attr`: its etag, and the
    /// journal tag it was uploaded from (a copy written here is kept under that).
    pub(crate) fn keys<'a>(path: &'a str, attr: &Attr) -> impl Iterator<Item = String> + 'a {
        let size = attr.size;
        [attr.etag.clone(), attr.origin.clone()]
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(move |t| Self::key(path, &t, size))
    }

    /// Takes the copy `key` out of the copies without deleting it (a writer
    /// makes it its staging file); its path, if there was one.
    pub(crate) fn take(&self, key: &str) -> Option<PathBuf> {
        let mut st = self.state();
        let e = st.entries.pop(key)?;
        st.used -= e.size;
        Some(e.file)
    }

    /// The file of copy `key`, now the most recently used.
    pub(crate) fn lookup(&self, key: &str) -> Option<PathBuf> {
        self.state().entries.get(key).map(|e| e.file.clone())
    }

    /// Claims `key` for copying; false if present, in progress or too large.
    pub(crate) fn claim(&self, key: &str, size: u64) -> bool {
        if size == 0 || size > self.budget {
            return false;
        }
        let mut st = self.state();
        if st.entries.contains(key) || st.copying.contains(key) {
            return false;
        }
        st.copying.insert(key.to_string());
        true
    }

    /// A copy claimed with [`LocalFiles::claim`] is done (`file`) or failed (`None`).
    pub(crate) fn finish(&self, key: &str, file: Option<PathBuf>, size: u64, path: &str, etag: &str) {
        let mut st = self.state();
        st.copying.remove(key);
        let Some(file) = file else { return };
        self.insert(&mut st, key.to_string(), Entry { file, size, path: path.into(), etag: etag.into() });
    }

    /// Bytes held by the copies.
    pub(crate) fn used(&self) -> u64 {
        self.state().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(l: &LocalFiles, path: &str, size: usize) -> PathBuf {
        let key = LocalFiles::key(path, "e1", size as u64);
        assert!(l.claim(&key, size as u64));
        let f = l.dir.join(&key);
        std::fs::write(&f, vec![7u8; size]).expect("write copy");
        l.finish(&key, Some(f.clone()), size as u64, path, "e1");
        f
    }

    #[test]
    fn copies_over_the_budget_are_evicted_least_recently_used_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = LocalFiles::new(dir.path().join("files"), 100).expect("local files");
        let a = copy(&l, "/a", 40);
        let b = copy(&l, "/b", 40);
        // /a read again: /b is now the least recently used.
        assert_eq!(l.lookup(&LocalFiles::key("/a", "e1", 40)), Some(a.clone()));
        let c = copy(&l, "/c", 40);
        assert_eq!(l.used(), 80);
        assert!(a.exists() && c.exists());
        assert!(!b.exists(), "the least recently used copy's file is deleted");
        assert_eq!(l.lookup(&LocalFiles::key("/b", "e1", 40)), None);
        // Too large for the budget, or empty: never claimed.
        assert!(!l.claim(&LocalFiles::key("/big", "e1", 101), 101));
        assert!(!l.claim(&LocalFiles::key("/empty", "e1", 0), 0));
        // A claim in progress is not claimed twice.
        let k = LocalFiles::key("/d", "e1", 10);
        assert!(l.claim(&k, 10) && !l.claim(&k, 10));
    }

    #[test]
    fn a_renamed_copy_follows_its_file_and_a_forgotten_one_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = LocalFiles::new(dir.path().join("files"), 100).expect("local files");
        let a = copy(&l, "/a", 10);
        l.rename("/a", "/b");
        assert_eq!(l.lookup(&LocalFiles::key("/a", "e1", 10)), None);
        assert_eq!(l.lookup(&LocalFiles::key("/b", "e1", 10)), Some(a.clone()));
        assert_eq!(l.used(), 10);
        l.forget("/b");
        assert_eq!(l.used(), 0);
        assert!(!a.exists());
    }
}
