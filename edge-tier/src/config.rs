//! Edge agent configuration (`edge.toml`). Every key has a default.
//!
//! ```toml
//! id = "robot-1"                  # this device's id; its certificate is CERTS/ID.pem (role edge)
//! certs = "certs"                 # directory with ca.pem, ID.pem, ID.key
//! nodes = ["127.0.0.1:7400"]      # cache nodes to upload to
//! spool = "ferry-edge/spool.db"   # the SQLite spool
//! prefix = "/logs"                # objects go to PREFIX/ID/WATCH_NAME/RELATIVE_PATH
//! settle = "5s"                   # a file unchanged this long is complete
//! commit_interval = "30s"         # a growing file is committed at most this often (and once it grew by a quarter)
//! scan_interval = "2s"            # rescan even without file events
//! budget = "0"                    # most bytes of watched files kept on disk; 0 = no limit
//! retention = "keep"              # over budget: "keep" never deletes what is not uploaded,
//!                                 # "drop-oldest" deletes the oldest un-uploaded files (counted, logged)
//!
//! [bandwidth]
//! rate = "0"                      # bytes per second on the wire; 0 = no cap
//! schedule = [{ from = "08:00", to = "18:00", rate = "1MiB" }]   # time-of-day overrides
//! timezone = "utc"                # what the schedule's times are: "utc" or "local" (the robot's clock)
//!
//! [[watch]]
//! dir = "/var/log/robot"
//! pattern = "*.mcap"              # glob relative to dir (`**` crosses directories)
//! priority = "high"               # high, normal or low
//! name = "robot"                  # WATCH_NAME in object paths; default: the dir's last component
//!
//! [models]                        # the model receiver (off while mqtt is "")
//! mqtt = "127.0.0.1:1883"         # MQTT broker
//! mqtt_user = ""                  # broker credentials, if it wants them
//! mqtt_password = ""
//! fleet = "default"               # announcements of ferry/FLEET/models/+ are followed
//! dir = "ferry-models"            # DIR/MODEL/current -> versions/VERSION
//! keep = 3                        # versions kept per model
//! post_install = ""               # sh -c command after each install; failure restores the previous version
//! signing_key = "certs/fleet-signing.pub"
//! rate = "0"                      # download cap, bytes per second; 0 = none
//! ```

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// What to do when watched files exceed the disk budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Retention {
    /// Delete uploaded files (oldest upload first); never delete others.
    #[default]
    Keep,
    /// Also delete the oldest files not yet uploaded, counting and logging each.
    DropOldest,
}

/// Upload priority of a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Last.
    Low,
    /// Between.
    #[default]
    Normal,
    /// First.
    High,
}

impl Priority {
    /// Sort key: higher goes first.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }
    }
}

/// One watched directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Directory to watch (recursively).
    pub dir: PathBuf,
    /// Glob of file paths relative to `dir`.
    #[serde(default = "all_files")]
    pub pattern: String,
    /// Upload priority.
    #[serde(default)]
    pub priority: Priority,
    /// Name of the watch in object paths (default: the directory's last component).
    #[serde(default)]
    pub name: Option<String>,
}

fn all_files() -> String {
    "**".into()
}

impl WatchConfig {
    /// The name used in object paths.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.dir.file_name().map_or_else(|| "files".to_string(), |n| n.to_string_lossy().into_owned())
        })
    }
}

/// A rate that applies during part of the day (in `BandwidthConfig::timezone`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateWindow {
    /// Start, `HH:MM`.
    pub from: String,
    /// End, `HH:MM` (before `from`: the window wraps past midnight).
    pub to: String,
    /// Bytes per second; 0 = no cap.
    pub rate: ByteSize,
}

/// Bandwidth shaping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BandwidthConfig {
    /// Bytes per second on the wire outside any window; 0 = no cap.
    pub rate: ByteSize,
    /// Time-of-day overrides.
    pub schedule: Vec<RateWindow>,
    /// What the schedule's times of day are.
    pub timezone: Timezone,
}

/// The clock a bandwidth schedule's times of day are read on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Timezone {
    /// Coordinated universal time (the same for a whole fleet).
    #[default]
    Utc,
    /// The robot's local time (its /etc/localtime, with daylight saving).
    Local,
}

impl Timezone {
    /// The minute of the day (0..1440) at `utc_secs` seconds since the epoch.
    pub fn minute_of_day(self, utc_secs: i64) -> u32 {
        let offset = match self {
            Timezone::Utc => 0,
            Timezone::Local => chrono::DateTime::from_timestamp(utc_secs, 0)
                .map_or(0, |t| i64::from(t.with_timezone(&chrono::Local).offset().local_minus_utc())),
        };
        ((utc_secs + offset).rem_euclid(86_400) / 60) as u32
    }
}

