//! The cache node's and the mount's scenarios: `read`, `train`, `checkpoint`,
//! each against a cache node and a mount started in this process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytesize::ByteSize;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use ferry_cloud_tier::cache::Eviction;
use ferry_cloud_tier::clock::SystemClock;
use ferry_cloud_tier::config::CacheConfig;
use ferry_cloud_tier::metrics::Metrics;
use ferry_cloud_tier::namespace::Namespace;
use ferry_cloud_tier::testing::faulty::{Faults, FaultyStore};
use ferry_cloud_tier::{CloudConfig, RunningNode};
use ferry_protocol::client::Cluster;
use ferry_protocol::ids::{NodeId, Role};
use ferry_protocol::tls::{self, TlsMaterial};
use ferry_protocol::transport;

/// Dataset and compute shapes of `ferry-bench train`, after MLPerf Storage.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shape {
    /// One ~140 MiB sample per file, batch 7, 0.323 s of compute per batch.
    Unet3d,
    /// ~112 KiB samples, 1251 per record file, batch 400, 0.224 s per batch.
    Resnet50,
}

struct ShapeSpec {
    sample: u64,
    per_file: u64,
    batch: usize,
    compute: Duration,
    files: u64,
}

impl Shape {
    /// The shape scaled by `scale` (sizes, counts and compute time alike).
    fn spec(self, scale: f64) -> ShapeSpec {
        let s = |v: f64| (v * scale).max(1.0);
        match self {
            Shape::Unet3d => ShapeSpec {
                sample: s(140.0 * 1048576.0) as u64,
                per_file: 1,
                batch: 7,
                compute: Duration::from_secs_f64(0.323 * scale),
                files: 28,
            },
            Shape::Resnet50 => ShapeSpec {
                sample: 112 * 1024,
                per_file: s(1251.0) as u64,
                batch: s(400.0) as usize,
                compute: Duration::from_secs_f64(0.224 * scale),
                files: 8,
            },
        }
    }
}

/// One epoch of `accelerators` readers over `samples`, each batch followed by
/// `compute`; with `announce`, the sampler's order is first written to the
/// mount's `.ferry-announce` (as the Python helper does); with `uncached`,
/// each file is dropped from the kernel's page cache once read, so every
/// epoch reads through ferry's caches. Returns (wall time, accelerator
/// utilization).
fn epoch(
    mnt: &std::path::Path,
    spec: &ShapeSpec,
    accelerators: usize,
    seed: u64,
    announce: bool,
    uncached: bool,
) -> std::io::Result<(Duration, f64)> {
    use std::os::unix::fs::FileExt;
    let total = spec.files * spec.per_file;
    // A seeded shuffle of every sample, as a sampler would produce.
    let mut order: Vec<u64> = (0..total).collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let t0 = Instant::now();
    if announce {
        let mut text = String::new();
        for &sample in &order {
            let (file, idx) = (sample / spec.per_file, sample % spec.per_file);
            let path = format!("/data/file-{file:04}.bin");
            if spec.per_file == 1 {
                text.push_str(&format!("{path}\n"));
            } else {
                text.push_str(&format!("{path} {} {}\n", idx * spec.sample, spec.sample));
            }
        }
        std::fs::write(mnt.join(".ferry-announce"), text)?;
    }
    let results: Vec<std::io::Result<Duration>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..accelerators)
            .map(|a| {
                let mine: Vec<u64> = order.iter().copied().skip(a).step_by(accelerators).collect();
                sc.spawn(move || -> std::io::Result<Duration> {
                    let mut buf = vec![0u8; spec.sample as usize];
                    let mut computed = Duration::ZERO;
                    for batch in mine.chunks(spec.batch) {
                        for &sample in batch {
                            let (file, idx) = (sample / spec.per_file, sample % spec.per_file);
                            let f = std::fs::File::open(mnt.join(format!("data/file-{file:04}.bin")))?;
                            f.read_exact_at(&mut buf, idx * spec.sample)?;
                            if uncached {
                                rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
                            }
                        }
                        std::thread::sleep(spec.compute);
                        computed += spec.compute;
                    }
                    Ok(computed)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("reader panicked"))))
            .collect()
    });
    let wall = t0.elapsed();
    let mut au = 0.0;
    for r in results {
        au += r?.as_secs_f64() / wall.as_secs_f64();
    }
    Ok((wall, au / accelerators as f64))
}

