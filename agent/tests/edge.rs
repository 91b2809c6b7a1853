//! The edge agent end to end: a `ferry cloud` process, a `ferry edge`
//! process, files appearing in the robot's directories.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

struct Env {
    cloud: Cloud,
    store: PathBuf,
    edge_cfg: PathBuf,
    robot: PathBuf,
}

/// Certificates, a cloud node config over `DIR/store`, and an edge config
/// for robot-17 watching `DIR/robot` (plus `extra` TOML).
fn setup(dir: &Path, extra: &str) -> Env {
    let cloud = cloud_setup_with(dir, "/", "default", &[("edge", "robot-17")]);
    let robot = dir.join("robot");
    std::fs::create_dir_all(&robot).expect("mkdir");
    let edge_cfg = dir.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!(
            "id = \"robot-17\"\ncerts = \"certs\"\nnodes = [\"127.0.0.1:{}\"]\nspool = \"spool/spool.db\"\n\
             settle = \"1s\"\ncommit_interval = \"1s\"\nscan_interval = \"200ms\"\n{extra}\n\
             [[watch]]\ndir = \"robot\"\npattern = \"**\"\n",
            cloud.port
        ),
    )
    .expect("write");
    Env { store: cloud.store.clone(), cloud, edge_cfg, robot }
}

impl Env {
    fn cloud(&self) -> Running {
        start_cloud(&self.cloud)
    }

    fn edge(&self) -> Running {
        Running(
            ferry()
                .args(["edge", "--config", self.edge_cfg.to_str().expect("utf8")])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn edge"),
        )
    }

    /// Where robot file `name` lands in the store.
    fn object(&self, name: &str) -> PathBuf {
        self.store.join("logs/robot-17/robot").join(name)
    }

