//! How each open reaches the kernel: through a backing file (FUSE
//! passthrough) or through the page cache.
//!
//! The kernel allows one backing file per inode, wants every open of an
//! inode that has one to be a passthrough open of that same file, and
//! refuses (EIO) a passthrough open while the inode is open through its
//! page cache; so each open is decided here against the inode's other opens:
//!
//! | the inode now           | reader / shared writer | other writer | offered a file | not offered |
//! |-------------------------|------------------------|--------------|----------------|-------------|
//! | has a backing file      | joins it               | refused      |                |             |
//! | open through page cache |                        |              | page cache     | page cache  |
//! | not open                |                        |              | passthrough    | page cache  |
//!
//! A kernel that refuses passthrough once turns it off for the mount.
//! Generic over the kernel's backing-file id, so the table is tested
//! without a kernel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How the kernel is told to open one handle.
#[derive(Debug)]
pub enum Way<B> {
    /// Reads and writes go straight to this backing file.
    Passthrough(Arc<B>),
    /// Through the inode's page cache.
    Cached,
    /// Not opened: another handle's file backs the inode, and this writer
    /// may not write into it.
    Refused,
}

/// The open handles of one inode.
#[derive(Debug)]
struct InodeOpens<B> {
    /// The backing file's id while any passthrough open lasts.
    backing: Option<Arc<B>>,
    passthrough: usize,
    /// Opens through the page cache.
    cached: usize,
}

impl<B> Default for InodeOpens<B> {
    fn default() -> Self {
        InodeOpens { backing: None, passthrough: 0, cached: 0 }
    }
}

#[derive(Debug)]
struct Opens<B> {
    inodes: HashMap<u64, InodeOpens<B>>,
    /// Each handle's inode, and whether it is a passthrough open.
    by_fh: HashMap<u64, (u64, bool)>,
}

/// The mount's passthrough bookkeeping.
#[derive(Debug)]
pub struct Passthrough<B> {
    enabled: AtomicBool,
    opens: Mutex<Opens<B>>,
}

impl<B> Default for Passthrough<B> {
    fn default() -> Self {
        Passthrough {
            enabled: AtomicBool::new(false),
            opens: Mutex::new(Opens { inodes: HashMap::new(), by_fh: HashMap::new() }),
        }
    }
}

impl<B: std::fmt::Debug> Passthrough<B> {
    /// The kernel accepted passthrough at init.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Whether a backing file serves inode `ino` now.
    pub fn backed(&self, ino: u64) -> bool {
        let o = self.opens.lock().expect("passthrough lock poisoned");
        o.inodes.get(&ino).is_some_and(|i| i.backing.is_some())
    }

    /// How handle `fh` of inode `ino` opens. `offer`: the filesystem offers
    /// a file for passthrough (a local copy, or a write handle's staging
    /// file); `open` asks the kernel for its backing id. `join`: the handle
    /// may use the file already backing the inode, whatever it was offered
    /// (readers; writers sharing a file); other writers only ever use their
    /// own file.
    pub fn decide<F>(
        &self,
        ino: u64,
        fh: u64,
        offer: Option<F>,
        join: bool,
        open: impl FnOnce(F) -> std::io::Result<B>,
    ) -> Way<B> {
        let mut o = self.opens.lock().expect("passthrough lock poisoned");
        let i = o.inodes.entry(ino).or_default();
        let way = if !self.enabled.load(Ordering::SeqCst) {
            Way::Cached
        } else if let Some(id) = &i.backing {
            if join {
                Way::Passthrough(id.clone())
            } else {
                Way::Refused
            }
        } else if i.cached > 0 {
            Way::Cached
        } else if let Some(file) = offer {
            match open(file) {
                Ok(id) => Way::Passthrough(Arc::new(id)),
                Err(e) => {
                    tracing::info!(error = %e, "kernel refused FUSE passthrough; reads and writes stay on the normal path");
                    self.enabled.store(false, Ordering::SeqCst);
                    Way::Cached
                }
            }
        } else {
            Way::Cached
        };
        match &way {
            Way::Passthrough(id) => {
                i.backing = Some(id.clone());
                i.passthrough += 1;
            }
            Way::Cached => i.cached += 1,
            Way::Refused => return way,
        }
        o.by_fh.insert(fh, (ino, matches!(way, Way::Passthrough(_))));
        way
    }

    /// Handle `fh` closed.
    pub fn release(&self, fh: u64) {
        let mut o = self.opens.lock().expect("passthrough lock poisoned");
        let Some((ino, passthrough)) = o.by_fh.remove(&fh) else { return };
        let Some(i) = o.inodes.get_mut(&ino) else { return };
        if passthrough {
            i.passthrough -= 1;
            if i.passthrough == 0 {
                i.backing = None;
            }
        } else {
            i.cached -= 1;
        }
        if i.passthrough == 0 && i.cached == 0 {
            o.inodes.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Passthrough<u32> {
        let p = Passthrough::default();
        p.enable();
        p
    }

    fn kind(w: &Way<u32>) -> String {
        match w {
            Way::Passthrough(id) => format!("pass {id}"),
            Way::Cached => "cached".into(),
            Way::Refused => "refused".into(),
        }
    }

    #[test]
    fn the_decision_table() {
        let p = on();
        // Not open, offered a file: passthrough with it.
        assert_eq!(kind(&p.decide(1, 10, Some(7), true, Ok)), "pass 7");
        assert!(p.backed(1));
        // Backed: a reader joins the backing file, whatever it was offered.
        assert_eq!(kind(&p.decide(1, 11, Some(8), true, Ok)), "pass 7");
        assert_eq!(kind(&p.decide(1, 12, None, true, Ok)), "pass 7");
        // Backed: a writer with a file of its own is refused.
        assert_eq!(kind(&p.decide(1, 13, Some(9), false, Ok)), "refused");
        // Not open, nothing offered: page cache; then an offer waits for it to close.
        assert_eq!(kind(&p.decide(2, 20, None, true, Ok)), "cached");
        assert_eq!(kind(&p.decide(2, 21, Some(5), true, Ok)), "cached");
        p.release(20);
        p.release(21);
        assert_eq!(kind(&p.decide(2, 22, Some(5), true, Ok)), "pass 5");
        // The backing file lasts while any passthrough open does.
        for fh in [10, 11, 12] {
            assert!(p.backed(1));
            p.release(fh);
        }
        assert!(!p.backed(1));
        // A refused open took nothing: releasing it changes nothing.
        p.release(13);
        assert_eq!(kind(&p.decide(1, 14, Some(3), false, Ok)), "pass 3");
    }

    #[test]
    fn off_until_the_kernel_accepts_and_off_for_good_once_it_refuses() {
        let p = Passthrough::<u32>::default();
        assert_eq!(kind(&p.decide(1, 1, Some(7), true, Ok)), "cached");
        p.release(1);
        p.enable();
        let refused = p.decide(1, 2, Some(7), true, |_| Err(std::io::Error::from_raw_os_error(libc::EPERM)));
        assert_eq!(kind(&refused), "cached");
        p.release(2);
        assert_eq!(kind(&p.decide(1, 3, Some(7), true, Ok)), "cached");
    }
}
