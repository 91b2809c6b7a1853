//! `ferry-bench cluster`: cache nodes each in its own network namespace
//! behind a rate-limited veth (tbf), a real etcd, `ferry` client processes
//! in the root namespace. Measures warm aggregate read throughput with 1..N
//! nodes against N times one node, store bytes read per dataset byte while
//! warming, the read stall when a node is killed, and the store bytes a
//! joining node reads (it should take its share from the previous owners).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::RngCore;

use ferry_protocol::ids::{NodeId, Role};
use ferry_protocol::tls;

use crate::edge::{run_ok, Proc};

/// One namespace per node, joined to the root namespace by a veth pair
/// with `tbf` at `rate_mbit` on both ends.
struct Hosts {
    names: Vec<String>,
    /// Per node: (root-side address, node-side address).
    addrs: Vec<(String, String)>,
}

impl Hosts {
    fn create(n: usize, rate_mbit: u32) -> Result<Hosts> {
        let id = std::process::id() % 10_000;
        // Nodes reach each other (hand-off, copies of writes) through the root namespace.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enable IP forwarding (needs root)")?;
        let mut hosts = Hosts { names: Vec::new(), addrs: Vec::new() };
        for i in 0..n {
            let ns = format!("ferry-n{id}-{i}");
            let (va, vb) = (format!("fc{id}x{i}a"), format!("fc{id}x{i}b"));
            let base = format!("10.{}", 200 + id % 50);
            let (root_ip, node_ip) = (format!("{base}.{i}.1"), format!("{base}.{i}.2"));
            run_ok(Command::new("ip").args(["netns", "add", &ns]))?;
            hosts.names.push(ns.clone());
            run_ok(Command::new("ip").args(["link", "add", &va, "type", "veth", "peer", "name", &vb]))?;
            run_ok(Command::new("ip").args(["link", "set", &vb, "netns", &ns]))?;
            run_ok(Command::new("ip").args(["addr", "add", &format!("{root_ip}/24"), "dev", &va]))?;
            run_ok(Command::new("ip").args(["link", "set", &va, "up"]))?;
            run_ok(Command::new("ip").args(["-n", &ns, "addr", "add", &format!("{node_ip}/24"), "dev", &vb]))?;
            run_ok(Command::new("ip").args(["-n", &ns, "link", "set", &vb, "up"]))?;
            run_ok(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]))?;
            run_ok(Command::new("ip").args(["-n", &ns, "route", "add", "default", "via", &root_ip]))?;
            let tbf = |netns: Option<&str>, dev: &str| -> Result<()> {
                let mut c = Command::new("tc");
                if let Some(ns) = netns {
                    c.args(["-n", ns]);
                }
                let rate = format!("{rate_mbit}mbit");
                run_ok(c.args([
                    "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "256kb", "latency", "50ms",
                ]))
            };
            tbf(None, &va)?;
            tbf(Some(&ns), &vb)?;
            hosts.addrs.push((root_ip, node_ip));
        }
        Ok(hosts)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The sum of a Prometheus counter on `addr` (`HOST:PORT`).
fn metric(addr: &str, name: &str) -> Result<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("metrics at {addr}"))?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

struct Bench {
    ferry: PathBuf,
    dir: PathBuf,
    hosts: Hosts,
    etcd_url_for_root: String,
    etcd_port: u16,
}

struct Node {
    proc: Option<Proc>,
    metrics: String,
}

impl Bench {
    fn client_cfg(&self, prefix: &str) -> Result<PathBuf> {
        let p = self.dir.join(format!("client{}.toml", prefix.replace('/', "-")));
        std::fs::write(
            &p,
            format!(
                "nodes = []\ncerts = \"certs\"\nid = \"client\"\n[etcd]\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n",
                self.etcd_url_for_root
            ),
        )?;
        Ok(p)
    }