    fn status(&self) -> serde_json::Value {
        let o = run(&["edge", "status", "--json", "--config", self.edge_cfg.to_str().expect("utf8")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("status JSON")
    }

    /// The status, or `None` while the agent has not made its spool yet.
    fn status_once_started(&self) -> Option<serde_json::Value> {
        let o = run(&["edge", "status", "--json", "--config", self.edge_cfg.to_str().expect("utf8")]);
        o.status.success().then(|| serde_json::from_slice(&o.stdout).expect("status JSON"))
    }

    /// Waits until the store holds exactly `local`'s bytes under `name`.
    fn wait_uploaded(&self, name: &str, limit: Duration) {
        let want = std::fs::read(self.robot.join(name)).expect("local file");
        self.wait_stored(name, &want, limit);
    }

    /// Waits until the store holds exactly `want` under `name` (the local
    /// file may be gone by then: uploaded files go when over budget).
    fn wait_stored(&self, name: &str, want: &[u8], limit: Duration) {
        let object = self.object(name);
        wait_until(limit, &format!("{name} did not arrive intact"), || {
            std::fs::read(&object).is_ok_and(|got| got == want)
        });
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn append(p: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).expect("open");
    f.write_all(bytes).expect("append");
}

#[test]
fn growing_file_arrives_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    let _node = env.cloud();
    let _edge = env.edge();
    let log = env.robot.join("run-1.mcap");
    let mut written = Vec::new();
    // The log keeps growing until the store has committed part of it (however
    // long the machine takes to get there), then five more pieces.
    let mut seen_partial = false;
    let mut after = 0;
    let t0 = Instant::now();
    let mut i = 0u64;
    while after < 5 {
        let piece = random(150_000 + (i as usize % 20) * 1000, i);
        i += 1;
        append(&log, &piece);
        written.extend_from_slice(&piece);
        std::thread::sleep(Duration::from_millis(200));
        // While it grows, what the store has is always a prefix of the file.
        if let Ok(got) = std::fs::read(env.object("run-1.mcap")) {
            assert!(written.starts_with(&got), "the store holds bytes the file never had at their offset");
            seen_partial |= got.len() < written.len();
        }
        if seen_partial {
            after += 1;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "a growing file was never committed before it was complete");
    }
    env.wait_uploaded("run-1.mcap", Duration::from_secs(60));
    // Once it stops changing, it counts as uploaded.
    let t0 = Instant::now();
    loop {
        let s = env.status();
        if s["files_uploaded"] == 1 {
            assert_eq!(s["queued_bytes"], 0, "{s}");
            assert_eq!(s["uploaded_bytes"], written.len(), "{s}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never counted as uploaded: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    use rand::Rng;
    let iterations: usize = std::env::var("FERRY_EDGE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    // Slow enough that kills land mid-upload.
    let env = setup(dir.path(), "[bandwidth]\nrate = \"4MiB\"\n");
    let _node = env.cloud();
    let mut rng = rand::rng();
    let mut names = Vec::new();
    for i in 0..iterations {
        // New data every round: one more file and more bytes on a growing one.
        let name = format!("cam-{i:03}.bin");
        std::fs::write(env.robot.join(&name), random(rng.random_range(100_000..900_000), i as u64 + 100))
            .expect("write");
        names.push(name);
        append(&env.robot.join("growing.mcap"), &random(200_000, i as u64 + 7000));
        let mut edge = env.edge();
        std::thread::sleep(Duration::from_millis(rng.random_range(50..800)));
        signal(&edge.0, "KILL");
        let _ = edge.0.wait();
    }
    names.push("growing.mcap".into());
    let _edge = env.edge();
    for n in &names {
        env.wait_uploaded(n, Duration::from_secs(120));
    }
    // Exactly these objects, nothing else.
    let mut stored: Vec<String> = std::fs::read_dir(env.object(""))
        .expect("store dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    names.sort();
    assert_eq!(stored, names);
}

#[test]
fn uploads_wait_for_a_node_that_is_down_and_complete_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    let _edge = env.edge();
    std::fs::write(env.robot.join("early.bin"), random(3 << 20, 1)).expect("write");
    // With no node to take it, the whole file is queued and shown as pending. The
    // watcher may first see the file half written and the upload pass may be waiting
    // on the dead node, so the full size can take a rescan to show.
    let mut last = serde_json::Value::Null;
    wait_until(Duration::from_secs(30), "the file was never shown as queued", || {
        last = env.status_once_started().unwrap_or_default();
        last["files_pending"] == 1 && last["queued_bytes"] == 3 << 20
    });
    assert_eq!(last["files_uploaded"], 0, "{last}");
    let _node = env.cloud();
    env.wait_uploaded("early.bin", Duration::from_secs(60));
}

#[test]
fn status_says_why_a_queue_is_stuck_and_counts_stored_files_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    // Files stay watched for a minute after they stop changing.
    let cfg = std::fs::read_to_string(&env.edge_cfg).expect("read").replace("settle = \"1s\"", "settle = \"60s\"");
    std::fs::write(&env.edge_cfg, cfg).expect("write");
    let mut edge = env.edge();
    std::fs::write(env.robot.join("early.bin"), random(3 << 20, 1)).expect("write");
    // No node: the reason is the failing uploads.
    let mut last = serde_json::Value::Null;
    wait_until(Duration::from_secs(60), "the failing uploads were never given as the reason", || {
        last = env.status_once_started().unwrap_or_default();
        last["files_pending"] == 1 && last["stuck"].as_str().is_some_and(|w| w.contains("uploads have failed"))
    });
    assert_eq!(last["agent_running"], true, "{last}");
    assert!(last["last_error"].is_string(), "{last}");
    // No agent: that is the reason, in the text too.
    signal(&edge.0, "TERM");
    assert!(wait_exit(&mut edge.0, Duration::from_secs(20)).success());
    let s = env.status();
    assert_eq!(s["agent_running"], false, "{s}");
    assert!(s["stuck"].as_str().is_some_and(|w| w.contains("not running")), "{s}");
    let o = run(&["edge", "status", "--config", env.edge_cfg.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("stuck:") && text.contains("the agent is not running"), "{text}");
    // Node and agent back: once its bytes are stored, the file is no longer
    // queued, only watched until it settles.
    let _node = env.cloud();
    let _edge = env.edge();
    env.wait_uploaded("early.bin", Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "a stored file still counted as queued", || {
        last = env.status();
        last["files_pending"] == 0 && last["files_settling"] == 1
    });
    assert_eq!(last["queued_bytes"], 0, "{last}");
    assert!(last["stuck"].is_null() && last["last_error"].is_null(), "{last}");
    assert_eq!(last["files_uploaded"], 0, "not settled yet: {last}");
}

#[test]
fn a_recopied_file_sends_far_less_than_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    let _node = env.cloud();
    let _edge = env.edge();
    let body = random(100 << 20, 5);
    std::fs::write(env.robot.join("a.bin"), &body).expect("write");
    env.wait_uploaded("a.bin", Duration::from_secs(120));
    let before = env.status()["wire_bytes"].as_u64().expect("wire bytes");
    assert!(before >= 100 << 20, "random bytes do not compress: {before}");
    std::fs::write(env.robot.join("copy-of-a.bin"), &body).expect("write");
    env.wait_uploaded("copy-of-a.bin", Duration::from_secs(120));
    let sent = env.status()["wire_bytes"].as_u64().expect("wire bytes") - before;
    assert!(sent < 1 << 20, "re-sending a copy of 100 MiB cost {sent} bytes on the wire");
}

#[test]
fn over_budget_uploaded_files_go_first_and_the_rest_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "budget = \"3MiB\"\n");
    let mut node = env.cloud();
    let _edge = env.edge();
    let mib = |seed| random(1 << 20, seed);
    for (i, n) in ["a.bin", "b.bin"].iter().enumerate() {
        std::fs::write(env.robot.join(n), mib(i as u64)).expect("write");
        env.wait_uploaded(n, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1100)); // distinct upload times
    }
    // In the store is not yet counted as uploaded: that happens once a file
    // has settled, and only counted files may go when over budget.
    wait_until(Duration::from_secs(60), "a.bin and b.bin never counted as uploaded", || {
        env.status()["files_uploaded"] == 2
    });
    signal(&node.0, "TERM");
    let _ = node.0.wait();
    for (i, n) in ["c.bin", "d.bin", "e.bin", "f.bin"].iter().enumerate() {
        std::fs::write(env.robot.join(n), mib(10 + i as u64)).expect("write");
        std::thread::sleep(Duration::from_millis(600));
    }
    let robot = env.robot.clone();
    wait_until(Duration::from_secs(30), "uploaded files were not deleted", || {
        !robot.join("a.bin").exists() && !robot.join("b.bin").exists()
    });
    // Once the agent has every new file in its queue (and has applied the
    // budget to them), none of them may be gone.
    wait_until(Duration::from_secs(60), "the new files never all reached the queue", || {
        env.status()["files_pending"] == 4
    });
    for n in ["c.bin", "d.bin", "e.bin", "f.bin"] {
        assert!(env.robot.join(n).exists(), "{n} was deleted before it was uploaded");
    }
    let s = env.status();
    assert_eq!(s["files_deleted"], 2, "{s}");
    assert_eq!(s["files_dropped"], 0, "{s}");
    assert_eq!(s["files_pending"], 4, "{s}");
    // The uploaded ones are safe in the store; the rest follow once the node is back.
    assert_eq!(std::fs::read(env.object("a.bin")).expect("a stored"), mib(0));
    let _node = env.cloud();
    for (i, n) in ["c.bin", "d.bin", "e.bin", "f.bin"].iter().enumerate() {
        env.wait_stored(n, &mib(10 + i as u64), Duration::from_secs(60));
    }
}

#[test]
fn a_real_mcap_log_uploads_and_reads_back_with_an_mcap_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    let _node = env.cloud();
    let _edge = env.edge();
    // Written by the reference MCAP writer (fixtures/make_mcap.py).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/robot-run.mcap");
    std::fs::copy(&fixture, env.robot.join("robot-run.mcap")).expect("copy fixture");
    env.wait_uploaded("robot-run.mcap", Duration::from_secs(60));
    let bytes = std::fs::read(env.object("robot-run.mcap")).expect("uploaded log");
    let mut counts = std::collections::BTreeMap::new();
    let mut last_time = 0;
    for m in mcap::MessageStream::new(&bytes).expect("an MCAP file") {
        let m = m.expect("a readable message");
        assert!(m.log_time >= last_time, "messages out of order");
        last_time = m.log_time;
        serde_json::from_slice::<serde_json::Value>(&m.data).expect("JSON payload");
        *counts.entry(m.channel.topic.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts.get("/imu"), Some(&2000));
    assert_eq!(counts.get("/gps"), Some(&100));
}

#[test]
fn higher_priority_files_upload_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = "[bandwidth]\nrate = \"2MiB\"\n[[watch]]\ndir = \"bulk\"\npriority = \"low\"\n\
                 [[watch]]\ndir = \"events\"\npriority = \"high\"\n";
    let env = setup(dir.path(), extra);
    let (bulk, events) = (dir.path().join("bulk"), dir.path().join("events"));
    std::fs::create_dir_all(&bulk).expect("mkdir");
    std::fs::create_dir_all(&events).expect("mkdir");
    // The low-priority file is older, so only priority puts the other first.
    let low = random(3 << 20, 1);
    std::fs::write(bulk.join("camera.bin"), &low).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    let high = random(2 << 20, 2);
    std::fs::write(events.join("crash.mcap"), &high).expect("write");
    let _node = env.cloud();
    let _edge = env.edge();
    let logs = env.store.join("logs/robot-17");
    let t0 = Instant::now();
    while std::fs::read(logs.join("events/crash.mcap")).map_or(true, |b| b != high) {
        assert!(!logs.join("bulk/camera.bin").exists(), "the low-priority file was committed first");
        assert!(t0.elapsed() < Duration::from_secs(60), "the high-priority file never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!logs.join("bulk/camera.bin").exists(), "the low-priority file was committed first");
    wait_until(Duration::from_secs(60), "the low-priority file never arrived", || {
        std::fs::read(logs.join("bulk/camera.bin")).is_ok_and(|b| b == low)
    });
}

#[test]
fn drop_policy_deletes_the_oldest_unuploaded_files_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "budget = \"2MiB\"\nretention = \"drop-oldest\"\n");
    // No node: nothing can be uploaded.
    let _edge = env.edge();
    for (i, n) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        std::fs::write(env.robot.join(n), random(1 << 20, i as u64)).expect("write");
        std::thread::sleep(Duration::from_millis(600));
    }
    wait_until(Duration::from_secs(30), "over budget with drop-oldest, yet nothing was dropped", || {
        !env.robot.join("a.bin").exists()
    });
    // Once the agent counted the drop, the budget holds again: nothing else goes.
    wait_until(Duration::from_secs(30), "the drop was never counted", || env.status()["files_dropped"] == 1);
    assert!(env.robot.join("b.bin").exists() && env.robot.join("c.bin").exists(), "only the oldest should go");
    let s = env.status();
    assert_eq!(s["files_dropped"], 1, "{s}");
    assert_eq!(s["files_pending"], 2, "{s}");
}

