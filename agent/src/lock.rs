//! One process per state directory: an exclusive lock on a file in it.
//!
//! Two nodes on one cache directory would share a journal and pages, two
//! agents on one spool would upload and delete each other's files. Every
//! command that owns state (`ferry up`'s DIR, a node's `cache.disk_dir`,
//! an agent's spool) takes its lock first and fails at once, naming the
//! directory and the holder, when another process has it. The lock is the
//! kernel's (`flock`): it goes with the process, however that ends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock of `dir` (the file `dir/.ferry.lock`) for `what`.
#[cfg(feature = "cloud")]
pub fn directory(dir: &Path, what: &str) -> Result<Lock> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    file(&dir.join(".ferry.lock"), &format!("{what} {}", dir.display()))
}

/// Whether a process holds the lock file `path` now (false if there is none).
#[cfg(feature = "edge")]
pub fn held(path: &Path) -> bool {
    let Ok(f) = File::open(path) else { return false };
    matches!(
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared),
        Err(rustix::io::Errno::WOULDBLOCK)
    )
}

/// Takes the lock file `path`, for `what` (named in the error).
pub fn file(path: &Path, what: &str) -> Result<Lock> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("open lock file {}", path.display()))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("another ferry process (pid {pid})"),
            };
            bail!("{what} is in use by {holder} (lock {}): stop it first, or use another directory", path.display());
        }
        Err(e) => {
            return Err(std::io::Error::from(e)).with_context(|| format!("lock {}", path.display()));
        }
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "{}", std::process::id())?;
    Ok(Lock { _file: f })
}

#[cfg(all(test, feature = "cloud"))]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = directory(dir.path(), "the data directory").expect("first lock");
        let err = directory(dir.path(), "the data directory").expect_err("second lock").to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        drop(first);
        directory(dir.path(), "the data directory").expect("lock again once released");
    }
}
