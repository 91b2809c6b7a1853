//! Eviction by the future readers announced: Belady's rule over the pages
//! their orders name.
//!
//! A training job that announces its read order tells the cache exactly
//! when each page will be wanted again. [`Future`] keeps each reader's
//! order and how far along it the reader has got (every page read moves
//! the reader's cursor to that page's place, when it lies just ahead).
//! [`Announced`], a tier's policy, then evicts first the pages no order
//! reads again (least recently used first), then the page whose next read
//! is furthest away. With no order announced it is plain LRU.
//!
//! With a cache a quarter of a shuffled dataset, LRU keeps almost nothing
//! an epoch reads again (each page is evicted before its turn comes); this
//! policy keeps the pages read soonest, so an epoch hits what the cache
//! can hold.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::eviction::EvictionPolicy;
use super::storage::PageKey;

/// A page as an announced order names it: its namespace path and index.
pub type Upcoming = (Arc<str>, u64);

/// Most pages all announced orders together may name.
pub const MAX_POSITIONS: usize = 1 << 24;
/// Most readers with an order; past it, the oldest order is forgotten.
pub const MAX_READERS: usize = 256;

/// Why an announced order was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FutureError {
    /// The orders would name more pages than the node keeps.
    #[error("announced orders would name {0} pages; at most {MAX_POSITIONS} are kept")]
    TooLong(usize),
}

/// The orders readers announced and how far each has read.
#[derive(Debug, Default)]
pub struct Future {
    inner: Mutex<Orders>,
}

#[derive(Debug, Default)]
struct Orders {
    by_reader: HashMap<String, Order>,
    next_id: u64,
    /// Bumped when an order is added, replaced or forgotten.
    generation: u64,
}

#[derive(Debug)]
struct Order {
    /// Changes whenever the order does, so policies rebuild their view.
    id: u64,
    seq: Vec<Upcoming>,
    /// Each page's places in `seq`, ascending.
    at: HashMap<Upcoming, Vec<u32>>,
    /// Places before it were read.
    cursor: u32,
}

impl Order {
    fn new(id: u64, seq: Vec<Upcoming>, cursor: u32) -> Order {
        let mut at: HashMap<Upcoming, Vec<u32>> = HashMap::with_capacity(seq.len());
        for (i, u) in seq.iter().enumerate() {
            at.entry(u.clone()).or_default().push(i as u32);
        }
        Order { id, seq, at, cursor }
    }

    /// The first place of `u` at or after `from`.
    fn first_from(&self, u: &Upcoming, from: u32) -> Option<u32> {
        let v = self.at.get(u)?;
        v.get(v.partition_point(|p| *p < from)).copied()
    }

    /// How far ahead of the cursor a read still counts as following the
    /// order (readers run a little out of order; prefetch runs ahead).
    fn window(&self) -> u32 {
        1024 + (self.seq.len() / 64) as u32
    }
}

impl Future {
    /// `reader` will read `pages` in this order: they replace its previous
    /// order, or with `append` follow it. Returns the pages now in
    /// `reader`'s order.
    pub fn announce(&self, reader: &str, pages: Vec<Upcoming>, append: bool) -> Result<usize, FutureError> {
        let mut f = self.inner.lock().expect("future lock poisoned");
        let kept: usize =
            f.by_reader.iter().filter(|(r, _)| append || r.as_str() != reader).map(|(_, o)| o.seq.len()).sum();
        let total = kept + pages.len();
        if total > MAX_POSITIONS {
            return Err(FutureError::TooLong(total));
        }
        if !f.by_reader.contains_key(reader) && f.by_reader.len() >= MAX_READERS {
            if let Some(oldest) = f.by_reader.iter().min_by_key(|(_, o)| o.id).map(|(r, _)| r.clone()) {
                f.by_reader.remove(&oldest);
            }
        }
        let (seq, cursor) = match f.by_reader.remove(reader) {
            Some(prev) if append => {
                let mut seq = prev.seq;
                seq.extend(pages);
                (seq, prev.cursor)
            }
            _ => (pages, 0),
        };
        f.next_id += 1;
        let id = f.next_id;
        let n = seq.len();
        f.by_reader.insert(reader.to_string(), Order::new(id, seq, cursor));
        f.generation += 1;
        Ok(n)
    }

