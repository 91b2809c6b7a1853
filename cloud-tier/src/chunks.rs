//! Content-addressed chunks sent by edge agents, kept until objects are
//! committed from them and afterwards for dedup, within a byte budget.
//!
//! A chunk is the file `DIR/ab/HASH` (its BLAKE3 in hex, `ab` the first two
//! digits) holding the decoded bytes. Chunks are not fsynced: a chunk the
//! node lost in a crash is simply reported missing at commit time and the
//! edge sends it again (it keeps its data until the commit is acknowledged,
//! and the commit goes through the fsynced journal). When the store grows
//! past its budget, the least recently used chunks are deleted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use ferry_protocol::codec::ChunkHash;

use crate::error::NodeError;

/// The chunk store of one node.
#[derive(Debug)]
pub struct ChunkStore {
    dir: PathBuf,
    budget: AtomicU64,
    used: AtomicU64,
    next_tmp: AtomicU64,
}

impl ChunkStore {
    /// Opens (creating) the store in `dir`, keeping at most `budget` bytes.
    pub fn open(dir: &Path, budget: u64) -> Result<ChunkStore, NodeError> {
        std::fs::create_dir_all(dir)?;
        let mut used = 0;
        for sub in std::fs::read_dir(dir)?.flatten() {
            if !sub.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            for f in std::fs::read_dir(sub.path())?.flatten() {
                if f.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(f.path());
                } else if let Ok(m) = f.metadata() {
                    used += m.len();
                }
            }
        }
        Ok(ChunkStore {
            dir: dir.to_path_buf(),
            budget: AtomicU64::new(budget),
            used: AtomicU64::new(used),
            next_tmp: AtomicU64::new(0),
        })
    }

    /// Changes the byte budget.
    pub fn set_budget(&self, budget: u64) {
        self.budget.store(budget, Ordering::SeqCst);
    }

    fn path(&self, hash: &ChunkHash) -> PathBuf {
        let hex = hex::encode(hash);
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Whether the chunk is here.
    pub fn has(&self, hash: &ChunkHash) -> bool {
        self.path(hash).exists()
    }

    /// The chunks among `hashes` that are not here (each once).
    pub fn missing(&self, hashes: &[ChunkHash]) -> Vec<ChunkHash> {
        let mut seen = std::collections::HashSet::new();
        hashes.iter().filter(|h| seen.insert(**h) && !self.has(h)).copied().collect()
    }

    /// Keeps decoded, verified chunk bytes.
    pub async fn put(&self, hash: &ChunkHash, raw: Vec<u8>) -> Result<(), NodeError> {
        let path = self.path(hash);
        if path.exists() {
            return Ok(());
        }
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{n}.tmp"));
        let len = raw.len() as u64;
        let parent = path.parent().expect("chunk paths have a parent").to_path_buf();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&parent)?;
            std::fs::write(&tmp, &raw)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| NodeError::task("chunk task", e))??;
        if self.used.fetch_add(len, Ordering::SeqCst) + len > self.budget.load(Ordering::SeqCst) {
            self.trim().await;
        }
        Ok(())
    }

    /// Reads a chunk back, checking its hash; a chunk that fails is deleted
    /// and reported as missing (`None`).
    pub async fn read(&self, hash: &ChunkHash) -> Result<Option<Vec<u8>>, NodeError> {
        let path = self.path(hash);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if blake3::hash(&bytes).as_bytes() != hash {
            tracing::warn!(chunk = %hex::encode(hash), "dropping a corrupt chunk");
            let _ = tokio::fs::remove_file(&path).await;
            self.used.fetch_sub(bytes.len() as u64, Ordering::SeqCst);
            return Ok(None);
        }
        // Mark it recently used for the budget.
        let _ = std::fs::File::options().append(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some(bytes))
    }

    /// Deletes least recently used chunks until the store is under 80 % of its budget.
    async fn trim(&self) {
        let (dir, target) = (self.dir.clone(), self.budget.load(Ordering::SeqCst) / 10 * 8);
        let used = self.used.load(Ordering::SeqCst);
        let freed = tokio::task::spawn_blocking(move || {
            let mut all: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
            for sub in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                for f in std::fs::read_dir(sub.path()).into_iter().flatten().flatten() {
                    if let Ok(m) = f.metadata() {
                        all.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), f.path()));
                    }
                }
            }
            all.sort();
            let mut freed = 0u64;
            for (_, len, p) in all {
                if used.saturating_sub(freed) <= target {
                    break;
                }
                if std::fs::remove_file(&p).is_ok() {
                    freed += len;
                }
            }
            freed
        })
        .await
        .unwrap_or(0);
        self.used.fetch_sub(freed.min(self.used.load(Ordering::SeqCst)), Ordering::SeqCst);
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }
}
