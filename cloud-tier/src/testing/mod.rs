//! Helpers for tests and benchmarks of anything that talks to a cache
//! node: certificates, nodes over wrapper stores, clients, a real S3 server
//! (moto), and the rule that under CI a missing component is a failure.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use object_store::ObjectStore;

use crate::clock::SystemClock;
use crate::config::CacheConfig;
use crate::metrics::Metrics;
use crate::namespace::Namespace;
use crate::testing::faulty::{Faults, FaultyStore};
use crate::{CloudConfig, RunningNode};
use ferry_protocol::client::Cluster;
use ferry_protocol::ids::{NodeId, Role};
use ferry_protocol::tls::{self, TlsMaterial};
use ferry_protocol::transport;

pub mod faulty;

/// Page size of the nodes started here.
pub const PAGE: u64 = 1 << 20;

/// Whether this runs under CI: `CI` set to anything but the empty string
/// (`true`, `1`, `yes` all count).
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Whether a component a test needs is here (`present`). If it is not, the
/// test is skipped (it prints `SKIPPED:`, and notes the skip in
/// `$FERRY_SKIP_LOG`, which scripts/test.sh counts), except under CI, where its absence fails the test. `missing`
/// says what is missing and what installs it.
pub fn available(present: bool, missing: &str) -> bool {
    if !present {
        assert!(!under_ci(), "{missing}");
        eprintln!("SKIPPED: {missing}");
        // scripts/test.sh counts skips from this file (test output is captured).
        if let Some(log) = std::env::var_os("FERRY_SKIP_LOG") {
            use std::io::Write as _;
            let test = std::thread::current().name().unwrap_or("?").to_string();
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
                let _ = writeln!(f, "{test}: {missing}");
            }
        }
    }
    present
}

/// A CA with a cloud identity and a client identity.
pub fn certs(dir: &Path) -> PathBuf {
    let c = dir.join("certs");
    tls::init_ca(&c, "test").expect("init CA");
    tls::issue(&c, Role::Cloud, &NodeId::new("cloud-1").expect("id")).expect("issue cloud");
    tls::issue(&c, Role::Client, &NodeId::new("client").expect("id")).expect("issue client");
    c
}

pub fn tls_of(certs: &Path, id: &str) -> TlsMaterial {
    TlsMaterial::load_dir(certs, &NodeId::new(id).expect("id")).expect("load identity")
}

#[derive(Debug)]
pub struct TestNode {
    pub node: RunningNode,
    pub store: Arc<FaultyStore>,
}

pub fn node_config(cache_dir: &Path, memory: u64, disk: u64) -> CloudConfig {
    CloudConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        metrics_listen: String::new(),
        page_size: ByteSize::b(PAGE),
        cache: CacheConfig {
            memory: ByteSize::b(memory),
            disk: ByteSize::b(disk),
            disk_dir: cache_dir.to_path_buf(),
            ..CacheConfig::default()
        },
        ..CloudConfig::default()
    }
}

/// Starts a node whose namespace mounts `base` (wrapped for counting and faults) at `mount`.
pub async fn start_node(
    certs: &Path,
    cfg: &CloudConfig,
    mount: &str,
    base: Arc<dyn ObjectStore>,
    prefix: object_store::path::Path,
    faults: Faults,
) -> TestNode {
    start_node_over(certs, cfg, mount, (base, prefix, None), faults).await
}

/// Like [`start_node`], over a store opened with its directories
/// ([`crate::namespace::open_store_with_dirs`]).
pub async fn start_node_over(
    certs: &Path,
    cfg: &CloudConfig,
    mount: &str,
    (base, prefix, dirs): crate::namespace::OpenedStore,
    faults: Faults,
) -> TestNode {
    let store = Arc::new(FaultyStore::new(base, faults));
    let mut ns = Namespace::empty(Arc::new(Metrics::new()));
    ns.add(mount, store.clone(), prefix, 0).expect("add mount");
    ns.set_dirs(mount, dirs);
    let node =
        RunningNode::start_with(cfg, ns, tls_of(certs, "cloud-1"), Arc::new(SystemClock)).await.expect("start node");
    TestNode { node, store }
}

pub fn client(certs: &Path, nodes: &[String]) -> Cluster {
    let ep = transport::client_endpoint(&tls_of(certs, "client")).expect("client endpoint");
    Cluster::new(ep, nodes).expect("cluster")
}

pub async fn read_all(c: &Cluster, path: &str) -> Result<Vec<u8>, ferry_protocol::ProtocolError> {
    let mut out = Vec::new();
    c.read_to(path, 0, None, &mut out).await?;
    Ok(out)
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A moto S3 server on a free loopback port, stopped on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub endpoint: String,
    port: u16,
}

fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRY_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("moto_server")).find(|p| p.is_file()))
}

