//! One namespace over several object stores.
//!
//! A mount maps a namespace prefix to a store and a prefix inside it
//! (`/datasets -> s3://bucket/prefix`). Resolution picks the longest mount
//! prefix on a segment boundary; a mount at `/` catches everything else.
//! Paths are validated by [`NsPath`] first, so `..` and friends never reach
//! a store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use ferry_protocol::codec::{DirEntry, EntryKind, ObjectInfo};
use ferry_protocol::ids::NsPath;

use crate::config::MountConfig;
pub use crate::dirs::Dirs;
use crate::error::{ConfigError, NodeError};
use crate::metrics::Metrics;

/// One mount: a namespace prefix backed by a store.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Namespace prefix, e.g. `/datasets` (or `/`).
    pub name: Arc<str>,
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside the store.
    pub prefix: StorePath,
    /// Per-tier quota in bytes (0 = none).
    pub quota: u64,
    /// Writes are acknowledged only once the store has them.
    pub write_through: bool,
    /// Nodes a write-back write must be durable on before it is
    /// acknowledged; `None`: 2 where the cluster has two nodes or more.
    pub write_replicas: Option<usize>,
    /// Owners of each page; `None`: the reader's default.
    pub replicas: Option<usize>,
    /// Directories of their own in the store (local directories, S3
    /// folder markers); `None`: directories exist only as prefixes. A
    /// local store's files are found through it too.
    pub dirs: Option<Dirs>,
}

/// Where a namespace path lives.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The mount.
    pub mount: Mount,
    /// The object path inside the mount's store.
    pub location: StorePath,
}

/// The namespace of a node.
#[derive(Debug, Clone)]
pub struct Namespace {
    mounts: BTreeMap<String, Mount>,
    metrics: Arc<Metrics>,
}

pub use crate::error::OpenError;

