//! The dataset a prefetcher may fetch from: files grouped by directory and
//! sorted by name, so "the next file" has a meaning (frame 41 follows frame
//! 40 in a sensor's folder).

use std::collections::HashMap;

/// Index of a file in a [`Catalog`].
pub type FileId = u32;

/// One file of the catalog.
#[derive(Debug, Clone)]
pub struct File {
    pub path: String,
    pub size: u64,
    /// Pages the file spans (at least one, so empty files can be read).
    pub pages: u32,
    /// Index of its directory.
    pub dir: u32,
    /// Position among its directory's files, sorted by name.
    pub index: u32,
}

/// Files by directory, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    page_size: u64,
    files: Vec<File>,
    /// Per directory, its files in name order.
    dirs: Vec<Vec<FileId>>,
    dir_paths: Vec<String>,
    dir_ids: HashMap<String, u32>,
    by_path: HashMap<String, FileId>,
}

/// The directory part of a path (`/a/b/c.jpg` → `/a/b`).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

impl Catalog {
    /// Builds a catalog from (path, size) pairs; a repeated path keeps its last size.
    pub fn new(page_size: u64, entries: impl IntoIterator<Item = (String, u64)>) -> Catalog {
        let page_size = page_size.max(1);
        let mut map: HashMap<String, u64> = HashMap::new();
        for (p, s) in entries {
            map.insert(p, s);
        }
        let mut sorted: Vec<(String, u64)> = map.into_iter().collect();
        sorted.sort();
        let mut cat = Catalog { page_size, ..Default::default() };
        for (path, size) in sorted {
            cat.push(path, size);
        }
        cat
    }

    /// Appends a file; callers add a directory's files in name order.
    fn push(&mut self, path: String, size: u64) -> FileId {
        let dir_path = parent(&path).to_string();
        let dir = match self.dir_ids.get(&dir_path) {
            Some(&d) => d,
            None => {
                self.dirs.push(Vec::new());
                self.dir_paths.push(dir_path.clone());
                let d = (self.dirs.len() - 1) as u32;
                self.dir_ids.insert(dir_path, d);
                d
            }
        };
        let id = self.files.len() as FileId;
        let index = self.dirs[dir as usize].len() as u32;
        self.dirs[dir as usize].push(id);
        let pages = size.div_ceil(self.page_size).max(1) as u32;
        self.by_path.insert(path.clone(), id);
        self.files.push(File { path, size, pages, dir, index });
        id
    }

    /// Whether directory `dir` was added (by [`Catalog::new`] or [`Catalog::add_dir`]).
    pub fn has_dir(&self, dir: &str) -> bool {
        self.dir_ids.contains_key(dir)
    }

    /// Adds the files of directory `dir` (names and sizes, any order), as
    /// a reader who lists folders on first use learns the dataset. Ids of
    /// files already known do not change; a directory added before is left
    /// as it is.
    pub fn add_dir(&mut self, dir: &str, files: impl IntoIterator<Item = (String, u64)>) {
        // The root's files have the directory "" (see [`parent`]).
        let dir = dir.trim_end_matches('/');
        if self.has_dir(dir) {
            return;
        }
        let mut sorted: Vec<(String, u64)> = files.into_iter().collect();
        sorted.sort();
        sorted.dedup_by(|a, b| a.0 == b.0);
        if sorted.is_empty() {
            // Remember the empty directory so it is not listed again.
            self.dirs.push(Vec::new());
            self.dir_paths.push(dir.to_string());
            self.dir_ids.insert(dir.to_string(), (self.dirs.len() - 1) as u32);
        }
        for (name, size) in sorted {
            self.push(format!("{dir}/{name}"), size);
        }
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    pub fn id(&self, path: &str) -> Option<FileId> {
        self.by_path.get(path).copied()
    }

    pub fn file(&self, id: FileId) -> &File {
        &self.files[id as usize]
    }

    pub fn files(&self) -> &[File] {
        &self.files
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The file `delta` places after `id` in its directory, if there is one.
    pub fn step(&self, id: FileId, delta: i64) -> Option<FileId> {
        let f = &self.files[id as usize];
        let dir = &self.dirs[f.dir as usize];
        let i = f.index as i64 + delta;
        (0..dir.len() as i64).contains(&i).then(|| dir[i as usize])
    }

    /// Path of a directory.
    pub fn dir_path(&self, dir: u32) -> &str {
        &self.dir_paths[dir as usize]
    }

    /// Pages `[first, end)` that bytes `[offset, offset + len)` of a file touch.
    pub fn pages_of(&self, id: FileId, offset: u64, len: u64) -> (u32, u32) {
        let f = &self.files[id as usize];
        let first = ((offset / self.page_size) as u32).min(f.pages - 1);
        let end = if len == 0 { first + 1 } else { (offset + len).div_ceil(self.page_size) as u32 };
        (first, end.clamp(first + 1, f.pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_sorted_and_steps() {
        let c =
            Catalog::new(10, [("/a/2".to_string(), 25), ("/a/1".into(), 0), ("/b/x".into(), 10), ("/a/3".into(), 10)]);
        let a1 = c.id("/a/1").expect("listed");
        assert_eq!(c.file(a1).index, 0);
        assert_eq!(c.file(a1).pages, 1, "an empty file still has a page to read");
        assert_eq!(c.step(a1, 2).map(|f| c.file(f).path.as_str()), Some("/a/3"));
        assert_eq!(c.step(a1, 3), None, "no step past the directory's end");
        assert_eq!(c.step(a1, -1), None);
        let a2 = c.id("/a/2").expect("listed");
        assert_eq!(c.pages_of(a2, 0, 25), (0, 3));
        assert_eq!(c.pages_of(a2, 12, 1), (1, 2));
        assert_eq!(c.pages_of(a2, 100, 5), (2, 3), "reads past the end count on the last page");
        assert_eq!(c.dir_path(c.file(c.id("/b/x").expect("listed")).dir), "/b");
    }

    #[test]
    fn directories_added_later_keep_earlier_ids() {
        let mut c = Catalog::new(10, [("/a/1".to_string(), 5)]);
        let a1 = c.id("/a/1").expect("listed");
        c.add_dir("/cam", [("f2".to_string(), 30), ("f1".into(), 10)]);
        c.add_dir("/cam", [("f0".to_string(), 1)]);
        c.add_dir("/", [("top".to_string(), 1)]);
        assert_eq!(c.id("/a/1"), Some(a1));
        let f1 = c.id("/cam/f1").expect("added");
        assert_eq!(c.step(f1, 1).map(|f| c.file(f).path.as_str()), Some("/cam/f2"));
        assert_eq!(c.id("/cam/f0"), None, "a directory is added once");
        assert_eq!(c.file(c.id("/cam/f2").expect("added")).pages, 3);
        assert!(c.has_dir("/cam") && c.has_dir("") && c.id("/top").is_some());
    }
}
