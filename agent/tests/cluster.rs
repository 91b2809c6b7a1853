//! A cluster as an operator runs it: a real etcd, `ferry cloud` nodes as
//! separate processes over one store, clients following membership in
//! etcd; faults by kill -9, SIGTERM, a dropped port (nftables), a store a
//! node cannot reach, and etcd itself stopped.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry_cloud_tier::testing::{self, Etcd, Moto};

struct Node {
    id: String,
    port: u16,
    mport: u16,
    cfg: PathBuf,
    proc: Option<Running>,
}

/// Certificates, an etcd, node configs and a client config in one directory.
struct Testbed {
    // Dropped in this order: nodes before their etcd.
    nodes: Vec<Node>,
    etcd: Etcd,
    dir: PathBuf,
    certs: PathBuf,
    client: String,
}

/// `n` nodes with the mount `/d` over the local store DIR/store, in which
/// the directory `dir` is made; the testbed and the store's path.
fn file_testbed(dir: &Path, n: usize, make: &str) -> Option<(Testbed, PathBuf)> {
    let store = dir.join("store");
    std::fs::create_dir_all(store.join(make)).expect("mkdir");
    let mount = format!("[mounts.\"/d\"]\nurl = \"file://{}\"\n", store.display());
    Some((testbed(dir, n, |_| mount.clone())?, store))
}

/// `mounts(i)` gives node `i`'s `[mounts]` sections (nodes may reach the store differently).
fn testbed(dir: &Path, n: usize, mounts: impl Fn(usize) -> String) -> Option<Testbed> {
    let etcd = Etcd::start(&dir.join("etcd"))?;
    let certs = testing::certs(dir);
    let c = certs.to_str().expect("utf8");
    for i in 2..=n {
        assert!(run(&["cert", "issue", "--dir", c, "--role", "cloud", "--id", &format!("cloud-{i}")]).status.success());
    }
    let mut nodes = Vec::new();
    for i in 1..=n {
        let (id, port, mport) = (format!("cloud-{i}"), free_port(), free_tcp_port());
        let cfg = dir.join(format!("{id}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "node_id = \"{id}\"\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{mport}\"\n\
                 certs = \"certs\"\npage_size = \"1MiB\"\nprefetch = \"none\"\n\
                 [cache]\nmemory = \"64MiB\"\ndisk = \"256MiB\"\ndisk_dir = \"{id}-cache\"\n\
                 {}\n[cluster]\nlease_ttl = \"2s\"\n[cluster.etcd]\nendpoints = [\"{}\"]\n",
                mounts(i),
                etcd.endpoint
            ),
        )
        .expect("write node config");
        nodes.push(Node { id, port, mport, cfg, proc: None });
    }
    let client = dir.join("client.toml");
    std::fs::write(
        &client,
        format!("nodes = []\ncerts = \"certs\"\nid = \"client\"\n[etcd]\nendpoints = [\"{}\"]\n", etcd.endpoint),
    )
    .expect("write client config");
    Some(Testbed { dir: dir.to_path_buf(), certs, etcd, nodes, client: client.to_str().expect("utf8").into() })
}

impl Testbed {
    fn start(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let mut p = Running(ferry().args(["cloud", "--config", n.cfg.to_str().expect("utf8")]).spawn().expect("spawn"));
        let mport = n.mport;
        wait_until(Duration::from_secs(30), "node did not start", || {
            if let Some(s) = p.0.try_wait().expect("try_wait") {
                panic!("{} exited at start ({s}); see its error above", n.id);
            }
            std::net::TcpStream::connect(("127.0.0.1", mport)).is_ok()
        });
        n.proc = Some(p);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            signal(&p.0, "KILL");
            let _ = p.0.wait();
        }
    }

    /// `ferry cluster status --json`, members by id.
    fn members(&self) -> Vec<String> {
        let out = run(&["cluster", "status", "--json", "--config", &self.client]);
        assert!(out.status.success(), "cluster status: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        v["members"].as_array().expect("members").iter().map(|m| m["id"].as_str().expect("id").to_string()).collect()
    }

    fn wait_members(&self, n: usize) {
        wait_until(Duration::from_secs(30), "membership did not settle", || self.members().len() == n);
    }

    /// A client of the nodes' own ring (ids as etcd lists them), for writes and owner lookups.
    fn static_client(&self) -> ferry_protocol::client::Cluster {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.id, n.port)).collect();
        testing::client(&self.certs, &nodes)
    }

    fn index_of(&self, id: &str) -> usize {
        self.nodes.iter().position(|n| n.id == id).expect("known node")
    }

    /// Per member (`ferry cluster status --json`): its own pending writes
    /// and the copies it holds for others; asked again (up to 20 s) while a
    /// member does not answer the status request.
    fn journals(&self) -> Vec<(String, u64, u64)> {
        let mut rows = Vec::new();
        wait_until(Duration::from_secs(20), "a member never answered cluster status", || {
            let out = run(&["cluster", "status", "--json", "--config", &self.client]);
            assert!(out.status.success(), "cluster status: {}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
            let members = v["members"].as_array().expect("members").clone();
            if members.iter().any(|m| m["healthy"] != true) {
                println!("cluster status: {v}");
                return false;
            }
            rows = members
                .iter()
                .map(|m| {
                    let n = |k: &str| m[k].as_u64().expect("a healthy member's counts");
                    (m["id"].as_str().expect("id").to_string(), n("pending_writes"), n("held_writes"))
                })
                .collect();
            true
        });
        rows
    }
}

