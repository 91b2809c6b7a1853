//! Model pushes end to end: a real mosquitto broker, a `ferry cloud`
//! process, `ferry edge` agents following their fleet, `ferry model ...`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const FLEET: &str = "warehouse-a";

/// mosquitto on a free loopback port (`extra` goes into its config); under
/// CI its absence is a failure.
fn mosquitto(dir: &Path, extra: &str) -> Option<(Running, u16)> {
    let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].into_iter().find(|p| Path::new(p).exists());
    let Some(bin) = bin else {
        available(false, "mosquitto missing: scripts/test.sh installs it");
        return None;
    };
    let port = free_tcp_port();
    let conf = dir.join("mosquitto.conf");
    let anonymous = if extra.contains("password_file") { "false" } else { "true" };
    std::fs::write(
        &conf,
        // `user root`: as root, mosquitto would drop to its own user and lose the key files.
        format!("listener {port} 127.0.0.1\nallow_anonymous {anonymous}\npersistence false\nuser root\n{extra}"),
    )
    .expect("write conf");
    let child = std::process::Command::new(bin)
        .args(["-c", conf.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((Running(child), port))
}

struct Fleet {
    dir: PathBuf,
    /// `[models]` / client.toml lines for broker TLS and credentials.
    access: String,
    client: String,
    node_port: u16,
    mqtt_port: u16,
    _broker: Running,
    cloud: Cloud,
    node: Running,
}

fn fleet(dir: &Path) -> Option<Fleet> {
    fleet_with(dir, false)
}

/// A fleet; with `secure`, the broker serves TLS with a certificate from the
/// fleet CA and wants a user name and password.
fn fleet_with(dir: &Path, secure: bool) -> Option<Fleet> {
    let cloud = cloud_setup_with(dir, "/", FLEET, &[]);
    let certs = dir.join("certs");
    let c = certs.to_str().expect("utf8");
    let (broker_conf, access) = if secure {
        let issued = run(&["cert", "issue", "--dir", c, "--role", "cloud", "--id", "broker", "--host", "127.0.0.1"]);
        assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
        let pw = dir.join("passwords");
        let ok = std::process::Command::new("mosquitto_passwd")
            .args(["-b", "-c", pw.to_str().expect("utf8"), "fleet-ops", "s3cret"])
            .status()
            .expect("mosquitto_passwd");
        assert!(ok.success());
        (
            format!(
                "cafile {c}/ca.pem\ncertfile {c}/broker.pem\nkeyfile {c}/broker.key\npassword_file {}\n",
                pw.display()
            ),
            "mqtt_ca = \"certs/ca.pem\"\nmqtt_user = \"fleet-ops\"\nmqtt_password = \"s3cret\"\n".to_string(),
        )
    } else {
        (String::new(), String::new())
    };
    let (broker, mqtt_port) = mosquitto(dir, &broker_conf)?;
    let node = start_cloud(&cloud);
    let node_port = cloud.port;
    let client = dir.join("client.toml");
    std::fs::write(
        &client,
        format!(
            "nodes = [\"127.0.0.1:{node_port}\"]\ncerts = \"certs\"\nid = \"client\"\nfleet = \"{FLEET}\"\n\
             mqtt = \"127.0.0.1:{mqtt_port}\"\n{access}"
        ),
    )
    .expect("write");
    Some(Fleet {
        dir: dir.to_path_buf(),
        access,
        client: client.to_str().expect("utf8").to_string(),
        node_port,
        mqtt_port,
        _broker: broker,
        cloud,
        node,
    })
}

impl Fleet {
    /// Stops the node, drops its cache and journal, and starts it again:
    /// what it serves next comes from the store.
    fn restart_node_cold(&mut self) {
        let _ = self.node.0.kill();
        let _ = self.node.0.wait();
        std::fs::remove_dir_all(self.dir.join("cache")).expect("drop the node's cache");
        self.node = start_cloud(&self.cloud);
    }

    /// Starts an edge agent `id` following the fleet's models (`extra` goes into `[models]`).
    fn robot(&self, id: &str, extra: &str) -> Running {
        let certs = self.dir.join("certs");
        if !certs.join(format!("{id}.pem")).exists() {
            let c = certs.to_str().expect("utf8");
            assert!(run(&["cert", "issue", "--dir", c, "--role", "edge", "--id", id]).status.success());
        }
        let cfg = self.dir.join(format!("{id}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "id = \"{id}\"\ncerts = \"certs\"\nnodes = [\"127.0.0.1:{}\"]\nspool = \"{id}/spool.db\"\n\
                 [models]\nmqtt = \"127.0.0.1:{}\"\nfleet = \"{FLEET}\"\ndir = \"{id}/models\"\n\
                 signing_key = \"certs/fleet-signing.pub\"\n{}{extra}\n",
                self.node_port, self.mqtt_port, self.access
            ),
        )
        .expect("write");
        Running(
            ferry()
                .args(["edge", "--config", cfg.to_str().expect("utf8")])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn edge"),
        )
    }

    fn installed(&self, id: &str, model: &str, file: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(id).join("models").join(model).join("current").join(file)).ok()
    }

    fn push(&self, name: &str, file: &Path, extra: &[&str]) {
        let o = ferry()
            .args(["model", "push", name, file.to_str().expect("utf8"), "--config", &self.client])
            .args(extra)
            .output()
            .expect("push");
        assert!(o.status.success(), "push {name}: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// Device reports for `model`: device → (state, version, running, fetched, reused, error).
    fn status(&self, model: &str) -> Vec<serde_json::Value> {
        let o = run(&["model", "status", model, "--json", "--wait", "1s", "--config", &self.client]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
        v["devices"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until every listed device reports `state` for `version`; returns the reports.
    fn wait_state(&self, model: &str, devices: &[&str], version: &str, state: &str) -> Vec<serde_json::Value> {
        let t0 = Instant::now();
        loop {
            let s = self.status(model);
            let done = devices
                .iter()
                .all(|d| s.iter().any(|r| r["device"] == *d && r["version"] == version && r["state"] == state));
            if done {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(90), "waiting for {devices:?} {state} {version}: {s:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn report<'a>(s: &'a [serde_json::Value], device: &str) -> &'a serde_json::Value {
    s.iter().find(|r| r["device"] == device).expect("a report from the device")
}

fn safetensors(dir: &Path) -> (PathBuf, PathBuf, u64) {
    let out = dir.join("st");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/make_safetensors.py");
    let ok = std::process::Command::new("python3").arg(&script).arg(&out).status().expect("python3");
    assert!(ok.success(), "fixture script failed");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("finetune.json")).expect("finetune.json")).expect("json");
    // Same file name for both versions, as a real model update.
    let (v1, v2) = (out.join("v1/model.safetensors"), out.join("v2/model.safetensors"));
    std::fs::create_dir_all(v1.parent().expect("dir")).expect("mkdir");
    std::fs::create_dir_all(v2.parent().expect("dir")).expect("mkdir");
    std::fs::rename(out.join("base.safetensors"), &v1).expect("move");
    std::fs::rename(out.join("finetuned.safetensors"), &v2).expect("move");
    (v1, v2, meta["changed_bytes"].as_u64().expect("changed bytes"))
}

#[test]
fn a_push_reaches_every_robot_deltas_send_only_changes_and_rollback_needs_no_download() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(f) = fleet(dir.path()) else { return };
    let robots = ["robot-1", "robot-2", "robot-3"];
    let _agents: Vec<Running> = robots.iter().map(|r| f.robot(r, "")).collect();
    let (v1, v2, changed) = safetensors(dir.path());

    f.push("detector-v1", &v1, &[]);
    f.wait_state("detector", &robots, "v1", "installed");
    let base = std::fs::read(&v1).expect("v1");
    for r in robots {
        assert!(f.installed(r, "detector", "model.safetensors").expect("installed") == base, "{r}");
    }

    // A fine-tune: only the chunks of the changed tensors travel.
    f.push("detector-v2", &v2, &[]);
    let s = f.wait_state("detector", &robots, "v2", "installed");
    let tuned = std::fs::read(&v2).expect("v2");
    for r in robots {
        assert!(f.installed(r, "detector", "model.safetensors").expect("installed") == tuned, "{r}");
        let fetched = report(&s, r)["fetched"].as_u64().expect("fetched");
        assert!(fetched as f64 <= changed as f64 * 1.15, "{r} fetched {fetched} for {changed} changed bytes");
        assert!(fetched >= changed, "{r} fetched {fetched}, less than the {changed} bytes that changed?");
    }

    // Rollback: back to v1 from what the robots kept, nothing fetched.
    let o = run(&["model", "rollback", "detector", "--config", &f.client]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = f.wait_state("detector", &robots, "v1", "installed");
    for r in robots {
        assert_eq!(report(&s, r)["fetched"], 0, "{r} downloaded for a rollback");
        assert!(f.installed(r, "detector", "model.safetensors").expect("installed") == base, "{r}");
    }
}

#[test]
fn corrupt_chunks_are_repaired_by_the_next_push_and_foreign_signatures_leave_the_running_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut f) = fleet(dir.path()) else { return };
    let agent = f.robot("robot-1", "");
    let v1 = dir.path().join("v1/model.bin");
    let v2 = dir.path().join("v2/model.bin");
    std::fs::create_dir_all(v1.parent().expect("dir")).expect("mkdir");
    std::fs::create_dir_all(v2.parent().expect("dir")).expect("mkdir");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(&v1, &body).expect("write");
    f.push("planner-v1", &v1, &[]);
    f.wait_state("planner", &["robot-1"], "v1", "installed");

    // v2 shares nothing with v1; one of its chunks is already in the store,
    // corrupted: the push finds it out and uploads it again.
    let other: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(40503) >> 5) as u8).collect();
    std::fs::write(&v2, &other).expect("write");
    let (chunks, _) = ferry_protocol::chunk::cut(&v2, 0, other.len() as u64, true).expect("cut");
    let (off, len, hash) = chunks[chunks.len() / 2];
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let stored = dir.path().join("store/models/chunks").join(hex);
    std::fs::create_dir_all(stored.parent().expect("dir")).expect("mkdir");
    let good = other[off as usize..(off + u64::from(len)) as usize].to_vec();
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&stored, &bad).expect("plant a bad chunk");
    let o = ferry().args(["model", "push", "planner-v2", v2.to_str().expect("utf8"), "--config", &f.client]).output();
    let o = o.expect("push");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 corrupt stored chunk(s) repaired"), "{o:?}");
    f.wait_state("planner", &["robot-1"], "v2", "installed");
    assert!(f.installed("robot-1", "planner", "model.bin").expect("installed") == other);

    // A chunk that goes bad in the store later, served by a node that
    // starts cold: the robot's own check refuses it, keeps v2 running,
    // and the next push repairs it.
    wait_until(Duration::from_secs(60), "the repaired chunk never reached the store", || {
        std::fs::read(&stored).is_ok_and(|b| b == good)
    });
    drop(agent);
    let v3 = dir.path().join("v3/model.bin");
    std::fs::create_dir_all(v3.parent().expect("dir")).expect("mkdir");
    let mut third = other.clone();
    third[..1000].fill(7);
    std::fs::write(&v3, &third).expect("write");
    f.push("planner-v3", &v3, &[]);
    // v3's first chunk is its own (v2's are on the robot and are copied).
    let (chunks3, _) = ferry_protocol::chunk::cut(&v3, 0, third.len() as u64, true).expect("cut");
    let (_, len3, hash3) = chunks3[0];
    let hex3: String = hash3.iter().map(|b| format!("{b:02x}")).collect();
    let stored3 = dir.path().join("store/models/chunks").join(hex3);
    let good3 = third[..len3 as usize].to_vec();
    let manifest = dir.path().join("store/models/planner/v3/manifest.json");
    wait_until(Duration::from_secs(60), "v3 never reached the store", || {
        manifest.exists() && std::fs::read(&stored3).is_ok_and(|b| b == good3)
    });
    let mut bad3 = good3.clone();
    bad3[0] ^= 0xff;
    std::fs::write(&stored3, &bad3).expect("corrupt the stored chunk");
    f.restart_node_cold();
    let _agent = f.robot("robot-1", "");
    let s = f.wait_state("planner", &["robot-1"], "v3", "failed");
    let r = report(&s, "robot-1");
    assert!(r["error"].as_str().expect("error").contains("does not match its hash"), "{r}");
    assert_eq!(r["current"], "v2");
    f.push("planner-v4", &v3, &[]);
    f.wait_state("planner", &["robot-1"], "v4", "installed");
    assert!(f.installed("robot-1", "planner", "model.bin").expect("installed") == third);

    // A manifest signed with another fleet's key is refused.
    let evil = dir.path().join("evil");
    assert!(run(&["cert", "init", "--dir", evil.to_str().expect("utf8")]).status.success());
    for file in ["ca.pem", "client.pem", "client.key"] {
        std::fs::copy(dir.path().join("certs").join(file), evil.join(file)).expect("copy identity");
    }
    let evil_client = dir.path().join("evil.toml");
    let text =
        std::fs::read_to_string(&f.client).expect("client.toml").replace("certs = \"certs\"", "certs = \"evil\"");
    std::fs::write(&evil_client, text).expect("write");
    let o = run(&[
        "model",
        "push",
        "planner-v5",
        v2.to_str().expect("utf8"),
        "--config",
        evil_client.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = f.wait_state("planner", &["robot-1"], "v5", "failed");
    let r = report(&s, "robot-1");
    assert!(r["error"].as_str().expect("error").contains("signature"), "{r}");
    assert_eq!(r["current"], "v4");
    assert!(f.installed("robot-1", "planner", "model.bin").expect("still installed") == third);
}

#[test]
fn a_robot_killed_mid_download_resumes_without_refetching() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(f) = fleet(dir.path()) else { return };
    // Slow enough to be killed halfway.
    let mut agent = f.robot("robot-1", "rate = \"1MiB\"");
    let model = dir.path().join("m/weights.bin");
    std::fs::create_dir_all(model.parent().expect("dir")).expect("mkdir");
    let body: Vec<u8> = (0..6_000_000u32).map(|i| (i.wrapping_mul(2246822519) >> 13) as u8).collect();
    std::fs::write(&model, &body).expect("write");
    f.push("mapper-v1", &model, &[]);
    f.wait_state("mapper", &["robot-1"], "v1", "downloading");
    // Killed once half of the model's bytes are in its staging file, at
    // their offsets (chunks arrive in any order).
    let staging = dir.path().join("robot-1/models/mapper/staging/v1");
    let in_place = || {
        let got = std::fs::read(&staging).unwrap_or_default();
        got.chunks(4096).zip(body.chunks(4096)).filter(|(a, b)| a == b).map(|(a, _)| a.len()).sum::<usize>()
    };
    let t0 = Instant::now();
    while in_place() < body.len() / 2 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the download never got half way");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&agent.0, "KILL");
    let _ = agent.0.wait();
    let _agent = f.robot("robot-1", "");
    let s = f.wait_state("mapper", &["robot-1"], "v1", "installed");
    let fetched = report(&s, "robot-1")["fetched"].as_u64().expect("fetched");
    assert!(fetched + (1 << 20) < body.len() as u64, "the resumed download fetched {fetched} of {} bytes", body.len());
    assert!(f.installed("robot-1", "mapper", "weights.bin").expect("installed") == body);
}

#[test]
fn a_canary_reaches_only_its_share_until_promoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(f) = fleet(dir.path()) else { return };
    let robots = ["robot-1", "robot-2", "robot-3", "robot-4"];
    let _agents: Vec<Running> = robots.iter().map(|r| f.robot(r, "")).collect();
    let model = dir.path().join("m/nav.bin");
    std::fs::create_dir_all(model.parent().expect("dir")).expect("mkdir");
    std::fs::write(&model, vec![1u8; 200_000]).expect("write");
    f.push("nav-v1", &model, &[]);
    f.wait_state("nav", &robots, "v1", "installed");
    // A version whose 50 % draw splits these robots (the draw is stable per robot and version).
    let version = (2..100)
        .map(|i| format!("v{i}"))
        .find(|v| {
            let n = robots.iter().filter(|r| ferry_protocol::manifest::in_canary(r, v, 50)).count();
            n > 0 && n < robots.len()
        })
        .expect("a splitting version");
    let (inside, outside): (Vec<&str>, Vec<&str>) =
        robots.iter().partition(|r| ferry_protocol::manifest::in_canary(r, &version, 50));
    std::fs::write(&model, vec![2u8; 200_000]).expect("write");
    f.push(&format!("nav-{version}"), &model, &["--canary", "50%"]);
    f.wait_state("nav", &inside, &version, "installed");
    let s = f.wait_state("nav", &outside, &version, "skipped");
    for r in &outside {
        assert_eq!(report(&s, r)["current"], "v1", "{r}");
        assert_eq!(f.installed(r, "nav", "nav.bin").expect("installed"), vec![1u8; 200_000]);
    }
    // Without a model: every model of the fleet, its devices counted per state.
    let map = dir.path().join("m/map.bin");
    std::fs::write(&map, vec![3u8; 50_000]).expect("write");
    f.push("map-v1", &map, &[]);
    f.wait_state("map", &robots, "v1", "installed");
    let o = run(&["model", "status", "--json", "--wait", "1s", "--config", &f.client]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    let rows = v["models"].as_array().expect("models");
    let row =
        |m: &str| rows.iter().find(|r| r["model"] == m && r["fleet"] == FLEET).unwrap_or_else(|| panic!("{m}: {v}"));
    let nav = row("nav");
    assert_eq!(nav["announced"], version.as_str(), "{v}");
    assert_eq!(nav["canary_pct"], 50, "{v}");
    assert_eq!(nav["devices"], robots.len(), "{v}");
    assert_eq!(nav["running_announced"], inside.len(), "{v}");
    assert_eq!(nav["states"]["installed"], inside.len(), "{v}");
    assert_eq!(nav["states"]["skipped"], outside.len(), "{v}");
    let m = row("map");
    assert_eq!((m["announced"].as_str(), m["running_announced"].as_u64()), (Some("v1"), Some(4)), "{v}");
    let o = run(&["model", "status", "--wait", "1s", "--config", &f.client]);
    let table = String::from_utf8_lossy(&o.stdout);
    let line = table.lines().find(|l| l.starts_with("nav ")).unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains(&format!("{version} (50%)")) && line.contains("skipped"), "{table}");
    let o = run(&["model", "promote", "nav", "--config", &f.client]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    f.wait_state("nav", &robots, &version, "installed");
    for r in robots {
        assert_eq!(f.installed(r, "nav", "nav.bin").expect("installed"), vec![2u8; 200_000], "{r}");
    }
}

#[test]
fn a_broker_with_tls_and_passwords_works_and_wrong_credentials_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(f) = fleet_with(dir.path(), true) else { return };
    let _agent = f.robot("robot-1", "");
    let model = dir.path().join("m/policy.onnx");
    std::fs::create_dir_all(model.parent().expect("dir")).expect("mkdir");
    std::fs::write(&model, vec![9u8; 300_000]).expect("write");
    f.push("policy-v1", &model, &[]);
    f.wait_state("policy", &["robot-1"], "v1", "installed");
    assert_eq!(f.installed("robot-1", "policy", "policy.onnx").expect("installed"), vec![9u8; 300_000]);

    let wrong = dir.path().join("wrong.toml");
    let text = std::fs::read_to_string(&f.client).expect("client.toml").replace("s3cret", "guess");
    std::fs::write(&wrong, text).expect("write");
    let o = run(&["model", "status", "policy", "--config", wrong.to_str().expect("utf8")]);
    assert!(!o.status.success(), "a wrong password was accepted");
    assert!(String::from_utf8_lossy(&o.stderr).contains("MQTT broker"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_post_install_command_runs_and_its_failure_restores_the_previous_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(f) = fleet(dir.path()) else { return };
    let marker = dir.path().join("reloaded");
    // Reload hook: record what was installed; refuse versions named "bad".
    let hook = format!(
        "post_install = \"echo $FERRY_MODEL $FERRY_VERSION $(wc -c < $FERRY_MODEL_PATH) >> {}; test $FERRY_VERSION != bad\"",
        marker.display()
    );
    let _agent = f.robot("robot-1", &hook);
    let model = dir.path().join("m/w.bin");
    std::fs::create_dir_all(model.parent().expect("dir")).expect("mkdir");
    std::fs::write(&model, vec![5u8; 123_456]).expect("write");
    f.push("arm-good", &model, &[]);
    f.wait_state("arm", &["robot-1"], "good", "installed");
    assert_eq!(std::fs::read_to_string(&marker).expect("hook ran").trim(), "arm good 123456");
    std::fs::write(&model, vec![6u8; 1000]).expect("write");
    f.push("arm-bad", &model, &[]);
    let s = f.wait_state("arm", &["robot-1"], "bad", "failed");
    let r = report(&s, "robot-1");
    assert!(r["error"].as_str().expect("error").contains("post-install"), "{r}");
    assert_eq!(r["current"], "good");
    assert_eq!(f.installed("robot-1", "arm", "w.bin").expect("installed"), vec![5u8; 123_456]);
}

#[test]
fn a_replayed_old_announcement_and_a_forged_one_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(f) = fleet(dir.path()) else { return };
    let _agent = f.robot("robot-1", "");
    let v1 = dir.path().join("v1/nav.bin");
    let v2 = dir.path().join("v2/nav.bin");
    for (p, seed) in [(&v1, 3u32), (&v2, 4u32)] {
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        std::fs::write(p, (0..400_000u32).map(|i| (i.wrapping_mul(seed * 2654435761) >> 9) as u8).collect::<Vec<_>>())
            .expect("write");
    }
    f.push("nav-v1", &v1, &[]);
    f.wait_state("nav", &["robot-1"], "v1", "installed");
    // What an eavesdropper on the broker saw: v1's announcement, correctly signed.
    let record = dir.path().join(format!("store/models/nav/announced/{FLEET}.json"));
    let old = std::fs::read(&record).expect("the announcement is kept in the namespace");
    f.push("nav-v2", &v2, &[]);
    f.wait_state("nav", &["robot-1"], "v2", "installed");

    let publish = |payload: &[u8], topic: &str| {
        let ok = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &f.mqtt_port.to_string(), "-q", "1", "-r", "-t", topic, "-s"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(payload)?;
                c.wait()
            })
            .expect("mosquitto_pub");
        assert!(ok.success(), "mosquitto_pub");
    };
    let topic = format!("ferry/{FLEET}/models/nav");
    publish(&old, &topic);
    let s = f.wait_state("nav", &["robot-1"], "v1", "refused");
    let r = report(&s, "robot-1");
    assert!(r["error"].as_str().expect("error").contains("older than release"), "{r}");
    assert_eq!(r["current"], "v2");
    assert!(f.installed("robot-1", "nav", "nav.bin").expect("installed") == std::fs::read(&v2).expect("v2"));

    // A forged announcement (v2's manifest, canary and release changed) is
    // refused by the robot and does not replace the real one in status.
    let mut forged: serde_json::Value = serde_json::from_slice(&old).expect("json");
    forged["release"] = serde_json::json!(u64::MAX / 2);
    publish(&serde_json::to_vec(&forged).expect("json"), &topic);
    let s = f.wait_state("nav", &["robot-1"], "v1", "failed");
    assert!(report(&s, "robot-1")["error"].as_str().expect("error").contains("signature"), "{s:?}");
    assert_eq!(report(&s, "robot-1")["current"], "v2");
    let o = run(&["model", "status", "nav", "--json", "--wait", "1s", "--config", &f.client]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(v["announced"]["manifest"]["manifest"]["version"], "v2", "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("ignoring an announcement"), "the forgery was not reported");

    // Rollback is the one way back, and it needs no download.
    let o = run(&["model", "rollback", "nav", "--config", &f.client]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = f.wait_state("nav", &["robot-1"], "v1", "installed");
    assert_eq!(report(&s, "robot-1")["fetched"], 0);
}
