//! The prefetch ledger: which pages were fetched ahead, how many bytes they
//! hold against the budget, which were read, and what that says about the
//! predictions (precision and coverage). Used by the cache node's prefetch
//! and by the mount's; pure, with time passed in, so it is tested with plain
//! calls.
//!
//! A page is *issued* when prefetch decides to fetch it. Its bytes count
//! against the budget until the page is dropped: the caller drops a page
//! once it has no use for it (the node as soon as it is read, since the
//! page cache holds the bytes; the mount when it needs room, since its
//! ledger entries hold the bytes). To make room the ledger drops, oldest
//! first, pages already read and pages not read within [`STALE_MS`] (wrong
//! guesses); a page dropped unread counts as wasted.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A prefetched page not read within this long (milliseconds) was a wrong guess.
pub const STALE_MS: i64 = 30_000;

/// Pages fetched ahead of a sequential reader, inside one file (the node's
/// read streams and the mount's read handles alike).
pub const READAHEAD_PAGES: u64 = 4;

#[derive(Debug)]
struct Slot {
    bytes: u64,
    at_ms: i64,
    used: bool,
}

/// Where a demand page came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// A prefetched page.
    Prefetched,
    /// Readahead within the file (or a page the reader held already).
    Readahead,
    /// Neither: fetched (or found in a cache) on demand.
    Fetched,
}

/// What the ledger counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes of pages issued.
    pub issued_bytes: u64,
    /// Bytes of issued pages that were read.
    pub useful_bytes: u64,
    /// Bytes of issued pages dropped unread.
    pub wasted_bytes: u64,
    /// Demand pages counted with [`Ledger::demand`].
    pub demand_pages: u64,
    /// ...of which prefetched.
    pub prefetch_hits: u64,
    /// ...of which read ahead within the file.
    pub readahead_hits: u64,
    /// ...of which neither.
    pub fetched_pages: u64,
}

impl Counts {
    /// Useful bytes per issued byte (0 before anything was issued).
    pub fn precision(&self) -> f64 {
        ratio(self.useful_bytes, self.issued_bytes)
    }

    /// Demand pages prefetch had ready, per demand page prefetch could have
    /// had ready (readahead hits left out).
    pub fn coverage(&self) -> f64 {
        ratio(self.prefetch_hits, self.prefetch_hits + self.fetched_pages)
    }