/// What `ferry-bench train` varies besides the shape.
#[derive(Debug, Clone)]
pub(crate) struct TrainOptions {
    pub accelerators: usize,
    pub epochs: usize,
    pub bandwidth: u64,
    pub latency: Duration,
    pub scale: f64,
    /// Files in the dataset (default: the shape's).
    pub files: Option<u64>,
    /// The node's memory as a fraction of the dataset: compares LRU with
    /// announced-order eviction instead of the prefetch modes.
    pub cache: Option<f64>,
    pub dir: Option<PathBuf>,
}

/// One epoch's figures in `train`.
struct Row {
    mode: &'static str,
    epoch: usize,
    wall: Duration,
    au: f64,
    hit: f64,
}

/// One configuration `train` runs.
struct Mode {
    name: &'static str,
    readahead: u64,
    copies: u64,
    predictor: &'static str,
    announce: bool,
    eviction: Eviction,
}

pub(crate) async fn train(shape: Shape, o: TrainOptions) -> Result<()> {
    let TrainOptions { accelerators, epochs, bandwidth, latency, scale, files, cache, dir } = o;
    if accelerators == 0 || epochs == 0 || !(0.001..=1.0).contains(&scale) {
        bail!("--accelerators and --epochs must be at least 1 and --scale within 0.001..=1");
    }
    if cache.is_some_and(|c| !(0.01..=1.0).contains(&c)) {
        bail!("--cache is the node's memory as a fraction of the dataset, within 0.01..=1");
    }
    let mut spec = shape.spec(scale);
    if let Some(n) = files {
        if n == 0 {
            bail!("--files must be at least 1");
        }
        spec.files = n;
    }
    let tmp = tempfile::Builder::new().prefix("ferry-bench-").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path().to_path_buf();
    let data = root.join("store/data");
    std::fs::create_dir_all(&data)?;
    let file_size = spec.sample * spec.per_file;
    let dataset = file_size * spec.files;
    eprintln!(
        "bench train: {shape:?} x{scale}: {} files of {}, samples of {}, batch {}, {:?} compute per batch, {accelerators} accelerator(s)",
        spec.files,
        ByteSize::b(file_size).display().iec(),
        ByteSize::b(spec.sample).display().iec(),
        spec.batch,
        spec.compute
    );
    for i in 0..spec.files {
        let p = data.join(format!("file-{i:04}.bin"));
        tokio::task::spawn_blocking(move || write_object(&p, file_size)).await??;
    }
    let mode = |name, readahead, copies, predictor, announce, eviction| Mode {
        name,
        readahead,
        copies,
        predictor,
        announce,
        eviction,
    };
    let modes = match cache {
        None => vec![
            mode("no prefetch", 0, 0, "none", false, Eviction::Announced),
            mode("readahead", 4, 0, "readahead", false, Eviction::Announced),
            mode("predictor (tree)", 4, 0, "tree", false, Eviction::Announced),
            mode("announced order", 4, 0, "tree", true, Eviction::Announced),
            mode("readahead + local copies", 4, 8 << 30, "readahead", false, Eviction::Announced),
        ],
        Some(_) => vec![
            mode("announced, LRU eviction", 4, 0, "tree", true, Eviction::Lru),
            mode("announced, Belady eviction", 4, 0, "tree", true, Eviction::Announced),
        ],
    };
    // With a small cache the node's memory is the only cache: no disk
    // tier, no local copies, a small prefetch budget, no kernel page cache.
    let memory = cache.map_or(8 << 30, |c| (dataset as f64 * c) as u64);
    let budget = if cache.is_some() { 64 << 20 } else { 1 << 30 };
    if let Some(c) = cache {
        eprintln!(
            "bench train: node memory {} = {c} of the {} dataset",
            ByteSize::b(memory).display().iec(),
            ByteSize::b(dataset).display().iec()
        );
    }
    let mut rows = Vec::new();
    for m in &modes {
        let run_root = root.join(m.name.replace([' ', '+', ',', '(', ')'], "-"));
        std::fs::create_dir_all(&run_root)?;
        let base: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root.join("store"))?);
        let store =
            Arc::new(FaultyStore::new(base, Faults { latency, bandwidth: Some(bandwidth), ..Default::default() }));
        let counters = store.counters();
        let (node, cluster) = bench_node_with(&run_root, store, memory, 0, m.eviction).await?;
        let mut fs = ferry_mount::MountFs::with_local_copies(cluster, run_root.join("staging"), m.copies)
            .await
            .map_err(anyhow::Error::from)?;
        fs.set_readahead(m.readahead);
        let opts = ferry_mount::prefetch::PrefetchOptions { predictor: m.predictor.into(), budget };
        fs.enable_prefetch(&opts).map_err(anyhow::Error::from)?;
        let fs = Arc::new(fs);
        let mnt = run_root.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let session = ferry_mount::fuse::mount(fs.clone(), &mnt, tokio::runtime::Handle::current())?;
        for e in 0..epochs {
            let m2 = mnt.clone();
            let sp = ShapeSpec { ..spec };
            let (announce, uncached) = (m.announce, cache.is_some());
            let before = counters.bytes_read.load(std::sync::atomic::Ordering::SeqCst);
            let (wall, au) =
                tokio::task::spawn_blocking(move || epoch(&m2, &sp, accelerators, e as u64 + 1, announce, uncached))
                    .await??;
            let store_bytes = counters.bytes_read.load(std::sync::atomic::Ordering::SeqCst) - before;
            // Of the dataset's bytes the epoch read, the share the store did not serve
            // (the node's memory, and whatever else holds pages on the way).
            let hit = 1.0 - (store_bytes as f64 / dataset as f64).min(1.0);
            let st = fs.prefetch_stats().unwrap_or_default();
            eprintln!(
                "bench train: {}: epoch {} {:.2} s, AU {:.3}, not from the store {hit:.3} (so far: prefetch precision {:.3}, coverage {:.3}, hit ratio {:.3})",
                m.name,
                e + 1,
                wall.as_secs_f64(),
                au,
                st["precision"].as_f64().unwrap_or(0.0),
                st["coverage"].as_f64().unwrap_or(0.0),
                st["hit_ratio"].as_f64().unwrap_or(0.0)
            );
            rows.push(Row { mode: m.name, epoch: e + 1, wall, au, hit });
            // Let background copies of files read in this epoch finish before the next.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::task::spawn_blocking(move || session.umount_and_join()).await??;
        node.shutdown().await;
    }
    println!(
        "shape {shape:?} x{scale}, {} files, {accelerators} accelerator(s), store {}/s + {latency:?} per request{}",
        spec.files,
        ByteSize::b(bandwidth).display().si(),
        cache.map(|c| format!(", node memory {c} of the dataset")).unwrap_or_default()
    );
    println!("{:<28} {:>5} {:>9} {:>7} {:>9}", "mode", "epoch", "wall s", "AU", "not store");
    for Row { mode, epoch: e, wall, au, hit } in &rows {
        println!("{mode:<28} {e:>5} {:>9.2} {au:>7.3} {hit:>9.3}", wall.as_secs_f64());
    }
    if cache.is_some() && epochs > 1 {
        // Epochs after the first, where a cache can hit.
        let mean = |name: &str, f: fn(&Row) -> f64| {
            let v: Vec<f64> = rows.iter().filter(|r| r.mode == name && r.epoch > 1).map(f).collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let (lru, belady) = (modes[0].name, modes[1].name);
        let (h_lru, h_b) = (mean(lru, |r| r.hit), mean(belady, |r| r.hit));
        let (au_lru, au_b) = (mean(lru, |r| r.au), mean(belady, |r| r.au));
        println!(
            "epochs 2-{epochs}: share of the dataset not read from the store {h_b:.3} (Belady) vs {h_lru:.3} (LRU); AU {au_b:.3} vs {au_lru:.3} = {:.2}x",
            au_b / au_lru.max(1e-9)
        );
    }
    let json = serde_json::json!({
        "scenario": "train",
        "shape": format!("{shape:?}").to_lowercase(),
        "scale": scale,
        "files": spec.files,
        "accelerators": accelerators,
        "cache_fraction": cache,
        "store_bandwidth_bytes_per_s": bandwidth,
        "store_latency_ms": latency.as_millis() as u64,
        "epochs": rows.iter().map(|r| serde_json::json!({"mode": r.mode, "epoch": r.epoch, "wall_s": r.wall.as_secs_f64(), "au": r.au, "not_from_store": r.hit})).collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}

/// Certificates and a running node over `store` (mounted at `/`), for benchmarks.
pub(crate) async fn bench_node(
    root: &std::path::Path,
    store: Arc<dyn ObjectStore>,
    memory: u64,
    disk: u64,
) -> Result<(RunningNode, Cluster)> {
    bench_node_with(root, store, memory, disk, Eviction::default()).await
}

/// [`bench_node`] with the tiers' eviction given.
pub(crate) async fn bench_node_with(
    root: &std::path::Path,
    store: Arc<dyn ObjectStore>,
    memory: u64,
    disk: u64,
    eviction: Eviction,
) -> Result<(RunningNode, Cluster)> {
    let certs = root.join("certs");
    tls::init_ca(&certs, "bench")?;
    let cloud_id = NodeId::new("cloud-1").map_err(anyhow::Error::msg)?;
    let client_id = NodeId::new("client").map_err(anyhow::Error::msg)?;
    tls::issue(&certs, Role::Cloud, &cloud_id)?;
    tls::issue(&certs, Role::Client, &client_id)?;
    let mut ns = Namespace::empty(Arc::new(Metrics::new()));
    ns.add("/", store, object_store::path::Path::default(), 0)?;
    let cfg = CloudConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        metrics_listen: String::new(),
        cache: CacheConfig {
            memory: ByteSize::b(memory),
            disk: ByteSize::b(disk),
            disk_dir: root.join("cache"),
            eviction,
        },
        // The benchmarks measure the data path; `bench train` sets prediction up in the mount.
        prefetch: "none".into(),
        ..CloudConfig::default()
    };
    let node =
        RunningNode::start_with(&cfg, ns, TlsMaterial::load_dir(&certs, &cloud_id)?, Arc::new(SystemClock)).await?;
    let endpoint = transport::client_endpoint(&TlsMaterial::load_dir(&certs, &client_id)?)?;
    let cluster = Cluster::new(endpoint, &[node.addr.to_string()])?;
    Ok((node, cluster))
}

/// Writes `files` files of `each` bytes under `dir` with fsync; returns the time taken.
fn write_files(dir: &std::path::Path, files: usize, each: u64) -> std::io::Result<Duration> {
    use std::io::Write;
    let block: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let t0 = Instant::now();
    for i in 0..files {
        let mut f = std::fs::File::create(dir.join(format!("step-{i}.pt")))?;
        let mut left = each;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    Ok(t0.elapsed())
}

/// Reads every file under `dir` back; returns the time taken and the bytes read.
fn read_files(dir: &std::path::Path, files: usize) -> std::io::Result<(Duration, u64)> {
    use std::io::Read;
    let mut buf = vec![0u8; 4 << 20];
    let mut total = 0u64;
    let t0 = Instant::now();
    for i in 0..files {
        let mut f = std::fs::File::open(dir.join(format!("step-{i}.pt")))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok((t0.elapsed(), total))
}

pub(crate) async fn checkpoint(size: u64, files: usize, rounds: usize, dir: Option<PathBuf>) -> Result<()> {
    if files == 0 {
        bail!("--files must be at least 1");
    }
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let tmp = tempfile::Builder::new().prefix("ferry-bench-").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path().to_path_buf();
    let local = root.join("local");
    let mnt = root.join("mnt");
    for d in [&local, &mnt] {
        std::fs::create_dir_all(d)?;
    }
    let each = size / files as u64;
    // The object store stands for a remote one (20 ms per request, in memory),
    // so, as in production, the mount and the local baseline share the disk
    // with nothing but the node's journal.
    let remote = Arc::new(object_store::memory::InMemory::new());
    let store: Arc<dyn ObjectStore> = Arc::new(FaultyStore::new(
        remote,
        Faults { latency: Duration::from_millis(20), bandwidth: None, ..Default::default() },
    ));
    let (node, cluster) = bench_node(&root, store, 1 << 30, 4 << 30).await?;
    // As `ferry mount` runs by default: 8 GiB of local copies.
    let fs = ferry_mount::MountFs::with_local_copies(cluster, root.join("staging"), 8 << 30)
        .await
        .map_err(anyhow::Error::from)?;
    let session = ferry_mount::fuse::mount(Arc::new(fs), &mnt, tokio::runtime::Handle::current())?;

    eprintln!(
        "bench checkpoint: {files} file(s) of {} with fsync, {rounds} round(s) alternating local disk and the mount",
        ByteSize::b(each).display().iec()
    );
    // This machine's disk and page cache drift within seconds, so each side
    // goes first in turn and keeps its best round (as `bench read` does).
    let dirs = [local.clone(), mnt.clone()];
    let (mut writes, mut reads) = ([Duration::MAX; 2], [Duration::MAX; 2]);
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let d = dirs[i].clone();
            let t = tokio::task::spawn_blocking(move || write_files(&d, files, each)).await??;
            writes[i] = writes[i].min(t);
        }
        // Reads are short (a fraction of a second from the page cache): three per side per round.
        for i in order.into_iter().cycle().take(6) {
            let d = dirs[i].clone();
            let (t, got) = tokio::task::spawn_blocking(move || read_files(&d, files)).await??;
            if got != each * files as u64 {
                bail!("read back {got} bytes from {}, wrote {}", dirs[i].display(), each * files as u64);
            }
            reads[i] = reads[i].min(t);
        }
        eprintln!("bench checkpoint: round {} of {rounds} done", round + 1);
    }
    let ([local_write, mount_write], [local_read, mount_read]) = (writes, reads);
    let t0 = Instant::now();
    let persisted = node.node.journal().drain(Duration::from_secs(600)).await;
    let persist_after = t0.elapsed();
    tokio::task::spawn_blocking(move || session.umount_and_join()).await??;
    node.shutdown().await;
    if !persisted {
        bail!("checkpoints were not persisted to the store within 10 minutes");
    }

    let total = each * files as u64;
    let wr = local_write.as_secs_f64() / mount_write.as_secs_f64();
    let rr = local_read.as_secs_f64() / mount_read.as_secs_f64();
    println!("checkpoint data              {} in {files} file(s)", ByteSize::b(total).display().iec());
    println!(
        "write+fsync via mount        {:>8.3} s  {:>8.1} MB/s",
        mount_write.as_secs_f64(),
        mbps(total, mount_write)
    );
    println!(
        "write+fsync to local disk    {:>8.3} s  {:>8.1} MB/s",
        local_write.as_secs_f64(),
        mbps(total, local_write)
    );
    println!("    throughput ratio mount/local {wr:>6.3}   (goal >= 0.8)");
    println!("read back via mount          {:>8.3} s  {:>8.1} MB/s", mount_read.as_secs_f64(), mbps(total, mount_read));
    println!("read back from local disk    {:>8.3} s  {:>8.1} MB/s", local_read.as_secs_f64(), mbps(total, local_read));
    println!("    throughput ratio mount/local {rr:>6.3}   (goal >= 0.8)");
    println!("store had every checkpoint {:.3} s after the last fsync", persist_after.as_secs_f64());
    let json = serde_json::json!({
        "scenario": "checkpoint",
        "bytes": total,
        "files": files,
        "rounds": rounds,
        "mount_write_s": mount_write.as_secs_f64(),
        "local_write_s": local_write.as_secs_f64(),
        "write_mount_over_local_throughput": wr,
        "mount_read_s": mount_read.as_secs_f64(),
        "local_read_s": local_read.as_secs_f64(),
        "read_mount_over_local_throughput": rr,
        "persisted_after_s": persist_after.as_secs_f64(),
    });
    println!("{json}");
    Ok(())
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn write_object(path: &std::path::Path, size: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

async fn tcp_copy(size: u64) -> Result<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let buf = vec![7u8; 4 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        s.shutdown().await?;
        Ok::<_, std::io::Error>(())
    });
    let t0 = Instant::now();
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 4 << 20];
    let mut got = 0u64;
    loop {
        let n = c.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let d = t0.elapsed();
    server.await??;
    if got != size {
        bail!("tcp baseline moved {got} of {size} bytes");
    }
    Ok(d)
}

pub(crate) async fn read(size: u64, bandwidth: u64, latency: Duration, dir: Option<PathBuf>) -> Result<()> {
    let tmp = tempfile::Builder::new().prefix("ferry-bench-").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path();
    let data = root.join("store");
    std::fs::create_dir_all(&data)?;
    eprintln!("bench read: writing a {} object", ByteSize::b(size).display().iec());
    let obj = data.join("obj.bin");
    let o2 = obj.clone();
    tokio::task::spawn_blocking(move || write_object(&o2, size)).await??;

    let base: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&data)?);
    let faulty = Arc::new(FaultyStore::new(base, Faults { latency, bandwidth: Some(bandwidth), ..Default::default() }));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let location = object_store::path::Path::from("obj.bin");

    // (a) baseline: one direct streaming GET from the throttled store.
    eprintln!(
        "bench read: direct read from the throttled store ({}/s, {latency:?} per request)",
        ByteSize::b(bandwidth).display().si()
    );
    let t0 = Instant::now();
    let mut s = store.get(&location).await?.into_stream();
    let mut direct_bytes = 0u64;
    while let Some(c) = s.next().await {
        direct_bytes += c?.len() as u64;
    }
    let direct = t0.elapsed();
    if direct_bytes != size {
        bail!("direct read returned {direct_bytes} of {size} bytes");
    }

    let (node, cluster) = bench_node(root, store.clone(), size + (256 << 20), size * 2 + (256 << 20)).await?;

    eprintln!("bench read: cold read through ferry");
    let t0 = Instant::now();
    let got = cluster.read_to("/obj.bin", 0, None, &mut tokio::io::sink()).await.context("cold read")?;
    let cold = t0.elapsed();
    if got != size {
        bail!("cold read returned {got} of {size} bytes");
    }
    node.node.cache().flush().await;

    eprintln!("bench read: warm reads through ferry, plain TCP, local disk (best of 3)");
    let mut warm = Duration::MAX;
    let mut tcp = Duration::MAX;
    let mut local = Duration::MAX;
    let store_reads_before = faulty.counters().gets.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        let t0 = Instant::now();
        let got = cluster.read_to("/obj.bin", 0, None, &mut tokio::io::sink()).await.context("warm read")?;
        warm = warm.min(t0.elapsed());
        if got != size {
            bail!("warm read returned {got} of {size} bytes");
        }
        tcp = tcp.min(tcp_copy(size).await?);
        let o = obj.clone();
        let d = tokio::task::spawn_blocking(move || -> std::io::Result<Duration> {
            use std::io::Read;
            let t0 = Instant::now();
            let mut f = std::fs::File::open(o)?;
            let mut buf = vec![0u8; 4 << 20];
            while f.read(&mut buf)? > 0 {}
            Ok(t0.elapsed())
        })
        .await??;
        local = local.min(d);
    }
    for (node, st) in cluster.stats().await {
        eprintln!(
            "bench read: QUIC to {node}: path MTU {} B, received datagrams {} B on average, rtt {:?}, cwnd {} B, \
             lost packets {}, congestion events {}, MTU black holes {}",
            st.path.current_mtu,
            st.udp_rx.bytes / st.udp_rx.datagrams.max(1),
            st.path.rtt,
            st.path.cwnd,
            st.path.lost_packets,
            st.path.congestion_events,
            st.path.black_holes_detected
        );
    }
    let warm_store_gets = faulty.counters().gets.load(std::sync::atomic::Ordering::SeqCst) - store_reads_before;
    node.shutdown().await;

    let cold_ratio = cold.as_secs_f64() / direct.as_secs_f64();
    let tcp_ratio = tcp.as_secs_f64() / warm.as_secs_f64();
    let local_ratio = local.as_secs_f64() / warm.as_secs_f64();
    println!("object size                  {}", ByteSize::b(size).display().iec());
    println!("(a) cold via ferry           {:>8.3} s  {:>8.1} MB/s", cold.as_secs_f64(), mbps(size, cold));
    println!("    direct store read        {:>8.3} s  {:>8.1} MB/s", direct.as_secs_f64(), mbps(size, direct));
    println!("    time ratio cold/direct   {cold_ratio:>8.3}   (goal <= 1.1)");
    println!(
        "(b) warm via ferry           {:>8.3} s  {:>8.1} MB/s  ({warm_store_gets} store GETs)",
        warm.as_secs_f64(),
        mbps(size, warm)
    );
    println!("    plain TCP copy           {:>8.3} s  {:>8.1} MB/s", tcp.as_secs_f64(), mbps(size, tcp));
    println!("    throughput ratio ferry/TCP {tcp_ratio:>6.3}   (goal >= 0.5)");
    println!("(c) local disk read          {:>8.3} s  {:>8.1} MB/s", local.as_secs_f64(), mbps(size, local));
    println!("    throughput ratio ferry/local {local_ratio:>4.3}");
    let json = serde_json::json!({
        "scenario": "read",
        "size_bytes": size,
        "store_bandwidth_bytes_per_s": bandwidth,
        "store_latency_ms": latency.as_millis() as u64,
        "direct_s": direct.as_secs_f64(),
        "cold_s": cold.as_secs_f64(),
        "cold_over_direct_time": cold_ratio,
        "warm_s": warm.as_secs_f64(),
        "warm_store_gets": warm_store_gets,
        "tcp_s": tcp.as_secs_f64(),
        "warm_over_tcp_throughput": tcp_ratio,
        "local_s": local.as_secs_f64(),
        "warm_over_local_throughput": local_ratio,
    });
    println!("{json}");
    Ok(())
}
