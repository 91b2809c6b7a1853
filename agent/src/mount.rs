//! `ferry mount`: runs the FUSE filesystem until a signal or an external unmount.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use ferry_mount::fuse;
use ferry_mount::prefetch::PrefetchOptions;
use ferry_mount::MountFs;
use ferry_protocol::client::Cluster;

/// How to mount.
#[derive(Debug, Clone)]
pub struct Options {
    /// Staging directory of files being written (created, emptied).
    pub staging: std::path::PathBuf,
    /// Bytes of whole-file local copies; 0 turns them off.
    pub local_copies: u64,
    /// Prefetch across files.
    pub prefetch: PrefetchOptions,
    /// Address of `/metrics`, `/healthz` and `/readyz`; `None`: not served.
    pub metrics_listen: Option<String>,
    /// How long the kernel keeps attributes and entries.
    pub attr_ttl: Duration,
}

/// A live mount.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    dir: std::path::PathBuf,
    staging: std::path::PathBuf,
    metrics: Option<crate::metrics_http::Endpoint>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("dir", &self.dir).finish()
    }
}

/// Whether `dir` is a mount point right now (from /proc/mounts).
pub fn is_mounted(dir: &Path) -> bool {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Some(want) = canon.to_str() else { return false };
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(want)))
}

fn run_quiet(cmd: &str, args: &[&str], dir: &Path) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Mounted {
    /// Whether the kernel ended the session (e.g. `fusermount3 -u`).
    pub fn ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts and removes the staging directory. The kernel refuses
    /// (EBUSY) while it still waits on replies such as a file's release, so
    /// this retries for a while, then detaches the mount lazily: a stopped
    /// `ferry mount` never leaves a dead mount point behind.
    /// Where the metrics endpoint listens, if it runs.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.addr())
    }

    pub fn unmount(mut self) -> Result<()> {
        if let Some(m) = self.metrics.take() {
            m.stop();
        }
        let dir = self.dir.clone();
        let t0 = std::time::Instant::now();
        while is_mounted(&dir) && t0.elapsed() < Duration::from_secs(5) {
            if run_quiet("umount", &[], &dir) || run_quiet("fusermount3", &["-u"], &dir) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_mounted(&dir) {
            eprintln!("ferry: {} is busy; detaching it lazily", dir.display());
            let _ = run_quiet("umount", &["-l"], &dir) || run_quiet("fusermount3", &["-u", "-z"], &dir);
        }
        if let Some(s) = self.session.take() {
            // The session thread ends once the kernel has let go of the mount;
            // after a lazy detach that waits for the last open file, so give
            // it a moment and otherwise leave it to the process exit.
            let t0 = std::time::Instant::now();
            while !s.guard.is_finished() && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if s.guard.is_finished() {
                let _ = s.join();
            } else {
                std::mem::forget(s);
            }
        }
        let _ = std::fs::remove_dir_all(&self.staging);
        if is_mounted(&dir) {
            anyhow::bail!("could not unmount {}", dir.display());
        }
        Ok(())
    }
}

/// Mounts the cluster's namespace at `dir`.
pub async fn start(cluster: Cluster, dir: &Path, opts: &Options) -> Result<Mounted> {
    fuse::check_mountpoint(dir)?;
    if !Path::new("/dev/fuse").exists() {
        anyhow::bail!("FUSE is not available on this machine (/dev/fuse is missing; install fuse3)");
    }
    let mut fs = MountFs::with_local_copies(cluster, opts.staging.clone(), opts.local_copies)
        .await
        .map_err(anyhow::Error::from)
        .context("cannot reach the cache nodes")?;
    fs.enable_prefetch(&opts.prefetch).map_err(anyhow::Error::from)?;
    fs.set_attr_ttl(opts.attr_ttl);
    let fs = Arc::new(fs);
    let session = fuse::mount(fs.clone(), dir, tokio::runtime::Handle::current())?;
    let mut m =
        Mounted { session: Some(session), dir: dir.to_path_buf(), staging: opts.staging.clone(), metrics: None };
    if let Some(listen) = &opts.metrics_listen {
        let render = move || Ok(fs.metrics_text());
        // Ready while the kernel keeps the mount.
        let at = dir.to_path_buf();
        let ready = move || is_mounted(&at);
        m.metrics = Some(crate::metrics_http::Endpoint::start("--metrics-listen", listen, render, ready)?);
    }
    Ok(m)
}

/// Runs a mount until Ctrl-C, SIGTERM or an external unmount.
pub async fn run(cluster: Cluster, dir: &Path, opts: &Options) -> Result<()> {
    let m = start(cluster, dir, opts).await?;
    eprintln!(
        "ferry: mounted at {} (prefetch: {}, {}; Ctrl-C or SIGTERM unmounts)",
        dir.display(),
        opts.prefetch.predictor,
        bytesize::ByteSize::b(opts.prefetch.budget).display().iec()
    );
    if let Some(a) = m.metrics_addr() {
        eprintln!("ferry: metrics on http://{a}/metrics");
    }
    let shutdown = crate::signal::wait_for_shutdown();
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
    tokio::task::spawn_blocking(move || m.unmount()).await?
}
