//! A `file://` store that never reaches outside its root.
//!
//! object_store's local store follows symbolic links wherever they point:
//! a link inside the store to `/etc` would let any client read the node's
//! files, and a write through a linked directory would land outside the
//! store. [`Confined`] resolves every path it is given (links and all)
//! before the store touches it and refuses, as permission denied, one that
//! resolves outside the root. Listings leave out entries that do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// Whether `path` (inside `root`, which is canonical) resolves inside
/// `root`: the deepest part of it that exists, links followed, must.
pub fn resolves_inside(root: &Path, path: &Path) -> std::io::Result<bool> {
    let mut probe = path;
    loop {
        match std::fs::canonicalize(probe) {
            Ok(real) => return Ok(real.starts_with(root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match probe.parent() {
                Some(parent) if parent.starts_with(root) => probe = parent,
                // Nothing of it exists below the root: it is made there.
                _ => return Ok(true),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Why a path was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves outside the store's root (a symbolic link): refused")]
pub struct Outside(pub String);

/// A local store confined to its root.
#[derive(Debug, Clone)]
pub struct Confined {
    inner: Arc<LocalFileSystem>,
    root: Arc<Path>,
}

impl Confined {
    /// The store rooted at `dir` (an existing directory).
    pub fn new(dir: &Path) -> Result<Confined> {
        let root = std::fs::canonicalize(dir)
            .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })?;
        Ok(Confined { inner: Arc::new(LocalFileSystem::new_with_prefix(&root)?), root: Arc::from(root.as_path()) })
    }

    /// The file system path of `location` (its parts are file names as they are).
    fn file(&self, location: &StorePath) -> PathBuf {
        self.root.join(location.as_ref())
    }

    fn check(&self, location: &StorePath) -> Result<()> {
        match resolves_inside(&self.root, &self.file(location)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: Box::new(Outside(location.to_string())),
            }),
            Err(e) => Err(object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) }),
        }
    }

    /// Whether a listed entry is inside: only a link can lead out, so the
    /// entry's own type is asked first (one `lstat`), and only links are
    /// resolved.
    fn listed_inside(root: &Path, prefix: Option<&StorePath>, location: &StorePath) -> bool {
        let below = prefix.map_or(0, |p| p.parts().count());
        let mut at = prefix.map_or_else(|| root.to_path_buf(), |p| root.join(p.as_ref()));
        for part in location.parts().skip(below) {
            at.push(part.as_ref());
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    if !resolves_inside(root, &at).unwrap_or(false) {
                        return false;
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        true
    }
}

impl Confined {
    /// A directory's listing when it holds names the store cannot spell
    /// (a tab, a newline, bytes that are not UTF-8, put there by another
    /// tool): those are left out, with a warning; the rest is listed as
    /// the store lists it.
    async fn list_nameable(&self, prefix: Option<&StorePath>) -> Result<ListResult> {
        let dir = prefix.map_or_else(|| self.root.to_path_buf(), |p| self.file(p));
        let generic =
            |e: std::io::Error| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) };
        let entries = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(std::ffi::OsString, bool)>> {
            std::fs::read_dir(&dir)?
                .map(|e| {
                    let e = e?;
                    // Links are followed, as the store lists them.
                    let is_dir = std::fs::metadata(e.path()).map(|m| m.is_dir()).unwrap_or(false);
                    Ok((e.file_name(), is_dir))
                })
                .collect()
        })
        .await
        .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })?
        .map_err(generic)?;
        let base = prefix.map_or_else(String::new, |p| format!("{p}/"));
        let mut out = ListResult { common_prefixes: Vec::new(), objects: Vec::new(), extensions: Default::default() };
        for (name, is_dir) in entries {
            let location = name.to_str().and_then(|n| StorePath::parse(format!("{base}{n}")).ok());
            // An upload's staging file (NAME#N), which the store never lists.
            if name
                .to_str()
                .and_then(|n| n.split_once('#'))
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                && !is_dir
            {
                continue;
            }
            let Some(location) = location.filter(|l| l.filename().is_some()) else {
                tracing::warn!(
                    dir = %prefix.map_or("", |p| p.as_ref()).escape_debug(),
                    name = %name.to_string_lossy().escape_debug(),
                    "a file the store cannot name is left out of the listing"
                );
                continue;
            };
            if is_dir {
                out.common_prefixes.push(location);
            } else {
                match self.inner.head(&location).await {
                    Ok(meta) => out.objects.push(meta),
                    // Gone since the directory was read.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.common_prefixes.sort();
        out.objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(out)
    }
}

impl fmt::Display for Confined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Confined({})", self.root.display())
    }
}

