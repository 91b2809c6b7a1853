//! A tier: a [`PageStore`] plus an index of what it holds, a capacity, per-mount
//! quotas and an [`EvictionPolicy`] deciding what leaves when space runs out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::eviction::EvictionPolicy;
use super::storage::{PageKey, PageStore};
use crate::error::NodeError;

#[derive(Debug)]
struct Index {
    policy: Box<dyn EvictionPolicy<PageKey>>,
    sizes: HashMap<PageKey, u64>,
    used: u64,
    per_mount: HashMap<Arc<str>, u64>,
}

impl Index {
    fn remove(&mut self, key: &PageKey) -> bool {
        if let Some(sz) = self.sizes.remove(key) {
            self.used -= sz;
            if let Some(m) = self.per_mount.get_mut(&key.mount) {
                *m -= sz;
            }
            self.policy.remove(key);
            true
        } else {
            false
        }
    }
}

/// One cache tier.
#[derive(Debug)]
pub struct Tier {
    store: Box<dyn PageStore>,
    index: Mutex<Index>,
    capacity: u64,
    quotas: HashMap<Arc<str>, u64>,
}

impl Tier {
    /// Opens a tier, loading the store's persisted pages into the index
    /// (and evicting down to capacity if the configuration shrank).
    pub fn open(
        store: Box<dyn PageStore>,
        policy: Box<dyn EvictionPolicy<PageKey>>,
        capacity: u64,
        quotas: HashMap<Arc<str>, u64>,
    ) -> Tier {
        let tier = Tier {
            index: Mutex::new(Index { policy, sizes: HashMap::new(), used: 0, per_mount: HashMap::new() }),
            store,
            capacity,
            quotas,
        };
        let found = tier.store.scan();
        if !found.is_empty() {
            tracing::info!(tier = tier.store.name(), pages = found.len(), "reopened cached pages");
        }
        for (key, size) in found {
            let quota = tier.quotas.get(&key.mount).copied().filter(|q| *q > 0).unwrap_or(u64::MAX);
            if size > tier.capacity || size > quota {
                tier.store.delete(&key);
                continue;
            }
            let evicted = tier.account(key, size);
            for k in evicted {
                tier.store.delete(&k);
            }
        }
        tier
    }