    /// Page `u` was read: each order that reads it just ahead of its
    /// cursor moves past it. An order read to its end is forgotten.
    pub fn saw(&self, u: &Upcoming) {
        let mut f = self.inner.lock().expect("future lock poisoned");
        if f.by_reader.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for (reader, o) in f.by_reader.iter_mut() {
            if let Some(p) = o.first_from(u, o.cursor) {
                if p < o.cursor.saturating_add(o.window()) {
                    o.cursor = p + 1;
                    if o.cursor as usize >= o.seq.len() {
                        done.push(reader.clone());
                    }
                }
            }
        }
        for r in done {
            f.by_reader.remove(&r);
            f.generation += 1;
        }
    }

    /// Readers with an order, and the pages their orders still name.
    pub fn pending(&self) -> (usize, usize) {
        let f = self.inner.lock().expect("future lock poisoned");
        (f.by_reader.len(), f.by_reader.values().map(|o| o.seq.len() - o.cursor as usize).sum())
    }
}

fn upcoming(k: &PageKey) -> Upcoming {
    (k.path.clone(), k.page)
}

/// A tier's eviction by announced orders (Belady), LRU for the rest.
#[derive(Debug)]
pub struct Announced {
    future: Arc<Future>,
    /// Cached keys no order reads again, least recently used last.
    idle: lru::LruCache<PageKey, ()>,
    /// Per order (by id): the cursor this view has caught up to, and the
    /// cached keys by their next place in it.
    ranked: HashMap<u64, (u32, BTreeSet<(u32, PageKey)>)>,
    /// Cached keys some order reads again: (order id, next place) each.
    next: HashMap<PageKey, Vec<(u64, u32)>>,
    /// Cached keys by the page they hold (several versions may be cached).
    keys_of: HashMap<Upcoming, Vec<PageKey>>,
    /// The orders' generation this view has.
    seen: u64,
}

impl Announced {
    /// A policy ranking keys by `future`.
    pub fn new(future: Arc<Future>) -> Announced {
        Announced {
            future,
            idle: lru::LruCache::unbounded(),
            ranked: HashMap::new(),
            next: HashMap::new(),
            keys_of: HashMap::new(),
            seen: 0,
        }
    }

    /// `key` is no longer next read by order `id`.
    fn leave(
        next: &mut HashMap<PageKey, Vec<(u64, u32)>>,
        idle: &mut lru::LruCache<PageKey, ()>,
        key: &PageKey,
        id: u64,
    ) {
        if let Some(v) = next.get_mut(key) {
            v.retain(|(o, _)| *o != id);
            if v.is_empty() {
                next.remove(key);
                idle.put(key.clone(), ());
            }
        }
    }

