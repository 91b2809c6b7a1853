//! Consistent hashing with virtual nodes: who owns a page.
//!
//! Each node is placed on a 64-bit ring at `vnodes` points (BLAKE3 of
//! `"node#i"`). A key's owners are the distinct nodes met walking clockwise
//! from the key's hash. Adding or removing one node moves only about
//! `1/n` of the keys, and every client computes the same owner without
//! asking anyone.

/// Virtual nodes per member by default.
pub const DEFAULT_VNODES: usize = 128;

/// A ring over a fixed member list.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, usize)>,
    members: usize,
}

fn hash64(bytes: &[u8]) -> u64 {
    let h = blake3::hash(bytes);
    let mut a = [0u8; 8];
    a.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(a)
}

impl Ring {
    /// Builds a ring; members are named by `names` and referred to by index.
    pub fn new<S: AsRef<str>>(names: &[S], vnodes: usize) -> Ring {
        let weighted: Vec<(&str, u32)> = names.iter().map(|n| (n.as_ref(), 1)).collect();
        Ring::weighted(&weighted, vnodes)
    }

    /// Builds a ring of members named by id, each at `vnodes × weight`
    /// points, so a member's share of the keys follows its weight.
    pub fn weighted(members: &[(&str, u32)], vnodes: usize) -> Ring {
        let total: usize = members.iter().map(|(_, w)| vnodes * (*w).max(1) as usize).sum();
        let mut points = Vec::with_capacity(total);
        for (i, (name, weight)) in members.iter().enumerate() {
            for v in 0..vnodes * (*weight).max(1) as usize {
                points.push((hash64(format!("{name}#{v}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Ring { points, members: members.len() }
    }

    /// Each member's share of the key space (0-1), by index.
    pub fn shares(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.members];
        let Some(&(last, _)) = self.points.last() else { return out };
        // A point owns the arc from the previous point up to itself.
        let mut prev = last;
        for &(p, m) in &self.points {
            out[m] += p.wrapping_sub(prev) as f64 / u64::MAX as f64;
            prev = p;
        }
        if self.points.len() == self.points.iter().filter(|(_, m)| *m == self.points[0].1).count() {
            out[self.points[0].1] = 1.0; // one member owns everything
        }
        out
    }

    /// Member indices in preference order for `key` (each member once).
    pub fn owners(&self, key: &[u8]) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.members);
        if self.points.is_empty() {
            return out;
        }
        let h = hash64(key);
        let start = self.points.partition_point(|(p, _)| *p < h);
        for k in 0..self.points.len() {
            let (_, m) = self.points[(start + k) % self.points.len()];
            if !out.contains(&m) {
                out.push(m);
                if out.len() == self.members {
                    break;
                }
            }
        }
        out
    }
}

/// The ring key of a page of a namespace path.
pub fn page_key(path: &str, page: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(path.len() + 9);
    k.extend_from_slice(path.as_bytes());
    k.push(0);
    k.extend_from_slice(&page.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_distinct_and_complete() {
        let ring = Ring::new(&["a", "b", "c"], 64);
        let o = ring.owners(b"key");
        assert_eq!(o.len(), 3);
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, vec![0, 1, 2]);
    }

    #[test]
    fn load_is_spread_and_moves_little() {
        let names3 = ["n0", "n1", "n2"];
        let names4 = ["n0", "n1", "n2", "n3"];
        let r3 = Ring::new(&names3, DEFAULT_VNODES);
        let r4 = Ring::new(&names4, DEFAULT_VNODES);
        let mut counts = [0usize; 3];
        let mut moved = 0;
        let n = 20_000;
        for i in 0..n {
            let k = page_key("/d/f", i);
            let a = r3.owners(&k)[0];
            counts[a] += 1;
            if names4[r4.owners(&k)[0]] != names3[a] {
                moved += 1;
            }
        }
        for c in counts {
            assert!(c > n as usize / 3 * 7 / 10, "unbalanced: {counts:?}");
        }
        // Adding a fourth node should move about a quarter of the keys, not most.
        assert!(moved < n as usize * 35 / 100, "moved {moved} of {n}");
        assert!(moved > n as usize * 15 / 100, "moved {moved} of {n}");
    }

    #[test]
    fn weights_set_shares_and_ids_set_owners() {
        let ring = Ring::weighted(&[("a", 1), ("b", 3)], DEFAULT_VNODES);
        let shares = ring.shares();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{shares:?}");
        assert!(shares[1] > 0.65 && shares[1] < 0.85, "{shares:?}");
        // The same ids give the same owners whatever order they are listed in.
        let other = Ring::weighted(&[("b", 3), ("a", 1)], DEFAULT_VNODES);
        for i in 0..200 {
            let k = page_key("/x", i);
            assert_eq!(["a", "b"][ring.owners(&k)[0]], ["b", "a"][other.owners(&k)[0]]);
        }
        assert_eq!(Ring::weighted(&[("solo", 1)], 4).shares(), vec![1.0]);
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert!(Ring::new::<&str>(&[], 8).owners(b"x").is_empty());
    }
}