/// `ferry cat PATH` in a new process: its bytes and how long it took.
fn cat(client: &str, path: &str) -> (Vec<u8>, Duration) {
    let t0 = Instant::now();
    let out = ferry().args(["cat", path, "--config", client]).stderr(Stdio::piped()).output().expect("run cat");
    assert!(out.status.success(), "cat {path}: {}", String::from_utf8_lossy(&out.stderr));
    (out.stdout, t0.elapsed())
}

fn nft(script: &str) -> bool {
    let mut child =
        std::process::Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::null()).spawn().ok();
    let Some(c) = child.as_mut() else { return false };
    c.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write nft");
    c.wait().is_ok_and(|s| s.success())
}

/// Drops the UDP port `port` on loopback (an nftables table of its own), removed on drop.
struct Partition(String);

impl Partition {
    fn of(port: u16) -> Option<Partition> {
        let table = format!("ferrytest{port}");
        let ok = nft(&format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority -10;\n  udp dport {port} drop\n  udp sport {port} drop\n }}\n}}\n"
        ));
        available(ok, "nft cannot add rules (nftables, root)").then_some(Partition(table))
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        nft(&format!("delete table inet {}\n", self.0));
    }
}

#[test]
fn readers_notice_no_node_killed_or_partitioned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((mut bed, store)) = file_testbed(tmp.path(), 3, "train") else {
        return;
    };
    // The dataset is put into the store by another tool.
    let big = testing::data(24 << 20, 1);
    std::fs::write(store.join("train/big.bin"), &big).expect("write");
    let small: Vec<Vec<u8>> = (0..6).map(|i| testing::data(200_000 + i * 1000, 10 + i as u64)).collect();
    for (i, s) in small.iter().enumerate() {
        std::fs::write(store.join(format!("train/s{i}.bin")), s).expect("write");
    }
    for i in 0..3 {
        bed.start(i);
    }
    bed.wait_members(3);
    let load = run(&["load", "/d/train", "--config", &bed.client]);
    assert!(load.status.success(), "load: {}", String::from_utf8_lossy(&load.stderr));
    let warm: Vec<Duration> = (0..3).map(|_| cat(&bed.client, "/d/train/big.bin").1).collect();

    // A loop of new `ferry cat` processes; one node killed partway.
    let mut times = Vec::new();
    for round in 0..12 {
        if round == 3 {
            bed.kill(1);
        }
        let (got, took) = cat(&bed.client, "/d/train/big.bin");
        assert!(got == big, "round {round}: wrong bytes ({} of {})", got.len(), big.len());
        for (i, s) in small.iter().enumerate() {
            assert!(cat(&bed.client, &format!("/d/train/s{i}.bin")).0 == *s, "round {round}: s{i}.bin");
        }
        times.push(took);
    }
    // Gone from every client's ring once its lease ran out.
    bed.wait_members(2);
    println!("warm {warm:?}; with cloud-2 killed at round 3: {times:?}");

    // Partitioned: the node is up and registered, its port unreachable.
    let Some(partition) = Partition::of(bed.nodes[2].port) else { return };
    let mut times = Vec::new();
    for round in 0..6 {
        let (got, took) = cat(&bed.client, "/d/train/big.bin");
        assert!(got == big, "partitioned, round {round}: wrong bytes");
        times.push(took);
    }
    drop(partition);
    println!("with cloud-3's port dropped: {times:?}");
}

