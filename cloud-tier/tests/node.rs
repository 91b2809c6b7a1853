//! Cache node integration tests over real QUIC with mutual TLS, against
//! local files and a real S3 server (moto).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use common::*;
use ferry_cloud_tier::namespace::open_store;
use ferry_cloud_tier::testing::faulty::{Faults, Gate};
use ferry_cloud_tier::testing::start_node_over;
use ferry_cloud_tier::CloudConfig;
use ferry_protocol::client::Cluster;
use ferry_protocol::codec::EntryKind;
use ferry_protocol::transport;
use ferry_protocol::{ErrorCode, ProtocolError};

const BIG: usize = 300 << 20;

fn sizes() -> Vec<(String, usize)> {
    let p = PAGE as usize;
    vec![
        ("empty.bin".into(), 0),
        ("one.bin".into(), 1),
        ("page-minus-1.bin".into(), p - 1),
        ("page.bin".into(), p),
        ("page-plus-1.bin".into(), p + 1),
        ("dir/sub/three-pages.bin".into(), 3 * p + 17),
    ]
}

async fn put(store: &Arc<dyn ObjectStore>, prefix: &StorePath, name: &str, bytes: Vec<u8>) {
    let loc = StorePath::parse(format!("{prefix}/{name}").trim_start_matches('/')).expect("path");
    store.put(&loc, PutPayload::from(bytes)).await.expect("put");
}

fn remote_code(e: &ProtocolError) -> Option<ErrorCode> {
    match e {
        ProtocolError::Remote { code, .. } => Some(*code),
        _ => None,
    }
}

/// The same checks for every backing store.
async fn suite(base: Arc<dyn ObjectStore>, prefix: StorePath) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    for (i, (name, len)) in sizes().into_iter().enumerate() {
        put(&base, &prefix, &name, data(len, i as u64)).await;
    }
    put(&base, &prefix, "big.bin", data(BIG, 99)).await;

    // Memory smaller than the big object, so it also goes through the disk tier.
    let cfg = node_config(&dir.path().join("cache"), 64 << 20, 1 << 30);
    let n = start_node(&certs, &cfg, "/data", base.clone(), prefix.clone(), Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);

    for (i, (name, len)) in sizes().into_iter().enumerate() {
        let path = format!("/data/{name}");
        let got = read_all(&c, &path).await.expect("read");
        assert_eq!(got.len(), len, "{path}");
        assert!(got == data(len, i as u64), "{path} differs");
        // Second read comes from the cache and is identical too.
        assert!(read_all(&c, &path).await.expect("warm read") == data(len, i as u64), "{path} warm differs");
        let info = c.stat(&path).await.expect("stat");
        assert_eq!((info.kind, info.size), (EntryKind::File, len as u64));
    }
    let big = read_all(&c, "/data/big.bin").await.expect("big read");
    assert_eq!(big.len(), BIG);
    assert!(blake3::hash(&big) == blake3::hash(&data(BIG, 99)), "big object differs");
    drop(big);

    // Ranges that cross page boundaries.
    let three = data(3 * PAGE as usize + 17, 5);
    for (off, len) in [(PAGE - 10, 20), (0, 2 * PAGE + 1), (PAGE, PAGE), (3 * PAGE, 100), (5, 3 * PAGE + 100)] {
        let mut out = Vec::new();
        c.read_to("/data/dir/sub/three-pages.bin", off, Some(len), &mut out).await.expect("range");
        let end = ((off + len) as usize).min(three.len());
        assert!(out[..] == three[off as usize..end], "range {off}+{len}");
    }

    // Listing.
    let root: Vec<String> = c.list("/").await.expect("list /").into_iter().map(|e| e.name).collect();
    assert_eq!(root, ["data"]);
    let top = c.list("/data").await.expect("list /data");
    let names: Vec<&str> = top.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["big.bin", "dir", "empty.bin", "one.bin", "page-minus-1.bin", "page-plus-1.bin", "page.bin"]);
    assert_eq!(top.iter().find(|e| e.name == "dir").map(|e| e.info.kind), Some(EntryKind::Dir));
    assert_eq!(top.iter().find(|e| e.name == "one.bin").map(|e| e.info.size), Some(1));
    let sub = c.list("/data/dir/sub").await.expect("list sub");
    assert_eq!(sub.len(), 1);
    assert_eq!(c.stat("/data/dir").await.expect("stat dir").kind, EntryKind::Dir);

    // Not found, unknown mount, bad paths.
    let e = read_all(&c, "/data/missing.bin").await.expect_err("missing");
    assert_eq!(remote_code(&e), Some(ErrorCode::NotFound), "{e}");
    let e = c.stat("/elsewhere/x").await.expect_err("unknown mount");
    assert_eq!(remote_code(&e), Some(ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("no mount"), "{e}");
    let e = c.list("/data/missing-dir").await.expect_err("missing dir");
    assert_eq!(remote_code(&e), Some(ErrorCode::NotFound), "{e}");
    let e = c.stat("/data/../etc/passwd").await.expect_err("traversal");
    assert_eq!(remote_code(&e), Some(ErrorCode::InvalidInput), "{e}");

    n.node.shutdown().await;
}

