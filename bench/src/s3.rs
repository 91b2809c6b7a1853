//! `ferry-bench s3`: warm GetObject throughput of the S3 endpoint against
//! the same reads from the local-file store behind it and through the mount.
//!
//! One cache node in this process over a `file://` store holding the
//! dataset, the S3 endpoint over it (signed requests from object_store's
//! S3 client, path-style), and a FUSE mount as `ferry mount` runs by
//! default. Every side reads the same 8 MiB pieces of every file, eight in
//! flight (as boto3's transfer manager does), after a pass that warms it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytesize::ByteSize;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use ferry_cloud_tier::s3::{Gateway, S3Key};

use crate::cache::bench_node;

/// Bytes per GET.
const PIECE: u64 = 8 << 20;
/// GETs in flight.
const IN_FLIGHT: usize = 8;

pub(crate) async fn s3(size: u64, files: usize, rounds: usize, dir: Option<PathBuf>) -> Result<()> {
    if files == 0 || rounds == 0 {
        bail!("--files and --rounds must be at least 1");
    }
    let tmp = tempfile::Builder::new().prefix("ferry-bench-").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path().to_path_buf();
    let store_dir = root.join("store");
    let mnt = root.join("mnt");
    std::fs::create_dir_all(store_dir.join("data"))?;
    std::fs::create_dir_all(&mnt)?;
    let each = size / files as u64;
    eprintln!("bench s3: writing {files} file(s) of {} into the store", ByteSize::b(each).display().iec());
    let mut seed = 1u64;
    for i in 0..files {
        let mut body = vec![0u8; each as usize];
        for b in body.chunks_mut(8) {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let w = seed.to_le_bytes();
            b.copy_from_slice(&w[..b.len()]);
        }
        std::fs::write(store_dir.join("data").join(format!("f{i:03}.bin")), &body)?;
    }
    let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&store_dir)?);
    let (node, cluster) = bench_node(&root, store, size + (size >> 2), 0).await?;

    // The S3 endpoint over the node.
    let (access, secret) = ("bench", "bench-secret");
    let keys = [S3Key { access_key: access.into(), secret_key: secret.into(), cluster: cluster.clone() }];
    let (gateway, auth) = Gateway::new(&keys, &root.join("s3-staging"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferry_cloud_tier::s3::serve(listener, gateway, auth, async {
        let _ = stopped.await;
    }));
    let client: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://{addr}"))
            .with_allow_http(true)
            .with_bucket_name("data")
            .with_region("us-east-1")
            .with_access_key_id(access)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            .build()
            .context("S3 client")?,
    );

    // The mount, as `ferry mount` runs by default (8 GiB of local copies).
    let fs = ferry_mount::MountFs::with_local_copies(cluster, root.join("staging"), 8 << 30)
        .await
        .map_err(anyhow::Error::from)?;
    let session = ferry_mount::fuse::mount(Arc::new(fs), &mnt, tokio::runtime::Handle::current())?;

    let names: Vec<String> = (0..files).map(|i| format!("f{i:03}.bin")).collect();
    let pieces: Vec<(usize, u64, u64)> = (0..files)
        .flat_map(|f| (0..each.div_ceil(PIECE)).map(move |p| (f, p * PIECE, PIECE.min(each - p * PIECE))))
        .collect();
    let sides = ["s3 endpoint", "local store", "mount"];
    let mut best = [Duration::MAX; 3];
    // Every side is warmed by one pass, then each round reads all sides, each going first in turn.
    for round in 0..=rounds {
        for k in 0..3 {
            let side = (k + round) % 3;
            let (t, got) = match side {
                0 => s3_pass(&client, &names, &pieces).await?,
                1 => file_pass(&store_dir.join("data"), &names, &pieces).await?,
                _ => file_pass(&mnt.join("data"), &names, &pieces).await?,
            };
            if got != each * files as u64 {
                bail!("{} read {got} bytes, the dataset has {}", sides[side], each * files as u64);
            }
            if round > 0 {
                best[side] = best[side].min(t);
            }
        }
        eprintln!(
            "bench s3: {} of {rounds} done",
            if round == 0 { "warm-up".to_string() } else { format!("round {round}") }
        );
    }

    tokio::task::spawn_blocking(move || session.umount_and_join()).await??;
    let _ = stop.send(());
    server.await??;
    node.shutdown().await;

    let total = each * files as u64;
    let rate = |t: Duration| total as f64 / t.as_secs_f64();
    let [s3, local, mount] = best;
    println!(
        "dataset                      {} in {files} file(s), {} GETs of {} ({IN_FLIGHT} in flight)",
        ByteSize::b(total).display().iec(),
        pieces.len(),
        ByteSize::b(PIECE).display().iec()
    );
    for (name, t) in sides.iter().zip(best) {
        println!("warm {name:<24}{:>8.3} s  {:>8.1} MB/s", t.as_secs_f64(), rate(t) / 1e6);
    }
    let to_local = rate(s3) / rate(local);
    let to_mount = rate(s3) / rate(mount);
    println!("    s3 endpoint / local store  {to_local:>6.3}");
    println!("    s3 endpoint / mount        {to_mount:>6.3}");
    let json = serde_json::json!({
        "scenario": "s3",
        "bytes": total,
        "files": files,
        "piece_bytes": PIECE,
        "in_flight": IN_FLIGHT,
        "s3_bytes_per_s": rate(s3),
        "local_bytes_per_s": rate(local),
        "mount_bytes_per_s": rate(mount),
        "s3_to_local": to_local,
        "s3_to_mount": to_mount,
    });
    println!("{json}");
    Ok(())
}

/// Ranged GETs of `pieces` through the S3 endpoint; time and bytes.
async fn s3_pass(
    client: &Arc<dyn ObjectStore>,
    names: &[String],
    pieces: &[(usize, u64, u64)],
) -> Result<(Duration, u64)> {
    let t0 = Instant::now();
    let got: Vec<u64> = futures::stream::iter(pieces.iter().map(|&(f, off, len)| {
        let client = client.clone();
        let path = object_store::path::Path::from(names[f].as_str());
        async move { Ok::<u64, object_store::Error>(client.get_range(&path, off..off + len).await?.len() as u64) }
    }))
    .buffer_unordered(IN_FLIGHT)
    .try_collect()
    .await?;
    Ok((t0.elapsed(), got.iter().sum()))
}

/// The same pieces read from files under `dir` with pread, eight threads.
async fn file_pass(dir: &Path, names: &[String], pieces: &[(usize, u64, u64)]) -> Result<(Duration, u64)> {
    let t0 = Instant::now();
    let got: Vec<u64> = futures::stream::iter(pieces.iter().map(|&(f, off, len)| {
        let path = dir.join(&names[f]);
        async move {
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let file = std::fs::File::open(&path)?;
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, off)?;
                Ok::<u64, std::io::Error>(len)
            })
            .await
            .map_err(std::io::Error::other)?
        }
    }))
    .buffer_unordered(IN_FLIGHT)
    .try_collect::<Vec<u64>>()
    .await
    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok((t0.elapsed(), got.iter().sum()))
}