/// A TCP proxy to `target` that can be paused: paused, it cuts its
/// connections and refuses new ones (the node behind it cannot reach the store).
struct Proxy {
    port: u16,
    paused: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn to(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let paused = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (p, cs) = (paused.clone(), conns.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if p.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&target) else { continue };
                cs.lock()
                    .expect("conns")
                    .extend([inbound.try_clone().expect("clone"), outbound.try_clone().expect("clone")]);
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(inbound.try_clone().expect("clone"), outbound.try_clone().expect("clone"));
                pipe(outbound, inbound);
            }
        });
        Proxy { port, paused, conns }
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        for c in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

/// A client of `bucket` on `moto`, built as the nodes build theirs.
fn s3(moto: &Moto, bucket: &str) -> std::sync::Arc<dyn object_store::ObjectStore> {
    ferry_cloud_tier::namespace::open_store(&format!("s3://{bucket}"), &moto.options()).expect("s3 client").0
}

/// Whether the bucket holds `key`, and its bytes.
fn s3_get(moto: &Moto, bucket: &str, key: &str) -> Option<Vec<u8>> {
    use object_store::ObjectStoreExt;
    let store = s3(moto, bucket);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        match store.get(&object_store::path::Path::from(key)).await {
            Ok(r) => Some(r.bytes().await.expect("body").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("s3 get {key}: {e}"),
        }
    })
}

fn s3_put(moto: &Moto, bucket: &str, key: &str, bytes: &[u8]) {
    use object_store::ObjectStoreExt;
    let store = s3(moto, bucket);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(store.put(&object_store::path::Path::from(key), bytes.to_vec().into())).expect("s3 put");
}

