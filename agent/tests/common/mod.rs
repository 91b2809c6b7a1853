//! Helpers shared by the end-to-end tests: the binary, ports, processes, a cache node.
#![allow(dead_code, unused_imports)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub fn ferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferry"));
    c.env_remove("FERRY_CONFIG").env("FERRY_LOG", "warn");
    c
}

pub fn run(args: &[&str]) -> Output {
    ferry().args(args).output().expect("run ferry")
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Whether a component a test needs is here; under CI (any non-empty `CI`)
/// its absence is a failure.
pub use ferry_cloud_tier::testing::available;

pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill -s {sig}");
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(t0.elapsed() < limit, "process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_file(p: &Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn is_mounted(dir: &Path) -> bool {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/mounts")
        .expect("read /proc/mounts")
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(canon.to_str().expect("utf8")))
}

pub fn metrics(port: u16) -> String {
    http_get(port, "/metrics")
}

/// The whole HTTP response (status line, headers, body) to `GET path`.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum::<f64>() as u64
}

pub struct Cloud {
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub client: String,
    pub store: PathBuf,
    pub port: u16,
    pub mport: u16,
}

/// A fleet CA in `DIR/certs` with `cloud-1`, `client` and the identities
/// `more` (role, id); `DIR/cloud.toml` for a node with `mount` over
/// `DIR/store`; `DIR/client.toml` naming it.
pub fn cloud_setup_with(dir: &Path, mount: &str, fleet: &str, more: &[(&str, &str)]) -> Cloud {
    let certs = dir.join("certs");
    let c = certs.to_str().expect("utf8");
    assert!(run(&["cert", "init", "--dir", c, "--fleet", fleet]).status.success());
    for (role, id) in [("cloud", "cloud-1"), ("client", "client")].iter().chain(more) {
        assert!(run(&["cert", "issue", "--dir", c, "--role", role, "--id", id]).status.success());
    }
    let store = dir.join("store");
    std::fs::create_dir_all(&store).expect("mkdir");
    let (port, mport) = (free_port(), free_tcp_port());
    let cfg = dir.join("cloud.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{mport}\"\ncerts = \"certs\"\n\
             page_size = \"1MiB\"\n[cache]\ndisk_dir = \"cache\"\n[mounts.\"{mount}\"]\nurl = \"file://{}\"\n",
            store.display()
        ),
    )
    .expect("write config");
    let client = dir.join("client.toml");
    std::fs::write(&client, format!("nodes = [\"127.0.0.1:{port}\"]\ncerts = \"certs\"\nid = \"client\"\n"))
        .expect("write");
    Cloud { dir: dir.to_path_buf(), cfg, client: client.to_str().expect("utf8").to_string(), store, port, mport }
}

pub fn cloud_setup(dir: &Path) -> Cloud {
    cloud_setup_with(dir, "/d", "default", &[])
}

pub fn start_cloud(c: &Cloud) -> Running {
    let mut node = Running(ferry().args(["cloud", "--config", c.cfg.to_str().expect("utf8")]).spawn().expect("spawn"));
    let mport = c.mport;
    wait_until(Duration::from_secs(30), "node did not start", || {
        if let Some(s) = node.0.try_wait().expect("try_wait") {
            panic!("the node exited at start ({s}); see its error above");
        }
        std::net::TcpStream::connect(("127.0.0.1", mport)).is_ok()
    });
    // Its metrics port answers; it must be this node answering (a port taken
    // by another process makes the node exit instead).
    std::thread::sleep(Duration::from_millis(100));
    if let Some(s) = node.0.try_wait().expect("try_wait") {
        panic!("the node exited at start ({s}); see its error above");
    }
    node
}

/// Polls `done` until it holds; fails with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "{what} (after {limit:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The metric names the Grafana dashboard (deploy/grafana/ferry.json) queries.
pub fn dashboard_metrics() -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/ferry.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).expect("read the dashboard")).expect("the dashboard is JSON");
    let mut names = std::collections::BTreeSet::new();
    for panel in v["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("a PromQL expression");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("ferry_") {
                    names.insert(word.to_string());
                }
            }
        }
    }
    names.into_iter().collect()
}

/// Whether the exposition `scrape` declares metric `name` (a sample name:
/// `_total`, `_bucket`, `_count` and `_sum` belong to their family).
pub fn exported(scrape: &str, name: &str) -> bool {
    let family = ["_total", "_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
    scrape.lines().any(|l| l.starts_with(&format!("# TYPE {name} ")) || l.starts_with(&format!("# TYPE {family} ")))
}

/// Whether FUSE can be used here (a failure under CI when it cannot).
pub fn fuse_available() -> bool {
    available(Path::new("/dev/fuse").exists(), "/dev/fuse missing: scripts/test.sh installs fuse3")
}