/// Bulk reads over loopback travel in datagrams of the path's large MTU.
/// quinn batches several datagrams of the path MTU into one send; batches
/// over a UDP payload's size were refused by the kernel, taken for loss and
/// then for an MTU black hole, and every later packet was 1200 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_reads_use_the_large_mtu_of_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let FileNode { certs, base, prefix, node: n } = file_node(dir.path()).await;
    let body = data(64 << 20, 21);
    put(&base, &prefix, "big.bin", body.clone()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    for _ in 0..2 {
        assert!(read_all(&c, "/big.bin").await.expect("read") == body);
    }
    let stats = c.stats().await;
    let st = &stats.first().expect("a connection").1;
    let average = st.udp_rx.bytes / st.udp_rx.datagrams.max(1);
    assert!(
        average > 16_000,
        "received datagrams average {average} B (path MTU {}, black holes {})",
        st.path.current_mtu,
        st.path.black_holes_detected
    );
    n.node.shutdown().await;
}

/// A robot's endpoint keeps to Ethernet-sized datagrams both ways (its path
/// MTU, and what it lets the node send), even on loopback where 64 KB would
/// pass: quinn sizes a robot's receive buffers and send batches by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_links_keep_to_ethernet_sized_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let FileNode { certs, base, prefix, node: n } = file_node(dir.path()).await;
    let body = data(8 << 20, 22);
    put(&base, &prefix, "model.bin", body.clone()).await;
    let ep = transport::client_endpoint_for(&tls_of(&certs, "client"), transport::Link::Robot).expect("endpoint");
    let c = Cluster::new(ep, &[n.node.addr.to_string()]).expect("cluster");
    assert!(read_all(&c, "/model.bin").await.expect("read") == body);
    let stats = c.stats().await;
    let st = &stats.first().expect("a connection").1;
    assert!(st.path.current_mtu <= transport::ROBOT_MTU_UPPER_BOUND, "path MTU {}", st.path.current_mtu);
    let rx = st.udp_rx.bytes / st.udp_rx.datagrams.max(1);
    assert!(rx > 1000 && rx <= u64::from(transport::ROBOT_MTU_UPPER_BOUND), "received datagrams average {rx} B");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let (store, prefix) = open_store(&format!("file://{}", root.display()), &Default::default()).expect("open");
    suite(store, prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ferry-test");
    // Through the same code path as a configured mount: URL plus object_store options.
    let (store, prefix) = open_store("s3://ferry-test/some/prefix", &moto.options()).expect("open s3");
    assert_eq!(prefix.as_ref(), "some/prefix");
    suite(store, prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let other_certs = common::certs(&other);
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    put(&base, &StorePath::default(), "a", b"secret".to_vec()).await;
    let cfg = node_config(&dir.path().join("cache"), 8 << 20, 0);
    let n = start_node(&certs, &cfg, "/", base, StorePath::default(), Faults::default()).await;

    let good = client(&certs, &[n.node.addr.to_string()]);
    assert_eq!(read_all(&good, "/a").await.expect("fleet client reads"), b"secret");
    let bad = client(&other_certs, &[n.node.addr.to_string()]);
    let e = read_all(&bad, "/a").await.expect_err("foreign client must be refused");
    assert!(matches!(e, ProtocolError::Connection { .. }), "{e:?}");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_a_small_tier_within_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let body = data(6 * PAGE as usize, 3);
    put(&base, &StorePath::default(), "six", body.clone()).await;
    // Memory for two pages, no disk tier.
    let cfg = node_config(&dir.path().join("cache"), 2 * PAGE, 0);
    let n = start_node(&certs, &cfg, "/", base, StorePath::default(), Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    for round in 0..2 {
        assert!(read_all(&c, "/six").await.expect("read") == body, "round {round}");
        let (mem, disk) = n.node.node.cache().used();
        assert!(mem <= 2 * PAGE, "memory tier holds {mem} bytes");
        assert_eq!(disk, 0);
    }
    // Six pages with room for two: the second round finds only the last two and fetches the rest again.
    assert!(n.store.counters().gets.load(Ordering::SeqCst) >= 10);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_serves_from_disk_without_the_store_and_refetches_corrupt_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let (base, prefix) = open_store(&format!("file://{}", root.display()), &Default::default()).expect("open");
    let body = data(3 * PAGE as usize + 5, 11);
    put(&base, &prefix, "obj", body.clone()).await;
    let cache_dir = dir.path().join("cache");
    // Without prefetch, whose first read in a folder lists it (one store request).
    let cfg = CloudConfig { prefetch: "none".into(), ..node_config(&cache_dir, 64 << 20, 256 << 20) };

    let first = start_node(&certs, &cfg, "/", base.clone(), prefix.clone(), Faults::default()).await;
    let c = client(&certs, &[first.node.addr.to_string()]);
    assert!(read_all(&c, "/obj").await.expect("cold") == body);
    assert!(first.store.counters().reads() > 0);
    first.node.shutdown().await;

    // A second node over the same cache directory: warm, no store request at all.
    let second = start_node(&certs, &cfg, "/", base.clone(), prefix.clone(), Faults::default()).await;
    let c = client(&certs, &[second.node.addr.to_string()]);
    assert!(read_all(&c, "/obj").await.expect("warm") == body);
    assert_eq!(second.store.counters().reads(), 0, "warm restart touched the store");
    assert_eq!(second.node.node.metrics().store_requests_total(), 0);
    second.node.shutdown().await;

    // Corrupt one page file: the third node detects it, drops it and refetches only that page.
    let mut corrupted = 0;
    for d in std::fs::read_dir(cache_dir.join("pages")).expect("pages dir").flatten() {
        for f in std::fs::read_dir(d.path()).expect("page subdir").flatten() {
            if corrupted == 0 {
                let mut raw = std::fs::read(f.path()).expect("read page");
                let last = raw.len() - 1;
                raw[last] ^= 0x55;
                std::fs::write(f.path(), raw).expect("write page");
                corrupted += 1;
            }
        }
    }
    assert_eq!(corrupted, 1);
    let third = start_node(&certs, &cfg, "/", base, prefix, Faults::default()).await;
    let c = client(&certs, &[third.node.addr.to_string()]);
    assert!(read_all(&c, "/obj").await.expect("read after corruption") == body);
    assert_eq!(third.node.node.metrics().corrupt_pages.get(), 1);
    assert_eq!(third.store.counters().gets.load(Ordering::SeqCst), 1, "only the corrupt page is refetched");
    third.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_readers_make_one_store_get() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let body = data(PAGE as usize / 2, 21);
    put(&base, &StorePath::default(), "hot", body.clone()).await;
    let cfg = node_config(&dir.path().join("cache"), 16 << 20, 0);
    // The store's answer waits at a closed gate until every reader has
    // joined the fetch in flight.
    let gate = Gate::closed();
    let faults = Faults { gets_gate: Some(gate.clone()), ..Default::default() };
    let n = start_node(&certs, &cfg, "/", base, StorePath::default(), faults).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    // Warm the metadata so every reader goes straight for the page.
    c.stat("/hot").await.expect("stat");
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { read_all(&c, "/hot").await })
        })
        .collect();
    let t0 = std::time::Instant::now();
    while n.node.node.metrics().coalesced.get() < 7 {
        assert!(t0.elapsed() < Duration::from_secs(60), "{} readers joined", n.node.node.metrics().coalesced.get());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.open();
    for r in readers {
        assert!(r.await.expect("join").expect("read") == body);
    }
    assert_eq!(n.store.counters().gets.load(Ordering::SeqCst), 1);
    assert_eq!(n.node.node.metrics().coalesced.get(), 7);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_prefetches_the_next_frames_of_a_reader_once_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    for i in 0..40u64 {
        put(&base, &StorePath::default(), &format!("cam/{i:04}.jpg"), data(200_000, i)).await;
    }
    // The default configuration prefetches with the shipped tree model.
    let cfg = node_config(&dir.path().join("cache"), 64 << 20, 0);
    assert_eq!(cfg.prefetch, "tree");
    let faults = Faults { latency: Duration::from_millis(5), bandwidth: None, ..Default::default() };
    let n = start_node(&certs, &cfg, "/data", base, StorePath::default(), faults).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    // One reader (one connection) goes through the frames in order.
    for i in 0..40u64 {
        let got = read_all(&c, &format!("/data/cam/{i:04}.jpg")).await.expect("read frame");
        assert!(got == data(200_000, i), "frame {i} differs");
    }
    let m = n.node.node.metrics();
    let text = m.encode();
    let (hits, misses) = (m.prefetch_hits.get(), m.prefetch_demand_misses.get());
    assert!(hits > 3 * misses, "frames read in order should mostly be prefetched\n{text}");
    assert!(m.prefetch_useful_bytes.get() * 10 >= m.prefetch_bytes.get() * 8, "precision below 0.8\n{text}");
    assert!(
        text.contains("ferry_prefetch_precision_ratio") && text.contains("ferry_prefetch_coverage_ratio"),
        "{text}"
    );
    // Prefetch and demand reads of the same page share one store request.
    assert!(n.store.counters().gets.load(Ordering::SeqCst) <= 42, "{text}");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_falls_back_when_an_owner_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let body = data(8 * PAGE as usize, 4);
    put(&base, &StorePath::default(), "f", body.clone()).await;
    let cfg = node_config(&dir.path().join("cache"), 64 << 20, 0);
    let n = start_node(&certs, &cfg, "/", base, StorePath::default(), Faults::default()).await;
    // A port where nobody listens: roughly half the pages are owned by it.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let c = client(&certs, &[dead, n.node.addr.to_string()]);
    let t0 = std::time::Instant::now();
    assert!(read_all(&c, "/f").await.expect("read with one node down") == body);
    eprintln!("read with one node down took {:?}", t0.elapsed());
    n.node.shutdown().await;
}

