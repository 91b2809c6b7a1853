//! What to evict. A policy only orders keys; it never touches bytes.

use std::fmt::Debug;
use std::hash::Hash;

/// Decides which cached key goes first when space is needed.
pub trait EvictionPolicy<K>: Send + Debug {
    /// A key was added.
    fn insert(&mut self, key: K);
    /// A key was read.
    fn access(&mut self, key: &K);
    /// A key was removed.
    fn remove(&mut self, key: &K);
    /// The first key, in eviction order, that `accept` takes.
    fn victim(&mut self, accept: &mut dyn FnMut(&K) -> bool) -> Option<K>;
    /// Whether `key`, not cached, should displace the next victim of a
    /// full tier (false: the victim is worth more; `key` is not cached).
    fn admit(&mut self, _key: &K) -> bool {
        true
    }
}

/// Least recently used first (an [`lru::LruCache`] of keys).
#[derive(Debug)]
pub struct Lru<K: Hash + Eq> {
    order: lru::LruCache<K, ()>,
}

impl<K: Hash + Eq> Default for Lru<K> {
    fn default() -> Self {
        Lru { order: lru::LruCache::unbounded() }
    }
}

impl<K: Clone + Eq + Hash + Send + Debug> EvictionPolicy<K> for Lru<K> {
    fn insert(&mut self, key: K) {
        self.order.put(key, ());
    }

    fn access(&mut self, key: &K) {
        self.order.promote(key);
    }

    fn remove(&mut self, key: &K) {
        self.order.pop(key);
    }

    fn victim(&mut self, accept: &mut dyn FnMut(&K) -> bool) -> Option<K> {
        self.order.iter().rev().map(|(k, _)| k).find(|k| accept(k)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_order() {
        let mut p = Lru::default();
        p.insert(1);
        p.insert(2);
        p.insert(3);
        p.access(&1);
        assert_eq!(p.victim(&mut |_| true), Some(2));
        p.remove(&2);
        assert_eq!(p.victim(&mut |_| true), Some(3));
        assert_eq!(p.victim(&mut |k| *k != 3), Some(1));
        p.access(&99);
        assert_eq!(p.victim(&mut |k| *k == 99), None);
    }
}
