//! End-to-end tests of the `ferry` binary: real processes, real sockets.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn help_for_every_command() {
    for args in [
        &["--help"][..],
        &["up", "--help"],
        &["cloud", "--help"],
        &["cat", "--help"],
        &["s3", "--help"],
        &["ls", "--help"],
        &["stat", "--help"],
        &["load", "--help"],
        &["mount", "--help"],
        &["cert", "init", "--help"],
        &["cert", "issue", "--help"],
        &["edge", "--help"],
        &["edge", "status", "--help"],
        &["model", "push", "--help"],
        &["model", "status", "--help"],
        &["model", "rollback", "--help"],
        &["model", "promote", "--help"],
        &["predictor", "gen", "--help"],
        &["predictor", "train", "--help"],
        &["predictor", "eval", "--help"],
    ] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn certificates_and_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let c = certs.to_str().expect("utf8");
    assert!(run(&["cert", "init", "--dir", c]).status.success());
    for f in ["ca.pem", "ca.key", "fleet-signing.key", "fleet-signing.pub"] {
        assert!(certs.join(f).exists(), "{f}");
    }
    let again = run(&["cert", "init", "--dir", c]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(run(&["cert", "issue", "--dir", c, "--role", "edge", "--id", "robot-17"]).status.success());
    let bad_role = run(&["cert", "issue", "--dir", c, "--role", "boss", "--id", "x"]);
    assert!(!bad_role.status.success());
    let bad_id = run(&["cert", "issue", "--dir", c, "--role", "edge", "--id", "../evil"]);
    assert!(!bad_id.status.success());
    assert!(String::from_utf8_lossy(&bad_id.stderr).contains("invalid node id"));
    assert!(!dir.path().join("evil.pem").exists());

    // Bad configs: one line, non-zero, naming the cause.
    let cfg = dir.path().join("cloud.toml");
    for (text, expect) in [
        ("listen = \"not an address\"\n", "invalid config"),
        ("unknown_key = 1\n", "unknown_key"),
        ("page_size = \"64KiB\"\n[mounts.\"/d\"]\nurl = \"memory:///\"\n", "page_size"),
        ("[cache]\nmemory = \"1GiB\"\n", "no mounts"),
        ("[mounts.\"/d\"]\nurl = \"file:///no/such/dir\"\n", "does not exist"),
    ] {
        std::fs::write(&cfg, text).expect("write config");
        let o = run(&["cloud", "--config", cfg.to_str().expect("utf8")]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{text}");
        assert!(err.contains(expect), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let missing = run(&["cloud", "--config", "/no/such/cloud.toml"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    // Environment overrides use the file kind's own prefix; other FERRY_ variables are ignored.
    std::fs::write(&cfg, "[mounts.\"/d\"]\nurl = \"memory:///\"\n").expect("write config");
    let o = ferry()
        .args(["cloud", "--config", cfg.to_str().expect("utf8")])
        .env("FERRY_UNRELATED", "x")
        .env("FERRY_CLOUD_PAGE_SIZE", "64KiB")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&o.stderr).contains("page_size"), "{}", String::from_utf8_lossy(&o.stderr));
    let bad_target = run(&["cat", "s3://bucket/key"]);
    assert!(!bad_target.status.success());
}

struct Up {
    child: Running,
    data: PathBuf,
    client: String,
    s3: String,
}

impl Up {
    /// Ctrl-C: the stack must stop cleanly.
    fn stop(mut self) {
        signal(&self.child.0, "INT");
        assert!(wait_exit(&mut self.child.0, Duration::from_secs(20)).success(), "ferry up did not stop cleanly");
    }
}

fn start_up(dir: &Path) -> Up {
    let data = dir.join("data");
    let mut child = ferry()
        .args(["up", "--data", data.to_str().expect("utf8")])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_tcp_port())])
        .args(["--mqtt-listen", &format!("127.0.0.1:{}", free_tcp_port())])
        // Port 0: the endpoint takes a free port and prints it.
        .args(["--s3-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ferry up");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("a line").expect("read");
    assert_eq!(first, "ferry is up.");
    let mut s3 = String::new();
    for line in lines.by_ref() {
        let line = line.expect("read");
        if let Some(rest) = line.strip_prefix("  s3 endpoint  ") {
            s3 = rest.split(' ').next().expect("an address").to_string();
        }
        if line.is_empty() {
            break;
        }
    }
    assert!(s3.starts_with("http://127.0.0.1:"), "ferry up printed no S3 endpoint");
    std::thread::spawn(move || for _ in lines {});
    let client = data.join("client.toml").to_str().expect("utf8").to_string();
    Up { child: Running(child), data, client, s3 }
}

#[test]
fn up_serves_the_data_directory_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = start_up(dir.path());
    let store = up.data.join("store");
    let body: Vec<u8> = (0..(9u32 << 20) + 3).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::create_dir_all(store.join("datasets/scenes")).expect("mkdir");
    std::fs::write(store.join("datasets/scenes/lidar.bin"), &body).expect("write");

    let cat = run(&["cat", "--config", &up.client, "/datasets/hello.txt"]);
    assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
    assert_eq!(cat.stdout, b"hello from ferry\n");
    let cat = run(&["cat", "--config", &up.client, "/datasets/scenes/lidar.bin"]);
    assert!(cat.stdout == body, "cat output differs from the object");

    let ls = run(&["ls", "--config", &up.client, "/datasets"]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains("hello.txt") && text.contains("scenes"), "{text}");

    let addr = std::fs::read_to_string(&up.client).expect("client.toml");
    let node = addr.split('"').nth(1).expect("a node address in client.toml").to_string();
    let stat = run(&["stat", &format!("ferry://{node}/datasets/scenes/lidar.bin"), "--config", &up.client]);
    let text = String::from_utf8_lossy(&stat.stdout);
    assert!(text.contains(&format!("size:      {}", body.len())), "{text}");
    // --json: one document, times in RFC 3339.
    let stat = run(&["stat", "--json", "--config", &up.client, "/datasets/scenes/lidar.bin"]);
    let v: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("stat --json is JSON");
    assert_eq!(v["size"], body.len() as u64, "{v}");
    assert_eq!(v["kind"], "file", "{v}");
    let modified = v["modified"].as_str().expect("modified");
    assert!(humantime::parse_rfc3339(modified).is_ok(), "{v}");
    let ls = run(&["ls", "--json", "--config", &up.client, "/datasets"]);
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("ls --json is JSON");
    let names: Vec<&str> = v.as_array().expect("an array").iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.contains(&"hello.txt") && names.contains(&"scenes"), "{v}");

    // The stack mounts the namespace at DIR/mnt (when the kernel has FUSE).
    let mnt = up.data.join("mnt");
    if fuse_available() {
        let hello = std::fs::read(mnt.join("datasets/hello.txt")).expect("read through the mount");
        assert_eq!(hello, b"hello from ferry\n");
        assert!(std::fs::read(mnt.join("datasets/scenes/lidar.bin")).expect("read through the mount") == body);
    }

    // The stack's robot: a file dropped into DIR/robot arrives in the store.
    let log: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(up.data.join("robot/run-1.mcap"), &log).expect("drop a log");
    let arrived = store.join("logs/robot-1/robot/run-1.mcap");
    let t0 = Instant::now();
    while std::fs::read(&arrived).map_or(true, |b| b != log) {
        assert!(t0.elapsed() < Duration::from_secs(60), "the dropped log never arrived intact");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = run(&["edge", "status", "--config", up.data.join("edge.toml").to_str().expect("utf8")]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(String::from_utf8_lossy(&status.stdout).contains("queued:"), "{status:?}");

    // Its robot follows the stack's own broker: a pushed model gets installed.
    let model = dir.path().join("weights.bin");
    let weights: Vec<u8> = (0..500_000u32).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect();
    std::fs::write(&model, &weights).expect("write model");
    let push = run(&["model", "push", "demo-v1", model.to_str().expect("utf8"), "--config", &up.client]);
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));
    let installed = up.data.join("models/demo/current/weights.bin");
    let t0 = Instant::now();
    while std::fs::read(&installed).map_or(true, |b| b != weights) {
        assert!(t0.elapsed() < Duration::from_secs(60), "the pushed model was never installed");
        std::thread::sleep(Duration::from_millis(100));
    }

    let load = run(&["load", "--config", &up.client, "/datasets"]);
    assert!(String::from_utf8_lossy(&load.stdout).contains("loaded 2 file(s)"), "{:?}", load);
    let load = run(&["load", "--json", "--config", &up.client, "/datasets"]);
    let v: serde_json::Value = serde_json::from_slice(&load.stdout).expect("load --json is JSON");
    assert!(v["files"] == 2 && v["fetched_pages"] == 0 && v["cached_pages"].as_u64() > Some(0), "{v}");

    let missing = run(&["cat", "--config", &up.client, "/datasets/nope.bin"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));

    signal(&up.child.0, "INT");
    let status = wait_exit(&mut up.child.0, Duration::from_secs(20));
    assert!(status.success(), "ferry up exited with {status}");
    assert!(!is_mounted(&mnt), "ferry up left {} mounted", mnt.display());
}