/// Relays UDP between clients and `to` until `silent` is set, then drops
/// everything both ways, as a killed node (or its vanished host) would.
async fn relay(to: std::net::SocketAddr, silent: Arc<std::sync::atomic::AtomicBool>) -> std::net::SocketAddr {
    let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
    let addr = sock.local_addr().expect("relay address");
    tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if silent.load(Ordering::SeqCst) {
                continue;
            }
            let dest = if from == to { client } else { Some(to) };
            if from != to {
                client = Some(from);
            }
            if let Some(d) = dest {
                let _ = sock.send_to(&buf[..n], d).await;
            }
        }
    });
    addr
}

/// A node that goes silent mid-job (killed, or its host gone): its readers
/// give up on it and the next replica serves them. How long that takes is
/// the data-centre link's idle limit (10 s, `protocol::transport`); the
/// timeout below only turns a hang into a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_leave_a_silent_node_for_the_next_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    // Pages are spread over the nodes: with 32 of them, both own some.
    let body = data(32 * PAGE as usize, 5);
    put(&base, &StorePath::default(), "f", body.clone()).await;
    let a = start_node(
        &certs,
        &node_config(&dir.path().join("a"), 64 << 20, 0),
        "/",
        base.clone(),
        StorePath::default(),
        Faults::default(),
    )
    .await;
    let b = start_node(
        &certs,
        &node_config(&dir.path().join("b"), 64 << 20, 0),
        "/",
        base,
        StorePath::default(),
        Faults::default(),
    )
    .await;
    let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let via = relay(a.node.addr, silent.clone()).await;
    let c = client(&certs, &[via.to_string(), b.node.addr.to_string()]);
    assert!(read_all(&c, "/f").await.expect("read from both nodes") == body);
    silent.store(true, Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    let again = tokio::time::timeout(Duration::from_secs(120), read_all(&c, "/f")).await;
    let again = again.unwrap_or_else(|_| panic!("still waiting for the silent node after {:?}", t0.elapsed()));
    assert!(again.expect("read with one node silent") == body);
    eprintln!("read with one node silent took {:?}", t0.elapsed());
    a.node.shutdown().await;
    b.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_are_reported_and_retried_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let body = data(2 * PAGE as usize, 8);
    put(&base, &StorePath::default(), "f", body.clone()).await;
    // Without prefetch, whose folder listing could take the injected failure.
    let cfg = CloudConfig { prefetch: "none".into(), ..node_config(&dir.path().join("cache"), 64 << 20, 0) };
    let n = start_node(&certs, &cfg, "/", base, StorePath::default(), Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    c.stat("/f").await.expect("stat");
    n.store.fail_next(1);
    let e = read_all(&c, "/f").await.expect_err("injected failure surfaces");
    assert_eq!(remote_code(&e), Some(ErrorCode::Unavailable), "{e}");
    // Nothing bad was cached: the next read is complete and correct.
    assert!(read_all(&c, "/f").await.expect("retry") == body);
    n.node.shutdown().await;
}

#[test]
fn bad_mount_configuration_is_a_clear_error() {
    use ferry_cloud_tier::config::MountConfig;
    use ferry_cloud_tier::metrics::Metrics;
    use ferry_cloud_tier::namespace::Namespace;
    let m = |url: &str| [("/x".to_string(), MountConfig { url: url.into(), ..Default::default() })].into();
    for (url, expect) in
        [("file:///does/not/exist", "does not exist"), ("ftp://host/x", "/x"), ("not a url", "bad url")]
    {
        let e = Namespace::open(&m(url), Arc::new(Metrics::new())).expect_err(url);
        assert!(e.to_string().contains(expect), "{url}: {e}");
    }
    let bad_name = [("no-slash".to_string(), MountConfig { url: "memory:///".into(), ..Default::default() })].into();
    assert!(Namespace::open(&bad_name, Arc::new(Metrics::new())).is_err());
}

/// Directories of their own in the store: what DLIO, `mkdir -p` and the S3
/// console make. `make_empty` creates an empty directory `valid` under the
/// mount the way another tool would; `exists` says whether the store has a
/// directory (or folder marker) at a mount-relative path.
async fn directories(
    opened: ferry_cloud_tier::namespace::OpenedStore,
    make_empty: impl Fn(),
    exists: impl Fn(&str) -> bool,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let (base, prefix) = (opened.0.clone(), opened.1.clone());
    put(&base, &prefix, "train/a.bin", data(1000, 1)).await;
    make_empty();
    let cfg = node_config(&dir.path().join("cache"), 16 << 20, 0);
    let n = start_node_over(&certs, &cfg, "/data", opened, Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    let code = |e: ProtocolError| remote_code(&e);
    let recent = |ms: i64| ms > 1_600_000_000_000;

    // An empty directory made by another tool: a directory, listed, with a real time.
    let valid = c.stat("/data/valid").await.expect("stat an empty directory");
    assert_eq!(valid.kind, EntryKind::Dir);
    assert!(recent(valid.mtime_ms), "mtime {}", valid.mtime_ms);
    assert!(c.list("/data/valid").await.expect("list an empty directory").is_empty(), "no phantom entry");
    let top = c.list("/data").await.expect("list /data");
    let names: Vec<&str> = top.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["train", "valid"]);
    assert!(top.iter().all(|e| e.info.kind == EntryKind::Dir));

    // mkdir persists in the store; a second one, or one over a file, is refused.
    c.mkdir("/data/ck").await.expect("mkdir");
    assert!(exists("valid"), "HEAD of a marker");
    assert!(exists("ck"), "the store has the new directory");
    c.mkdir("/data/ck/run-1").await.expect("mkdir below it");
    let ck = c.stat("/data/ck").await.expect("stat new dir");
    assert_eq!(ck.kind, EntryKind::Dir);
    assert!(recent(ck.mtime_ms), "mtime {}", ck.mtime_ms);
    assert_eq!(c.mkdir("/data/ck").await.map_err(code), Err(Some(ErrorCode::Exists)));
    assert_eq!(c.mkdir("/data/train/a.bin").await.map_err(code), Err(Some(ErrorCode::Exists)));

    // rmdir: only empty directories, only directories.
    assert_eq!(c.rmdir("/data/ck").await.map_err(code), Err(Some(ErrorCode::NotEmpty)));
    c.put_bytes("/data/ck/run-1/w.pt", b"weights").await.expect("write below");
    assert_eq!(c.rmdir("/data/ck/run-1").await.map_err(code), Err(Some(ErrorCode::NotEmpty)));
    assert_eq!(c.rmdir("/data/train/a.bin").await.map_err(code), Err(Some(ErrorCode::InvalidInput)));
    assert_eq!(c.rmdir("/data").await.map_err(code), Err(Some(ErrorCode::InvalidInput)));
    c.delete("/data/ck/run-1/w.pt").await.expect("delete");
    c.rmdir("/data/ck/run-1").await.expect("rmdir run-1");
    c.rmdir("/data/ck").await.expect("rmdir ck");
    assert!(!exists("ck/run-1") && !exists("ck"), "rmdir reached the store");
    assert_eq!(c.stat("/data/ck").await.map_err(code), Err(Some(ErrorCode::NotFound)));
    // Odd names are the store's names as they are.
    let odd = "/data/run%41#b x";
    c.mkdir(odd).await.expect("mkdir an odd name");
    assert!(exists("run%41#b x"), "the store has the directory under its own name");
    assert_eq!(c.stat(odd).await.expect("stat").kind, EntryKind::Dir);
    c.rmdir(odd).await.expect("rmdir an odd name");
    assert!(!exists("run%41#b x"));
    c.rmdir("/data/valid").await.expect("rmdir another tool's directory");
    assert!(!exists("valid"));
    assert_eq!(c.list("/data").await.expect("list").len(), 1);
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_of_local_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let opened =
        ferry_cloud_tier::namespace::open_store_with_dirs(&format!("file://{}", root.display()), &Default::default())
            .expect("open");
    directories(opened, || std::fs::create_dir(root.join("valid")).expect("mkdir valid"), |p| root.join(p).is_dir())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_of_s3_are_folder_markers() {
    let Some(moto) = Moto::start() else { return };
    moto.create_bucket("ferry-dirs");
    let opened =
        ferry_cloud_tier::namespace::open_store_with_dirs("s3://ferry-dirs/ds", &moto.options()).expect("open s3");
    // As the S3 console or `aws s3api put-object --key ds/valid/` make one.
    let make = || assert_eq!(moto.request("PUT", "/ferry-dirs/ds/valid/").0, 200);
    let exists = |p: &str| moto.keys("ferry-dirs", &format!("ds/{p}/")).contains(&format!("ds/{p}/"));
    directories(opened, make, exists).await;
}

/// Polls `cond` for up to 20 s (a change relayed between nodes, an upload).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 20 s");
}

/// A `file://` store at `DIR/store`, and a way to open it (with its directories) for each node.
fn local_store(dir: &std::path::Path) -> (std::path::PathBuf, impl Fn() -> ferry_cloud_tier::namespace::OpenedStore) {
    let root = dir.join("store");
    std::fs::create_dir_all(&root).expect("mkdir");
    let url = format!("file://{}", root.display());
    (root, move || ferry_cloud_tier::namespace::open_store_with_dirs(&url, &Default::default()).expect("open"))
}

/// A walk of a dataset lists each directory and stats each file: once
/// listed, neither reaches the store again, the listing says of each file
/// what the store's HEAD says, a restarted node answers from the listings
/// it persisted, and changes made through the node show at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_serve_walks_survive_a_restart_and_follow_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let (root, opened) = local_store(dir.path());
    let (base, _, _) = opened();
    // Put there by another tool, odd names included.
    std::fs::create_dir_all(root.join("train")).expect("mkdir");
    for i in 0..40 {
        std::fs::write(root.join(format!("train/img {i:02} #%41.jpg")), data(100 + i, i as u64)).expect("write");
    }
    let cfg = node_config(&dir.path().join("cache"), 16 << 20, 64 << 20);
    let n = start_node_over(&certs, &cfg, "/data", opened(), Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    let counters = n.store.counters();
    let asked = || (counters.lists.load(Ordering::SeqCst), counters.heads.load(Ordering::SeqCst));

    let first = c.list("/data/train").await.expect("list");
    assert_eq!(first.len(), 40);
    let before = asked();
    assert_eq!(c.list("/data/train").await.expect("list again"), first);
    for e in &first {
        let info = c.stat(&format!("/data/train/{}", e.name)).await.expect("stat");
        assert_eq!(info, e.info, "{}", e.name);
        let loc = StorePath::parse(format!("train/{}", e.name)).expect("store path");
        let head = base.head(&loc).await.expect("head");
        assert_eq!((info.size, info.etag.as_str()), (head.size, head.e_tag.as_deref().expect("local etag")));
    }
    assert_eq!(asked(), before, "a second listing and the stats asked the store");

    // Changes through the node show at once.
    let names = |l: &[ferry_protocol::codec::DirEntry]| l.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    c.put_bytes("/data/train/new.jpg", b"new").await.expect("write");
    assert!(names(&c.list("/data/train").await.expect("list")).contains(&"new.jpg".to_string()));
    c.delete("/data/train/img 00 #%41.jpg").await.expect("delete");
    assert!(!names(&c.list("/data/train").await.expect("list")).contains(&"img 00 #%41.jpg".to_string()));
    c.mkdir("/data/train/sub").await.expect("mkdir");
    assert!(names(&c.list("/data/train").await.expect("list")).contains(&"sub".to_string()));
    eventually("upload", || async { c.stat("/data/train/new.jpg").await.is_ok_and(|i| i.persisted) }).await;
    // Listed after the upload landed: what the restarted node will find on disk.
    let last = c.list("/data/train").await.expect("list");
    assert_eq!(last.len(), 41);
    let new = last.iter().find(|e| e.name == "new.jpg").expect("new file listed");
    assert!(new.info.persisted && new.info.size == 3);
    n.node.shutdown().await;

    let n = start_node_over(&certs, &cfg, "/data", opened(), Faults::default()).await;
    let c = client(&certs, &[n.node.addr.to_string()]);
    assert_eq!(c.list("/data/train").await.expect("list after restart"), last);
    assert_eq!(c.stat("/data/train/img 05 #%41.jpg").await.expect("stat").size, 105);
    let counters = n.store.counters();
    assert_eq!(counters.lists.load(Ordering::SeqCst), 0, "the restarted node listed the store");
    assert_eq!(counters.heads.load(Ordering::SeqCst), 0, "the restarted node asked the store for metadata");
    n.node.shutdown().await;
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A change made through one node reaches the listing another node keeps
/// (without waiting for the metadata TTL of ten minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_node_reaches_another_nodes_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let (_, opened) = local_store(dir.path());
    let (base, prefix, _) = opened();
    put(&base, &prefix, "d/a.bin", data(10, 1)).await;
    put(&base, &prefix, "d/b.bin", data(10, 2)).await;
    let (pa, pb) = (free_port(), free_port());
    let peers = vec![format!("a@127.0.0.1:{pa}"), format!("b@127.0.0.1:{pb}")];
    let cfg = |id: &str, port: u16| {
        let mut c = node_config(&dir.path().join(format!("cache-{id}")), 16 << 20, 0);
        c.listen = format!("127.0.0.1:{port}").parse().expect("addr");
        c.node_id = id.into();
        c.cluster.peers = peers.clone();
        c
    };
    let a = start_node_over(&certs, &cfg("a", pa), "/data", opened(), Faults::default()).await;
    let b = start_node_over(&certs, &cfg("b", pb), "/data", opened(), Faults::default()).await;
    let (ca, cb) = (client(&certs, &[a.node.addr.to_string()]), client(&certs, &[b.node.addr.to_string()]));
    let names = |c: &Cluster| {
        let c = c.clone();
        async move { c.list("/data/d").await.expect("list").into_iter().map(|e| e.name).collect::<Vec<_>>() }
    };
    assert_eq!(names(&cb).await, ["a.bin", "b.bin"]);
    assert_eq!(names(&ca).await, ["a.bin", "b.bin"]);

    ca.delete("/data/d/a.bin").await.expect("delete through a");
    eventually("b forgets the deleted file", || async { names(&cb).await == ["b.bin"] }).await;
    ca.mkdir("/data/d/valid").await.expect("mkdir through a");
    eventually("b lists the new directory", || async { names(&cb).await == ["b.bin", "valid"] }).await;
    ca.rename("/data/d/b.bin", "/data/d/c.bin").await.expect("rename through a");
    eventually("b lists the rename", || async { names(&cb).await == ["c.bin", "valid"] }).await;
    a.node.shutdown().await;
    b.node.shutdown().await;
}

/// Shuffled epochs over a dataset four times the node's memory, the order
/// announced each epoch: with the default eviction the node keeps the
/// pages the epoch reads soonest and the store serves only the rest; LRU
/// evicts each page before its turn comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_order_keeps_a_small_cache_hitting_over_shuffled_epochs() {
    use ferry_cloud_tier::cache::Eviction;
    use ferry_protocol::codec::PageRun;
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs(dir.path());
    let base: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let files = 40u64;
    for i in 0..files {
        put(&base, &StorePath::default(), &format!("ds/f-{i:02}"), data(PAGE as usize, i)).await;
    }
    let mut seed = 11u64;
    let epochs: Vec<Vec<u64>> = (0..4)
        .map(|_| {
            let mut o: Vec<u64> = (0..files).collect();
            for i in (1..o.len()).rev() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                o.swap(i, (seed >> 33) as usize % (i + 1));
            }
            o
        })
        .collect();
    let mut gets = Vec::new();
    for eviction in [Eviction::Announced, Eviction::Lru] {
        let mut cfg = node_config(&dir.path().join(format!("cache-{eviction:?}")), 10 * PAGE, 0);
        cfg.cache.eviction = eviction;
        cfg.prefetch = "none".into();
        let n = start_node(&certs, &cfg, "/", base.clone(), StorePath::default(), Faults::default()).await;
        let c = client(&certs, &[n.node.addr.to_string()]);
        let mut later = 0;
        for (e, order) in epochs.iter().enumerate() {
            let runs: Vec<PageRun> =
                order.iter().map(|i| PageRun { path: format!("/ds/f-{i:02}"), first: 0, end: 1 }).collect();
            let failed = c.announce("job", &runs).await;
            assert!(failed.is_empty(), "{failed:?}");
            let before = n.store.counters().gets.load(Ordering::SeqCst);
            for i in order {
                let got = read_all(&c, &format!("/ds/f-{i:02}")).await.expect("read");
                assert!(got == data(PAGE as usize, *i), "f-{i:02} differs");
            }
            if e > 0 {
                later += n.store.counters().gets.load(Ordering::SeqCst) - before;
            }
            let (mem, _) = n.node.node.cache().used();
            assert!(mem <= 10 * PAGE, "memory tier holds {mem} bytes");
        }
        gets.push(later);
        n.node.shutdown().await;
    }
    let (announced, lru) = (gets[0], gets[1]);
    eprintln!("store reads in epochs 2-4: {announced} with the announced order, {lru} with LRU");
    // The ten pages held at each epoch's start are all read before any is evicted.
    assert!(announced <= 3 * (files - 10), "announced order: {announced} store reads in epochs 2-4");
    assert!(lru > announced, "LRU: {lru} store reads, announced order: {announced}");
}