#[test]
fn odd_file_names_upload_special_files_are_quarantined_and_nothing_stops_the_queue() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    let _node = env.cloud();
    let log = dir.path().join("edge.log");
    let mut edge = Running(
        ferry()
            .args(["edge", "--config", env.edge_cfg.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn edge"),
    );
    // What a robot's file system allows, and where each lands in the store
    // (docs/PROTOCOL.md, "File names").
    let odd: &[(&[u8], &str)] = &[
        (b"tab\there.log", "tab%09here.log"),
        (b"new\nline.log", "new%0Aline.log"),
        (b"back\\slash.log", "back%5Cslash.log"),
        (b"bytes-\xff\xfe.log", "bytes-%FF%FE.log"),
        (b"50% #1 [x].log", "50%25 %231 %5Bx%5D.log"),
        ("caf\u{e9}.log".as_bytes(), "caf\u{e9}.log"),
        (b"esc\x1b[2J.log", "esc%1B%5B2J.log"),
    ];
    // Special files, first in the queue's order.
    std::os::unix::fs::symlink("/etc/passwd", env.robot.join("passwd-link.log")).expect("symlink");
    let fifo = env.robot.join("pipe.log");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"not for upload").expect("write");
    std::fs::hard_link(&secret, env.robot.join("hard.log")).expect("hard link");
    // 200 bytes here, 600 once encoded: more than the store's file system takes.
    std::fs::write(env.robot.join(format!("{}.log", "#".repeat(196))), b"long").expect("write");
    for (i, (name, _)) in odd.iter().enumerate() {
        std::fs::write(env.robot.join(std::ffi::OsStr::from_bytes(name)), random(10_000 + i, i as u64)).expect("write");
    }
    for (i, (_, stored)) in odd.iter().enumerate() {
        env.wait_stored(stored, &random(10_000 + i, i as u64), Duration::from_secs(60));
    }
    // Files dropped later still flow.
    std::fs::write(env.robot.join("after.log"), random(5000, 99)).expect("write");
    env.wait_uploaded("after.log", Duration::from_secs(60));
    // The long name is refused by the node at its commit, then quarantined.
    wait_until(Duration::from_secs(30), "the long name was not quarantined", || env.status()["files_quarantined"] == 4);
    let reasons = env.status()["quarantined"].to_string();
    for want in ["passwd-link.log", "symbolic link", "pipe.log", "FIFO", "hard.log", "upload_hardlinks", "longer than"]
    {
        assert!(reasons.contains(want), "{want:?} not in {reasons}");
    }
    for never in ["passwd-link.log", "pipe.log", "hard.log"] {
        assert!(!env.object(never).exists(), "{never} reached the store");
    }
    // Objects of a file:// store are not world-readable.
    let mode = std::fs::metadata(env.object("after.log")).expect("stored").permissions().mode();
    assert_eq!(mode & 0o007, 0, "stored with mode {mode:o}");
    // Each quarantined file is reported once, however many passes run
    // (200 ms apart here), and names reach the log escaped.
    std::thread::sleep(Duration::from_secs(2));
    let _ = std::fs::write(env.robot.join("z.log"), b"z");
    env.wait_uploaded("z.log", Duration::from_secs(30));
    signal(&edge.0, "TERM");
    wait_exit(&mut edge.0, Duration::from_secs(10));
    let text = std::fs::read(&log).expect("log");
    assert!(!text.contains(&0x1b), "a raw escape character reached the log");
    let text = String::from_utf8_lossy(&text);
    for name in ["passwd-link.log", "pipe.log", "hard.log"] {
        let n = text.lines().filter(|l| l.contains("quarantined") && l.contains(name)).count();
        assert_eq!(n, 1, "{name} reported {n} times:\n{text}");
    }
}