    /// Brings the view up to date with the orders: new orders ranked,
    /// gone ones dropped, cursors followed.
    fn sync(&mut self, f: &Orders) {
        let Announced { idle, ranked, next, keys_of, seen, .. } = self;
        let gone: Vec<u64> = if *seen == f.generation {
            Vec::new()
        } else {
            let live: std::collections::HashSet<u64> = f.by_reader.values().map(|o| o.id).collect();
            ranked.keys().filter(|id| !live.contains(id)).copied().collect()
        };
        *seen = f.generation;
        for id in gone {
            if let Some((_, set)) = ranked.remove(&id) {
                for (_, k) in set {
                    Self::leave(next, idle, &k, id);
                }
            }
        }
        for o in f.by_reader.values() {
            match ranked.get_mut(&o.id) {
                None => {
                    let mut set = BTreeSet::new();
                    if !keys_of.is_empty() {
                        for (i, u) in o.seq.iter().enumerate().skip(o.cursor as usize) {
                            let Some(ks) = keys_of.get(u) else { continue };
                            for k in ks {
                                let e = next.entry(k.clone()).or_default();
                                if !e.iter().any(|(id, _)| *id == o.id) {
                                    e.push((o.id, i as u32));
                                    set.insert((i as u32, k.clone()));
                                    idle.pop(k);
                                }
                            }
                        }
                    }
                    ranked.insert(o.id, (o.cursor, set));
                }
                Some((synced, set)) if *synced < o.cursor => {
                    for pos in *synced..o.cursor {
                        let u = &o.seq[pos as usize];
                        let Some(ks) = keys_of.get(u) else { continue };
                        for k in ks {
                            if !set.remove(&(pos, k.clone())) {
                                continue;
                            }
                            match o.first_from(u, o.cursor) {
                                Some(p) => {
                                    set.insert((p, k.clone()));
                                    if let Some(e) =
                                        next.get_mut(k).and_then(|v| v.iter_mut().find(|(id, _)| *id == o.id))
                                    {
                                        e.1 = p;
                                    }
                                }
                                None => Self::leave(next, idle, k, o.id),
                            }
                        }
                    }
                    *synced = o.cursor;
                }
                Some(_) => {}
            }
        }
    }

    /// The cached key `accept` takes that is read again furthest from now
    /// (each order's furthest, by the nearest of its reads in any order),
    /// and how far ahead that read is.
    fn furthest(&self, f: &Orders, accept: &mut dyn FnMut(&PageKey) -> bool) -> Option<(u32, PageKey)> {
        let cursor: HashMap<u64, u32> = f.by_reader.values().map(|o| (o.id, o.cursor)).collect();
        let mut best: Option<(u32, &PageKey)> = None;
        for (_, set) in self.ranked.values() {
            let Some((_, k)) = set.iter().rev().find(|(_, k)| accept(k)) else { continue };
            let soonest = self
                .next
                .get(k)
                .into_iter()
                .flatten()
                .map(|(id, p)| p.saturating_sub(cursor.get(id).copied().unwrap_or(0)))
                .min();
            let d = soonest.unwrap_or(u32::MAX);
            if best.is_none_or(|(bd, _)| d > bd) {
                best = Some((d, k));
            }
        }
        best.map(|(d, k)| (d, k.clone()))
    }

    /// Pages each order still reads, as this view ranks them.
    #[cfg(test)]
    fn ranked_keys(&self) -> usize {
        self.next.len()
    }
}

impl EvictionPolicy<PageKey> for Announced {
    fn insert(&mut self, key: PageKey) {
        self.remove(&key);
        let future = self.future.clone();
        let f = future.inner.lock().expect("future lock poisoned");
        self.sync(&f);
        let u = upcoming(&key);
        self.keys_of.entry(u.clone()).or_default().push(key.clone());
        let mut places = Vec::new();
        for o in f.by_reader.values() {
            if let Some(p) = o.first_from(&u, o.cursor) {
                places.push((o.id, p));
                if let Some((_, set)) = self.ranked.get_mut(&o.id) {
                    set.insert((p, key.clone()));
                }
            }
        }
        if places.is_empty() {
            self.idle.put(key, ());
        } else {
            self.next.insert(key, places);
        }
    }

    fn access(&mut self, key: &PageKey) {
        self.idle.promote(key);
    }

    fn remove(&mut self, key: &PageKey) {
        self.idle.pop(key);
        if let Some(places) = self.next.remove(key) {
            for (id, p) in places {
                if let Some((_, set)) = self.ranked.get_mut(&id) {
                    set.remove(&(p, key.clone()));
                }
            }
        }
        let u = upcoming(key);
        if let Some(v) = self.keys_of.get_mut(&u) {
            v.retain(|k| k != key);
            if v.is_empty() {
                self.keys_of.remove(&u);
            }
        }
    }