fn minute_of_day(s: &str) -> Result<u32, String> {
    let (h, m) = s.split_once(':').ok_or_else(|| format!("{s:?} is not HH:MM"))?;
    let (h, m): (u32, u32) =
        (h.parse().map_err(|_| format!("{s:?} is not HH:MM"))?, m.parse().map_err(|_| format!("{s:?} is not HH:MM"))?);
    if h > 23 || m > 59 {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

impl BandwidthConfig {
    /// The cap at `minute` (of the day in `timezone`) in bytes per second; 0 = none.
    pub fn rate_at(&self, minute: u32) -> u64 {
        for w in &self.schedule {
            let (Ok(a), Ok(b)) = (minute_of_day(&w.from), minute_of_day(&w.to)) else { continue };
            let inside = if a <= b { (a..b).contains(&minute) } else { minute >= a || minute < b };
            if inside {
                return w.rate.as_u64();
            }
        }
        self.rate.as_u64()
    }
}

/// The `[models]` section of `edge.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// MQTT broker `host:port`; empty turns the receiver off.
    pub mqtt: String,
    /// Broker user name (empty: none).
    pub mqtt_user: String,
    /// Broker password.
    pub mqtt_password: String,
    /// CA certificate (PEM) of a broker serving TLS; empty: plain TCP.
    pub mqtt_ca: PathBuf,
    /// The fleet this device belongs to.
    pub fleet: String,
    /// Where models are installed.
    pub dir: PathBuf,
    /// Versions kept per model (the running one included).
    pub keep: usize,
    /// Run after each install (`sh -c`), with FERRY_MODEL, FERRY_VERSION and
    /// FERRY_MODEL_PATH set; a failure rolls the install back.
    pub post_install: String,
    /// The fleet's public signing key (`fleet-signing.pub` from `ferry cert init`).
    pub signing_key: PathBuf,
    /// Download cap in bytes per second; 0 = none.
    pub rate: bytesize::ByteSize,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            mqtt: String::new(),
            mqtt_user: String::new(),
            mqtt_password: String::new(),
            mqtt_ca: PathBuf::new(),
            fleet: "default".into(),
            dir: PathBuf::from("ferry-models"),
            keep: 3,
            post_install: String::new(),
            signing_key: PathBuf::from("certs/fleet-signing.pub"),
            rate: bytesize::ByteSize::b(0),
        }
    }
}

/// What is wrong with an `edge.toml` (the first problem found).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(String);

/// The edge agent's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// This device's id (its certificate's).
    pub id: String,
    /// Certificate directory.
    pub certs: PathBuf,
    /// Cache nodes (`host:port`).
    pub nodes: Vec<String>,
    /// The cluster's etcd (`[etcd]`), to follow its membership instead of `nodes`.
    pub etcd: ferry_protocol::membership::EtcdConfig,
    /// SQLite spool file.
    pub spool: PathBuf,
    /// Namespace prefix of uploads; objects go to `prefix/id/watch/relative`.
    pub prefix: String,
    /// A file unchanged this long is complete.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// A growing file is committed at most this often.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Rescan period.
    #[serde(with = "humantime_serde")]
    pub scan_interval: Duration,
    /// Most bytes of watched files kept on disk; 0 = no limit.
    pub budget: ByteSize,
    /// What goes when over budget.
    pub retention: Retention,
    /// Bandwidth shaping.
    pub bandwidth: BandwidthConfig,
    /// Watched directories.
    pub watch: Vec<WatchConfig>,
    /// Upload files that have more than one hard link. Off by default: a
    /// hard link in a watched directory can name any file of its file
    /// system the agent may read (`/etc/shadow`, say).
    pub upload_hardlinks: bool,
    /// The model receiver.
    pub models: ModelsConfig,
    /// Address of the Prometheus metrics, `/healthz` and `/readyz` (`""` = none).
    pub metrics_listen: String,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            id: "robot-1".into(),
            certs: PathBuf::from("certs"),
            nodes: vec!["127.0.0.1:7400".into()],
            etcd: ferry_protocol::membership::EtcdConfig::default(),
            spool: PathBuf::from("ferry-edge/spool.db"),
            prefix: "/logs".into(),
            settle: Duration::from_secs(5),
            commit_interval: Duration::from_secs(30),
            scan_interval: Duration::from_secs(2),
            budget: ByteSize::b(0),
            retention: Retention::Keep,
            bandwidth: BandwidthConfig::default(),
            watch: Vec::new(),
            upload_hardlinks: false,
            models: ModelsConfig::default(),
            metrics_listen: String::new(),
        }
    }
}