impl Moto {
    /// Starts moto, or returns `None` outside CI when it is not installed.
    /// Under CI a missing moto is a failure.
    pub fn start() -> Option<Moto> {
        let Some(bin) = moto_binary() else {
            available(false, "moto_server not found (scripts/test.sh installs it into .venv)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}"), port };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Creates a bucket with a plain HTTP PUT. A server that accepts
    /// connections may still drop them while it finishes starting: asked
    /// again then, for up to 30 s.
    pub fn create_bucket(&self, name: &str) {
        let t0 = Instant::now();
        loop {
            let answer = (|| -> std::io::Result<String> {
                let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
                write!(
                    s,
                    "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.port
                )?;
                let mut resp = String::new();
                s.read_to_string(&mut resp)?;
                Ok(resp)
            })();
            match answer {
                Ok(resp) => {
                    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
                    return;
                }
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(30), "create bucket {name}: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Sends an unsigned `method` request for `path` (`/BUCKET/KEY...`, as
    /// other S3 tools would); the response's status code and body.
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send to moto");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("moto's answer");
        let code = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
    }

    /// The keys in `bucket` that start with `prefix`, listed as other S3 tools list them.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let query = percent_encoding::utf8_percent_encode(prefix, percent_encoding::NON_ALPHANUMERIC);
        let (code, body) = self.request("GET", &format!("/{bucket}?prefix={query}"));
        assert_eq!(code, 200, "list {bucket}: {body}");
        body.split("<Key>").skip(1).filter_map(|k| k.split_once("</Key>")).map(|(k, _)| k.to_string()).collect()
    }

    /// object_store options for this server.
    pub fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node over a fresh local-files store in `dir/store` (memory 16 MiB, disk 64 MiB).
#[derive(Debug)]
pub struct FileNode {
    pub certs: PathBuf,
    pub base: Arc<dyn object_store::ObjectStore>,
    pub prefix: object_store::path::Path,
    pub node: TestNode,
}

pub async fn file_node(dir: &Path) -> FileNode {
    file_node_with(dir, crate::testing::faulty::Faults::default()).await
}

/// Like [`file_node`], with `faults` injected at the store.
pub async fn file_node_with(dir: &Path, faults: crate::testing::faulty::Faults) -> FileNode {
    let certs = certs(dir);
    let root = dir.join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let opened = crate::namespace::open_store_with_dirs(&format!("file://{}", root.display()), &Default::default())
        .expect("open");
    let (base, prefix) = (opened.0.clone(), opened.1.clone());
    let cfg = node_config(&dir.join("cache"), 16 << 20, 64 << 20);
    let node = start_node_over(&certs, &cfg, "/", opened, faults).await;
    FileNode { certs, base, prefix, node }
}

/// An etcd server on free loopback ports with its own data directory,
/// stopped on drop.
#[derive(Debug)]
pub struct Etcd {
    child: Option<Child>,
    /// Its client URL.
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    /// CA, certificate and key of an etcd serving TLS that wants client certificates.
    tls: Option<[PathBuf; 3]>,
}

impl Etcd {
    /// Like [`Etcd::start`], serving TLS with `cert` and `key` and
    /// accepting only clients whose certificates `ca` signed.
    pub fn start_tls(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> Option<Etcd> {
        let mut e = Etcd::start(dir)?;
        e.stop();
        e.tls = Some([ca.to_path_buf(), cert.to_path_buf(), key.to_path_buf()]);
        e.endpoint = format!("https://127.0.0.1:{}", e.client_port);
        e.resume();
        Some(e)
    }

    /// Starts etcd in `dir`, or returns `None` outside CI when it is not
    /// installed (`apt-get install etcd-server`). Under CI a missing etcd
    /// is a failure.
    pub fn start(dir: &Path) -> Option<Etcd> {
        let found = Command::new("etcd").arg("--version").output().is_ok_and(|o| o.status.success());
        if !available(found, "etcd not found (scripts/test.sh installs etcd-server)") {
            return None;
        }
        let free = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut e = Etcd {
            child: None,
            endpoint: String::new(),
            client_port: free(),
            peer_port: free(),
            dir: dir.to_path_buf(),
            tls: None,
        };
        e.endpoint = format!("http://127.0.0.1:{}", e.client_port);
        e.resume();
        Some(e)
    }

    /// Stops the server (clients lose it; its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again over the same data.
    pub fn resume(&mut self) {
        let (c, p) = (self.client_port, self.peer_port);
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut cmd = Command::new("etcd");
        if let Some([ca, cert, key]) = &self.tls {
            cmd.arg("--client-cert-auth").arg("--trusted-ca-file").arg(ca);
            cmd.arg("--cert-file").arg(cert).arg("--key-file").arg(key);
        }
        let child = cmd
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen-client-urls", &format!("{scheme}://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("{scheme}://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-cluster", &format!("default=http://127.0.0.1:{p}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", c)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