    fn victim(&mut self, accept: &mut dyn FnMut(&PageKey) -> bool) -> Option<PageKey> {
        let future = self.future.clone();
        let f = future.inner.lock().expect("future lock poisoned");
        self.sync(&f);
        if let Some(k) = self.idle.iter().rev().map(|(k, _)| k).find(|k| accept(k)) {
            return Some(k.clone());
        }
        self.furthest(&f, accept).map(|(_, k)| k)
    }

    fn admit(&mut self, key: &PageKey) -> bool {
        let future = self.future.clone();
        let f = future.inner.lock().expect("future lock poisoned");
        self.sync(&f);
        if !self.idle.is_empty() || self.ranked.is_empty() {
            return true;
        }
        // Every cached page is read again: `key` displaces the one read
        // last only if it is read before that one (Belady's choice among
        // the cached pages and the newcomer).
        let u = upcoming(key);
        let Some(mine) = f.by_reader.values().filter_map(|o| Some(o.first_from(&u, o.cursor)? - o.cursor)).min() else {
            return false;
        };
        self.furthest(&f, &mut |_| true).is_none_or(|(d, _)| mine < d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, page: u64) -> PageKey {
        PageKey { mount: "/".into(), path: path.into(), version: "v1".into(), page }
    }

    fn up(path: &str, page: u64) -> Upcoming {
        (path.into(), page)
    }

    #[test]
    fn without_orders_it_is_lru() {
        let mut p = Announced::new(Arc::new(Future::default()));
        for i in 0..3 {
            p.insert(key("/f", i));
        }
        p.access(&key("/f", 0));
        assert_eq!(p.victim(&mut |_| true), Some(key("/f", 1)));
        p.remove(&key("/f", 1));
        assert_eq!(p.victim(&mut |_| true), Some(key("/f", 2)));
        assert_eq!(p.victim(&mut |k| k.page != 2), Some(key("/f", 0)));
    }

    #[test]
    fn evicts_what_is_read_last_and_what_is_never_read_first() {
        let future = Arc::new(Future::default());
        let mut p = Announced::new(future.clone());
        for i in 0..4 {
            p.insert(key("/f", i));
        }
        // Order: 2, 0, 3 (page 1 is never read again).
        future.announce("r", vec![up("/f", 2), up("/f", 0), up("/f", 3)], false).expect("announce");
        assert_eq!(p.victim(&mut |_| true), Some(key("/f", 1)));
        p.remove(&key("/f", 1));
        assert_eq!(p.victim(&mut |_| true), Some(key("/f", 3)), "read last");
        // Page 2 is read: it is not read again, so it goes first now.
        future.saw(&up("/f", 2));
        p.access(&key("/f", 2));
        assert_eq!(p.victim(&mut |_| true), Some(key("/f", 2)));
        assert_eq!(p.victim(&mut |k| k.page != 2), Some(key("/f", 3)));
        // A key inserted later is ranked by the order too.
        p.insert(key("/f", 9));
        assert_eq!(p.victim(&mut |k| k.page != 2), Some(key("/f", 9)), "never read: before the ranked");
        p.remove(&key("/f", 9));
        p.remove(&key("/f", 2));
        assert_eq!(p.ranked_keys(), 2);
        // Every cached page (0, 3) is read again: a page never read again
        // is not worth caching, one read before page 3 is.
        assert!(!p.admit(&key("/f", 7)));
        future.announce("r", vec![up("/f", 0), up("/f", 8), up("/f", 3)], false).expect("announce");
        assert!(p.admit(&key("/f", 8)));
        assert!(!p.admit(&key("/f", 7)));
    }

    #[test]
    fn a_read_far_off_the_order_does_not_move_it_and_a_finished_order_is_forgotten() {
        let future = Arc::new(Future::default());
        let pages: Vec<Upcoming> = (0..5000).map(|i| up("/d", i)).collect();
        future.announce("r", pages, false).expect("announce");
        future.saw(&up("/d", 4999));
        assert_eq!(future.pending(), (1, 5000), "a read far ahead is not the reader's");
        for i in 0..3000 {
            future.saw(&up("/d", i));
        }
        assert_eq!(future.pending(), (1, 2000));
        future.announce("r", (0..10).map(|i| up("/e", i)).collect(), true).expect("append");
        assert_eq!(future.pending(), (1, 2010), "appended after what is left");
        for i in 3000..5000 {
            future.saw(&up("/d", i));
        }
        for i in 0..10 {
            future.saw(&up("/e", i));
        }
        assert_eq!(future.pending(), (0, 0));
    }

    #[test]
    fn readers_orders_are_their_own_and_bounded() {
        let future = Arc::new(Future::default());
        let mut p = Announced::new(future.clone());
        p.insert(key("/a", 0));
        p.insert(key("/b", 0));
        future.announce("r1", vec![up("/x", 0), up("/x", 1), up("/a", 0)], false).expect("announce");
        future.announce("r2", vec![up("/b", 0)], false).expect("announce");
        // /a is read third by r1, /b first by r2: /a goes.
        assert_eq!(p.victim(&mut |_| true), Some(key("/a", 0)));
        // r1 replaces its order: /a is never read now, /b still by r2.
        future.announce("r1", vec![up("/x", 0)], false).expect("announce");
        assert_eq!(p.victim(&mut |_| true), Some(key("/a", 0)));
        p.remove(&key("/a", 0));
        assert_eq!(p.victim(&mut |_| true), Some(key("/b", 0)));
        let big = vec![up("/y", 0); MAX_POSITIONS];
        assert_eq!(future.announce("r3", big, false), Err(FutureError::TooLong(MAX_POSITIONS + 2)));
        assert_eq!(future.pending(), (2, 2), "a refused order changes nothing");
    }

    /// The reason for the policy: shuffled epochs over a dataset four
    /// times the cache.
    #[test]
    fn shuffled_epochs_hit_more_than_lru() {
        fn run(policy: &mut dyn EvictionPolicy<PageKey>, future: Option<&Future>) -> f64 {
            let (n, cap, epochs) = (400u64, 100usize, 4u64);
            let mut held = std::collections::HashSet::new();
            let (mut hits, mut reads) = (0, 0);
            let mut order: Vec<u64> = (0..n).collect();
            let mut seed = 7u64;
            let mut shuffled = |order: &mut Vec<u64>| {
                for i in (1..order.len()).rev() {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    order.swap(i, (seed >> 33) as usize % (i + 1));
                }
                order.clone()
            };
            let mut epoch_orders: Vec<Vec<u64>> = (0..epochs).map(|_| shuffled(&mut order)).collect();
            for (e, o) in epoch_orders.drain(..).enumerate() {
                if let Some(f) = future {
                    f.announce("r", o.iter().map(|i| up("/f", *i)).collect(), false).expect("announce");
                }
                for i in o {
                    let k = key("/f", i);
                    if let Some(f) = future {
                        f.saw(&upcoming(&k));
                    }
                    if e > 0 {
                        reads += 1;
                    }
                    if held.contains(&k) {
                        hits += usize::from(e > 0);
                        policy.access(&k);
                        continue;
                    }
                    if held.len() >= cap && !policy.admit(&k) {
                        continue;
                    }
                    while held.len() >= cap {
                        let v = policy.victim(&mut |_| true).expect("a victim");
                        policy.remove(&v);
                        held.remove(&v);
                    }
                    held.insert(k.clone());
                    policy.insert(k);
                }
            }
            hits as f64 / reads as f64
        }
        let lru = run(&mut crate::cache::eviction::Lru::default(), None);
        let future = Arc::new(Future::default());
        let announced = run(&mut Announced::new(future.clone()), Some(&future));
        assert!(lru < 0.1, "LRU keeps little of a shuffled epoch: {lru}");
        // A quarter is the most any policy hits: each page read again was
        // read in the previous epoch, and at most a quarter is held across
        // an epoch's start.
        assert!(announced >= 0.249, "the announced order keeps a quarter: {announced}");
    }
}