    fn start_node(&self, i: usize, prefix: &str, round: &str) -> Result<Node> {
        let (root_ip, node_ip) = &self.hosts.addrs[i];
        let cfg = self.dir.join(format!("cloud-{}-{round}.toml", i + 1));
        std::fs::write(
            &cfg,
            format!(
                "node_id = \"cloud-{n}\"\nlisten = \"{node_ip}:7400\"\nmetrics_listen = \"{node_ip}:7401\"\ncerts = \"certs\"\n\
                 page_size = \"4MiB\"\nprefetch = \"none\"\n[cache]\nmemory = \"1GiB\"\ndisk = \"0\"\ndisk_dir = \"cache-{n}-{round}\"\n\
                 [mounts.\"/data\"]\nurl = \"file://{}\"\n[cluster]\nlease_ttl = \"2s\"\n[cluster.etcd]\n\
                 endpoints = [\"http://{root_ip}:{}\"]\nprefix = \"{prefix}\"\n",
                self.dir.join("store").display(),
                self.etcd_port,
                n = i + 1,
            ),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts.names[i]])
            .arg(&self.ferry)
            .args(["--log", "error", "cloud", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start ferry cloud")?;
        let metrics = format!("{node_ip}:7401");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&metrics).is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("cloud-{} did not start", i + 1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Node { proc: Some(Proc(child)), metrics })
    }

