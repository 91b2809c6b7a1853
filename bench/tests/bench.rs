//! The benchmark binary as a user runs it: every scenario documents itself,
//! and the lossy-link scenario (the one that needs network namespaces)
//! delivers its upload intact.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_cloud_tier::testing::available;

/// `ferry-bench` with `args`, running the `ferry` binary of the same build.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-bench"))
        .args(args)
        .env("FERRY_BIN", ferry())
        .env("FERRY_LOG", "warn")
        .output()
        .expect("run ferry-bench")
}

/// The `ferry` binary next to `ferry-bench`, built first if this test runs alone.
fn ferry() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_ferry-bench"));
    let ferry = bench.with_file_name("ferry");
    if !ferry.exists() {
        let release = bench.parent().is_some_and(|d| d.ends_with("release"));
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-p", "ferry"]);
        if release {
            c.arg("--release");
        }
        assert!(c.status().expect("cargo build").success(), "cannot build ferry");
    }
    ferry
}

#[test]
fn every_scenario_documents_itself() {
    for s in ["read", "checkpoint", "train", "edge", "edge-link", "edge-crash", "fleet", "cluster"] {
        let o = bench(&[s, "--help"]);
        assert!(o.status.success(), "{s}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"), "{s}");
    }
    let o = bench(&["no-such-scenario"]);
    assert!(!o.status.success());
}

/// Root, `ip`, `tc` and `nft` build the lossy link; under CI their absence is a failure.
fn netns_available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
    let tools = ["ip", "tc", "nft"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    });
    available(
        root && tools,
        "network namespaces need root, ip, tc and nft (scripts/test.sh installs iproute2 and nftables)",
    )
}

#[test]
fn upload_over_a_slow_lossy_link_completes_intact() {
    if !netns_available() {
        return;
    }
    // 10 Mbit/s with 2 % of packets dropped each way, between two network
    // namespaces; the scenario compares the stored object with the file.
    let o = bench(&["edge-link", "--size", "2MiB", "--rate-mbit", "10", "--loss", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let json: serde_json::Value = serde_json::from_str(out.lines().last().expect("a JSON line")).expect("JSON");
    assert_eq!(json["scenario"], "edge-link", "{out}");
    assert_eq!(json["bytes"], 2 << 20, "{out}");
    assert_eq!(json["intact"], true, "{out}");
    for k in ["clean_ratio", "lossy_ratio"] {
        assert!(json[k].as_f64().is_some_and(|r| r > 0.0), "{k}: {out}");
    }
}
