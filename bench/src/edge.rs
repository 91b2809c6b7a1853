//! Edge benchmarks: `ferry-bench edge` (dedup, compression, CPU, memory,
//! binary size), `ferry-bench edge-link` (goodput over a rate-limited, lossy
//! link between network namespaces) and `ferry-bench edge-crash` (kill -9
//! loops). Each runs real `ferry cloud` and `ferry edge` processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;

use ferry_protocol::ids::{NodeId, Role};
use ferry_protocol::tls;

/// `n` bytes in binary units.
fn human(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// A process killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Two network namespaces joined by a veth pair with a `tbf` rate limit on
/// both ends and, optionally, nftables dropping a share of packets each way.
pub struct Link {
    edge_ns: String,
    cloud_ns: String,
    /// The cloud side's address.
    pub cloud_ip: String,
}

impl Link {
    /// Builds the link (needs root, `ip`, `tc`, `nft`).
    pub fn create(rate_mbit: u32, loss_pct: u32) -> Result<Link> {
        let id = std::process::id() % 100_000;
        let (edge_ns, cloud_ns) = (format!("ferry-e{id}"), format!("ferry-c{id}"));
        let (va, vb) = (format!("fe{id}a"), format!("fe{id}b"));
        let net = format!("10.{}.{}", 100 + id % 100, id / 100 % 250);
        let link = Link { edge_ns: edge_ns.clone(), cloud_ns: cloud_ns.clone(), cloud_ip: format!("{net}.2") };
        run_ok(Command::new("ip").args(["netns", "add", &edge_ns]))?;
        run_ok(Command::new("ip").args(["netns", "add", &cloud_ns]))?;
        run_ok(Command::new("ip").args(["link", "add", &va, "type", "veth", "peer", "name", &vb]))?;
        for (dev, ns, ip) in [(&va, &edge_ns, format!("{net}.1/30")), (&vb, &cloud_ns, format!("{net}.2/30"))] {
            run_ok(Command::new("ip").args(["link", "set", dev, "netns", ns]))?;
            run_ok(Command::new("ip").args(["-n", ns, "addr", "add", &ip, "dev", dev]))?;
            run_ok(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
            run_ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
            run_ok(Command::new("tc").args([
                "-n",
                ns,
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                &format!("{rate_mbit}mbit"),
                "burst",
                "32kbit",
                "latency",
                "50ms",
            ]))?;
        }
        if loss_pct > 0 {
            let rules = format!(
                "table inet ferry {{\n chain out {{ type filter hook output priority 0; numgen random mod 100 < {loss_pct} drop; }}\n \
                 chain in {{ type filter hook input priority 0; numgen random mod 100 < {loss_pct} drop; }}\n}}\n"
            );
            let file = std::env::temp_dir().join(format!("ferry-nft-{id}.conf"));
            std::fs::write(&file, rules)?;
            run_ok(Command::new("ip").args(["netns", "exec", &edge_ns, "nft", "-f"]).arg(&file))?;
            let _ = std::fs::remove_file(file);
        }
        Ok(link)
    }

    /// `exe args...` inside the edge or cloud namespace.
    fn command(&self, cloud: bool, exe: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", if cloud { &self.cloud_ns } else { &self.edge_ns }]).arg(exe);
        c
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth pair, and with it the other end.
        let _ = Command::new("ip").args(["netns", "del", &self.edge_ns]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.cloud_ns]).status();
    }
}

/// Certificates, configs and directories of one cloud node and one edge agent.
struct Rig {
    dir: PathBuf,
    exe: PathBuf,
    agent: PathBuf,
    store: PathBuf,
    robot: PathBuf,
    cloud_cfg: PathBuf,
    edge_cfg: PathBuf,
}

impl Rig {
    fn new(ferry: &Path, dir: &Path, agent: Option<PathBuf>, host: &str, edge_extra: &str) -> Result<Rig> {
        let certs = dir.join("certs");
        tls::init_ca(&certs, "bench")?;
        tls::issue(&certs, Role::Cloud, &NodeId::new("cloud-1").map_err(anyhow::Error::msg)?)?;
        tls::issue(&certs, Role::Edge, &NodeId::new("robot-1").map_err(anyhow::Error::msg)?)?;
        let (store, robot) = (dir.join("store"), dir.join("robot"));
        std::fs::create_dir_all(&store)?;
        std::fs::create_dir_all(&robot)?;
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let cloud_cfg = dir.join("cloud.toml");
        std::fs::write(
            &cloud_cfg,
            format!(
                "listen = \"{host}:{port}\"\nmetrics_listen = \"\"\ncerts = \"certs\"\n[cache]\ndisk_dir = \"cache\"\n\
                 [mounts.\"/\"]\nurl = \"file://{}\"\n",
                store.display()
            ),
        )?;
        let edge_cfg = dir.join("edge.toml");
        std::fs::write(
            &edge_cfg,
            format!(
                "id = \"robot-1\"\ncerts = \"certs\"\nnodes = [\"{host}:{port}\"]\nspool = \"spool/spool.db\"\n\
                 settle = \"1s\"\ncommit_interval = \"5s\"\nscan_interval = \"500ms\"\n{edge_extra}\n\
                 [[watch]]\ndir = \"robot\"\n"
            ),
        )?;
        let exe = ferry.to_path_buf();
        Ok(Rig {
            dir: dir.to_path_buf(),
            agent: agent.unwrap_or_else(|| exe.clone()),
            exe,
            store,
            robot,
            cloud_cfg,
            edge_cfg,
        })
    }

    fn cloud(&self, link: Option<&Link>) -> Result<Proc> {
        let mut cmd = match link {
            Some(l) => l.command(true, &self.exe),
            None => Command::new(&self.exe),
        };
        let mut child = cmd
            .args(["--log", "warn", "cloud", "--config"])
            .arg(&self.cloud_cfg)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("start ferry cloud")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => bail!("ferry cloud exited before listening"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Proc(child))
    }

    fn edge(&self, link: Option<&Link>) -> Result<Proc> {
        let mut cmd = match link {
            Some(l) => l.command(false, &self.agent),
            None => Command::new(&self.agent),
        };
        let child = cmd
            .args(["--log", "error", "edge", "--config"])
            .arg(&self.edge_cfg)
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("start ferry edge")?;
        Ok(Proc(child))
    }

    fn object(&self, name: &str) -> PathBuf {
        self.store.join("logs/robot-1/robot").join(name)
    }

    fn status(&self) -> Result<serde_json::Value> {
        let out =
            Command::new(&self.agent).args(["edge", "status", "--json", "--config"]).arg(&self.edge_cfg).output()?;
        if !out.status.success() {
            bail!("ferry edge status: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until every named robot file is in the store byte for byte.
    fn wait_uploaded(&self, names: &[String], limit: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        let mut left: Vec<&String> = names.iter().collect();
        while !left.is_empty() {
            left.retain(|n| {
                let (a, b) = (self.robot.join(n), self.object(n));
                let same_len =
                    std::fs::metadata(&a).ok().map(|m| m.len()) == std::fs::metadata(&b).ok().map(|m| m.len());
                !(same_len && std::fs::read(&a).ok() == std::fs::read(&b).ok())
            });
            if t0.elapsed() > limit {
                bail!("{} file(s) not uploaded intact within {limit:?}: {:?}", left.len(), left);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t0.elapsed())
    }
}

fn random(len: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Text-like sensor log lines (compressible, like real logs).
fn log_lines(len: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut t: u64 = 1_700_000_000_000;
    while out.len() < len {
        t += rng.random_range(1..20);
        let line = format!(
            "{{\"t\":{t},\"topic\":\"/imu\",\"ax\":{:.4},\"ay\":{:.4},\"az\":{:.4},\"seq\":{}}}\n",
            rng.random_range(-1.0..1.0f64),
            rng.random_range(-1.0..1.0f64),
            9.8 + rng.random_range(-0.1..0.1f64),
            t % 100_000
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(len);
    out
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(ticks / 100.0)
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// `ferry-bench edge`: dedup, compression, CPU per GB, idle RSS, binary size.
pub fn edge(ferry: &Path, size: u64, agent: Option<PathBuf>, dir: Option<PathBuf>) -> Result<()> {
    let tmp =
        tempfile::Builder::new().prefix("ferry-bench-edge-").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let rig = Rig::new(ferry, tmp.path(), agent, "127.0.0.1", "")?;
    let _cloud = rig.cloud(None)?;
    let edge = rig.edge(None)?;
    let pid = edge.0.id();
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss_start = rss_bytes(pid)?;
    let mut rng = rand::rng();
    let half = (size / 2) as usize;
    eprintln!("bench edge: {} of sensor log lines and {} of random frames", human(half as u64), human(half as u64));

    // 1. Compression and CPU: text-like logs plus incompressible frames.
    let logs = log_lines(half, &mut rng);
    let frames = random(half, &mut rng);
    let cpu0 = cpu_seconds(pid)?;
    std::fs::write(rig.robot.join("imu.jsonl"), &logs)?;
    std::fs::write(rig.robot.join("frames.bin"), &frames)?;
    let names = vec!["imu.jsonl".to_string(), "frames.bin".to_string()];
    let upload = rig.wait_uploaded(&names, Duration::from_secs(600))?;
    std::thread::sleep(Duration::from_secs(2)); // settle, so the files count as uploaded
    let cpu = cpu_seconds(pid)? - cpu0;
    let s1 = rig.status()?;
    let wire1 = s1["wire_bytes"].as_u64().unwrap_or(0);
    let raw1 = s1["raw_bytes"].as_u64().unwrap_or(0);
    let logical = (logs.len() + frames.len()) as u64;

    // 2. Dedup: an exact re-copy, and a copy with 4 KiB inserted in the middle.
    std::fs::write(rig.robot.join("frames-copy.bin"), &frames)?;
    let mut edited = frames.clone();
    edited.splice(half / 2..half / 2, random(4096, &mut rng));
    std::fs::write(rig.robot.join("frames-edited.bin"), &edited)?;
    rig.wait_uploaded(&["frames-copy.bin".to_string(), "frames-edited.bin".to_string()], Duration::from_secs(600))?;
    std::thread::sleep(Duration::from_secs(2));
    let wire2 = rig.status()?["wire_bytes"].as_u64().unwrap_or(0) - wire1;
    let copies = (frames.len() + edited.len()) as u64;

    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = rss_bytes(pid)?;
    drop(edge);

    // Stripped size of the agent binary.
    let stripped = rig.dir.join("ferry-stripped");
    std::fs::copy(&rig.agent, &stripped)?;
    let stripped_size = match Command::new("strip").arg(&stripped).status() {
        Ok(s) if s.success() => Some(std::fs::metadata(&stripped)?.len()),
        _ => None,
    };

    let gb = logical as f64 / 1e9;
    let compression = raw1 as f64 / wire1.max(1) as f64;
    let log_compression = logs.len() as f64 / wire1.saturating_sub(frames.len() as u64).max(1) as f64;
    let dedup = copies as f64 / wire2.max(1) as f64;
    println!(
        "uploaded                     {} in {:.2} s ({:.1} MB/s)",
        human(logical),
        upload.as_secs_f64(),
        logical as f64 / upload.as_secs_f64() / 1e6
    );
    println!("compression (all chunks)     {compression:.2}x  ({} raw, {} on the wire)", human(raw1), human(wire1));
    println!("compression (log lines)      {log_compression:.2}x");
    println!("dedup (copy + edited copy)   {dedup:.1}x  ({} of files, {} on the wire)", human(copies), human(wire2));
    println!("agent CPU                    {:.2} s per GB uploaded", cpu / gb);
    println!(
        "agent RSS idle               {} at start, {} after uploading  (goal <= 16 MiB)",
        human(idle_rss_start),
        human(idle_rss)
    );
    match stripped_size {
        Some(s) => println!("agent binary (stripped)      {}  ({})  (goal <= 12 MiB)", human(s), rig.agent.display()),
        None => println!("agent binary (stripped)      unknown: `strip` failed"),
    }
    let json = serde_json::json!({
        "scenario": "edge",
        "bytes": logical,
        "upload_s": upload.as_secs_f64(),
        "compression_ratio": compression,
        "log_compression_ratio": log_compression,
        "dedup_ratio": dedup,
        "dedup_wire_bytes": wire2,
        "cpu_s_per_gb": cpu / gb,
        "idle_rss_bytes_start": idle_rss_start,
        "idle_rss_bytes": idle_rss,
        "stripped_binary_bytes": stripped_size,
        "agent": rig.agent.display().to_string(),
    });
    println!("{json}");
    Ok(())
}

/// `ferry-bench edge-link`: goodput over a rate-limited link, clean and lossy.
pub fn edge_link(ferry: &Path, size: u64, rate_mbit: u32, loss_pct: u32, dir: Option<PathBuf>) -> Result<()> {
    let base = dir.unwrap_or_else(std::env::temp_dir);
    let link_rate = f64::from(rate_mbit) * 1e6 / 8.0;
    let mut results = Vec::new();
    for loss in [0, loss_pct] {
        let tmp = tempfile::Builder::new().prefix("ferry-bench-link-").tempdir_in(&base)?;
        let link = Link::create(rate_mbit, loss).context("cannot build the test link (needs root, ip, tc, nft)")?;
        let rig = Rig::new(ferry, tmp.path(), None, &link.cloud_ip, "")?;
        let _cloud = rig.cloud(Some(&link))?;
        let body = random(size as usize, &mut rand::rng());
        std::fs::write(rig.robot.join("drive.bin"), &body)?;
        let t0 = Instant::now();
        let edge = rig.edge(Some(&link))?;
        let limit = Duration::from_secs_f64(size as f64 / link_rate * 10.0 + 60.0);
        rig.wait_uploaded(&["drive.bin".to_string()], limit)?;
        let took = t0.elapsed();
        let goodput = size as f64 / took.as_secs_f64();
        // Checked once more after the agent stopped: the stored object is the file.
        drop(edge);
        let intact = std::fs::read(rig.object("drive.bin")).is_ok_and(|b| b == body);
        eprintln!(
            "loss {loss}%: {} {} in {:.2} s",
            human(size),
            if intact { "intact" } else { "DAMAGED" },
            took.as_secs_f64()
        );
        results.push((loss, took, goodput, intact));
    }
    println!("link                         {rate_mbit} Mbit/s (tbf) = {:.0} B/s", link_rate);
    for (loss, took, goodput, _) in &results {
        println!(
            "goodput, {loss:>2}% loss each way  {:>8.0} B/s in {:>6.2} s   ratio to link rate {:.3}",
            goodput,
            took.as_secs_f64(),
            goodput / link_rate
        );
    }
    println!("    goal: >= 0.9 at {loss_pct}% loss (the time includes agent start, chunking and the 1 s settle)");
    let json = serde_json::json!({
        "scenario": "edge-link",
        "bytes": size,
        "rate_mbit": rate_mbit,
        "loss_pct": loss_pct,
        "clean_s": results[0].1.as_secs_f64(),
        "clean_ratio": results[0].2 / link_rate,
        "lossy_s": results[1].1.as_secs_f64(),
        "lossy_ratio": results[1].2 / link_rate,
        "intact": results.iter().all(|r| r.3),
    });
    println!("{json}");
    anyhow::ensure!(results.iter().all(|r| r.3), "an uploaded object differs from its file");
    Ok(())
}

/// `ferry-bench edge-crash`: kill -9 the agent at random points while logs
/// grow, then check every object byte for byte and that nothing extra exists.
pub fn edge_crash(ferry: &Path, iterations: usize, dir: Option<PathBuf>) -> Result<()> {
    let tmp =
        tempfile::Builder::new().prefix("ferry-bench-crash-").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let rig = Rig::new(ferry, tmp.path(), None, "127.0.0.1", "[bandwidth]\nrate = \"4MiB\"\n")?;
    let _cloud = rig.cloud(None)?;
    let mut rng = rand::rng();
    let mut names = Vec::new();
    let t0 = Instant::now();
    for i in 0..iterations {
        let name = format!("cam-{i:04}.bin");
        let len = rng.random_range(50_000..600_000);
        std::fs::write(rig.robot.join(&name), random(len, &mut rng))?;
        names.push(name);
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(rig.robot.join("growing.mcap"))?
            .write_all(&log_lines(100_000, &mut rng))?;
        let edge = rig.edge(None)?;
        std::thread::sleep(Duration::from_millis(rng.random_range(50..800)));
        let _ = Command::new("kill").args(["-9", &edge.0.id().to_string()]).status();
        drop(edge);
        if (i + 1) % 10 == 0 {
            eprintln!("bench edge-crash: {} kills", i + 1);
        }
    }
    names.push("growing.mcap".into());
    let _edge = rig.edge(None)?;
    let catch_up = rig.wait_uploaded(&names, Duration::from_secs(600))?;
    let mut stored: Vec<String> = std::fs::read_dir(rig.object(""))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    stored.sort();
    names.sort();
    if stored != names {
        bail!("the store holds {} objects, expected {}: extra or missing objects", stored.len(), names.len());
    }
    println!("kill -9 iterations           {iterations} in {:.1} s", t0.elapsed().as_secs_f64());
    println!("objects intact               {} of {} (none missing, none extra)", names.len(), names.len());
    println!("catch-up after the last kill {:.2} s", catch_up.as_secs_f64());
    println!(
        "{}",
        serde_json::json!({"scenario": "edge-crash", "iterations": iterations, "objects": names.len(), "intact": true})
    );
    Ok(())
}

/// `ferry-bench fleet`: N simulated robots fetch one model version through
/// one cache node; time against one robot, and bytes read from the store.
pub async fn fleet(size: u64, device_rate: u64, counts: &[usize], dir: Option<PathBuf>) -> Result<()> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use ferry_cloud_tier::testing::faulty::{Faults, FaultyStore};
    use ferry_protocol::client::Cluster;
    use ferry_protocol::manifest::chunk_path;
    use futures::StreamExt;

    let tmp =
        tempfile::Builder::new().prefix("ferry-bench-fleet-").tempdir_in(dir.unwrap_or_else(std::env::temp_dir))?;
    let root = tmp.path();
    // A remote-like store: 20 ms per request, 500 MB/s.
    let remote = Arc::new(object_store::memory::InMemory::new());
    let faulty = Arc::new(FaultyStore::new(
        remote.clone(),
        Faults { latency: Duration::from_millis(20), bandwidth: Some(500_000_000), ..Default::default() },
    ));
    let counters = faulty.counters();
    let (node, _) = crate::cache::bench_node(root, faulty.clone(), size + (512 << 20), 0).await?;
    let certs = root.join("certs");
    let mut rng = rand::rng();
    let mut rows = Vec::new();
    for &n in counts {
        // A fresh version per round, so every round starts cold at the node.
        let file = root.join(format!("model-{n}.bin"));
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
            let mut left = size;
            while left > 0 {
                let part = random(left.min(8 << 20) as usize, &mut rng);
                f.write_all(&part)?;
                left -= part.len() as u64;
            }
        }
        let f2 = file.clone();
        let (chunks, _) = tokio::task::spawn_blocking(move || ferry_protocol::chunk::cut(&f2, 0, size, true)).await??;
        // What `ferry model push` leaves in the store, put there directly:
        // the figure is the fetch, not the push.
        let src = Arc::new(std::fs::File::open(&file)?);
        for &(off, len, hash) in &chunks {
            use object_store::ObjectStoreExt;
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len as usize];
            src.read_exact_at(&mut buf, off)?;
            let loc = object_store::path::Path::from(chunk_path(&hash).trim_start_matches('/'));
            remote.put(&loc, buf.into()).await?;
        }
        std::fs::remove_file(&file)?;
        let before = counters.bytes_read.load(Ordering::SeqCst);
        eprintln!("bench fleet: {n} robot(s) fetching {}", human(size));
        let t0 = Instant::now();
        let mut robots = Vec::new();
        for i in 0..n {
            let id = NodeId::new(&format!("robot-{n}-{i}")).map_err(anyhow::Error::msg)?;
            tls::issue(&certs, Role::Edge, &id)?;
            let tls = tls::TlsMaterial::load_dir(&certs, &id)?;
            let device = Cluster::new(ferry_protocol::transport::client_endpoint(&tls)?, &[node.addr.to_string()])?;
            let chunks = chunks.clone();
            robots.push(tokio::spawn(async move {
                // Each robot's link: a token bucket at `device_rate`.
                let start = Instant::now();
                let mut got = 0u64;
                let mut fetches = futures::stream::iter(chunks.into_iter().map(|(_, len, hash)| {
                    let device = device.clone();
                    async move {
                        let mut buf = Vec::with_capacity(len as usize);
                        device.read_to(&chunk_path(&hash), 0, None, &mut buf).await?;
                        if blake3::hash(&buf).as_bytes() != &hash {
                            bail!("chunk does not match its hash");
                        }
                        Ok(u64::from(len))
                    }
                }))
                .buffered(8);
                while let Some(r) = fetches.next().await {
                    got += r?;
                    if device_rate > 0 {
                        let due = Duration::from_secs_f64(got as f64 / device_rate as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
                Ok::<u64, anyhow::Error>(got)
            }));
        }
        for r in robots {
            let got = r.await??;
            if got != size {
                bail!("a robot got {got} of {size} bytes");
            }
        }
        let took = t0.elapsed();
        let store = counters.bytes_read.load(Ordering::SeqCst) - before;
        rows.push((n, took, store));
    }
    node.shutdown().await;
    let t1 = rows.first().map_or(1.0, |r| r.1.as_secs_f64());
    println!("model {} per robot, robot links {}/s each", human(size), human(device_rate));
    for (n, took, store) in &rows {
        println!(
            "{n:>3} robot(s)  {:>8.2} s  time vs 1 robot {:>5.2}  store read {} ({:.2} copies)",
            took.as_secs_f64(),
            took.as_secs_f64() / t1,
            human(*store),
            *store as f64 / size as f64
        );
    }
    let last = rows.last().expect("at least one round");
    println!("    goal: time ratio {}-vs-1 <= 2, about one copy read from the store", last.0);
    let json = serde_json::json!({
        "scenario": "fleet",
        "bytes": size,
        "device_rate": device_rate,
        "rounds": rows.iter().map(|(n, t, s)| serde_json::json!({"robots": n, "s": t.as_secs_f64(), "store_bytes": s})).collect::<Vec<_>>(),
        "time_ratio_max_vs_1": last.1.as_secs_f64() / t1,
        "store_copies_max": last.2 as f64 / size as f64,
    });
    println!("{json}");
    Ok(())
}