    fn ferry(&self, args: &[&str], client: &Path) -> Result<std::process::Output> {
        let out = Command::new(&self.ferry)
            .args(["--log", "error"])
            .args(args)
            .arg("--config")
            .arg(client)
            .current_dir(&self.dir)
            .output()?;
        if !out.status.success() {
            bail!("ferry {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out)
    }

    fn wait_members(&self, client: &Path, n: usize) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let out = self.ferry(&["cluster", "status", "--json"], client)?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            if v["members"].as_array().map_or(0, Vec::len) == n {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("membership did not reach {n}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every file read by its own `ferry cat`, all at once; seconds.
    fn read_all(&self, client: &Path, files: &[(String, Vec<u8>)]) -> Result<f64> {
        let t0 = Instant::now();
        let procs: Vec<_> = files
            .iter()
            .map(|(name, _)| {
                Command::new(&self.ferry)
                    .args(["--log", "error", "cat", &format!("/data/{name}"), "--config"])
                    .arg(client)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for (p, (name, want)) in procs.into_iter().zip(files) {
            let out = p.wait_with_output()?;
            if !out.status.success() || out.stdout != *want {
                bail!("cat {name}: wrong bytes or failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        Ok(t0.elapsed().as_secs_f64())
    }
}

/// Runs the scenario with up to `max_nodes` nodes over a dataset of `size` bytes.
pub fn cluster(ferry: &Path, size: u64, max_nodes: usize, rate_mbit: u32, dir: Option<PathBuf>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(dir.join("store"))?;
    let certs = dir.join("certs");
    tls::init_ca(&certs, "bench")?;
    for i in 1..=max_nodes.max(4) {
        tls::issue(&certs, Role::Cloud, &NodeId::new(&format!("cloud-{i}")).map_err(anyhow::Error::msg)?)?;
    }
    tls::issue(&certs, Role::Client, &NodeId::new("client").map_err(anyhow::Error::msg)?)?;
    // The dataset, put into the store by another tool: 8 files.
    let mut rng = rand::rng();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let mut b = vec![0u8; (size / 8) as usize];
            rng.fill_bytes(&mut b);
            (format!("f{i}.bin"), b)
        })
        .collect();
    for (name, b) in &files {
        std::fs::write(dir.join("store").join(name), b)?;
    }
    let total: u64 = files.iter().map(|f| f.1.len() as u64).sum();
    let hosts = Hosts::create(max_nodes.max(4), rate_mbit)?;
    let etcd_port = free_port()?;
    let _etcd = Proc(
        Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &format!("http://0.0.0.0:{etcd_port}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", free_port()?)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start etcd (apt-get install etcd-server)")?,
    );
    let bench = Bench {
        ferry: ferry.to_path_buf(),
        dir: dir.clone(),
        hosts,
        etcd_url_for_root: format!("http://127.0.0.1:{etcd_port}"),
        etcd_port,
    };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("etcd did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("dataset {} in 8 files; each node behind {rate_mbit} Mbit/s (tbf)", bytesize::ByteSize::b(total));

    // Warm aggregate throughput and store bytes per dataset byte, 1..N nodes.
    let mut rows = Vec::new();
    for n in 1..=max_nodes {
        let prefix = format!("/bench-{n}");
        let client = bench.client_cfg(&prefix)?;
        let nodes: Vec<Node> = (0..n).map(|i| bench.start_node(i, &prefix, &format!("n{n}"))).collect::<Result<_>>()?;
        bench.wait_members(&client, n)?;
        bench.ferry(&["load", "/data"], &client)?;
        let store: u64 =
            nodes.iter().map(|x| metric(&x.metrics, "ferry_store_read_bytes_total")).sum::<Result<u64>>()?;
        let secs = (0..2).map(|_| bench.read_all(&client, &files)).collect::<Result<Vec<f64>>>()?;
        let best = secs.iter().cloned().fold(f64::INFINITY, f64::min);
        let rate = total as f64 / best;
        println!(
            "{n} node(s): warm aggregate {:.1} MB/s, store bytes per dataset byte {:.3}",
            rate / 1e6,
            store as f64 / total as f64
        );
        rows.push((n, rate, store as f64 / total as f64));
        drop(nodes);
    }
    let one = rows[0].1;
    for (n, rate, _) in &rows {
        println!("{n} node(s): {:.3} of {n} x one node", rate / (*n as f64 * one));
    }

    // Kill -9 during a loop of reads by new processes; then a fourth node joins.
    let n = 3;
    let prefix = "/bench-loss".to_string();
    let client = bench.client_cfg(&prefix)?;
    let mut nodes: Vec<Node> = (0..n).map(|i| bench.start_node(i, &prefix, "loss")).collect::<Result<_>>()?;
    bench.wait_members(&client, n)?;
    bench.ferry(&["load", "/data"], &client)?;
    let one_file = &files[..1];
    let mut before = Vec::new();
    for _ in 0..8 {
        before.push(bench.read_all(&client, one_file)?);
    }
    nodes[1].proc.take();
    let mut after = Vec::new();
    for _ in 0..16 {
        after.push(bench.read_all(&client, one_file)?);
    }
    before.sort_by(f64::total_cmp);
    let warm = before[before.len() / 2];
    let mut stalls: Vec<f64> = after.iter().map(|t| (t - warm).max(0.0)).collect();
    stalls.sort_by(f64::total_cmp);
    let pct = |p: f64| stalls[((stalls.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "node killed: warm read {:.3} s; stall p50 {:.3} s, p99 {:.3} s over {} reads by new processes",
        warm,
        pct(0.5),
        pct(0.99),
        stalls.len()
    );
    // The killed node back, all warm; then a new node joins.
    nodes[1] = bench.start_node(1, &prefix, "loss-back")?;
    bench.wait_members(&client, n)?;
    bench.ferry(&["load", "/data"], &client)?;
    let joiner = bench.start_node(n, &prefix, "join")?;
    bench.wait_members(&client, n + 1)?;
    bench.read_all(&client, &files)?;
    let joiner_store = metric(&joiner.metrics, "ferry_store_read_bytes_total")?;
    let joiner_peer = metric(&joiner.metrics, "ferry_peer_read_bytes_total")?;
    println!(
        "joining node: {} from the store, {} from previous owners ({:.3} of the dataset from the store)",
        bytesize::ByteSize::b(joiner_store),
        bytesize::ByteSize::b(joiner_peer),
        joiner_store as f64 / total as f64
    );
    let json = serde_json::json!({
        "scenario": "cluster",
        "dataset_bytes": total,
        "rate_mbit": rate_mbit,
        "nodes": rows.iter().map(|(n, r, s)| serde_json::json!({
            "nodes": n, "warm_aggregate_bytes_per_s": r, "ratio_to_n_times_one": r / (*n as f64 * one),
            "store_bytes_per_dataset_byte": s,
        })).collect::<Vec<_>>(),
        "kill": { "warm_read_s": warm, "stall_p50_s": pct(0.5), "stall_p99_s": pct(0.99), "reads": stalls.len() },
        "join": { "store_bytes": joiner_store, "peer_bytes": joiner_peer, "store_per_dataset_byte": joiner_store as f64 / total as f64 },
    });
    println!("{json}");
    Ok(())
}