#[test]
fn a_checkpoint_outlives_the_node_that_took_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ckpt");
    let (two, one) = ("/two/step-100.pt", "/one/step-100.pt");
    // The nodes reach the store through proxies the test can cut.
    let proxies: Vec<Proxy> =
        (0..3).map(|_| Proxy::to(moto.endpoint.trim_start_matches("http://").to_string())).collect();
    let Some(mut bed) = testbed(tmp.path(), 3, |i| {
        let endpoint = format!("http://127.0.0.1:{}", proxies[i - 1].port);
        let opts = format!(
            "options = {{ aws_endpoint = \"{endpoint}\", aws_allow_http = \"true\", aws_region = \"us-east-1\", \
             aws_access_key_id = \"test\", aws_secret_access_key = \"test\" }}"
        );
        format!(
            "[mounts.\"/two\"]\nurl = \"s3://ckpt/two\"\n{opts}\n[mounts.\"/one\"]\nurl = \"s3://ckpt/one\"\nwrite_replicas = 1\n{opts}\n"
        )
    }) else {
        return;
    };
    for i in 0..3 {
        bed.start(i);
    }
    bed.wait_members(3);
    // An older version is in the store already: nobody may serve it once the new one is acknowledged.
    let old = testing::data(300_000, 7);
    s3_put(&moto, "ckpt", "one/step-100.pt", &old);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let client = {
        let _in_runtime = rt.enter();
        bed.static_client()
    };

    // write_replicas = 2 (the default with three nodes): the writer cannot
    // reach the store, acknowledges once a second node holds the bytes, and is killed.
    let ckpt = testing::data(6 << 20, 3);
    proxies.iter().for_each(Proxy::pause);
    let written = rt.block_on(client.put_bytes(two, &ckpt)).expect("put checkpoint");
    assert!(!written.persisted);
    assert!(s3_get(&moto, "ckpt", "two/step-100.pt").is_none(), "nothing in the store before its data");
    let journals = bed.journals();
    let writer = journals.iter().find(|j| j.1 == 1).expect("a node has the write pending").0.clone();
    let holders = journals.iter().filter(|j| j.2 == 1).count();
    assert_eq!(holders, 1, "one other node holds a copy: {journals:?}");
    let w = bed.index_of(&writer);
    bed.kill(w);
    proxies.iter().enumerate().filter(|(i, _)| *i != w).for_each(|(_, p)| p.resume());
    let got = rt.block_on(testing::read_all(&client, two)).expect("read from the replica");
    assert!(got == ckpt, "the replica served {} bytes, not the checkpoint", got.len());
    // The holder uploads it once the writer is out of the ring; the store
    // never shows a partial or empty object under its name meanwhile.
    wait_until(Duration::from_secs(60), "the replica never uploaded the checkpoint", || {
        match s3_get(&moto, "ckpt", "two/step-100.pt") {
            None => false,
            Some(b) => {
                assert!(b == ckpt, "the store showed {} bytes under the checkpoint's name", b.len());
                true
            }
        }
    });
    proxies[w].resume();

    // write_replicas = 1: while its only holder is down, the path is an
    // error everywhere, never the store's older bytes.
    bed.start(w);
    bed.wait_members(3);
    let new = testing::data(400_000, 8);
    proxies.iter().for_each(Proxy::pause);
    let written = rt.block_on(client.put_bytes(one, &new)).expect("put with one copy");
    assert!(!written.persisted);
    let journals = bed.journals();
    let writer_one = journals.iter().find(|j| j.1 == 1).expect("a node has the write pending").0.clone();
    assert!(journals.iter().all(|j| j.2 == 0), "write_replicas = 1 made a copy: {journals:?}");
    let w1 = bed.index_of(&writer_one);
    bed.kill(w1);
    proxies.iter().for_each(Proxy::resume);
    bed.wait_members(2);
    let out = ferry().args(["cat", one, "--config", &bed.client]).output().expect("cat");
    assert!(!out.status.success(), "cat served {} bytes while the only holder was down", out.stdout.len());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(one) && err.contains(&writer_one), "unclear error: {err}");
    assert!(rt.block_on(testing::read_all(&client, one)).is_err(), "a client read the older version");
    // Back: the holder serves and uploads it.
    bed.start(w1);
    bed.wait_members(3);
    let (got, _) = cat(&bed.client, one);
    assert!(got == new, "after the holder came back: {} bytes", got.len());
    wait_until(Duration::from_secs(60), "the holder never uploaded", || {
        s3_get(&moto, "ckpt", "one/step-100.pt").is_some_and(|b| b == new)
    });

    // A node leaving on SIGTERM with a write it alone holds (write_replicas
    // = 1) and cannot upload hands it over first: nothing pending is lost.
    let newer = testing::data(500_000, 9);
    proxies.iter().for_each(Proxy::pause);
    assert!(!rt.block_on(client.put_bytes(one, &newer)).expect("put").persisted);
    let journals = bed.journals();
    let leaver = journals.iter().find(|j| j.1 == 1).expect("a node has the write pending").0.clone();
    let l = bed.index_of(&leaver);
    signal(&bed.nodes[l].proc.as_ref().expect("running").0, "TERM");
    bed.wait_members(2);
    proxies.iter().enumerate().filter(|(i, _)| *i != l).for_each(|(_, p)| p.resume());
    wait_until(Duration::from_secs(60), "the write of the node that left never reached the store", || {
        s3_get(&moto, "ckpt", "one/step-100.pt").is_some_and(|b| b == newer)
    });
    assert!(cat(&bed.client, one).0 == newer);
    bed.kill(l);
    proxies[l].resume();
}

