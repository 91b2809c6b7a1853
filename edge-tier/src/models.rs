//! The model receiver: follows its fleet's model announcements on MQTT,
//! fetches the chunks it lacks from the cache nodes, verifies them and the
//! manifest's signature, installs by atomic rename, keeps the last versions,
//! and reports its state on MQTT.
//!
//! On disk, per model: `DIR/MODEL/versions/VERSION/{FILE,manifest.json}`,
//! `DIR/MODEL/current` (a symlink to the running version, swapped by
//! rename) and `DIR/MODEL/staging/VERSION` (a download in progress; after a
//! restart its chunks are checked and only the bad or missing ones fetched).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rumqttc::{AsyncClient, Event, Packet, QoS};

use ferry_protocol::client::Cluster;
use ferry_protocol::clock::{Clock, SystemClock};
use ferry_protocol::manifest::{
    chunk_path, in_canary, status_topic, Announcement, DeviceStatus, Manifest, SignedManifest,
};

use ferry_protocol::mqtt::{mqtt_options, BrokerAccess};

pub use crate::config::ModelsConfig;
use crate::error::EdgeError;

/// Chunks fetched concurrently.
const FETCH_WINDOW: usize = 8;

/// Reads the fleet's public key (PEM, as `ferry cert init` writes it).
pub fn load_key(path: &Path) -> Result<ed25519_dalek::VerifyingKey, EdgeError> {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let pem = std::fs::read_to_string(path)
        .map_err(|e| EdgeError::Config(format!("fleet signing key {}: {e}", path.display())))?;
    ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
        .map_err(|e| EdgeError::Config(format!("fleet signing key {}: {e}", path.display())))
}

/// The receiver of one device.
#[derive(Debug)]
pub struct Receiver {
    cfg: ModelsConfig,
    device: String,
    cluster: Cluster,
    key: ed25519_dalek::VerifyingKey,
    mqtt: AsyncClient,
}

/// Why an install attempt failed.
#[derive(Debug)]
struct Failure {
    outcome: Outcome,
    error: String,
    /// Whether trying again later may succeed (a fetch failed, a stored
    /// chunk was bad and may be repaired).
    retry: bool,
}

/// How long to wait before install attempt `failures + 1` of an
/// announcement: 2 s doubling up to 5 min, times 0.5-1.5 at random, so a
/// fleet that failed together (a node down) does not return in lockstep.
fn retry_after(failures: u32) -> Duration {
    let base = Duration::from_secs(2).saturating_mul(1 << failures.min(8)).min(Duration::from_secs(300));
    base.mul_f64(0.5 + rand::random::<f64>())
}

/// What an install attempt did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes fetched from the cache nodes.
    pub fetched: u64,
    /// Bytes copied from versions on the device.
    pub reused: u64,
    /// Bytes found already verified in the staging file (a resumed download).
    pub resumed: u64,
}

