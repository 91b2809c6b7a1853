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
        let mut dir_ids: HashMap<String, u32> = HashMap::new();
        for (path, size) in sorted {
            let dir_path = parent(&path).to_string();
            let dir = *dir_ids.entry(dir_path.clone()).or_insert_with(|| {
                cat.dirs.push(Vec::new());
                cat.dir_paths.push(dir_path);
                (cat.dirs.len() - 1) as u32
            });
            let id = cat.files.len() as FileId;
            let index = cat.dirs[dir as usize].len() as u32;
            cat.dirs[dir as usize].push(id);
            let pages = size.div_ceil(page_size).max(1) as u32;
            cat.by_path.insert(path.clone(), id);
            cat.files.push(File { path, size, pages, dir, index });
        }
        cat
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
}
