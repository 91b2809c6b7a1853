//! Inode numbers for namespace paths, kept only while the kernel holds a
//! reference to them (counted per entry replied, dropped on FORGET).

use std::collections::HashMap;

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;

#[derive(Debug, Default)]
pub(crate) struct Inodes {
    pub(crate) by_ino: HashMap<u64, String>,
    pub(crate) by_path: HashMap<String, u64>,
    /// References the kernel holds to each inode (one per entry replied,
    /// less those it forgot); an inode it holds none of is dropped.
    lookups: HashMap<u64, u64>,
    next: u64,
}

impl Inodes {
    /// Just the root.
    pub(crate) fn new() -> Inodes {
        let mut i = Inodes { next: ROOT_INO, ..Default::default() };
        i.by_ino.insert(ROOT_INO, "/".into());
        i.by_path.insert("/".into(), ROOT_INO);
        i
    }

    /// The kernel took one more reference to `ino`, the inode of `path`
    /// (an entry was replied). Puts the inode back if a forget raced it.
    pub(crate) fn remember(&mut self, ino: u64, path: &str) {
        *self.lookups.entry(ino).or_insert(0) += 1;
        self.by_ino.entry(ino).or_insert_with(|| path.to_string());
        self.by_path.entry(path.to_string()).or_insert(ino);
    }

    /// The kernel dropped `n` references to `ino`; at none left it is
    /// forgotten here too (a later lookup of its path makes a new inode).
    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let left = self.lookups.get_mut(&ino).map_or(0, |c| {
            *c = c.saturating_sub(n);
            *c
        });
        if left > 0 {
            return;
        }
        self.lookups.remove(&ino);
        if let Some(path) = self.by_ino.remove(&ino) {
            if self.by_path.get(&path) == Some(&ino) {
                self.by_path.remove(&path);
            }
        }
    }

    /// The inode a listing shows for `path`: its own when the kernel knows
    /// it, else a number derived from the path (listings take no reference,
    /// so they make no inode that nothing would ever forget).
    pub(crate) fn listed(&self, path: &str) -> u64 {
        if let Some(i) = self.by_path.get(path) {
            return *i;
        }
        let h = blake3::hash(path.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(b) | (1 << 63)
    }

    /// The inode of `path`, made if the path has none.
    pub(crate) fn ino(&mut self, path: &str) -> u64 {
        if let Some(i) = self.by_path.get(path) {
            return *i;
        }
        self.next += 1;
        let i = self.next;
        self.by_ino.insert(i, path.to_string());
        self.by_path.insert(path.to_string(), i);
        i
    }

    /// Renames `from` to `to`, keeping its inode (a file already at `to` loses its own).
    pub(crate) fn rename(&mut self, from: &str, to: &str) {
        if let Some(i) = self.by_path.remove(from) {
            if let Some(old) = self.by_path.insert(to.to_string(), i) {
                self.by_ino.remove(&old);
            }
            self.by_ino.insert(i, to.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inode_lives_until_the_kernel_forgets_every_reference() {
        let mut i = Inodes::new();
        let a = i.ino("/a");
        i.remember(a, "/a");
        i.remember(a, "/a");
        i.forget(a, 1);
        assert_eq!(i.by_ino.get(&a).map(String::as_str), Some("/a"));
        i.forget(a, 1);
        assert!(!i.by_ino.contains_key(&a) && !i.by_path.contains_key("/a"));
        // Looked up again: a new inode for the same path.
        let b = i.ino("/a");
        assert_ne!(a, b);
        // The root is never forgotten.
        i.forget(ROOT_INO, 5);
        assert_eq!(i.by_ino.get(&ROOT_INO).map(String::as_str), Some("/"));
    }

    #[test]
    fn a_forget_racing_a_lookup_reply_leaves_the_replied_inode_known() {
        let mut i = Inodes::new();
        let a = i.ino("/a");
        i.remember(a, "/a");
        // A lookup found `a`; the kernel's forget of its last reference is
        // handled before the lookup's reply takes the new one.
        let found = i.ino("/a");
        i.forget(a, 1);
        i.remember(found, "/a");
        assert_eq!(i.by_ino.get(&a).map(String::as_str), Some("/a"));
        assert_eq!(i.by_path.get("/a"), Some(&a));
        i.forget(a, 1);
        assert!(!i.by_ino.contains_key(&a));
    }

    #[test]
    fn listings_make_no_inodes() {
        let mut i = Inodes::new();
        let listed = i.listed("/x/y");
        assert_eq!(listed, i.listed("/x/y"));
        assert_ne!(listed, i.listed("/x/z"));
        assert_eq!(i.by_ino.len(), 1);
        let y = i.ino("/x/y");
        assert_eq!(i.listed("/x/y"), y);
    }
}