#[test]
fn a_robot_reads_models_and_its_own_logs_and_a_node_certificate_is_no_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    let _node = env.cloud();
    let _edge = env.edge();
    std::fs::write(env.robot.join("run.log"), random(20_000, 7)).expect("write");
    env.wait_uploaded("run.log", Duration::from_secs(60));
    std::fs::create_dir_all(env.store.join("models")).expect("mkdir");
    std::fs::write(env.store.join("models/m.bin"), b"weights").expect("write");
    let certs = dir.path().join("certs");
    let issued = run(&["cert", "issue", "--dir", certs.to_str().expect("utf8"), "--role", "edge", "--id", "robot-18"]);
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let as_id = |id: &str| {
        let cfg = dir.path().join(format!("as-{id}.toml"));
        std::fs::write(&cfg, format!("nodes = [\"127.0.0.1:{}\"]\ncerts = \"certs\"\nid = \"{id}\"\n", env.cloud.port))
            .expect("write");
        cfg.to_str().expect("utf8").to_string()
    };
    let cat = |cfg: &str, path: &str| run(&["cat", "--config", cfg, path]);
    let (own, other, node) = (as_id("robot-17"), as_id("robot-18"), as_id("cloud-1"));
    assert_eq!(cat(&own, "/logs/robot-17/robot/run.log").stdout, random(20_000, 7));
    assert_eq!(cat(&other, "/models/m.bin").stdout, b"weights");
    for (cfg, path, rule) in [
        (&other, "/logs/robot-17/robot/run.log", "access.edge"),
        (&node, "/logs/robot-17/robot/run.log", "access.cloud"),
        (&node, "/models/m.bin", "access.cloud"),
    ] {
        let o = cat(cfg, path);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && o.stdout.is_empty(), "{cfg} read {path}");
        assert!(err.contains("permission denied") && err.contains(rule), "{cfg} {path}: {err}");
    }
    let ls = run(&["ls", "--config", &other, "/logs"]);
    assert!(!ls.status.success(), "robot-18 listed /logs: {}", String::from_utf8_lossy(&ls.stdout));
}

