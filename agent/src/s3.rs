//! `ferry s3`: the S3-compatible endpoint over the namespace.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use ferry_cloud_tier::s3::{Gateway, S3Key};

use crate::config::ClientConfig;

/// An S3 endpoint serving until stopped.
#[derive(Debug)]
pub struct RunningS3 {
    /// The address it serves on.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningS3 {
    /// Stops serving, letting requests in progress finish.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await?.context("S3 endpoint")
    }
}

/// Starts the endpoint `cfg.s3` describes, on `listen` (default `s3.listen`).
pub async fn start(cfg: &ClientConfig, listen: Option<&str>) -> Result<RunningS3> {
    if cfg.s3.keys.is_empty() {
        bail!("no access keys: add an [[s3.keys]] entry (access_key, secret_key, identity) to the client config");
    }
    // One client per identity the keys act as.
    let mut clusters = HashMap::new();
    let mut keys = Vec::new();
    for k in &cfg.s3.keys {
        let identity = if k.identity.is_empty() { cfg.id.clone() } else { k.identity.clone() };
        if !clusters.contains_key(&identity) {
            let as_identity = ClientConfig { id: identity.clone(), ..cfg.clone() };
            let cluster = crate::read::connect(&as_identity)
                .await
                .with_context(|| format!("s3 key {:?} acts as {identity:?}", k.access_key))?;
            clusters.insert(identity.clone(), cluster);
        }
        keys.push(S3Key {
            access_key: k.access_key.clone(),
            secret_key: k.secret_key.clone(),
            cluster: clusters[&identity].clone(),
        });
    }
    let staging = if cfg.s3.staging.as_os_str().is_empty() {
        std::env::temp_dir().join(format!("ferry-s3-{}", std::process::id()))
    } else {
        cfg.s3.staging.clone()
    };
    let (gateway, auth) = Gateway::new(&keys, &staging)
        .with_context(|| format!("cannot use {} for S3 uploads (s3.staging)", staging.display()))?;
    let listen = listen.unwrap_or(&cfg.s3.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (s3.listen)"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ferry_cloud_tier::s3::serve(listener, gateway, auth, async {
        let _ = stopped.await;
    }));
    Ok(RunningS3 { addr, stop, task })
}

/// `ferry s3`: serves until interrupted.
pub async fn run(cfg: &ClientConfig, listen: Option<&str>) -> Result<()> {
    let s3 = start(cfg, listen).await?;
    let keys: Vec<&str> = cfg.s3.keys.iter().map(|k| k.access_key.as_str()).collect();
    println!("ferry: S3 endpoint on http://{} (path-style; access keys {})", s3.addr, keys.join(", "));
    crate::signal::wait_for_shutdown().await;
    s3.shutdown().await
}
