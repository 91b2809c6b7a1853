//! What to evict. A policy only orders keys; it never touches bytes.

use std::collections::{BTreeMap, HashMap};
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
    fn victim(&self, accept: &mut dyn FnMut(&K) -> bool) -> Option<K>;
}

/// Least recently used first.
#[derive(Debug)]
pub struct Lru<K> {
    tick: u64,
    by_tick: BTreeMap<u64, K>,
    ticks: HashMap<K, u64>,
}

impl<K> Default for Lru<K> {
    fn default() -> Self {
        Lru { tick: 0, by_tick: BTreeMap::new(), ticks: HashMap::new() }
    }
}

impl<K: Clone + Eq + Hash + Send + Debug> EvictionPolicy<K> for Lru<K> {
    fn insert(&mut self, key: K) {
        self.remove(&key);
        self.tick += 1;
        self.by_tick.insert(self.tick, key.clone());
        self.ticks.insert(key, self.tick);
    }

    fn access(&mut self, key: &K) {
        if self.ticks.contains_key(key) {
            self.insert(key.clone());
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some(t) = self.ticks.remove(key) {
            self.by_tick.remove(&t);
        }
    }

    fn victim(&self, accept: &mut dyn FnMut(&K) -> bool) -> Option<K> {
        self.by_tick.values().find(|k| accept(k)).cloned()
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