/// Datagrams a daemon sends to `NOTIFY_SOCKET`, as systemd reads them.
struct NotifySocket {
    sock: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn new(dir: &Path, name: &str) -> NotifySocket {
        let path = dir.join(name);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        NotifySocket { sock, path }
    }

    /// The next message, split into its `KEY=VALUE` lines.
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).expect("a notify message within 30 s");
        String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string).collect()
    }
}

#[test]
fn daemons_tell_systemd_they_are_ready_alive_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = setup(dir.path(), "");
    for daemon in ["cloud", "edge"] {
        let notify = NotifySocket::new(dir.path(), &format!("{daemon}.notify"));
        let config = if daemon == "cloud" { env.cloud.cfg.clone() } else { env.edge_cfg.clone() };
        // The edge agent needs its node.
        let node = (daemon == "edge").then(|| env.cloud());
        // As systemd starts it: WATCHDOG_PID is the service's main pid (the
        // shell's, which exec keeps).
        let bin = ferry().get_program().to_owned();
        let mut child = Running(
            std::process::Command::new("sh")
                .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
                .arg(bin)
                .args([daemon, "--config", config.to_str().expect("utf8")])
                .env("NOTIFY_SOCKET", &notify.path)
                .env("WATCHDOG_USEC", "400000")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn"),
        );
        let first = notify.next();
        assert!(first.contains(&"READY=1".to_string()), "{daemon}: {first:?}");
        assert!(first.iter().any(|l| l.starts_with("STATUS=")), "{daemon}: {first:?}");
        // Watchdog pings at half of WATCHDOG_USEC, while it runs.
        for _ in 0..3 {
            assert_eq!(notify.next(), ["WATCHDOG=1"], "{daemon}");
        }
        signal(&child.0, "TERM");
        let mut seen = Vec::new();
        while !seen.contains(&"STOPPING=1".to_string()) {
            seen = notify.next();
        }
        assert!(wait_exit(&mut child.0, Duration::from_secs(20)).success(), "{daemon} did not stop cleanly");
        drop(node);
    }
}