impl Receiver {
    /// Connects to the broker and follows the fleet's announcements until `stop`.
    pub async fn run(
        cfg: ModelsConfig,
        device: String,
        cluster: Cluster,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), EdgeError> {
        let key = load_key(&cfg.signing_key)?;
        std::fs::create_dir_all(&cfg.dir)?;
        let access =
            BrokerAccess { addr: &cfg.mqtt, user: &cfg.mqtt_user, password: &cfg.mqtt_password, ca: &cfg.mqtt_ca };
        let opts = mqtt_options(&format!("ferry-edge-{device}"), access)?;
        let (mqtt, mut events) = AsyncClient::new(opts, 64);
        let topic = format!("ferry/{}/models/+", cfg.fleet);
        let me = Arc::new(Receiver { cfg, device, cluster, key, mqtt });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>, bool)>();
        // Announcements are applied one at a time, away from the MQTT event loop.
        // A failed install is tried again (backoff with jitter) while its
        // announcement is still the latest of its model.
        let worker = {
            let me = me.clone();
            let again = tx.clone();
            tokio::spawn(async move {
                let mut latest: HashMap<String, (Vec<u8>, u32)> = HashMap::new();
                while let Some((topic, payload, retry)) = rx.recv().await {
                    let failures = match latest.get(&topic) {
                        Some((p, f)) if *p == payload => *f,
                        // An older retry, overtaken by a newer announcement.
                        _ if retry => continue,
                        _ => 0,
                    };
                    if me.announced(&topic, &payload).await {
                        latest.insert(topic.clone(), (payload.clone(), failures + 1));
                        let again = again.clone();
                        let wait = retry_after(failures);
                        tracing::info!(%topic, retry_in = ?wait, "model install failed; trying again");
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = again.send((topic, payload, true));
                        });
                    } else {
                        latest.insert(topic, (payload, 0));
                    }
                }
            })
        };
        tokio::pin!(stop);
        let mut subscribed = false;
        let mut lost = 0u32;
        loop {
            tokio::select! {
                () = &mut stop => break,
                ev = events.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        lost = 0;
                        // Subscribe again after every (re)connect; retained announcements come at once.
                        me.mqtt.subscribe(topic.clone(), QoS::AtLeastOnce).await.map_err(|e| EdgeError::Config(format!("mqtt: {e}")))?;
                        if !subscribed {
                            tracing::info!(%topic, "following model announcements");
                            subscribed = true;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec(), false));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if lost == 0 {
                            tracing::warn!(error = %e, broker = %me.cfg.mqtt, "MQTT connection lost; retrying");
                        }
                        // Jittered and growing: a fleet does not reconnect in lockstep.
                        tokio::time::sleep(ferry_protocol::membership::backoff(lost)).await;
                        lost = lost.saturating_add(1);
                    }
                }
            }
        }
        worker.abort();
        let _ = me.mqtt.disconnect().await;
        Ok(())
    }

    fn model_dir(&self, model: &str) -> PathBuf {
        self.cfg.dir.join(model)
    }

    /// The highest release of `model` this device accepted (0: none).
    fn release_accepted(&self, model: &str) -> u64 {
        std::fs::read_to_string(self.model_dir(model).join("release"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records `release` as accepted, durably, before acting on it.
    fn accept_release(&self, model: &str, release: u64) -> std::io::Result<()> {
        let dir = self.model_dir(model);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join("release.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{release}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join("release"))?;
        std::fs::File::open(&dir)?.sync_all()
    }

    /// The manifest of the running version, if any.
    fn running_manifest(&self, model: &str) -> Option<Manifest> {
        let bytes = std::fs::read(self.model_dir(model).join("current").join("manifest.json")).ok()?;
        serde_json::from_slice::<SignedManifest>(&bytes).ok().map(|s| s.manifest)
    }

    /// The version `current` points at, if any.
    pub fn current(dir: &Path, model: &str) -> Option<String> {
        let target = std::fs::read_link(dir.join(model).join("current")).ok()?;
        target.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    async fn report(&self, model: &str, version: &str, state: &str, outcome: &Outcome, error: &str) {
        let status = DeviceStatus {
            device: self.device.clone(),
            model: model.to_string(),
            version: version.to_string(),
            state: state.to_string(),
            current: Self::current(&self.cfg.dir, model).unwrap_or_default(),
            fetched: outcome.fetched,
            reused: outcome.reused,
            error: error.to_string(),
            at_ms: SystemClock.now_ms(),
        };
        let topic = status_topic(&self.cfg.fleet, model, &self.device);
        let payload = serde_json::to_vec(&status).expect("status serializes");
        if let Err(e) = self.mqtt.publish(topic, QoS::AtLeastOnce, true, payload).await {
            tracing::warn!(error = %e, "cannot report status");
        }
        match state {
            "failed" => tracing::warn!(%model, %version, %error, "model install failed"),
            "refused" => tracing::warn!(%model, %version, %error, "model announcement refused"),
            _ => tracing::info!(%model, %version, %state, "model"),
        }
    }

    /// Acts on an announcement; returns whether to try it again later.
    async fn announced(&self, topic: &str, payload: &[u8]) -> bool {
        let model = topic.rsplit('/').next().unwrap_or_default().to_string();
        if payload.is_empty() {
            return false; // a cleared retained message
        }
        let ann: Announcement = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                self.report(&model, "", "failed", &Outcome::default(), &format!("unreadable announcement: {e}")).await;
                return false;
            }
        };
        let version = ann.manifest.manifest.version.clone();
        let m = match ann.verify(&self.key, &self.cfg.fleet) {
            Ok(m) if m.model == model => m.clone(),
            Ok(m) => {
                let e = format!("announcement on {topic} names model {}", m.model);
                self.report(&model, &version, "failed", &Outcome::default(), &e).await;
                return false;
            }
            Err(e) => {
                self.report(&model, &version, "failed", &Outcome::default(), &e.to_string()).await;
                return false;
            }
        };
        // Never backwards: not to an announcement older than one accepted
        // (a replay), not to an older version unless rolled back.
        let accepted = self.release_accepted(&model);
        if ann.release < accepted {
            let e = format!(
                "release {} is older than release {accepted} already accepted (a replayed announcement?)",
                ann.release
            );
            self.report(&model, &version, "refused", &Outcome::default(), &e).await;
            return false;
        }
        if let Some(running) = self.running_manifest(&model) {
            if !ann.rollback && m.created_ms < running.created_ms {
                let e = format!(
                    "{} is older than the running {}: only `ferry model rollback` moves a device back",
                    m.version, running.version
                );
                self.report(&model, &version, "refused", &Outcome::default(), &e).await;
                return false;
            }
        }
        if ann.release > accepted {
            if let Err(e) = self.accept_release(&model, ann.release) {
                self.report(&model, &version, "failed", &Outcome::default(), &format!("record release: {e}")).await;
                return false;
            }
        }
        if !in_canary(&self.device, &m.version, ann.canary_pct) {
            self.report(&model, &version, "skipped", &Outcome::default(), "").await;
            return false;
        }
        if Self::current(&self.cfg.dir, &model).as_deref() == Some(m.version.as_str()) {
            self.report(&model, &version, "installed", &Outcome::default(), "").await;
            return false;
        }
        match self.install(&ann.manifest, &m).await {
            Ok(outcome) => self.report(&model, &version, "installed", &outcome, "").await,
            Err(f) => {
                self.report(&model, &version, "failed", &f.outcome, &f.error).await;
                return f.retry;
            }
        }
        false
    }

    /// Where each chunk of the versions on the device lives: hash → (file, offset).
    fn local_chunks(&self, model: &str) -> HashMap<String, (PathBuf, u64)> {
        let mut index = HashMap::new();
        let Ok(entries) = std::fs::read_dir(self.model_dir(model).join("versions")) else { return index };
        for e in entries.flatten() {
            let Ok(text) = std::fs::read(e.path().join("manifest.json")) else { continue };
            let Ok(sm) = serde_json::from_slice::<SignedManifest>(&text) else { continue };
            let file = e.path().join(&sm.manifest.file);
            let mut off = 0u64;
            for c in &sm.manifest.chunks {
                index.entry(c.hash.clone()).or_insert((file.clone(), off));
                off += u64::from(c.len);
            }
        }
        index
    }

    /// Downloads (or reuses) and installs a verified version.
    async fn install(&self, signed: &SignedManifest, m: &Manifest) -> Result<Outcome, Failure> {
        let model_dir = self.model_dir(&m.model);
        let version_dir = model_dir.join("versions").join(&m.version);
        let mut outcome = Outcome::default();
        let fail = |o: &Outcome, e: String| Err(Failure { outcome: o.clone(), error: e, retry: true });
        let fail_final = |o: &Outcome, e: String| Err(Failure { outcome: o.clone(), error: e, retry: false });
        if version_dir.join(&m.file).exists() && version_dir.join("manifest.json").exists() {
            // Kept from before: switching needs no download.
            return match self.activate(m, &model_dir) {
                Ok(()) => Ok(outcome),
                Err(e) => fail_final(&outcome, e),
            };
        }
        self.report(&m.model, &m.version, "downloading", &outcome, "").await;
        let staging_dir = model_dir.join("staging");
        if let Err(e) = std::fs::create_dir_all(&staging_dir) {
            return fail(&outcome, format!("staging: {e}"));
        }
        let staging = staging_dir.join(&m.version);
        let file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&staging)
        {
            Ok(f) => Arc::new(f),
            Err(e) => return fail(&outcome, format!("staging file: {e}")),
        };
        if let Err(e) = file.set_len(m.size) {
            return fail(&outcome, format!("staging file: {e}"));
        }
        let hashes = match m.hashes() {
            Ok(h) => h,
            Err(e) => return fail(&outcome, e.to_string()),
        };
        let local = self.local_chunks(&m.model);
        let mut jobs = Vec::new();
        let mut off = 0u64;
        for (c, h) in m.chunks.iter().zip(&hashes) {
            jobs.push((off, c.len, *h, local.get(&c.hash).cloned()));
            off += u64::from(c.len);
        }
        let limiter = crate::bandwidth::Limiter::new(crate::config::BandwidthConfig {
            rate: self.cfg.rate,
            ..Default::default()
        });
        let limiter = &limiter;
        let mut work = futures::stream::iter(jobs.into_iter().map(|(off, len, hash, local)| {
            let file = file.clone();
            async move {
                let mut buf = vec![0u8; len as usize];
                // Already here from an interrupted download?
                if file.read_exact_at(&mut buf, off).is_ok() && blake3::hash(&buf).as_bytes() == &hash {
                    return Ok((0u64, 0u64, u64::from(len)));
                }
                if let Some((path, at)) = local {
                    let ok = std::fs::File::open(&path).and_then(|f| f.read_exact_at(&mut buf, at)).is_ok();
                    if ok && blake3::hash(&buf).as_bytes() == &hash {
                        file.write_all_at(&buf, off).map_err(|e| format!("staging write: {e}"))?;
                        return Ok((0, u64::from(len), 0));
                    }
                }
                limiter.take(u64::from(len)).await;
                let mut got = Vec::with_capacity(len as usize);
                self.cluster
                    .read_to(&chunk_path(&hash), 0, None, &mut got)
                    .await
                    .map_err(|e| format!("fetch chunk {}: {e}", chunk_path(&hash)))?;
                if got.len() != len as usize || blake3::hash(&got).as_bytes() != &hash {
                    return Err(format!("chunk {} does not match its hash", chunk_path(&hash)));
                }
                file.write_all_at(&got, off).map_err(|e| format!("staging write: {e}"))?;
                Ok((u64::from(len), 0, 0))
            }
        }))
        .buffer_unordered(FETCH_WINDOW);
        while let Some(r) = work.next().await {
            match r {
                Ok((f, u, r)) => {
                    outcome.fetched += f;
                    outcome.reused += u;
                    outcome.resumed += r;
                }
                Err(e) => return fail(&outcome, e),
            }
        }
        drop(work);
        self.report(&m.model, &m.version, "verifying", &outcome, "").await;
        if let Err(e) = file.sync_all() {
            return fail(&outcome, format!("staging fsync: {e}"));
        }
        drop(file);
        // Every chunk was checked against the signed manifest as it was written.
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&version_dir)?;
            std::fs::write(version_dir.join("manifest.json"), serde_json::to_vec(signed).expect("serializes"))?;
            std::fs::rename(&staging, version_dir.join(&m.file))?;
            std::fs::File::open(&version_dir)?.sync_all()
        })();
        if let Err(e) = result {
            return fail(&outcome, format!("install: {e}"));
        }
        match self.activate(m, &model_dir) {
            Ok(()) => Ok(outcome),
            // The post-install command refused it: trying again would run it again.
            Err(e) => fail_final(&outcome, e),
        }
    }

    /// Points `current` at the version (atomic rename), runs the post-install
    /// command (restoring the previous version if it fails), prunes old versions.
    fn activate(&self, m: &Manifest, model_dir: &Path) -> Result<(), String> {
        let previous = std::fs::read_link(model_dir.join("current")).ok();
        swap_current(model_dir, &PathBuf::from("versions").join(&m.version)).map_err(|e| format!("switch: {e}"))?;
        if !self.cfg.post_install.is_empty() {
            let path = model_dir.join("current").join(&m.file);
            let status = std::process::Command::new("sh")
                .args(["-c", &self.cfg.post_install])
                .env("FERRY_MODEL", &m.model)
                .env("FERRY_VERSION", &m.version)
                .env("FERRY_MODEL_PATH", &path)
                .status();
            let ok = status.as_ref().is_ok_and(|s| s.success());
            if !ok {
                if let Some(prev) = previous {
                    let _ = swap_current(model_dir, &prev);
                } else {
                    let _ = std::fs::remove_file(model_dir.join("current"));
                }
                return Err(format!("post-install command failed ({status:?}); previous version restored"));
            }
        }
        self.prune(model_dir, &m.version);
        Ok(())
    }

    /// Keeps the newest `keep` versions (the running one always).
    fn prune(&self, model_dir: &Path, current: &str) {
        let Ok(entries) = std::fs::read_dir(model_dir.join("versions")) else { return };
        let mut versions: Vec<(SystemTime, PathBuf, String)> = entries
            .flatten()
            .map(|e| {
                let t = e.metadata().and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH);
                (t, e.path(), e.file_name().to_string_lossy().into_owned())
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        let mut kept = 1; // the current one
        for (_, path, name) in versions {
            if name == current {
                continue;
            }
            if kept < self.cfg.keep.max(1) {
                kept += 1;
            } else {
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
}

/// Makes `DIR/current` point at `target` by renaming a fresh symlink over it.
fn swap_current(model_dir: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = model_dir.join(".current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, model_dir.join("current"))?;
    std::fs::File::open(model_dir)?.sync_all()?;
    // Touch the version so pruning sees it as recent.
    let dir = model_dir.join(target);
    let _ = std::fs::File::open(&dir).and_then(|f| f.set_modified(SystemTime::now()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_a_fleet_spreads_out() {
        // A thousand robots whose fetch failed at the same moment.
        let first: Vec<Duration> = (0..1000).map(|_| retry_after(0)).collect();
        assert!(first.iter().all(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(3)), "{first:?}");
        // Spread over the window: no second of it holds more than a fifth of them.
        let mut per_100ms = [0u32; 21];
        for d in &first {
            per_100ms[((d.as_millis() - 1000) / 100).min(20) as usize] += 1;
        }
        assert!(per_100ms.iter().all(|n| *n < 200), "{per_100ms:?}");
        // Growing, and capped at five minutes (times the jitter).
        let mean = |f: u32| (0..200).map(|_| retry_after(f).as_secs_f64()).sum::<f64>() / 200.0;
        assert!(mean(3) > 2.0 * mean(1), "{} vs {}", mean(3), mean(1));
        assert!((0..200).all(|_| retry_after(30) <= Duration::from_secs(450)));
    }
}