#[test]
fn a_second_instance_on_the_same_directories_fails_at_once_and_configs_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = start_up(dir.path());
    let files = ["cloud.toml", "client.toml", "edge.toml"].map(|f| up.data.join(f));
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("config")).collect();
    let pid = up.child.0.id().to_string();
    let data = up.data.to_str().expect("utf8").to_string();
    let second = [
        vec!["up".to_string(), "--data".into(), data.clone(), "--listen".into(), format!("127.0.0.1:{}", free_port())],
        vec!["cloud".into(), "--config".into(), format!("{data}/cloud.toml")],
        vec!["edge".into(), "--config".into(), format!("{data}/edge.toml")],
    ];
    for args in second {
        let t0 = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "ferry {args:?} started beside a running ferry up");
        assert!(err.contains("in use") && err.contains(&format!("pid {pid}")), "ferry {args:?}: {err}");
        assert!(t0.elapsed() < Duration::from_secs(10), "ferry {args:?} took {:?} to fail", t0.elapsed());
    }
    for (f, b) in files.iter().zip(&before) {
        assert!(std::fs::read(f).expect("config") == *b, "{} was rewritten", f.display());
    }
    signal(&up.child.0, "INT");
    assert!(wait_exit(&mut up.child.0, Duration::from_secs(20)).success());
    // A user's edit survives the next start.
    let cloud = std::fs::read_to_string(&files[0]).expect("cloud.toml");
    let edited = cloud.replace("ttl = \"10m\"", "ttl = \"42s\"");
    assert_ne!(cloud, edited, "no ttl line in {cloud}");
    std::fs::write(&files[0], &edited).expect("edit");
    let up = start_up(dir.path());
    assert_eq!(std::fs::read_to_string(&files[0]).expect("cloud.toml"), edited);
    drop(up);
}