    /// Demand pages found ready (prefetched or read ahead) per demand page.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.prefetch_hits + self.readahead_hits, self.demand_pages)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Issued pages keyed by `K`, within a byte budget.
#[derive(Debug)]
pub struct Ledger<K> {
    budget: u64,
    slots: HashMap<K, Slot>,
    /// Issue order: the oldest pages are looked at first when room is needed.
    order: VecDeque<K>,
    held: u64,
    counts: Counts,
}

impl<K: Hash + Eq + Clone> Ledger<K> {
    /// An empty ledger holding at most `budget` bytes of issued pages.
    pub fn new(budget: u64) -> Ledger<K> {
        Ledger { budget, slots: HashMap::new(), order: VecDeque::new(), held: 0, counts: Counts::default() }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes of the pages in the ledger.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether `key` is in the ledger.
    pub fn contains(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    /// Issues `key` (`bytes` long) at `now_ms`, making room if needed.
    /// Returns the pages dropped to make room, or `None` (and nothing
    /// issued) when it does not fit even then. Issuing a page the ledger
    /// holds changes nothing.
    pub fn issue(&mut self, key: K, bytes: u64, now_ms: i64) -> Option<Vec<K>> {
        if self.slots.contains_key(&key) {
            return Some(Vec::new());
        }
        let dropped = self.make_room(bytes, now_ms)?;
        self.slots.insert(key.clone(), Slot { bytes, at_ms: now_ms, used: false });
        self.order.push_back(key);
        self.held += bytes;
        self.counts.issued_bytes += bytes;
        Some(dropped)
    }

    /// A demand read of issued page `key`: it was useful. Returns the bytes
    /// this read made useful (0 when the page was read before), or `None`
    /// when `key` is not in the ledger.
    pub fn read(&mut self, key: &K) -> Option<u64> {
        let slot = self.slots.get_mut(key)?;
        if slot.used {
            return Some(0);
        }
        slot.used = true;
        self.counts.useful_bytes += slot.bytes;
        Some(slot.bytes)
    }

    /// Drops `key`; unread, its bytes count as wasted.
    pub fn forget(&mut self, key: &K) {
        if let Some(slot) = self.slots.remove(key) {
            self.release(&slot);
        }
        // `order` keeps the key until room is next made (it is skipped then)
        // or until forgotten keys are most of it.
        if self.order.len() > 2 * self.slots.len() + 64 {
            let slots = &self.slots;
            self.order.retain(|k| slots.contains_key(k));
        }
    }

    /// Drops every page not read yet (an announcement replaced the order); returns them.
    pub fn drop_unread(&mut self) -> Vec<K> {
        self.drop_unread_where(|_| true)
    }

    /// Drops the pages not read yet for which `which` holds; returns them.
    pub fn drop_unread_where(&mut self, which: impl Fn(&K) -> bool) -> Vec<K> {
        let unread: Vec<K> = self.slots.iter().filter(|(k, s)| !s.used && which(k)).map(|(k, _)| k.clone()).collect();
        for k in &unread {
            self.forget(k);
        }
        let slots = &self.slots;
        self.order.retain(|k| slots.contains_key(k));
        unread
    }

    /// Counts one demand page and where it came from.
    pub fn demand(&mut self, source: Demand) {
        let c = &mut self.counts;
        c.demand_pages += 1;
        match source {
            Demand::Prefetched => c.prefetch_hits += 1,
            Demand::Readahead => c.readahead_hits += 1,
            Demand::Fetched => c.fetched_pages += 1,
        }
    }

    fn release(&mut self, slot: &Slot) {
        self.held -= slot.bytes;
        if !slot.used {
            self.counts.wasted_bytes += slot.bytes;
        }
    }

    /// Drops pages already read and stale ones, oldest first, until
    /// `bytes` more fit in the budget; the pages dropped, or `None` if
    /// `bytes` cannot fit.
    fn make_room(&mut self, bytes: u64, now_ms: i64) -> Option<Vec<K>> {
        let mut dropped = Vec::new();
        if self.held + bytes <= self.budget {
            return Some(dropped);
        }
        let mut kept = VecDeque::with_capacity(self.order.len());
        while let Some(k) = self.order.pop_front() {
            if self.held + bytes <= self.budget {
                kept.push_back(k);
                continue;
            }
            let Some(slot) = self.slots.get(&k) else { continue };
            if slot.used || now_ms - slot.at_ms > STALE_MS {
                let slot = self.slots.remove(&k).expect("just found");
                self.release(&slot);
                dropped.push(k);
            } else {
                kept.push_back(k);
            }
        }
        self.order = kept;
        (self.held + bytes <= self.budget).then_some(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_issued_within_the_budget_and_make_room_when_read_or_stale() {
        let mut l = Ledger::new(300);
        assert_eq!(l.issue("a", 100, 0), Some(vec![]));
        assert_eq!(l.issue("b", 100, 0), Some(vec![]));
        assert_eq!(l.issue("c", 100, 1_000), Some(vec![]));
        assert_eq!(l.issue("c", 100, 1_000), Some(vec![]), "issuing twice is a no-op");
        assert_eq!(l.held(), 300);
        // Full, and nothing read or stale yet: refused, nothing changes.
        assert_eq!(l.issue("d", 100, 2_000), None);
        assert_eq!((l.held(), l.counts().issued_bytes), (300, 300));
        // A read page makes room first.
        assert_eq!(l.read(&"b"), Some(100));
        assert_eq!(l.read(&"b"), Some(0), "read again: useful once");
        assert_eq!(l.issue("d", 100, 2_000), Some(vec!["b"]));
        assert!(!l.contains(&"b") && l.contains(&"a"));
        // Stale unread pages go, and count as wasted.
        assert_eq!(l.issue("e", 100, STALE_MS + 500), Some(vec!["a"]));
        assert!(!l.contains(&"a"));
        assert_eq!(l.counts().wasted_bytes, 100);
        // "c" was issued later: not stale yet at that time.
        assert!(l.contains(&"c"));
        let c = l.counts();
        assert_eq!((c.issued_bytes, c.useful_bytes), (500, 100));
        assert!((c.precision() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn dropped_pages_count_as_wasted_unless_read() {
        let mut l = Ledger::new(1_000);
        l.issue(1, 10, 0);
        l.issue(2, 20, 0);
        l.issue(3, 30, 0);
        l.read(&1);
        l.forget(&1);
        l.forget(&2);
        assert_eq!((l.held(), l.counts().wasted_bytes), (30, 20));
        assert_eq!(l.drop_unread(), vec![3]);
        assert_eq!((l.held(), l.counts().wasted_bytes), (0, 50));
        assert_eq!(l.read(&3), None);
    }

    #[test]
    fn forgotten_pages_do_not_pile_up_in_the_issue_order() {
        // The node forgets each page as it is read, far below its budget.
        let mut l = Ledger::new(u64::MAX);
        for page in 0..10_000u64 {
            l.issue(page, 1, 0);
            l.read(&page);
            l.forget(&page);
        }
        assert!(l.order.len() <= 64, "{} keys kept for 0 pages", l.order.len());
        assert_eq!(l.counts().useful_bytes, 10_000);
    }

    #[test]
    fn coverage_and_hit_ratio_come_from_demand_pages() {
        let mut l: Ledger<u32> = Ledger::new(0);
        assert_eq!(l.counts().coverage(), 0.0);
        for d in [Demand::Prefetched, Demand::Prefetched, Demand::Readahead, Demand::Fetched] {
            l.demand(d);
        }
        let c = l.counts();
        assert!((c.coverage() - 2.0 / 3.0).abs() < 1e-9);
        assert!((c.hit_ratio() - 0.75).abs() < 1e-9);
    }
}
