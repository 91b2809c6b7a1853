//! Where page bytes live: memory, or checksummed files on local disk.
//!
//! A disk page file is self-describing, so the set of page files *is* the
//! persisted index: a restarted node scans the headers and comes back warm.
//!
//! ```text
//! magic "FRYPAGE1" | key_len u32 | key | data_len u64 | blake3(data) [32] | data
//! ```
//!
//! Files are written to a temporary name and renamed, so a crash leaves
//! either the whole page or no page; the checksum catches bit rot and
//! tampering, and a page that fails it is dropped and fetched again.

use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::NodeError;

/// Identifies one page of one version of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageKey {
    /// The mount holding the object.
    pub mount: Arc<str>,
    /// Namespace path of the object.
    pub path: Arc<str>,
    /// Version of the object (its etag).
    pub version: Arc<str>,
    /// Page index.
    pub page: u64,
}

impl PageKey {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for s in [&self.mount, &self.path, &self.version] {
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        v.extend_from_slice(&self.page.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Option<PageKey> {
        if b.len() < 8 {
            return None;
        }
        let (head, page) = b.split_at(b.len() - 8);
        let mut parts = head.split(|c| *c == 0);
        let mount = std::str::from_utf8(parts.next()?).ok()?;
        let path = std::str::from_utf8(parts.next()?).ok()?;
        let version = std::str::from_utf8(parts.next()?).ok()?;
        if parts.next() != Some(&[][..]) || parts.next().is_some() {
            return None;
        }
        let mut p = [0u8; 8];
        p.copy_from_slice(page);
        Some(PageKey { mount: mount.into(), path: path.into(), version: version.into(), page: u64::from_be_bytes(p) })
    }

    fn file_name(&self) -> String {
        blake3::hash(&self.encode()).to_hex().to_string()
    }
}

/// Holds page bytes. Implementations do blocking I/O; callers on async
/// threads run them through `spawn_blocking`.
pub trait PageStore: Send + Sync + Debug {
    /// Short name for metrics (`memory`, `disk`).
    fn name(&self) -> &'static str;
    /// The page, `None` if absent, `Err(Corrupt)` if it fails its checksum.
    fn read(&self, key: &PageKey) -> Result<Option<Bytes>, NodeError>;
    /// Stores a page.
    fn write(&self, key: &PageKey, data: &Bytes) -> Result<(), NodeError>;
    /// Removes a page if present.
    fn delete(&self, key: &PageKey);
    /// Pages present when the store was opened (the persisted index).
    fn scan(&self) -> Vec<(PageKey, u64)>;
}

/// Pages in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pages: Mutex<HashMap<PageKey, Bytes>>,
}

impl PageStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn read(&self, key: &PageKey) -> Result<Option<Bytes>, NodeError> {
        Ok(self.pages.lock().expect("memory store lock poisoned").get(key).cloned())
    }
    fn write(&self, key: &PageKey, data: &Bytes) -> Result<(), NodeError> {
        self.pages.lock().expect("memory store lock poisoned").insert(key.clone(), data.clone());
        Ok(())
    }
    fn delete(&self, key: &PageKey) {
        self.pages.lock().expect("memory store lock poisoned").remove(key);
    }
    fn scan(&self) -> Vec<(PageKey, u64)> {
        Vec::new()
    }
}

const MAGIC: &[u8; 8] = b"FRYPAGE1";

/// Pages as checksummed files under a directory.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
}

impl DiskStore {
    /// Opens (creating) a page directory.
    pub fn open(dir: &Path) -> Result<DiskStore, NodeError> {
        std::fs::create_dir_all(dir.join("pages"))?;
        Ok(DiskStore { dir: dir.to_path_buf() })
    }

    /// The file holding `key`.
    pub fn path_of(&self, key: &PageKey) -> PathBuf {
        let name = key.file_name();
        self.dir.join("pages").join(&name[..2]).join(name)
    }

    fn read_header(f: &mut File) -> std::io::Result<Option<(PageKey, u64, [u8; 32])>> {
        let mut magic = [0u8; 8];
        f.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Ok(None);
        }
        let mut n = [0u8; 4];
        f.read_exact(&mut n)?;
        let klen = u32::from_be_bytes(n) as usize;
        if klen > 16 << 10 {
            return Ok(None);
        }
        let mut kb = vec![0u8; klen];
        f.read_exact(&mut kb)?;
        let mut l = [0u8; 8];
        f.read_exact(&mut l)?;
        let mut sum = [0u8; 32];
        f.read_exact(&mut sum)?;
        Ok(PageKey::decode(&kb).map(|k| (k, u64::from_be_bytes(l), sum)))
    }
}

impl PageStore for DiskStore {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn read(&self, key: &PageKey) -> Result<Option<Bytes>, NodeError> {
        let path = self.path_of(key);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = || NodeError::Corrupt(format!("{} page {} ({})", key.path, key.page, path.display()));
        let (k, len, sum) = match Self::read_header(&mut f) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => return Err(corrupt()),
        };
        if &k != key || len > 64 << 20 {
            return Err(corrupt());
        }
        let mut data = Vec::with_capacity(len as usize);
        f.read_to_end(&mut data)?;
        if data.len() as u64 != len || blake3::hash(&data).as_bytes() != &sum {
            return Err(corrupt());
        }
        Ok(Some(Bytes::from(data)))
    }

    fn write(&self, key: &PageKey, data: &Bytes) -> Result<(), NodeError> {
        let path = self.path_of(key);
        let parent = path.parent().expect("page files live in a subdirectory");
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{}.tmp", key.file_name()));
        let kb = key.encode();
        let mut f = File::create(&tmp)?;
        let mut header = Vec::with_capacity(8 + 4 + kb.len() + 8 + 32);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(kb.len() as u32).to_be_bytes());
        header.extend_from_slice(&kb);
        header.extend_from_slice(&(data.len() as u64).to_be_bytes());
        header.extend_from_slice(blake3::hash(data).as_bytes());
        f.write_all(&header)?;
        f.write_all(data)?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    fn delete(&self, key: &PageKey) {
        let _ = std::fs::remove_file(self.path_of(key));
    }

    fn scan(&self) -> Vec<(PageKey, u64)> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(self.dir.join("pages")) else { return out };
        for d in dirs.flatten() {
            let Ok(files) = std::fs::read_dir(d.path()) else { continue };
            for f in files.flatten() {
                let p = f.path();
                if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
                    let _ = std::fs::remove_file(&p); // leftover from a crash mid-write
                    continue;
                }
                match File::open(&p).and_then(|mut fh| Self::read_header(&mut fh)) {
                    Ok(Some((k, len, _))) => out.push((k, len)),
                    _ => {
                        tracing::warn!(file = %p.display(), "dropping unreadable page file");
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
        out
    }
}
