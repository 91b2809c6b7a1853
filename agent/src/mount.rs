//! `ferry mount`: runs the FUSE filesystem until a signal or an external unmount.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_cloud_tier::mount::fs::MountFs;
use ferry_cloud_tier::mount::fuse;
use ferry_protocol::client::Cluster;

/// A live mount.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    dir: std::path::PathBuf,
    staging: std::path::PathBuf,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("dir", &self.dir).finish()
    }
}

impl Mounted {
    /// Whether the kernel ended the session (e.g. `fusermount3 -u`).
    pub fn ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and removes the staging directory.
    pub fn unmount(mut self) {
        if let Some(s) = self.session.take() {
            if !s.guard.is_finished() {
                if let Err(e) = s.umount_and_join() {
                    eprintln!("ferry: unmount {}: {e}", self.dir.display());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// Mounts the cluster's namespace at `dir`.
pub async fn start(cluster: Cluster, dir: &Path, staging: &Path, local_copies: u64) -> Result<Mounted> {
    fuse::check_mountpoint(dir)?;
    if !Path::new("/dev/fuse").exists() {
        anyhow::bail!("FUSE is not available on this machine (/dev/fuse is missing; install fuse3)");
    }
    let fs = MountFs::with_local_copies(cluster, staging.to_path_buf(), local_copies)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .context("cannot reach the cache nodes")?;
    let session = fuse::mount(Arc::new(fs), dir, tokio::runtime::Handle::current())?;
    Ok(Mounted { session: Some(session), dir: dir.to_path_buf(), staging: staging.to_path_buf() })
}

/// Runs a mount until Ctrl-C, SIGTERM or an external unmount.
pub async fn run(cluster: Cluster, dir: &Path, staging: &Path, local_copies: u64) -> Result<()> {
    let m = start(cluster, dir, staging, local_copies).await?;
    eprintln!("ferry: mounted at {} (Ctrl-C or SIGTERM unmounts)", dir.display());
    let shutdown = crate::up::wait_for_shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if m.ended() {
                    eprintln!("ferry: {} was unmounted", dir.display());
                    break;
                }
            }
        }
    }
    tokio::task::spawn_blocking(move || m.unmount()).await?;
    Ok(())
}
