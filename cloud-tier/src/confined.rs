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
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
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

    fn list(&self, prefix: Option<&StorePath>) -> BoxStream<'static, Result<ObjectMeta>> {
        if let Some(p) = prefix {
            if let Err(e) = self.check(p) {
                return futures::stream::once(async move { Err(e) }).boxed();
            }
        }
        let (root, prefix_owned) = (self.root.clone(), prefix.cloned());
        self.inner
            .list(prefix)
            .try_filter(move |m| std::future::ready(Confined::listed_inside(&root, prefix_owned.as_ref(), &m.location)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&StorePath>) -> Result<ListResult> {
        if let Some(p) = prefix {
            self.check(p)?;
        }
        let mut r = self.inner.list_with_delimiter(prefix).await?;
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