    /// The tier's name.
    pub fn name(&self) -> &'static str {
        self.store.name()
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.index.lock().expect("tier index lock poisoned").used
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.index.lock().expect("tier index lock poisoned").sizes.len()
    }

    /// Whether the tier holds no page.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the index lists `key`.
    pub fn contains(&self, key: &PageKey) -> bool {
        self.index.lock().expect("tier index lock poisoned").sizes.contains_key(key)
    }

    /// Reads a page. A page failing its checksum is removed and reported as `Corrupt`.
    pub fn get(&self, key: &PageKey) -> Result<Option<Bytes>, NodeError> {
        if !self.contains(key) {
            return Ok(None);
        }
        match self.store.read(key) {
            Ok(Some(b)) => {
                self.index.lock().expect("tier index lock poisoned").policy.access(key);
                Ok(Some(b))
            }
            Ok(None) => {
                self.index.lock().expect("tier index lock poisoned").remove(key);
                Ok(None)
            }
            Err(e) => {
                self.index.lock().expect("tier index lock poisoned").remove(key);
                self.store.delete(key);
                Err(e)
            }
        }
    }

    /// Adds `key` to the index and returns the keys evicted to make room.
    fn account(&self, key: PageKey, size: u64) -> Vec<PageKey> {
        let mut idx = self.index.lock().expect("tier index lock poisoned");
        idx.remove(&key);
        let quota = self.quotas.get(&key.mount).copied().filter(|q| *q > 0);
        let mut evicted = Vec::new();
        // Over the mount's quota: evict that mount's oldest pages.
        if let Some(q) = quota {
            while idx.per_mount.get(&key.mount).copied().unwrap_or(0) + size > q {
                let mount = key.mount.clone();
                let Some(v) = idx.policy.victim(&mut |k: &PageKey| k.mount == mount) else { break };
                idx.remove(&v);
                evicted.push(v);
            }
        }
        while idx.used + size > self.capacity {
            let Some(v) = idx.policy.victim(&mut |_| true) else { break };
            idx.remove(&v);
            evicted.push(v);
        }
        idx.used += size;
        *idx.per_mount.entry(key.mount.clone()).or_insert(0) += size;
        idx.sizes.insert(key.clone(), size);
        idx.policy.insert(key);
        evicted
    }

    /// Stores a page, evicting others if needed. Pages larger than the
    /// tier or the mount's quota are not stored.
    pub fn insert(&self, key: PageKey, data: Bytes) -> Result<(), NodeError> {
        let size = data.len() as u64;
        let quota = self.quotas.get(&key.mount).copied().filter(|q| *q > 0).unwrap_or(u64::MAX);
        if size > self.capacity || size > quota {
            return Ok(());
        }
        {
            let mut idx = self.index.lock().expect("tier index lock poisoned");
            let full = !idx.sizes.contains_key(&key) && idx.used + size > self.capacity;
            if full && !idx.policy.admit(&key) {
                return Ok(());
            }
        }
        self.store.write(&key, &data)?;
        for k in self.account(key, size) {
            self.store.delete(&k);
        }
        Ok(())
    }

    /// Removes a page.
    pub fn remove(&self, key: &PageKey) {
        self.index.lock().expect("tier index lock poisoned").remove(key);
        self.store.delete(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::eviction::Lru;
    use crate::cache::storage::{DiskStore, MemoryStore};

    fn key(mount: &str, page: u64) -> PageKey {
        PageKey { mount: mount.into(), path: format!("{mount}/f").into(), version: "v1".into(), page }
    }

    /// The same suite for every page store.
    fn suite(make: &dyn Fn() -> Box<dyn PageStore>) {
        let t = Tier::open(make(), Box::new(Lru::default()), 300, HashMap::from([(Arc::from("/q"), 150)]));
        for p in 0..3 {
            t.insert(key("/a", p), Bytes::from(vec![p as u8; 100])).expect("insert");
        }
        assert_eq!(t.used(), 300);
        assert_eq!(t.get(&key("/a", 0)).expect("read").expect("present")[..], [0u8; 100][..]);
        // Page 1 is now least recently used and goes first.
        t.insert(key("/a", 3), Bytes::from(vec![3; 100])).expect("insert");
        assert!(t.get(&key("/a", 1)).expect("read").is_none());
        assert!(t.get(&key("/a", 0)).expect("read").is_some());
        // Quota: /q may hold 150 bytes, so its second page evicts its first, not /a's pages.
        t.insert(key("/q", 0), Bytes::from(vec![9; 100])).expect("insert");
        t.insert(key("/q", 1), Bytes::from(vec![8; 100])).expect("insert");
        assert!(t.get(&key("/q", 0)).expect("read").is_none());
        assert!(t.get(&key("/q", 1)).expect("read").is_some());
        assert!(t.used() <= 300);
        // A page bigger than the tier is not stored.
        t.insert(key("/a", 9), Bytes::from(vec![0; 301])).expect("insert");
        assert!(!t.contains(&key("/a", 9)));
    }

    #[test]
    fn memory_tier_suite() {
        suite(&|| Box::new(MemoryStore::default()));
    }

    #[test]
    fn disk_tier_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().to_path_buf();
        suite(&move || Box::new(DiskStore::open(&p).expect("open")));
    }

    #[test]
    fn disk_tier_reopens_warm_and_detects_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let t = Tier::open(
                Box::new(DiskStore::open(dir.path()).expect("open")),
                Box::new(Lru::default()),
                1000,
                HashMap::new(),
            );
            t.insert(key("/a", 0), Bytes::from_static(b"hello")).expect("insert");
            t.insert(key("/a", 1), Bytes::from_static(b"world")).expect("insert");
        }
        let store = DiskStore::open(dir.path()).expect("open");
        let victim = store.path_of(&key("/a", 1));
        let t = Tier::open(Box::new(store), Box::new(Lru::default()), 1000, HashMap::new());
        assert_eq!(t.len(), 2);
        assert_eq!(&t.get(&key("/a", 0)).expect("read").expect("present")[..], b"hello");
        // Flip the last byte of the second page.
        let mut raw = std::fs::read(&victim).expect("read page file");
        let n = raw.len();
        raw[n - 1] ^= 0xff;
        std::fs::write(&victim, raw).expect("write page file");
        assert!(matches!(t.get(&key("/a", 1)), Err(NodeError::Corrupt(_))));
        assert!(!t.contains(&key("/a", 1)));
        assert!(!victim.exists());
        // Reopening with a smaller capacity evicts down to it.
        drop(t);
        let t = Tier::open(
            Box::new(DiskStore::open(dir.path()).expect("open")),
            Box::new(Lru::default()),
            4,
            HashMap::new(),
        );
        assert_eq!(t.used(), 0);
    }
}