#[async_trait::async_trait]
impl ObjectStore for Confined {
    async fn put_opts(&self, location: &StorePath, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &StorePath, options: GetOptions) -> Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &StorePath, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.check(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<StorePath>>) -> BoxStream<'static, Result<StorePath>> {
        let me = self.clone();
        let checked = locations.map(move |l| l.and_then(|l| me.check(&l).map(|()| l))).boxed();
        self.inner.delete_stream(checked)
    }

    /// Directory by directory, as [`ObjectStore::list_with_delimiter`]
    /// lists each: object_store's own walk ends at the first name it
    /// cannot spell, this one leaves such a name out and goes on. A
    /// directory reached twice through links is walked once.
    fn list(&self, prefix: Option<&StorePath>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Some(p) = prefix {
            if let Err(e) = self.check(p) {
                return futures::stream::once(async move { Err(e) }).boxed();
            }
        }
        let start = (self.clone(), vec![prefix.cloned()], std::collections::HashSet::new());
        futures::stream::try_unfold(start, |(me, mut dirs, mut seen)| async move {
            while let Some(dir) = dirs.pop() {
                let real =
                    tokio::fs::canonicalize(dir.as_ref().map_or_else(|| me.root.to_path_buf(), |d| me.file(d))).await;
                if !real.is_ok_and(|r| seen.insert(r)) {
                    continue;
                }
                let listed = match me.list_with_delimiter(dir.as_ref()).await {
                    Ok(l) => l,
                    // A prefix that is a file or nothing lists nothing, as object_store's walk.
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                };
                dirs.extend(listed.common_prefixes.into_iter().rev().map(Some));
                let batch = futures::stream::iter(listed.objects.into_iter().map(Ok));
                return Ok(Some((batch, (me, dirs, seen))));
            }
            Ok(None)
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&StorePath>) -> Result<ListResult> {
        if let Some(p) = prefix {
            self.check(p)?;
        }
        let mut r = match self.inner.list_with_delimiter(prefix).await {
            Err(object_store::Error::InvalidPath { .. }) => self.list_nameable(prefix).await?,
            r => r?,
        };
        r.objects.retain(|m| Confined::listed_inside(&self.root, prefix, &m.location));
        r.common_prefixes.retain(|d| Confined::listed_inside(&self.root, prefix, d));
        Ok(r)
    }

    async fn copy_opts(&self, from: &StorePath, to: &StorePath, options: CopyOptions) -> Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &StorePath, to: &StorePath, options: RenameOptions) -> Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_the_store_cannot_spell_are_left_out_of_listings_not_the_end_of_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("d/sub")).expect("mkdir");
        for name in ["ok.bin", "tab\there.bin", "new\nline.bin", "upload.bin#3", "sub/inner.bin"] {
            std::fs::write(root.join("d").join(name), name).expect("write");
        }
        let store = Confined::new(root).expect("open");
        let d = StorePath::from("d");
        let listed = store.list_with_delimiter(Some(&d)).await.expect("listing with odd names");
        let files: Vec<&str> = listed.objects.iter().filter_map(|m| m.location.filename()).collect();
        assert_eq!(files, ["ok.bin"]);
        assert_eq!(listed.common_prefixes, [StorePath::from("d/sub")]);
        // As the store itself describes the file (its version tag included).
        assert_eq!(listed.objects[0], store.head(&StorePath::from("d/ok.bin")).await.expect("head"));
        let mut walked: Vec<String> =
            store.list(Some(&d)).map_ok(|m| m.location.to_string()).try_collect().await.expect("walk with odd names");
        walked.sort();
        assert_eq!(walked, ["d/ok.bin", "d/sub/inner.bin"]);
    }
}