#[test]
fn clients_keep_reading_without_etcd_and_bad_settings_fail_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((mut bed, store)) = file_testbed(tmp.path(), 2, "") else {
        return;
    };
    let data = testing::data(3 << 20, 5);
    std::fs::write(store.join("f.bin"), &data).expect("write");
    bed.start(0);
    bed.start(1);
    bed.wait_members(2);
    // A long-lived reader: a mount.
    let mnt = bed.dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    if !available(Path::new("/dev/fuse").exists(), "/dev/fuse missing") {
        return;
    }
    // Every read through the nodes (no local copies, no same-host store files).
    let _mount = Running(
        ferry()
            .args(["mount", mnt.to_str().expect("utf8"), "--config", &bed.client, "--local-copies", "0"])
            .spawn()
            .expect("mount"),
    );
    wait_until(Duration::from_secs(30), "mount did not come up", || is_mounted(&mnt));
    assert!(std::fs::read(mnt.join("d/f.bin")).expect("read") == data);
    bed.etcd.stop();
    // etcd gone: the mount and the nodes go on with the last membership.
    for _ in 0..3 {
        assert!(std::fs::read(mnt.join("d/f.bin")).expect("read without etcd") == data);
    }
    bed.etcd.resume();
    // Read by a client before the join: cached on cloud-1 and cloud-2.
    let big = testing::data(8 << 20, 6);
    std::fs::write(store.join("g.bin"), &big).expect("write");
    assert!(cat(&bed.client, "/d/g.bin").0 == big);
    // Back: changes apply again; a third node joins and the running mount uses it.
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(&extra).expect("mkdir");
    let c = bed.certs.to_str().expect("utf8").to_string();
    assert!(run(&["cert", "issue", "--dir", &c, "--role", "cloud", "--id", "cloud-3"]).status.success());
    let port = free_port();
    let cfg3 = tmp.path().join("cloud-3.toml");
    let base = std::fs::read_to_string(&bed.nodes[1].cfg).expect("read config");
    let old_listen = format!("127.0.0.1:{}", bed.nodes[1].port);
    let old_metrics = format!("127.0.0.1:{}", bed.nodes[1].mport);
    let mport = free_tcp_port();
    std::fs::write(
        &cfg3,
        base.replace("cloud-2", "cloud-3")
            .replace(&old_listen, &format!("127.0.0.1:{port}"))
            .replace(&old_metrics, &format!("127.0.0.1:{mport}")),
    )
    .expect("write");
    bed.nodes.push(Node { id: "cloud-3".into(), port, mport, cfg: cfg3, proc: None });
    bed.start(2);
    bed.wait_members(3);
    let status_before = run(&["cluster", "status", "--json", "--config", &bed.client]);
    let pages = |out: &std::process::Output| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["id"] == "cloud-3")
            .map_or(0, |m| m["pages"].as_u64().unwrap_or(0))
    };
    assert_eq!(pages(&status_before), 0);
    let fresh = testing::data(8 << 20, 9);
    std::fs::write(store.join("h.bin"), &fresh).expect("write");
    assert!(std::fs::read(mnt.join("d/h.bin")).expect("read after the join") == fresh);
    let status_after = run(&["cluster", "status", "--json", "--config", &bed.client]);
    assert!(pages(&status_after) > 0, "the running mount never used the joined node");
    // The joined node takes its share of g.bin from the previous owners, not the store.
    let before = metrics(mport);
    assert!(cat(&bed.client, "/d/g.bin").0 == big);
    let after = metrics(mport);
    let store_bytes = |m: &str| metric(m, "ferry_store_read_bytes_total");
    let peer_bytes = |m: &str| metric(m, "ferry_peer_read_bytes_total");
    assert!(peer_bytes(&after) > peer_bytes(&before), "no page came from a previous owner:\n{after}");
    assert_eq!(store_bytes(&after), store_bytes(&before), "the joined node read g.bin from the store");

    // A wrong etcd address and a lease of 0 are refused at start, clearly.
    let bad = tmp.path().join("bad.toml");
    let text = std::fs::read_to_string(&bed.nodes[0].cfg)
        .expect("read")
        .replace(&format!("127.0.0.1:{}", bed.nodes[0].port), &format!("127.0.0.1:{}", free_port()))
        .replace(&format!("127.0.0.1:{}", bed.nodes[0].mport), &format!("127.0.0.1:{}", free_tcp_port()));
    // Its own cache directory: the running node holds the first one's lock.
    let text = text.replace("cloud-1-cache", "bad-cache");
    std::fs::write(&bad, text.replace(&bed.etcd.endpoint, "http://127.0.0.1:1")).expect("write");
    let out = run(&["cloud", "--config", bad.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcd at http://127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&bad, text.replace("lease_ttl = \"2s\"", "lease_ttl = \"0s\"")).expect("write");
    let out = run(&["cloud", "--config", bad.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lease_ttl"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `ferry ARGS` with a deadline: its output, and whether it finished in time.
fn run_within(args: &[&str], limit: Duration) -> Output {
    let child = ferry().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ferry");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let done = done.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if t0.elapsed() > limit {
                    let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = child.wait_with_output().expect("wait ferry");
    done.store(true, Ordering::SeqCst);
    watch.join().expect("watchdog");
    out
}

#[test]
fn with_every_node_down_configured_readers_read_the_store_but_never_a_pending_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((mut bed, store)) = file_testbed(tmp.path(), 2, "train/empty") else {
        return;
    };
    // Put into the store by another tool.
    let big = testing::data(9 << 20, 21);
    std::fs::write(store.join("train/big.bin"), &big).expect("write");
    std::fs::write(store.join("train/odd name\twith tab.bin"), b"tab").expect("write");
    std::fs::write(store.join("train/ckpt.pt"), b"the store's older checkpoint").expect("write");
    // A reader configured to read the store when no node answers.
    let direct = tmp.path().join("direct.toml");
    let base = std::fs::read_to_string(&bed.client).expect("read client config");
    std::fs::write(
        &direct,
        format!("{base}[direct]\nmax_requests = 2\n[direct.mounts.\"/d\"]\nurl = \"file://{}\"\n", store.display()),
    )
    .expect("write");
    let direct = direct.to_str().expect("utf8").to_string();
    // [direct] without etcd has no registry of pending writes: refused at start.
    let no_etcd = tmp.path().join("no-etcd.toml");
    std::fs::write(
        &no_etcd,
        format!(
            "nodes = [\"127.0.0.1:{}\"]\ncerts = \"certs\"\nid = \"client\"\n[direct.mounts.\"/d\"]\nurl = \"file://{}\"\n",
            bed.nodes[0].port,
            store.display()
        ),
    )
    .expect("write");
    let out = run(&["cat", "/d/train/big.bin", "--config", no_etcd.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("[direct] needs [etcd]"), "{out:?}");

    bed.start(0);
    bed.start(1);
    bed.wait_members(2);
    assert!(cat(&direct, "/d/train/big.bin").0 == big, "through the nodes");
    // A name the store cannot spell (a tab, put there by another tool) is
    // left out of the listing, not the end of it.
    let out = run(&["ls", "/d/train", "--config", &direct]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && listed.contains("big.bin") && !listed.contains("tab"), "{out:?}");
    // A checkpoint acknowledged by the nodes and not uploaded yet: its
    // record in the cluster's pending-write registry, as a node writes it.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg =
        ferry_protocol::membership::EtcdConfig { endpoints: vec![bed.etcd.endpoint.clone()], ..Default::default() };
    rt.block_on(async {
        let etcd = ferry_protocol::etcd::Etcd::connect(&cfg).await.expect("etcd");
        let pending = ferry_protocol::membership::Pending { seq: 3, size: 1 << 20, holders: vec!["cloud-2".into()] };
        etcd.put_pending("/d/train/ckpt.pt", &pending).await.expect("record pending");
    });

    bed.kill(0);
    bed.kill(1);
    // Right after the kill (members still listed) and once their leases ran out.
    for round in ["members still listed", "members gone"] {
        if round == "members gone" {
            bed.wait_members(0);
        }
        let out = run_within(&["cat", "/d/train/big.bin", "--config", &direct], Duration::from_secs(60));
        assert!(out.status.success(), "{round}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == big, "{round}: wrong bytes ({} of {})", out.stdout.len(), big.len());
        let out = run(&["ls", "/d/train", "--json", "--config", &direct]);
        assert!(out.status.success(), "{round}: ls: {}", String::from_utf8_lossy(&out.stderr));
        let listed = String::from_utf8_lossy(&out.stdout);
        for name in ["big.bin", "ckpt.pt", "empty"] {
            assert!(listed.contains(name), "{round}: {name} not listed: {listed}");
        }
        // Never the store's older version of a path whose newest bytes are on a node that is down.
        for cmd in ["cat", "stat"] {
            let out = run(&[cmd, "/d/train/ckpt.pt", "--config", &direct]);
            assert_eq!(out.status.code(), Some(5), "{round}: {cmd} of a pending path: {out:?}");
            assert!(out.stdout.is_empty(), "{round}: {cmd} printed something of a pending path: {out:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("cloud-2"), "{round}: {out:?}");
        }
        // Off by default: a reader without [direct] gets an error, not bytes.
        let out = run_within(&["cat", "/d/train/big.bin", "--config", &bed.client], Duration::from_secs(60));
        assert!(!out.status.success() && out.stdout.is_empty(), "{round}: without [direct]: {out:?}");
    }
}

/// Reads `path` in 1 MiB pieces on a thread, comparing with `want`; calls
/// `at_third` once a third is read. Returns the slowest piece and the whole time.
fn read_through(path: &Path, want: Arc<Vec<u8>>, at_third: impl FnOnce()) -> (Duration, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_path_buf();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&path).expect("open through the mount");
        // Nothing from the kernel's page cache: every byte from the mount.
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).expect("posix_fadvise");
        let mut buf = vec![0u8; 1 << 20];
        let (mut off, mut slowest, t0) = (0usize, Duration::ZERO, Instant::now());
        let mut told = false;
        loop {
            let t = Instant::now();
            let n = f.read(&mut buf).unwrap_or_else(|e| panic!("read at {off}: {e}"));
            slowest = slowest.max(t.elapsed());
            if n == 0 {
                break;
            }
            assert!(buf[..n] == want[off..off + n], "wrong bytes at {off}");
            off += n;
            if !told && off >= want.len() / 3 {
                told = true;
                tx.send(()).expect("tell");
            }
        }
        assert_eq!(off, want.len(), "short read");
        (slowest, t0.elapsed())
    });
    rx.recv_timeout(Duration::from_secs(300)).expect("the read never got a third of the way");
    at_third();
    let t0 = Instant::now();
    while !reader.is_finished() {
        assert!(t0.elapsed() < Duration::from_secs(300), "the read did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().expect("reader")
}

#[test]
fn a_mount_reading_a_large_file_notices_no_node_killed_or_partitioned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((mut bed, store)) = file_testbed(tmp.path(), 3, "train") else {
        return;
    };
    if !available(Path::new("/dev/fuse").exists(), "/dev/fuse missing") {
        return;
    }
    // Room for every node's share of 1 GiB on its disk tier.
    for n in &bed.nodes {
        let text = std::fs::read_to_string(&n.cfg).expect("read config");
        std::fs::write(&n.cfg, text.replace("disk = \"256MiB\"", "disk = \"1GiB\"")).expect("write config");
    }
    let big = Arc::new(testing::data(1 << 30, 31));
    std::fs::write(store.join("train/big.bin"), big.as_slice()).expect("write");
    for i in 0..3 {
        bed.start(i);
    }
    bed.wait_members(3);
    let mnt = bed.dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    // Every read through the nodes (no local copies, no same-host store files).
    let _mount = Running(
        ferry()
            .args(["mount", mnt.to_str().expect("utf8"), "--config", &bed.client, "--local-copies", "0"])
            .spawn()
            .expect("mount"),
    );
    wait_until(Duration::from_secs(30), "mount did not come up", || is_mounted(&mnt));
    let load = run(&["load", "/d/train", "--config", &bed.client]);
    assert!(load.status.success(), "load: {}", String::from_utf8_lossy(&load.stderr));
    let file = mnt.join("d/train/big.bin");
    let served = |bed: &Testbed| -> u64 {
        bed.nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| metric(&metrics(n.mport), "ferry_bytes_served_total"))
            .sum()
    };
    let before = served(&bed);
    let warm = read_through(&file, big.clone(), || {});
    assert!(served(&bed) - before >= big.len() as u64, "the warm read did not go through the nodes");
    // kill -9 a third of the way through.
    let killed = read_through(&file, big.clone(), || bed.kill(1));
    bed.wait_members(2);
    let after = read_through(&file, big.clone(), || {});
    // A node up and registered whose port drops everything, a third of the way through.
    let port = bed.nodes[2].port;
    let mut partition = None;
    let cut = read_through(&file, big.clone(), || partition = Partition::of(port));
    if partition.is_none() {
        return;
    }
    drop(partition);
    println!(
        "1 GiB through the mount, (slowest 1 MiB read, whole read): warm {warm:?}; cloud-2 killed {killed:?}; \
         after its lease {after:?}; cloud-3 partitioned {cut:?}"
    );
}

#[test]
fn a_mount_with_replicas_keeps_each_page_on_that_many_owners() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    std::fs::create_dir_all(store.join("models")).expect("mkdir");
    let Some(mut bed) =
        testbed(tmp.path(), 3, |_| format!("[mounts.\"/m\"]\nurl = \"file://{}\"\nreplicas = 2\n", store.display()))
    else {
        return;
    };
    let weights = testing::data(12 << 20, 41);
    std::fs::write(store.join("models/w.bin"), &weights).expect("write");
    for i in 0..3 {
        bed.start(i);
    }
    bed.wait_members(3);
    // `ferry load` warms each page on the mount's 2 owners, not the client's 1.
    let out = run(&["load", "/m/models", "--json", "--config", &bed.client]);
    assert!(out.status.success(), "load: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("load json");
    assert_eq!(v["replicas"], 2, "{v}");
    assert_eq!(v["fetched_pages"], 24, "{v}");
    let status = run(&["cluster", "status", "--json", "--config", &bed.client]);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    // Every copy is in memory (64 MiB per node).
    let held: Vec<u64> = s["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["memory_bytes"].as_u64().expect("memory bytes"))
        .collect();
    assert_eq!(held.iter().sum::<u64>(), 2 * weights.len() as u64, "{s}");
    assert!(held.iter().all(|&b| b > 0), "some member holds no copy: {s}");
    // Reads spread over both owners; with one of them killed, the other
    // serves every page from its cache: nothing more from the store.
    assert!(cat(&bed.client, "/m/models/w.bin").0 == weights);
    let store_bytes = |bed: &Testbed| -> u64 {
        bed.nodes
            .iter()
            .filter(|n| n.proc.is_some())
            .map(|n| metric(&metrics(n.mport), "ferry_store_read_bytes_total"))
            .sum()
    };
    bed.kill(0);
    let before = store_bytes(&bed);
    for _ in 0..3 {
        assert!(cat(&bed.client, "/m/models/w.bin").0 == weights, "with cloud-1 killed");
    }
    assert_eq!(store_bytes(&bed), before, "pages were read from the store again though a replica held them");
}

#[test]
fn nodes_and_clients_reach_an_etcd_that_wants_client_certificates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = testing::certs(tmp.path());
    let c = certs.to_str().expect("utf8").to_string();
    // etcd serves TLS with a certificate of the fleet CA and wants one from every client.
    let issued = run(&["cert", "issue", "--dir", &c, "--role", "cloud", "--id", "etcd", "--host", "127.0.0.1"]);
    assert!(issued.status.success(), "{issued:?}");
    let pem = |name: &str| format!("{c}/{name}");
    let Some(etcd) = Etcd::start_tls(
        &tmp.path().join("etcd"),
        &certs.join("ca.pem"),
        &certs.join("etcd.pem"),
        &certs.join("etcd.key"),
    ) else {
        return;
    };
    let store = tmp.path().join("store");
    std::fs::create_dir_all(&store).expect("mkdir");
    let data = testing::data(2 << 20, 51);
    std::fs::write(store.join("f.bin"), &data).expect("write");
    let tls = |id: &str| {
        format!(
            "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            pem("ca.pem"),
            pem(&format!("{id}.pem")),
            pem(&format!("{id}.key"))
        )
    };
    let (port, mport) = (free_port(), free_tcp_port());
    let node = tmp.path().join("cloud-1.toml");
    std::fs::write(
        &node,
        format!(
            "node_id = \"cloud-1\"\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{mport}\"\n\
             certs = \"certs\"\nprefetch = \"none\"\n[cache]\ndisk_dir = \"cache\"\n\
             [mounts.\"/d\"]\nurl = \"file://{}\"\n[cluster]\nlease_ttl = \"2s\"\n\
             [cluster.etcd]\nendpoints = [\"{}\"]\n{}",
            store.display(),
            etcd.endpoint,
            tls("cloud-1")
        ),
    )
    .expect("write node config");
    let mut p = Running(ferry().args(["cloud", "--config", node.to_str().expect("utf8")]).spawn().expect("spawn"));
    wait_until(Duration::from_secs(30), "node did not start", || {
        if let Some(s) = p.0.try_wait().expect("try_wait") {
            panic!("the node exited at start ({s}); see its error above");
        }
        TcpStream::connect(("127.0.0.1", mport)).is_ok()
    });
    let client = |name: &str, extra: &str| {
        let path = tmp.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "nodes = []\ncerts = \"certs\"\nid = \"client\"\n[etcd]\nendpoints = [\"{}\"]\n{extra}",
                etcd.endpoint
            ),
        )
        .expect("write client config");
        path.to_str().expect("utf8").to_string()
    };
    let with_cert = client("with-cert", &tls("client"));
    wait_until(Duration::from_secs(30), "the node never registered", || {
        let out = run(&["cluster", "status", "--json", "--config", &with_cert]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"id\":\"cloud-1\"")
    });
    assert!(cat(&with_cert, "/d/f.bin").0 == data);
    // Without a client certificate etcd refuses the client: a clear error, at start.
    let no_cert = client("no-cert", &format!("ca = \"{}\"\n", pem("ca.pem")));
    let out = run(&["cat", "/d/f.bin", "--config", &no_cert]);
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&etcd.endpoint), "{out:?}");
    let half = client("half", &format!("ca = \"{}\"\ncert = \"{}\"\n", pem("ca.pem"), pem("client.pem")));
    let out = run(&["cat", "/d/f.bin", "--config", &half]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert and key must be given together"), "{out:?}");
}