#[test]
fn restarted_cloud_process_serves_warm_without_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    let body: Vec<u8> = (0..(5u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(c.store.join("obj.bin"), &body).expect("write");
    for round in 0..2 {
        let mut node = start_cloud(&c);
        let cat = run(&["cat", "--config", &c.client, "/d/obj.bin"]);
        assert!(cat.status.success(), "{}", String::from_utf8_lossy(&cat.stderr));
        assert!(cat.stdout == body, "round {round}: bytes differ");
        let m = metrics(c.mport);
        let store_requests = metric(&m, "ferry_store_requests_total{op=\"get\"}")
            + metric(&m, "ferry_store_requests_total{op=\"head\"}");
        if round == 0 {
            assert!(store_requests > 0, "cold read made no store request?\n{m}");
        } else {
            // Only the prefetcher's one listing of the folder may reach the store.
            assert_eq!(store_requests, 0, "warm restart read from the store\n{m}");
            assert!(metric(&m, "ferry_store_requests_total{op=\"list\"}") <= 1, "{m}");
            assert!(metric(&m, "ferry_cache_hits_total{tier=\"disk\",mount=\"/d\"}") >= 5, "{m}");
        }
        signal(&node.0, "TERM");
        assert!(wait_exit(&mut node.0, Duration::from_secs(20)).success());
    }
    wait_file(&c.dir.join("cache/pages"));
}

#[test]
fn mount_survives_node_kill_after_fsync_and_unmounts_on_sigterm() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    std::fs::write(c.store.join("sample.bin"), b"dataset bytes").expect("write");
    let mut node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");

    // Refusals first: missing and non-empty mountpoints.
    let o = run(&["mount", "--config", &c.client, c.dir.join("nope").to_str().expect("utf8")]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("mountpoint"), "{o:?}");
    let o = run(&["mount", "--config", &c.client, c.dir.to_str().expect("utf8")]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"), "{o:?}");

    let mut mount = start_mount(&c, &mnt, &[]);
    assert_eq!(std::fs::read(mnt.join("d/sample.bin")).expect("read"), b"dataset bytes");

    // Write and fsync a checkpoint, then kill -9 the node at once.
    let body: Vec<u8> = (0..(3u32 << 20) + 11).map(|i| (i.wrapping_mul(7919) >> 5) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mnt.join("d/ckpt.pt")).expect("create");
        f.write_all(&body).expect("write");
        f.sync_all().expect("fsync returned: the node has the bytes");
        signal(&node.0, "KILL");
        let _ = node.0.wait();
        drop(f); // close may fail now that the node is gone; fsync already succeeded
    }
    // Restart: the journal resumes the upload and the file reaches the store intact.
    let mut node = start_cloud(&c);
    let t0 = Instant::now();
    loop {
        if std::fs::read(c.store.join("ckpt.pt")).is_ok_and(|b| b == body) {
            break;
        }
        if let Some(s) = node.0.try_wait().expect("try_wait") {
            panic!("the restarted node exited ({s})");
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let listing = |d: &Path| -> Vec<(String, u64)> {
                std::fs::read_dir(d)
                    .map(|r| {
                        r.flatten()
                            .map(|e| {
                                (e.file_name().to_string_lossy().into_owned(), e.metadata().map_or(0, |m| m.len()))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            panic!(
                "checkpoint never reached the store; store {:?}, journal {:?}",
                listing(&c.store),
                listing(&c.dir.join("cache/journal"))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    signal(&mount.0, "TERM");
    assert!(wait_exit(&mut mount.0, Duration::from_secs(20)).success());
    assert!(!is_mounted(&mnt), "stale mount left behind");
    assert!(std::fs::read_dir(&mnt).expect("readdir").next().is_none());
}

#[test]
fn predictor_gen_train_eval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let train = dir.path().join("train");
    let o =
        run(&["predictor", "gen", "--shape", "clip,kitti", "--seed", "1,2", "--size", "small", "--out", path(&train)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(train.join("clip-2.trace").is_file() && train.join("kitti-1.trace").is_file());

    let model = dir.path().join("models/mine");
    let o = run(&["predictor", "train", "--traces", path(&train), "--model", "tree", "--out", path(&model)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(model.join("model.json").is_file());

    // A held-out trace: the same shape, a seed the model was not trained on.
    let held_out = dir.path().join("held-out");
    let o = run(&["predictor", "gen", "--shape", "clip", "--seed", "7", "--size", "small", "--out", path(&held_out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["predictor", "eval", "--traces", path(&held_out), "--model", path(&model), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).expect("one JSON array");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["predictor"].as_str()).collect();
    assert_eq!(names, ["none", "readahead", "stride", "markov", "mine"]);
    for r in &rows {
        for field in
            ["precision", "coverage", "timeliness", "hit_ratio", "wasted_bytes", "oracle_hit_ratio", "causal_hit_ratio"]
        {
            assert!(r[field].is_number(), "{field} in {r}");
        }
    }
    let mine = &rows[4];
    let markov = &rows[3];
    assert!(mine["precision"].as_f64() > markov["precision"].as_f64(), "{mine} vs {markov}");

    // Bad input: a directory without traces, a malformed trace, an unknown model kind.
    let o = run(&["predictor", "eval", "--traces", path(dir.path())]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no *.trace files"), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = dir.path().join("bad.trace");
    std::fs::write(&bad, "{\"ferry_trace\":1,\"page_size\":4096}\nnot json\n").expect("write");
    let o = run(&["predictor", "eval", "--traces", path(&bad)]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.trace:2"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["predictor", "train", "--traces", path(&train), "--model", "forest", "--out", path(&model)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tree or lstm"));
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn node_records_reads_as_a_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    let traces = dir.path().join("traces");
    let cfg = std::fs::read_to_string(&c.cfg).expect("config");
    std::fs::write(&c.cfg, format!("trace_dir = \"{}\"\n{cfg}", traces.display())).expect("config");
    std::fs::create_dir_all(c.store.join("cam")).expect("mkdir");
    for i in 0..3 {
        std::fs::write(c.store.join(format!("cam/{i:03}.jpg")), vec![i as u8; 1000 + i]).expect("write");
    }
    let _node = start_cloud(&c);
    for i in 0..2 {
        let o = run(&["cat", "--config", &c.client, &format!("/d/cam/{i:03}.jpg")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = || ferry_predictor::trace::read_dir(&traces).ok().and_then(|mut t| t.pop());
    wait_until(Duration::from_secs(10), "trace with the folder's files", || {
        read().is_some_and(|t| t.catalog.len() == 3)
    });
    let t = read().expect("trace");
    let accesses: Vec<_> = t.accesses().collect();
    assert_eq!(accesses.len(), 2, "{accesses:?}");
    assert_eq!(accesses[0].path, "/d/cam/000.jpg");
    assert_eq!(accesses[1].len, 1001);
    assert!(accesses[0].reader.starts_with("client:client@"), "{}", accesses[0].reader);
    assert_ne!(accesses[0].reader, accesses[1].reader, "each connection is its own reader");
    assert_eq!(t.catalog.file(t.catalog.id("/d/cam/002.jpg").expect("unread file listed")).size, 1002);
    // The recorded trace is what eval and train take.
    let o = run(&["predictor", "eval", "--traces", traces.to_str().expect("utf-8"), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// errno of an invalid argument.
const EINVAL: i32 = 22;

/// Mounts `c`'s namespace at `mnt` with `args` added; waits until it is there.
fn start_mount(c: &Cloud, mnt: &Path, args: &[&str]) -> Running {
    std::fs::create_dir_all(mnt).expect("mkdir");
    let mount =
        Running(ferry().args(["mount", "--config", &c.client, path(mnt)]).args(args).spawn().expect("spawn mount"));
    wait_until(Duration::from_secs(30), "mount did not appear", || is_mounted(mnt));
    mount
}

fn prefetch_stats(mnt: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(mnt.join(".ferry-stats")).expect("read .ferry-stats")).expect("stats JSON")
}

fn stat_delta(after: &serde_json::Value, before: &serde_json::Value, key: &str) -> u64 {
    after[key].as_u64().expect("counter") - before[key].as_u64().expect("counter")
}

#[test]
fn mount_prefetches_the_next_frames_and_follows_an_announced_order() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    // A camera folder of frames, and a folder of samples read in a shuffled order.
    for (folder, n) in [("cam", 40), ("shuf", 30)] {
        std::fs::create_dir_all(c.store.join(folder)).expect("mkdir");
        for i in 0..n {
            let body: Vec<u8> = (0..300_000u32).map(|b| (b ^ i) as u8).collect();
            std::fs::write(c.store.join(format!("{folder}/{i:04}.jpg")), body).expect("write");
        }
    }
    let _node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    let mport = free_tcp_port();
    let listen = format!("127.0.0.1:{mport}");
    let mut mount = start_mount(&c, &mnt, &["--prefetch", "tree", "--local-copies", "0", "--metrics-listen", &listen]);

    // Frames in order: after the first few, the next frames are already fetched.
    let before = prefetch_stats(&mnt);
    assert_eq!(before["predictor"], "tree", "{before}");
    for i in 0..40u32 {
        let got = std::fs::read(mnt.join(format!("d/cam/{i:04}.jpg"))).expect("read frame");
        assert!(got.len() == 300_000 && got.iter().enumerate().all(|(b, &x)| x == (b as u32 ^ i) as u8));
    }
    let after = prefetch_stats(&mnt);
    eprintln!("prefetch after reading frames in order: {after}");
    let (hits, fetched) = (stat_delta(&after, &before, "prefetch_hits"), stat_delta(&after, &before, "fetched_pages"));
    assert!(hits > 3 * fetched, "frames read in order should mostly come prefetched: {after}");
    assert!(after["precision"].as_f64().expect("precision") > 0.8, "{after}");

    // A job announces its shuffled order (through the Python helper; samples of
    // two files each, as clips of frames are), then reads it.
    let mut order: Vec<u32> = (0..30).collect();
    order.sort_by_key(|i| (i * 17 + 5) % 31);
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
    let paths: Vec<String> = order
        .chunks(2)
        .map(|s| {
            let files: Vec<String> = s.iter().map(|i| format!("\"{}/d/shuf/{i:04}.jpg\"", path(&mnt))).collect();
            format!("[{}]", files.join(","))
        })
        .collect();
    let script = format!(
        "import sys; sys.path.insert(0, {:?}); import ferry as f; print(f.announce({:?}, [{}]))",
        path(&helper),
        path(&mnt),
        paths.join(",")
    );
    let o = std::process::Command::new("python3").args(["-c", &script]).output().expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "30");
    let before = prefetch_stats(&mnt);
    for &i in &order {
        let got = std::fs::read(mnt.join(format!("d/shuf/{i:04}.jpg"))).expect("read sample");
        assert!(got.len() == 300_000 && got.iter().enumerate().all(|(b, &x)| x == (b as u32 ^ i) as u8));
    }
    let after = prefetch_stats(&mnt);
    // Every page came from the announced prefetch; nothing fetched was wasted.
    assert_eq!(stat_delta(&after, &before, "fetched_pages"), 0, "{after}");
    assert!(stat_delta(&after, &before, "prefetch_hits") >= 30, "{after}");
    assert_eq!(stat_delta(&after, &before, "wasted_bytes"), 0, "{after}");

    // Bad announcements are refused (at fsync or close) and change nothing.
    let announce = |text: &str| {
        use std::io::Write;
        let mut f = std::fs::File::create(mnt.join(".ferry-announce")).expect("open .ferry-announce");
        f.write_all(text.as_bytes()).expect("write");
        f.sync_all()
    };
    let e = announce("/d/shuf/nope.jpg\n").expect_err("unknown file");
    assert_eq!(e.raw_os_error(), Some(EINVAL), "{e}");
    let e = announce("/d/shuf/../../etc/passwd\n").expect_err("traversal");
    assert_eq!(e.raw_os_error(), Some(EINVAL), "{e}");
    let script = format!(
        "import sys; sys.path.insert(0, {:?}); import ferry as f; f.announce({:?}, ['d/shuf/nope.jpg'])",
        path(&helper),
        path(&mnt)
    );
    let o = std::process::Command::new("python3").args(["-c", &script]).output().expect("python3");
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("OSError"), "{o:?}");
    assert_eq!(prefetch_stats(&mnt)["wasted_bytes"], after["wasted_bytes"]);

    // The mount's metrics agree with what was done through it and with .ferry-stats.
    let written: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(mnt.join("d/out.bin"), &written).expect("write through the mount");
    for probe in ["/healthz", "/readyz"] {
        let r = http_get(mport, probe);
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{probe}: {r}");
    }
    let stats = prefetch_stats(&mnt);
    let text = metrics(mport);
    assert_eq!(metric(&text, "ferry_mount_opens_total{source=\"cluster\"}"), 70, "{text}");
    assert!(metric(&text, "ferry_mount_read_bytes_total") >= 70 * 300_000, "{text}");
    assert_eq!(metric(&text, "ferry_mount_reads_total"), metric(&text, "ferry_mount_read_duration_seconds_count"));
    assert_eq!(metric(&text, "ferry_mount_read_errors_total"), 0, "{text}");
    assert_eq!(metric(&text, "ferry_mount_demand_pages_total"), stats["demand_pages"].as_u64().expect("n"), "{text}");
    let prefetched = metric(&text, "ferry_mount_demand_pages_total{source=\"prefetched\"}");
    assert_eq!(prefetched, stats["prefetch_hits"].as_u64().expect("n"), "{text}\n{stats}");
    assert_eq!(metric(&text, "ferry_mount_prefetch_useful_bytes_total"), stats["useful_bytes"].as_u64().expect("n"));
    let announcer = &stats["announcers"][0];
    let reader = format!("{{pid=\"{}\"}}", announcer["pid"]);
    let followed = metric(&text, &format!("ferry_mount_reader_demand_pages_total{reader}"));
    assert!(followed >= 30 && followed == announcer["demand_pages"].as_u64().expect("n"), "{text}\n{stats}");
    let hits = metric(&text, &format!("ferry_mount_reader_prefetch_hits_total{reader}"));
    assert_eq!(hits, announcer["prefetch_hits"].as_u64().expect("n"), "{text}");
    assert!(metric(&text, "ferry_mount_persists_total") >= 1, "{text}");
    assert!(metric(&text, "ferry_mount_persisted_bytes_total") >= written.len() as u64, "{text}");
    assert!(text.contains("ferry_build_info{version="), "{text}");

    signal(&mount.0, "TERM");
    assert!(wait_exit(&mut mount.0, Duration::from_secs(20)).success());
}

#[test]
fn mount_refuses_an_unknown_prefetch_model() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    let _node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let o = run(&["mount", "--config", &c.client, path(&mnt), "--prefetch", path(&dir.path().join("no-model"))]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("prefetch") && err.contains("no-model"), "{err}");
    assert!(!is_mounted(&mnt));
}

/// Runs `cmd` with `args`; its stdout, or a panic with its stderr.
fn tool(cmd: &str, args: &[&str]) -> Vec<u8> {
    let o = std::process::Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn everyday_tools_read_the_mount_unmodified() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    // A small dataset: nested folders, an empty file, files around the 1 MiB page size.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, len) in [0usize, 1, 4095, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 17].iter().enumerate() {
        let body: Vec<u8> = (0..*len).map(|j| ((j * 31 + i * 7) % 251) as u8).collect();
        files.push((format!("set/{}/f{i}.bin", if i % 2 == 0 { "even" } else { "odd/deep" }), body));
    }
    for (name, body) in &files {
        let p = c.store.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    }
    let _node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    let mut mount = start_mount(&c, &mnt, &[]);
    let root = mnt.join("d/set");

    // find: every file, nothing else.
    let found = String::from_utf8(tool("find", &[path(&root), "-type", "f"])).expect("utf8");
    let mut found: Vec<&str> = found.lines().map(|l| l.strip_prefix(path(&mnt.join("d"))).expect("under d")).collect();
    found.sort();
    let mut want: Vec<String> = files.iter().map(|(n, _)| format!("/{n}")).collect();
    want.sort();
    assert_eq!(found, want);
    // ls -lR: each file's size on its line.
    let ls = String::from_utf8(tool("ls", &["-lR", path(&root)])).expect("utf8");
    for (name, body) in &files {
        let base = name.rsplit('/').next().expect("name");
        let line = ls.lines().find(|l| l.ends_with(&format!(" {base}"))).unwrap_or_else(|| panic!("{base}: {ls}"));
        assert!(line.split_whitespace().any(|w| w == body.len().to_string()), "size of {base}: {line}");
    }
    // cat, dd with large and small blocks, and cmp against the source: byte for byte.
    for (name, body) in &files {
        let p = mnt.join("d").join(name);
        assert!(tool("cat", &[path(&p)]) == *body, "cat {name}");
        let input = format!("if={}", path(&p));
        assert!(tool("dd", &[&input, "bs=1M", "status=none"]) == *body, "dd bs=1M {name}");
        assert!(
            tool("dd", &[&input, "bs=4k", "skip=1", "status=none"]) == body[body.len().min(4096)..],
            "dd skip {name}"
        );
        tool("cmp", &[path(&p), path(&c.store.join(name))]);
    }
    // dd writes a file through the mount; the store gets it.
    let out = mnt.join("d/set/written.bin");
    tool("dd", &["if=/dev/zero", &format!("of={}", path(&out)), "bs=64k", "count=40", "conv=fsync", "status=none"]);
    wait_until(Duration::from_secs(30), "dd's file never reached the store", || {
        std::fs::read(c.store.join("set/written.bin")).is_ok_and(|b| b.len() == 40 << 16 && b.iter().all(|x| *x == 0))
    });

    signal(&mount.0, "TERM");
    assert!(wait_exit(&mut mount.0, Duration::from_secs(20)).success());
}

/// A Python with the S3 clients (boto3, the AWS CLI, s3fs): `FERRY_PYTHON`
/// (scripts/test.sh installs them into .venv), else `python3`.
fn s3_python() -> Option<String> {
    let py = std::env::var("FERRY_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(&py).args(["-c", "import boto3, s3fs, awscli"]).output();
    let present = o.as_ref().is_ok_and(|o| o.status.success());
    available(present, &format!("{py} cannot import boto3, s3fs and awscli ({o:?}): scripts/test.sh installs them"))
        .then_some(py)
}

#[test]
fn s3_clients_read_list_and_write_through_the_endpoint_of_ferry_up() {
    let Some(py) = s3_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let up = start_up(dir.path());
    let secret = std::fs::read_to_string(up.data.join("s3-secret")).expect("DIR/s3-secret");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../python/s3_check.py");
    let store = up.data.join("store");
    let mut check = std::process::Command::new(&py);
    check.args([script, &up.s3, "ferry", secret.trim(), store.to_str().expect("utf8")]);
    all_checks_pass(check);
    up.stop();
}

#[test]
fn the_python_package_installs_with_pip_and_reads_through_the_mount_and_the_s3_endpoint() {
    let Some(py) = s3_python() else { return };
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A fresh venv, the package installed into it with pip from a copy of
    // python/ (the build leaves files beside its sources).
    let src = dir.path().join("src");
    let python_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
    let copied = std::process::Command::new("cp").arg("-r").arg(&python_dir).arg(&src).status().expect("cp");
    assert!(copied.success());
    let venv = dir.path().join("venv");
    let made = std::process::Command::new(&py).args(["-m", "venv"]).arg(&venv).status().expect("venv");
    assert!(made.success());
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .arg(format!("{}[s3]", src.display()))
        .output()
        .expect("pip");
    assert!(pip.status.success(), "pip install ./python[s3]: {}", String::from_utf8_lossy(&pip.stderr));

    let up = start_up(dir.path());
    let secret = std::fs::read_to_string(up.data.join("s3-secret")).expect("DIR/s3-secret");
    // Run from outside any source tree, so `import ferry` finds the installed package.
    let script = dir.path().join("package_check.py");
    std::fs::copy(python_dir.join("package_check.py"), &script).expect("copy package_check.py");
    let mut check = std::process::Command::new(venv.join("bin/python"));
    check
        .arg(&script)
        .args([up.data.join("mnt").to_str().expect("utf8"), &up.s3, "ferry", secret.trim()])
        .arg(up.data.join("store"))
        .current_dir(dir.path());
    all_checks_pass(check);
    up.stop();
}

/// Runs a check script (s3_check.py, package_check.py): it must exit 0
/// and say every check passed.
fn all_checks_pass(mut check: std::process::Command) {
    let out = check.stderr(Stdio::inherit()).output().expect("run the check script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("all checks passed"), "{text}");
}

#[test]
fn s3_keys_act_as_ferry_identities_and_their_access_rules() {
    let Some(py) = s3_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut up = start_up(dir.path());
    std::fs::create_dir_all(up.data.join("store/logs/robot-1")).expect("mkdir");
    std::fs::write(up.data.join("store/logs/robot-1/own.txt"), b"mine\n").expect("write");
    std::fs::create_dir_all(up.data.join("store/logs/robot-2")).expect("mkdir");
    std::fs::write(up.data.join("store/logs/robot-2/other.txt"), b"theirs\n").expect("write");
    // A second endpoint, as an operator runs one: two keys, one acting as
    // the stack's client, one as its robot.
    let node = std::fs::read_to_string(&up.client).expect("client.toml");
    let node = node.split('"').nth(1).expect("a node address").to_string();
    let listen = "127.0.0.1:0";
    let cfg = dir.path().join("s3.toml");
    std::fs::write(
        &cfg,
        format!(
            "nodes = [\"{node}\"]\ncerts = \"{}\"\n[s3]\nlisten = \"{listen}\"\nstaging = \"{}\"\n\
             [[s3.keys]]\naccess_key = \"trainer\"\nsecret_key = \"trainer-secret\"\n\
             [[s3.keys]]\naccess_key = \"robot\"\nsecret_key = \"robot-secret\"\nidentity = \"robot-1\"\n",
            up.data.join("certs").display(),
            dir.path().join("s3-staging").display()
        ),
    )
    .expect("write s3.toml");
    let mut s3 = Running(
        ferry().args(["s3", "--config", cfg.to_str().expect("utf8")]).stdout(Stdio::piped()).spawn().expect("ferry s3"),
    );
    let mut lines = BufReader::new(s3.0.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    let endpoint = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no endpoint address in {first:?}"))
        .to_string();
    let script = r#"
import sys, boto3, botocore.config, botocore.exceptions
endpoint = sys.argv[1]
def client(k, s):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=k, aws_secret_access_key=s,
                        region_name="us-east-1", config=botocore.config.Config(retries={"max_attempts": 1}))
def get(c, b, k):
    try:
        return c.get_object(Bucket=b, Key=k)["Body"].read().decode()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
trainer, robot = client("trainer", "trainer-secret"), client("robot", "robot-secret")
print(get(trainer, "datasets", "hello.txt").strip())
print(get(trainer, "logs", "robot-2/other.txt").strip())
print(get(robot, "logs", "robot-1/own.txt").strip())
print(get(robot, "logs", "robot-2/other.txt"))
print(get(robot, "datasets", "hello.txt"))
"#;
    let out = std::process::Command::new(&py)
        .args(["-c", script, &endpoint])
        .stderr(Stdio::inherit())
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, ["hello from ferry", "theirs", "mine", "AccessDenied", "AccessDenied"], "{text}");
    signal(&s3.0, "TERM");
    assert!(wait_exit(&mut s3.0, Duration::from_secs(20)).success());
    signal(&up.child.0, "INT");
    assert!(wait_exit(&mut up.child.0, Duration::from_secs(20)).success());
}

/// A Python that has PyTorch: `FERRY_PYTHON` (scripts/test.sh points it at
/// .venv), else `python3`. Under CI its absence is a failure.
fn torch_python() -> Option<String> {
    let py = std::env::var("FERRY_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(&py).args(["-c", "import torch"]).output();
    let present = o.as_ref().is_ok_and(|o| o.status.success());
    available(present, &format!("{py} cannot import torch ({o:?}): scripts/test.sh installs it into .venv"))
        .then_some(py)
}

#[test]
fn a_pytorch_dataloader_reads_the_mount_in_its_announced_order() {
    use sha2::Digest;
    if !fuse_available() {
        return;
    }
    let Some(py) = torch_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    // Two cameras' frames, 10 KiB to 1.5 MiB each.
    let mut want: std::collections::BTreeMap<String, (usize, String)> = Default::default();
    for cam in 0..2 {
        for i in 0..12usize {
            let len = 10_240 + i * 140_000 + cam * 7;
            let body: Vec<u8> = (0..len).map(|j| ((j * 131 + i * 17 + cam) % 253) as u8).collect();
            let name = format!("cam{cam}/{i:03}.bin");
            let p = c.store.join("frames").join(&name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &body).expect("write");
            let hash: String = sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
            want.insert(name, (len, hash));
        }
    }
    let _node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    // No local shortcuts (copies, the store's own files): the workers' reads
    // go through the mount's pages, where the announced order is kept.
    let mut mount = start_mount(&c, &mnt, &["--local-copies", "0"]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/dataloader_check.py");
    let o = std::process::Command::new(&py)
        .args([path(&script), path(&mnt), "d/frames", "--epochs", "2", "--workers", "2"])
        .output()
        .expect("python");
    assert!(o.status.success(), "dataloader_check.py: {}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let epochs = out["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 2);
    for (e, samples) in epochs.iter().enumerate() {
        let mut seen: Vec<String> = Vec::new();
        for s in samples.as_array().expect("samples") {
            let name = s[0].as_str().expect("path").to_string();
            let (len, hash) = want.get(&name).unwrap_or_else(|| panic!("epoch {e}: unknown sample {name}"));
            assert_eq!(s[1].as_u64(), Some(*len as u64), "epoch {e}: length of {name}");
            assert_eq!(s[2].as_str(), Some(hash.as_str()), "epoch {e}: bytes of {name}");
            seen.push(name);
        }
        seen.sort();
        assert_eq!(seen, want.keys().cloned().collect::<Vec<_>>(), "epoch {e}: every sample exactly once");
    }
    // The sampler's announcement reached the mount, and pages prefetched
    // for it were read by the workers (what was fetched ahead, in which
    // order, is checked against the oracle in the predictor's own tests).
    let stats = &out["stats"];
    assert!(stats["prefetch_hits"].as_u64().expect("prefetch_hits") > 0, "no prefetch hits: {stats}");
    assert!(stats["useful_bytes"].as_u64().expect("useful_bytes") > 0, "nothing prefetched was used: {stats}");
    // The order reached the node too, which evicts by it (each epoch's
    // order, from each of the two epochs).
    let told = metric(&metrics(c.mport), "ferry_request_duration_seconds_count{op=\"announce\"}");
    assert!(told >= 2, "the node was told {told} announced orders");

    signal(&mount.0, "TERM");
    assert!(wait_exit(&mut mount.0, Duration::from_secs(20)).success());
}

/// Two ranks of a data-parallel job on one host, each with its own
/// DistributedSampler share announced through the Python helper and read by
/// its own DataLoader workers: neither announcement replaces the other, and
/// each rank's workers find every page prefetched for them.
#[test]
fn ranks_on_one_host_each_get_their_announced_order() {
    use sha2::Digest;
    if !fuse_available() {
        return;
    }
    let Some(py) = torch_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    let mut want: std::collections::BTreeMap<String, String> = Default::default();
    for i in 0..24usize {
        let len = 200_000 + i * 50_000;
        let body: Vec<u8> = (0..len).map(|j| ((j * 7 + i * 13) % 251) as u8).collect();
        let name = format!("{i:03}.bin");
        std::fs::create_dir_all(c.store.join("shards")).expect("mkdir");
        std::fs::write(c.store.join("shards").join(&name), &body).expect("write");
        want.insert(name, sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect());
    }
    let _node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    // No local copies: every epoch's reads go through the mount's pages.
    let mut mount = start_mount(&c, &mnt, &["--local-copies", "0"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/dataloader_check.py");
    // The ranks start each epoch together, so their announcements and reads overlap.
    let barrier = dir.path().join("barrier");
    std::fs::create_dir_all(&barrier).expect("mkdir");
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            std::process::Command::new(&py)
                .args([path(&script), path(&mnt), "d/shards", "--epochs", "2", "--workers", "2"])
                .args(["--world", "2", "--rank", &rank.to_string(), "--barrier", path(&barrier)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("python")
        })
        .collect();
    let outs: Vec<serde_json::Value> = ranks
        .into_iter()
        .map(|r| {
            let o = r.wait_with_output().expect("rank");
            assert!(o.status.success(), "dataloader_check.py: {}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice(&o.stdout).expect("one JSON object")
        })
        .collect();
    for e in 0..2 {
        let mut seen: Vec<String> = Vec::new();
        for out in &outs {
            for s in out["epochs"][e].as_array().expect("samples") {
                let name = s[0].as_str().expect("path").to_string();
                assert_eq!(s[2].as_str(), want.get(&name).map(String::as_str), "epoch {e}: bytes of {name}");
                seen.push(name);
            }
        }
        seen.sort();
        assert_eq!(seen, want.keys().cloned().collect::<Vec<_>>(), "epoch {e}: the two ranks read every sample once");
    }
    let stats = prefetch_stats(&mnt);
    let announcers = stats["announcers"].as_array().expect("announcers in .ferry-stats");
    for out in &outs {
        let pid = out["pid"].as_u64().expect("pid");
        let a = announcers.iter().find(|a| a["pid"].as_u64() == Some(pid)).unwrap_or_else(|| {
            panic!("rank {pid} has no announcement of its own: {stats}");
        });
        let demand = a["demand_pages"].as_u64().expect("demand_pages");
        assert!(demand > 0, "rank {pid}'s workers read nothing through its order: {stats}");
        assert_eq!(a["prefetch_hits"].as_u64(), Some(demand), "rank {pid}: every page prefetched: {stats}");
    }
    signal(&mount.0, "TERM");
    assert!(wait_exit(&mut mount.0, Duration::from_secs(20)).success());
}

/// A node on the mount's own host over a `file://` store: reads of a file
/// already in the store go to the store's file itself, not through the
/// node (a first epoch at the disk's speed), and a new version written by
/// another tool is read as the new version once the node sees it.
#[test]
fn same_host_reads_of_a_file_store_use_the_store_files() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 249) as u8).collect();
    std::fs::create_dir_all(c.store.join("train")).expect("mkdir");
    std::fs::write(c.store.join("train/a.npz"), &body).expect("write");
    let _node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    let mut mount = start_mount(&c, &mnt, &[]);
    let served = || metric(&metrics(c.mport), "ferry_store_read_bytes_total");
    assert!(std::fs::read(mnt.join("d/train/a.npz")).expect("read") == body);
    assert_eq!(served(), 0, "the node read nothing for the mount: the store's file was read directly");
    // Another tool replaces the file (a new inode, as writers that rename do).
    let newer: Vec<u8> = body.iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(c.store.join("train/.a.tmp"), &newer).expect("write");
    std::fs::rename(c.store.join("train/.a.tmp"), c.store.join("train/a.npz")).expect("rename");
    // Whichever version the mount still takes it for, a read gets one whole
    // version, never the new file's bytes under the old version's name mixed
    // with old pages; a file opened after the kernel's attributes expire is the new one.
    let got = std::fs::read(mnt.join("d/train/a.npz")).expect("read after the replacement");
    assert!(got == body || got == newer, "one whole version");
    wait_until(Duration::from_secs(30), "the new version was never read", || {
        std::fs::read(mnt.join("d/train/a.npz")).is_ok_and(|b| b == newer)
    });
    // A write through the mount is in the store only once uploaded: until
    // then it is read through the node, then from the store's file.
    let fresh: Vec<u8> = body.iter().map(|b| b.wrapping_add(1)).collect();
    std::fs::write(mnt.join("d/train/b.npz"), &fresh).expect("write through the mount");
    assert!(std::fs::read(mnt.join("d/train/b.npz")).expect("read") == fresh);
    wait_until(Duration::from_secs(30), "the write was not uploaded", || {
        std::fs::read(c.store.join("train/b.npz")).is_ok_and(|b| b == fresh)
    });
    assert!(std::fs::read(mnt.join("d/train/b.npz")).expect("read after the upload") == fresh);
    signal(&mount.0, "TERM");
    assert!(wait_exit(&mut mount.0, Duration::from_secs(20)).success());
    // With local copies off, every read goes through the node.
    let mut mount = start_mount(&c, &mnt, &["--local-copies", "0"]);
    let before = served();
    let got = std::fs::read(mnt.join("d/train/a.npz")).expect("read");
    assert!(got == body || got == newer, "one whole version, not a mix");
    assert!(served() > before, "--local-copies 0 reads through the node");
    signal(&mount.0, "TERM");
    assert!(wait_exit(&mut mount.0, Duration::from_secs(20)).success());
}

#[test]
fn the_mount_answers_like_a_local_disk_where_it_cannot_store_and_recovers_a_dead_mount_point() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    std::fs::write(c.store.join("a.bin"), b"a").expect("write");
    let _node = start_cloud(&c);
    let mnt = c.dir.join("mnt");
    let mut mount = start_mount(&c, &mnt, &[]);
    let d = mnt.join("d");
    let errno = |r: std::io::Result<()>| r.expect_err("refused").raw_os_error().expect("an errno");
    // Names longer than 255 bytes, as a local file system answers them.
    let long = d.join("x".repeat(300));
    assert_eq!(errno(std::fs::write(&long, b"x")), 36, "ENAMETOOLONG");
    assert_eq!(errno(std::fs::create_dir(&long)), 36, "ENAMETOOLONG");
    // What the namespace cannot hold: EPERM, not ENOENT.
    assert_eq!(errno(std::os::unix::fs::symlink("a.bin", d.join("link"))), 1, "symlink: EPERM");
    assert_eq!(errno(std::fs::hard_link(d.join("a.bin"), d.join("hard"))), 1, "link: EPERM");
    let fifo = std::process::Command::new("mkfifo").arg(d.join("fifo")).output().expect("mkfifo");
    assert!(!fifo.status.success());
    assert!(String::from_utf8_lossy(&fifo.stderr).contains("not permitted"), "{fifo:?}");
    // The errno rules of a local file system, and truncate to any size.
    std::fs::create_dir_all(d.join("full/sub")).expect("mkdir -p");
    std::fs::write(d.join("full/sub/g"), b"g").expect("write");
    std::fs::create_dir_all(d.join("empty")).expect("mkdir");
    assert_eq!(errno(std::fs::remove_file(d.join("full"))), 21, "unlink of a directory: EISDIR");
    assert_eq!(errno(std::fs::remove_dir(d.join("a.bin"))), 20, "rmdir of a file: ENOTDIR");
    assert_eq!(errno(std::fs::remove_dir(d.join("full"))), 39, "rmdir of a full directory: ENOTEMPTY");
    assert_eq!(errno(std::fs::rename(d.join("empty"), d.join("full"))), 39, "rename over a full directory: ENOTEMPTY");
    assert_eq!(errno(std::fs::rename(d.join("empty"), d.join("a.bin"))), 20, "rename a directory over a file: ENOTDIR");
    let grown = std::fs::OpenOptions::new().write(true).open(d.join("a.bin")).and_then(|f| f.set_len(5000));
    grown.expect("ftruncate up");
    let t = std::process::Command::new("truncate").args(["-s", "3"]).arg(d.join("a.bin")).status().expect("truncate");
    assert!(t.success(), "truncate(2) of a file nobody has open");
    assert_eq!(std::fs::read(d.join("a.bin")).expect("read"), b"a\0\0");
    std::fs::write(d.join("a.bin"), b"a").expect("write back");
    // A directory moves as `mv` moves one between file systems (EXDEV: copy, remove).
    let mv = std::process::Command::new("mv").arg(d.join("full")).arg(d.join("moved")).output().expect("mv");
    assert!(mv.status.success(), "{mv:?}");
    assert_eq!(std::fs::read(d.join("moved/sub/g")).expect("moved file"), b"g");
    assert!(!d.join("full").exists());
    // A mount killed with -9 leaves a dead mount point; the next mount
    // detaches it and mounts there.
    let _ = mount.0.kill();
    let _ = mount.0.wait();
    let dead = std::fs::read_dir(&mnt).expect_err("a dead mount point").raw_os_error();
    assert_eq!(dead, Some(107), "ENOTCONN");
    let _again = Running(ferry().args(["mount", "--config", &c.client, path(&mnt)]).spawn().expect("spawn mount"));
    wait_until(Duration::from_secs(30), "no mount over the dead mount point", || {
        std::fs::read(d.join("a.bin")).is_ok()
    });
    assert_eq!(std::fs::read(d.join("a.bin")).expect("read through the new mount"), b"a");
}

#[test]
fn a_taken_port_is_named_once_and_an_unanswering_store_is_reported_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup(dir.path());
    let taken = std::net::TcpListener::bind(("127.0.0.1", c.mport)).expect("take the metrics port");
    let o = run(&["cloud", "--config", c.cfg.to_str().expect("utf8")]);
    drop(taken);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let addr = format!("127.0.0.1:{}", c.mport);
    assert!(err.contains(&format!("cannot listen on {addr} (`metrics_listen`)")), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    // A store that does not answer is named at start, not at the first read.
    let cfg = std::fs::read_to_string(&c.cfg).expect("cloud.toml");
    let dead = format!(
        "[mounts.\"/gone\"]\nurl = \"s3://bucket/p\"\noptions = {{ aws_endpoint = \"http://127.0.0.1:{}\", \
         aws_allow_http = \"true\", aws_region = \"us-east-1\", aws_access_key_id = \"k\", aws_secret_access_key = \"s\" }}\n",
        free_tcp_port()
    );
    std::fs::write(&c.cfg, format!("{cfg}{dead}")).expect("write");
    let mut node = ferry()
        .args(["cloud", "--config", c.cfg.to_str().expect("utf8")])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = BufReader::new(node.stderr.take().expect("stderr")).lines();
    let before: Vec<String> = lines.map_while(Result::ok).take_while(|l| !l.contains("listening on")).collect();
    let _ = node.kill();
    let _ = node.wait();
    assert!(
        before.iter().any(|l| l.contains("the store") && l.contains("mount=/gone") && l.contains("s3://bucket/p")),
        "no warning naming the store at start: {before:?}"
    );
}

#[test]
fn exit_statuses_health_probes_build_info_and_json_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cloud_setup_with(dir.path(), "/d", "default", &[("edge", "robot-1")]);
    std::fs::write(c.store.join("x.txt"), b"x\n").expect("write");
    let _node = start_cloud(&c);
    for probe in ["/healthz", "/readyz"] {
        let r = http_get(c.mport, probe);
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{probe}: {r}");
    }
    let m = metrics(c.mport);
    assert!(m.contains(&format!("ferry_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{m}");
    let status = |args: &[&str]| run(args).status.code();
    assert_eq!(status(&["cat", "--config", &c.client, "/d/x.txt"]), Some(0));
    assert_eq!(status(&["cat"]), Some(2), "usage");
    assert_eq!(status(&["cat", "--config", &c.client, "/d/missing.txt"]), Some(3), "not found");
    let robot = dir.path().join("robot.toml");
    std::fs::write(&robot, format!("nodes = [\"127.0.0.1:{}\"]\ncerts = \"certs\"\nid = \"robot-1\"\n", c.port))
        .expect("write");
    assert_eq!(status(&["cat", "--config", robot.to_str().expect("utf8"), "/d/x.txt"]), Some(4), "permission");
    let nowhere = dir.path().join("nowhere.toml");
    std::fs::write(&nowhere, format!("nodes = [\"127.0.0.1:{}\"]\ncerts = \"certs\"\nid = \"client\"\n", free_port()))
        .expect("write");
    assert_eq!(status(&["cat", "--config", nowhere.to_str().expect("utf8"), "/d/x.txt"]), Some(5), "unavailable");
    assert_eq!(status(&["cat", "--config", "/nonexistent/client.toml", "/d/x.txt"]), Some(1), "bad config");

    // --log-format json: every log line is one JSON object.
    let o = ferry()
        .env("FERRY_LOG", "debug")
        .args(["--log-format", "json", "cat", "--config", &c.client, "/d/missing.txt"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!lines.is_empty(), "{err}");
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
    }
}

#[test]
fn the_configs_shipped_in_deploy_are_valid() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    for cloud in ["base/cloud.toml", "overlays/single-host/cloud.toml"] {
        // Parsed, then the start stops at the certificates, which live in the
        // pod (the cache directory, which it locks first, kept off this machine's /var/lib).
        let cache = tempfile::tempdir().expect("tempdir");
        let o = ferry()
            .env("FERRY_CLOUD_NODE_ID", "cloud-0")
            .env("FERRY_CLOUD_CACHE__DISK_DIR", cache.path())
            .args(["cloud", "--config"])
            .arg(deploy.join(cloud))
            .output();
        let err = String::from_utf8_lossy(&o.expect("run").stderr).to_string();
        assert!(!err.contains("invalid config") && err.contains("/etc/ferry/certs"), "{cloud}: {err}");
    }
    let o = ferry().args(["ls", "--config"]).arg(deploy.join("base/client.toml")).arg("/").output().expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("invalid config"), "{err}");
}