#[test]
fn the_agent_exports_metrics_and_health_on_its_metrics_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_tcp_port();
    let env = setup(dir.path(), &format!("metrics_listen = \"127.0.0.1:{port}\""));
    let _node = env.cloud();
    let _edge = env.edge();
    wait_until(Duration::from_secs(30), "the agent's metrics address never answered", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    for probe in ["/healthz", "/readyz"] {
        let r = http_get(port, probe);
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{probe}: {r}");
    }
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(env.robot.join("a.bin"), &body).expect("write");
    wait_until(Duration::from_secs(60), "a.bin never arrived", || {
        std::fs::read(env.object("a.bin")).is_ok_and(|b| b == body)
    });
    wait_until(Duration::from_secs(30), "the metrics never counted the upload", || {
        metric(&metrics(port), "ferry_edge_files_uploaded_total") == 1
    });
    let text = metrics(port);
    assert_eq!(metric(&text, "ferry_edge_uploaded_bytes_total"), body.len() as u64, "{text}");
    assert_eq!(metric(&text, "ferry_edge_files_pending"), 0, "{text}");
    assert!(metric(&text, "ferry_edge_wire_bytes_total") > 0, "{text}");
    assert!(metric(&text, "ferry_edge_spool_bytes") > 0, "{text}");
    assert!(text.contains("ferry_build_info{version="), "{text}");

    // Every metric the Grafana dashboard queries is exported by the node, the mount or the agent.
    if !fuse_available() {
        return;
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let mport = free_tcp_port();
    let _mount = Running(
        ferry()
            .args(["mount", "--config", &env.cloud.client, mnt.to_str().expect("utf8")])
            .args(["--metrics-listen", &format!("127.0.0.1:{mport}"), "--local-copies", "0"])
            .spawn()
            .expect("spawn mount"),
    );
    wait_until(Duration::from_secs(30), "mount did not appear", || is_mounted(&mnt));
    wait_until(Duration::from_secs(10), "the mount's metrics never answered", || {
        std::net::TcpStream::connect(("127.0.0.1", mport)).is_ok()
    });
    // Traffic for every panel: reads through the mount and the node, an announced order.
    std::fs::write(mnt.join(".ferry-announce"), "/logs/robot-17/robot/a.bin\n").expect("announce");
    for _ in 0..2 {
        assert!(std::fs::read(mnt.join("logs/robot-17/robot/a.bin")).expect("read through the mount") == body);
        let o = run(&["cat", "--config", &env.cloud.client, "/logs/robot-17/robot/a.bin"]);
        assert!(o.status.success() && o.stdout == body, "{}", String::from_utf8_lossy(&o.stderr));
    }
    let all = [metrics(env.cloud.mport), metrics(mport), metrics(port)].join("\n");
    let names = dashboard_metrics();
    assert!(names.len() > 20, "{names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !exported(&all, n)).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics nothing exports: {missing:?}");
}