impl EdgeConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.check().map_err(InvalidConfig)
    }

    fn check(&self) -> Result<(), String> {
        ferry_protocol::ids::NodeId::new(&self.id).map_err(|e| e.to_string())?;
        ferry_protocol::ids::NsPath::parse(&self.prefix).map_err(|e| format!("prefix {:?}: {e}", self.prefix))?;
        if self.nodes.is_empty() && self.etcd.endpoints.is_empty() {
            return Err("nodes is empty: name at least one cache node (or the cluster's etcd in [etcd])".into());
        }
        if self.watch.is_empty() && self.models.mqtt.is_empty() {
            return Err(
                "nothing to do: add a [[watch]] section (a directory to upload) or [models] mqtt (a broker to follow)"
                    .into(),
            );
        }
        if !self.models.mqtt.is_empty() {
            ferry_protocol::mqtt::broker(&self.models.mqtt).map_err(|e| e.to_string())?;
            ferry_protocol::ids::NodeId::new(&self.models.fleet).map_err(|e| format!("models.fleet: {e}"))?;
        }
        for w in &self.watch {
            globset::Glob::new(&w.pattern)
                .map_err(|e| format!("watch {}: pattern {:?}: {e}", w.dir.display(), w.pattern))?;
            let name = w.name();
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!("watch {}: bad name {name:?}", w.dir.display()));
            }
        }
        for win in &self.bandwidth.schedule {
            minute_of_day(&win.from)?;
            minute_of_day(&win.to)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_windows_apply_by_time_of_day() {
        let b = BandwidthConfig {
            rate: ByteSize::mib(10),
            schedule: vec![
                RateWindow { from: "08:00".into(), to: "18:00".into(), rate: ByteSize::mib(1) },
                RateWindow { from: "22:00".into(), to: "02:00".into(), rate: ByteSize::b(0) },
            ],
            ..Default::default()
        };
        assert_eq!(b.rate_at(7 * 60 + 59), 10 << 20);
        assert_eq!(b.rate_at(8 * 60), 1 << 20);
        assert_eq!(b.rate_at(17 * 60 + 59), 1 << 20);
        assert_eq!(b.rate_at(18 * 60), 10 << 20);
        assert_eq!(b.rate_at(23 * 60), 0);
        assert_eq!(b.rate_at(60), 0);
        assert_eq!(b.rate_at(2 * 60), 10 << 20);
    }

    #[test]
    fn schedules_read_utc_or_the_robots_local_clock() {
        // 2023-11-14 22:13:20 UTC.
        assert_eq!(Timezone::Utc.minute_of_day(1_700_000_000), 22 * 60 + 13);
        assert_eq!(Timezone::Utc.minute_of_day(-60), 23 * 60 + 59);
        // The robot's own clock: the wall-clock time its time zone shows then.
        use chrono::Timelike;
        for t in [1_700_000_000, 1_719_000_000, 0] {
            let wall = chrono::DateTime::from_timestamp(t, 0).expect("a time").with_timezone(&chrono::Local);
            assert_eq!(Timezone::Local.minute_of_day(t), wall.hour() * 60 + wall.minute(), "at {t}");
        }
        let parse = |t: &str| serde_json::from_str::<BandwidthConfig>(&format!("{{\"timezone\": {t:?}}}"));
        assert_eq!(parse("local").expect("local").timezone, Timezone::Local);
        assert_eq!(parse("utc").expect("utc").timezone, Timezone::Utc);
        assert_eq!(BandwidthConfig::default().timezone, Timezone::Utc);
        let e = parse("mars").expect_err("unknown timezone").to_string();
        assert!(e.contains("utc") && e.contains("local"), "{e}");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let mut c = EdgeConfig::default();
        assert!(c.validate().expect_err("no watch").to_string().contains("[[watch]]"));
        c.watch.push(WatchConfig { dir: "/x".into(), pattern: "[".into(), priority: Priority::High, name: None });
        assert!(c.validate().expect_err("bad glob").to_string().contains("pattern"));
        c.watch[0].pattern = "*.mcap".into();
        c.validate().expect("valid");
        c.bandwidth.schedule.push(RateWindow { from: "25:00".into(), to: "01:00".into(), rate: ByteSize::b(1) });
        assert!(c.validate().expect_err("bad time").to_string().contains("25:00"));
    }
}
