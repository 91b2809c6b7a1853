//! A [`Prefetcher`] over a dataset it learns while readers go through it:
//! the first read in a folder asks the caller for that folder's listing,
//! and reads there are predicted once it has arrived. The cache node and
//! the mount both use it; they own the I/O (listing, fetching, budgets).

use std::collections::{HashMap, HashSet};

use crate::catalog::{parent, Catalog, FileId};
use crate::{Fetch, Predictor, PrefetchConfig, Prefetcher};

/// Pages `[first, end)` of a file to fetch, with what the fetch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub path: String,
    pub size: u64,
    /// The version tag the folder's listing gave the file ("" if none).
    pub tag: String,
    pub first: u32,
    pub end: u32,
}

/// Prefetcher, the catalog learned so far, and the folders being listed.
pub struct Online {
    prefetcher: Prefetcher,
    catalog: Catalog,
    tags: HashMap<FileId, String>,
    listing: HashSet<String>,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online").field("prefetcher", &self.prefetcher).field("files", &self.catalog.len()).finish()
    }
}

/// The path to list for catalog folder `dir` ("" is the root).
fn listing_path(dir: &str) -> String {
    if dir.is_empty() {
        "/".into()
    } else {
        dir.to_string()
    }
}

impl Online {
    pub fn new(predictor: Box<dyn Predictor>, config: PrefetchConfig, page_size: u64) -> Online {
        Online {
            prefetcher: Prefetcher::new(predictor, config),
            catalog: Catalog::new(page_size, []),
            tags: HashMap::new(),
            listing: HashSet::new(),
        }
    }

    /// Streams being tracked.
    pub fn streams(&self) -> usize {
        self.prefetcher.streams()
    }

    /// Files in the catalog so far.
    pub fn files(&self) -> usize {
        self.catalog.len()
    }

    /// A demand read of `[offset, offset + len)` of `path` by `reader`;
    /// appends what to fetch to `out`. The first read in a folder not
    /// known yet returns the folder to list (`/` for the root): pass its
    /// listing to [`Online::listed`].
    pub fn access(&mut self, reader: &str, path: &str, offset: u64, len: u64, out: &mut Vec<Want>) -> Option<String> {
        let dir = parent(path);
        if !self.catalog.has_dir(dir) {
            return self.listing.insert(dir.to_string()).then(|| listing_path(dir));
        }
        let id = self.catalog.id(path)?;
        let mut fetches = Vec::new();
        self.prefetcher.access(&self.catalog, reader, id, offset, len, &mut fetches);
        self.wants(&fetches, out);
        None
    }

    fn wants(&self, fetches: &[Fetch], out: &mut Vec<Want>) {
        out.extend(fetches.iter().map(|f| {
            let file = self.catalog.file(f.file);
            let tag = self.tags.get(&f.file).cloned().unwrap_or_default();
            Want { path: file.path.clone(), size: file.size, tag, first: f.first, end: f.end }
        }));
    }

    /// The listing of folder `dir` (names, sizes, version tags), or `None`
    /// if it could not be listed (the next read there asks again).
    pub fn listed(&mut self, dir: &str, files: Option<Vec<(String, u64, String)>>) {
        let key = dir.trim_end_matches('/');
        self.listing.remove(key);
        let Some(files) = files else { return };
        let tags: Vec<(String, String)> = files.iter().map(|(n, _, t)| (format!("{key}/{n}"), t.clone())).collect();
        self.catalog.add_dir(key, files.into_iter().map(|(n, s, _)| (n, s)));
        for (path, tag) in tags {
            if let Some(id) = self.catalog.id(&path) {
                self.tags.insert(id, tag);
            }
        }
    }

    /// The folders of `paths` not in the catalog yet (to list before announcing them).
    pub fn unknown_dirs<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
        paths.into_iter().map(parent).filter(|d| !self.catalog.has_dir(d)).map(listing_path).collect()
    }

    /// The entries of an announced order as fetches (whole files to
    /// [`crate::WHOLE_FILE`]); a path not in the catalog is an error.
    fn resolve(&self, entries: &[(String, Option<(u64, u64)>)]) -> Result<Vec<Fetch>, AnnounceError> {
        entries
            .iter()
            .map(|(path, range)| {
                let Some(id) = self.catalog.id(path) else { return Err(AnnounceError::NoSuchFile(path.clone())) };
                let (first, end) = match range {
                    Some((o, n)) => self.catalog.pages_of(id, *o, *n),
                    None => (0, crate::WHOLE_FILE),
                };
                Ok(Fetch { file: id, first, end })
            })
            .collect()
    }

    /// The pages `[first, end)` each entry of an announced order reads
    /// (whole files span all their pages), in order. A path not in the
    /// catalog is an error.
    pub fn page_runs(
        &self,
        entries: &[(String, Option<(u64, u64)>)],
    ) -> Result<Vec<(String, u64, u64)>, AnnounceError> {
        Ok(self
            .resolve(entries)?
            .into_iter()
            .map(|f| {
                let file = self.catalog.file(f.file);
                (file.path.clone(), u64::from(f.first), u64::from(f.end.min(file.pages)))
            })
            .collect())
    }

    /// `reader` reads by the order `announcer` announced; `None`: by its own.
    pub fn follow(&mut self, reader: &str, announcer: Option<&str>) {
        self.prefetcher.follow(reader, announcer);
    }

    /// `reader` will read these files (whole, or the byte range given) in
    /// this order; appends the first entries to fetch to `out`. A path not
    /// in the catalog is an error that changes nothing. Returns how many
    /// entries were announced.
    pub fn announce(
        &mut self,
        reader: &str,
        entries: &[(String, Option<(u64, u64)>)],
        out: &mut Vec<Want>,
    ) -> Result<usize, AnnounceError> {
        let order = self.resolve(entries)?;
        self.prefetcher.announce_ranges(reader, order);
        let mut fetches = Vec::new();
        self.prefetcher.upcoming(&self.catalog, reader, &mut fetches);
        self.wants(&fetches, out);
        Ok(entries.len())
    }
}

/// Why an announced read order was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// A line is neither `PATH` nor `PATH OFFSET LENGTH`.
    #[error("line {line}: expected PATH or PATH OFFSET LENGTH, got {text:?}")]
    Malformed {
        /// The line's number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// A path names no file in the catalog.
    #[error("{0}: no such file")]
    NoSuchFile(String),
    /// The announcement is not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_listed_once_then_predicted() {
        let mut o = Online::new(crate::models::by_name("readahead").expect("readahead"), PrefetchConfig::default(), 10);
        let mut out = Vec::new();
        assert_eq!(o.access("r", "/cam/1", 0, 5, &mut out).as_deref(), Some("/cam"));
        assert_eq!(o.access("r", "/cam/1", 0, 5, &mut out), None, "listed once");
        assert!(out.is_empty());
        o.listed("/cam", Some(vec![("1".into(), 5, "v1".into()), ("2".into(), 25, "v2".into())]));
        o.access("r", "/cam/1", 0, 5, &mut out);
        o.access("r", "/cam/2", 0, 5, &mut out);
        assert!(out.iter().any(|w| w.path == "/cam/2" && w.tag == "v2"), "{out:?}");
        assert_eq!(o.unknown_dirs(["/cam/2", "/x/y", "/top"]), HashSet::from(["/x".to_string(), "/".to_string()]));
        assert!(o.announce("*", &[("/nope".into(), None)], &mut out).is_err());
    }
}