/// Builds a store from a URL and object_store options.
pub fn open_store(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<(Arc<dyn ObjectStore>, StorePath), OpenError> {
    open_store_with_dirs(url, options).map(|(store, prefix, _)| (store, prefix))
}

/// A store opened from its URL, with its prefix and, where the store has
/// directories of its own, the means to make and remove them.
pub type OpenedStore = (Arc<dyn ObjectStore>, StorePath, Option<Dirs>);

/// Like [`open_store`], also giving the store's directories: local
/// directories for `file://`, folder markers for `s3://`.
pub fn open_store_with_dirs(url: &str, options: &BTreeMap<String, String>) -> Result<OpenedStore, OpenError> {
    let parsed = url::Url::parse(url).map_err(|source| OpenError::Url { url: url.to_string(), source })?;
    if parsed.scheme() == "file" {
        let dir = std::path::Path::new(parsed.path());
        if !dir.is_dir() {
            return Err(OpenError::NoDirectory(dir.to_path_buf()));
        }
        // Rooted at the directory so the store never reaches outside it.
        let fs = crate::confined::Confined::new(dir)?;
        let root = std::fs::canonicalize(dir).map_err(|_| OpenError::NoDirectory(dir.to_path_buf()))?;
        return Ok((Arc::new(fs), StorePath::default(), Some(Dirs::Local(root))));
    }
    if matches!(parsed.scheme(), "s3" | "s3a") {
        // As object_store's parse_url_opts builds it, keeping the concrete
        // store for the markers' signed requests.
        let builder = options.iter().fold(object_store::aws::AmazonS3Builder::new().with_url(url), |b, (k, v)| match k
            .to_ascii_lowercase()
            .parse()
        {
            Ok(key) => b.with_config(key, v),
            Err(_) => b,
        });
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        let (s3, markers) = crate::dirs::S3Markers::open(builder, &bucket)?;
        let prefix = StorePath::from_url_path(parsed.path()).map_err(object_store::Error::from)?;
        return Ok((s3, prefix, Some(Dirs::S3(markers))));
    }
    let (store, prefix) = object_store::parse_url_opts(&parsed, options.iter())?;
    Ok((Arc::from(store), prefix, None))
}

fn mount_name(s: &str) -> Result<NsPath, String> {
    NsPath::parse(s).map_err(|e| e.to_string())
}

fn join(prefix: &StorePath, rest: &[&str]) -> Result<StorePath, NodeError> {
    let mut parts: Vec<String> = prefix.parts().map(|p| p.as_ref().to_string()).collect();
    parts.extend(rest.iter().map(|s| s.to_string()));
    let joined = parts.join("/");
    StorePath::parse(&joined)
        .map_err(|e| NodeError::InvalidInput(format!("path {joined:?} is not valid in the store: {e}")))
}

impl Namespace {
    /// Opens every configured mount.
    pub fn open(mounts: &BTreeMap<String, MountConfig>, metrics: Arc<Metrics>) -> Result<Namespace, ConfigError> {
        let mut ns = Namespace { mounts: BTreeMap::new(), metrics };
        for (name, cfg) in mounts {
            let (store, prefix, dirs) = open_store_with_dirs(&cfg.url, &cfg.options)
                .map_err(|source| ConfigError::Store { mount: name.clone(), source })?;
            ns.add(name, store, prefix, cfg.quota.as_u64())?;
            ns.set_dirs(name, dirs);
            if cfg.write_through {
                ns.set_write_through(name, true);
            }
            if let Some(m) = mount_name(name).ok().and_then(|n| ns.mounts.get_mut(n.as_str())) {
                m.write_replicas = cfg.write_replicas;
                m.replicas = cfg.replicas;
            }
        }
        Ok(ns)
    }

    /// An empty namespace.
    pub fn empty(metrics: Arc<Metrics>) -> Namespace {
        Namespace { mounts: BTreeMap::new(), metrics }
    }

    /// Adds a mount backed by an already built store.
    pub fn add(
        &mut self,
        name: &str,
        store: Arc<dyn ObjectStore>,
        prefix: StorePath,
        quota: u64,
    ) -> Result<(), ConfigError> {
        let ns = mount_name(name).map_err(|reason| ConfigError::Mount { mount: name.into(), reason })?;
        let key = ns.as_str().to_string();
        if self.mounts.contains_key(&key) {
            return Err(ConfigError::Mount { mount: name.into(), reason: "mounted twice".into() });
        }
        self.mounts.insert(
            key.clone(),
            Mount {
                name: Arc::from(key.as_str()),
                store,
                prefix,
                quota,
                write_through: false,
                write_replicas: None,
                replicas: None,
                dirs: None,
            },
        );
        Ok(())
    }

    /// Gives mount `name` the store's own directories.
    pub fn set_dirs(&mut self, name: &str, dirs: Option<Dirs>) {
        if let Some(m) = mount_name(name).ok().and_then(|n| self.mounts.get_mut(n.as_str())) {
            m.dirs = dirs;
        }
    }

    /// Sets whether writes under mount `name` are acknowledged only once stored.
    pub fn set_write_through(&mut self, name: &str, on: bool) {
        if let Ok(ns) = mount_name(name) {
            if let Some(m) = self.mounts.get_mut(ns.as_str()) {
                m.write_through = on;
            }
        }
    }

    /// The mounts, by name.
    pub fn mounts(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.values()
    }

    /// The mount holding `path` and the object location in its store.
    pub fn resolve(&self, path: &NsPath) -> Result<Resolved, NodeError> {
        let segs: Vec<&str> = path.segments().collect();
        for n in (0..=segs.len()).rev() {
            let candidate = if n == 0 { "/".to_string() } else { format!("/{}", segs[..n].join("/")) };
            if let Some(m) = self.mounts.get(&candidate) {
                let location = join(&m.prefix, &segs[n..])?;
                return Ok(Resolved { mount: m.clone(), location });
            }
        }
        Err(NodeError::NotFound(format!("{path} (no mount holds it)")))
    }

    /// Names of mounts directly below `dir` that are not inside another mount (virtual directories).
    fn virtual_children(&self, dir: &NsPath) -> BTreeSet<String> {
        let base: Vec<&str> = dir.segments().collect();
        let mut out = BTreeSet::new();
        for name in self.mounts.keys() {
            let segs: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
            if segs.len() > base.len() && segs[..base.len()] == base[..] {
                out.insert(segs[base.len()].to_string());
            }
        }
        out
    }

    fn dir_info() -> ObjectInfo {
        Self::dir_at(0)
    }

    /// A directory last modified at `mtime_ms` (0: unknown).
    fn dir_at(mtime_ms: i64) -> ObjectInfo {
        ObjectInfo {
            kind: EntryKind::Dir,
            size: 0,
            mtime_ms,
            etag: String::new(),
            persisted: true,
            origin: String::new(),
        }
    }

    /// What the store says of an object, the same from a HEAD as from a listing.
    fn file_info(meta: object_store::ObjectMeta) -> ObjectInfo {
        ObjectInfo {
            kind: EntryKind::File,
            size: meta.size,
            mtime_ms: meta.last_modified.timestamp_millis(),
            etag: meta.e_tag.unwrap_or_else(|| format!("{}-{}", meta.size, meta.last_modified.timestamp_millis())),
            persisted: true,
            origin: String::new(),
        }
    }

    /// A directory found by listing `location`: the time of its folder
    /// marker when it has one (the marker lists as an object at the
    /// prefix itself), else of the newest object directly in it.
    fn listed_dir(location: &StorePath, listing: &object_store::ListResult) -> ObjectInfo {
        let marker = listing.objects.iter().find(|o| o.location == *location);
        let newest = listing.objects.iter().map(|o| o.last_modified.timestamp_millis()).max();
        Self::dir_at(marker.map(|m| m.last_modified.timestamp_millis()).or(newest).unwrap_or(0))
    }

    /// Metadata from the store (no caching here).
    pub async fn head(&self, path: &NsPath) -> Result<ObjectInfo, NodeError> {
        if !self.virtual_children(path).is_empty() {
            return Ok(Self::dir_info());
        }
        let r = self.resolve(path)?;
        // A local store's directories are file system entries, empty or not.
        let local_dir = || r.mount.dirs.as_ref().and_then(|d| d.local_dir_mtime(&r.location));
        if r.location.as_ref().is_empty() {
            return Ok(Self::dir_at(local_dir().unwrap_or(0)));
        }
        self.metrics.store_request("head");
        let head = r.mount.store.head(&r.location).await;
        if head.is_err() {
            if let Some(t) = local_dir() {
                return Ok(Self::dir_at(t));
            }
        }
        match head {
            Ok(meta) => Ok(Self::file_info(meta)),
            Err(object_store::Error::NotFound { .. }) => {
                // A "directory" is a prefix that objects share, or a folder marker.
                self.metrics.store_request("list");
                let listing = r
                    .mount
                    .store
                    .list_with_delimiter(Some(&r.location))
                    .await
                    .map_err(|e| NodeError::from_store(path.as_str(), e))?;
                if listing.objects.is_empty() && listing.common_prefixes.is_empty() {
                    Err(NodeError::NotFound(path.to_string()))
                } else {
                    Ok(Self::listed_dir(&r.location, &listing))
                }
            }
            // The local store reports a directory as "not a file"-style errors; list it instead.
            Err(e) => {
                self.metrics.store_request("list");
                match r.mount.store.list_with_delimiter(Some(&r.location)).await {
                    Ok(l) if !l.objects.is_empty() || !l.common_prefixes.is_empty() => {
                        Ok(Self::listed_dir(&r.location, &l))
                    }
                    _ => Err(NodeError::from_store(path.as_str(), e)),
                }
            }
        }
    }

    /// Makes directory `path` in its store (a local directory, an S3 folder
    /// marker). Stores without directories of their own refuse it.
    pub async fn mkdir(&self, path: &NsPath) -> Result<(), NodeError> {
        let r = self.resolve(path)?;
        let Some(dirs) = &r.mount.dirs else {
            return Err(NodeError::Unsupported(format!(
                "{path}: the store of mount {} keeps no empty directories (only files make them)",
                r.mount.name
            )));
        };
        match self.head(path).await {
            Ok(_) => return Err(NodeError::Exists(path.to_string())),
            Err(NodeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.metrics.store_request("put");
        dirs.make(&r.location).await
    }

    /// Removes empty directory `path` from its store.
    pub async fn rmdir(&self, path: &NsPath) -> Result<(), NodeError> {
        let r = self.resolve(path)?;
        if path.as_str() == &*r.mount.name || !self.virtual_children(path).is_empty() {
            return Err(NodeError::InvalidInput(format!("{path} is a mount point")));
        }
        let info = self.head(path).await?;
        if info.kind == EntryKind::File {
            return Err(NodeError::InvalidInput(format!("{path} is a file, not a directory")));
        }
        if !self.list(path).await?.is_empty() {
            return Err(NodeError::NotEmpty(path.to_string()));
        }
        // Without directories of their own, an empty directory is nothing to remove.
        let Some(dirs) = &r.mount.dirs else { return Ok(()) };
        self.metrics.store_request("delete");
        dirs.remove(&r.location).await
    }

    /// Entries directly under `dir`, sorted by name.
    pub async fn list(&self, dir: &NsPath) -> Result<Vec<DirEntry>, NodeError> {
        let mut entries: BTreeMap<String, ObjectInfo> =
            self.virtual_children(dir).into_iter().map(|n| (n, Self::dir_info())).collect();
        let resolved = self.resolve(dir);
        match resolved {
            Ok(r) => {
                self.metrics.store_request("list");
                let prefix = if r.location.as_ref().is_empty() { None } else { Some(&r.location) };
                let listing = r
                    .mount
                    .store
                    .list_with_delimiter(prefix)
                    .await
                    .map_err(|e| NodeError::from_store(dir.as_str(), e))?;
                if listing.objects.is_empty() && listing.common_prefixes.is_empty() && entries.is_empty() {
                    // Distinguish an empty directory from a missing one or a file.
                    match self.head(dir).await {
                        Ok(i) if i.kind == EntryKind::File => {
                            return Err(NodeError::InvalidInput(format!("{dir} is a file, not a directory")))
                        }
                        Ok(_) => {}
                        Err(NodeError::NotFound(_)) if prefix.is_some() => {
                            return Err(NodeError::NotFound(dir.to_string()))
                        }
                        Err(NodeError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                for p in listing.common_prefixes {
                    if let Some(name) = p.filename() {
                        let t = r.mount.dirs.as_ref().and_then(|d| d.local_dir_mtime(&p)).unwrap_or(0);
                        entries.insert(name.to_string(), Self::dir_at(t));
                    }
                }
                for o in listing.objects {
                    // The directory's own folder marker is not an entry in it.
                    if prefix == Some(&o.location) {
                        continue;
                    }
                    if let Some(name) = o.location.filename() {
                        // Listed as a HEAD would describe it: a walk's stats come from listings.
                        entries.insert(name.to_string(), Self::file_info(o));
                    }
                }
            }
            Err(e) if entries.is_empty() => return Err(e),
            Err(_) => {}
        }
        Ok(entries.into_iter().map(|(name, info)| DirEntry { name, info }).collect())
    }

    /// Every object under `dir` (recursively), as namespace paths with sizes.
    pub async fn walk(&self, dir: &NsPath) -> Result<Vec<(NsPath, u64)>, NodeError> {
        let r = self.resolve(dir)?;
        self.metrics.store_request("list");
        let prefix = if r.location.as_ref().is_empty() { None } else { Some(&r.location) };
        let objects: Vec<_> =
            r.mount.store.list(prefix).try_collect().await.map_err(|e| NodeError::from_store(dir.as_str(), e))?;
        let mount_prefix_len = r.mount.prefix.parts().count();
        let mut out = Vec::with_capacity(objects.len());
        for o in objects {
            let rel: Vec<String> = o.location.parts().skip(mount_prefix_len).map(|p| p.as_ref().to_string()).collect();
            let base = if r.mount.name.as_ref() == "/" { String::new() } else { r.mount.name.to_string() };
            let p = format!("{base}/{}", rel.join("/"));
            if let Ok(ns) = NsPath::parse(&p) {
                out.push((ns, o.size));
            }
        }
        Ok(out)
    }

    /// Metrics shared with the cache.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
