//! `ferry model push|status|rollback|promote`: model versions to fleets.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};

use ferry_protocol::client::Cluster;
use ferry_protocol::clock::{Clock, SystemClock};
use ferry_protocol::manifest::{
    chunk_path, model_topic, Announcement, DeviceStatus, Manifest, ManifestChunk, SignedManifest,
};
use ferry_protocol::mqtt::{mqtt_options, BrokerAccess};

use crate::config::ClientConfig;

/// Chunks uploaded concurrently.
const UPLOADS: usize = 8;

/// Splits `MODEL-VERSION` (or `MODEL@VERSION`) at the last `@`, else the last `-`.
pub fn split_name(name: &str) -> Result<(String, String)> {
    let cut = name.rfind('@').or_else(|| name.rfind('-'));
    match cut {
        Some(i) if i > 0 && i + 1 < name.len() => Ok((name[..i].to_string(), name[i + 1..].to_string())),
        _ => bail!("{name:?} is not MODEL-VERSION (e.g. detector-v7) or MODEL@VERSION"),
    }
}

fn load_signing_key(certs: &Path) -> Result<ed25519_dalek::SigningKey> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let path = certs.join(crate::certs::SIGNING_KEY);
    let pem = std::fs::read_to_string(&path)
        .with_context(|| format!("the fleet's signing key {} (made by `ferry cert init`)", path.display()))?;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).with_context(|| format!("reading {}", path.display()))
}

/// The fleet's public key: `fleet-signing.pub` in the certificate
/// directory, or the public half of the signing key found there.
fn load_verifying_key(certs: &Path) -> Result<ed25519_dalek::VerifyingKey> {
    let public = certs.join(crate::certs::SIGNING_PUB);
    if public.exists() {
        use ed25519_dalek::pkcs8::DecodePublicKey;
        let pem = std::fs::read_to_string(&public).with_context(|| format!("reading {}", public.display()))?;
        return ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
            .with_context(|| format!("fleet signing key {}", public.display()));
    }
    Ok(load_signing_key(certs)
        .with_context(|| format!("neither {} nor the signing key to check announcements with", public.display()))?
        .verifying_key())
}

/// Where the last announcement of a model to a fleet is kept in the
/// namespace: what `ferry model status` trusts, whatever the broker holds.
fn announcement_record(model: &str, fleet: &str) -> String {
    format!("/models/{model}/announced/{fleet}.json")
}

/// Connects to the broker of `cfg`.
fn mqtt(cfg: &ClientConfig, role: &str) -> Result<(AsyncClient, rumqttc::EventLoop)> {
    if cfg.mqtt.is_empty() {
        bail!("no MQTT broker configured: set mqtt = \"HOST:PORT\" in the client config");
    }
    let id = format!("ferry-{role}-{}-{}", cfg.id, std::process::id());
    let access = BrokerAccess { addr: &cfg.mqtt, user: &cfg.mqtt_user, password: &cfg.mqtt_password, ca: &cfg.mqtt_ca };
    let opts = mqtt_options(&id, access)?;
    Ok(AsyncClient::new(opts, 64))
}

/// Signs and announces `manifest` with the next release number, keeps it
/// in the namespace, then publishes it retained and waits for the broker's
/// acknowledgement.
async fn announce(
    cfg: &ClientConfig,
    cluster: &Cluster,
    key: &ed25519_dalek::SigningKey,
    manifest: SignedManifest,
    canary_pct: u8,
    rollback: bool,
) -> Result<Announcement> {
    let m = &manifest.manifest;
    let (model, fleet) = (m.model.clone(), m.fleet.clone());
    let last = last_announced(cfg, cluster, &key.verifying_key(), &model, &fleet).await?.map_or(0, |a| a.release);
    let release = (SystemClock.now_ms().max(0) as u64).max(last + 1);
    let ann = Announcement::sign(manifest, canary_pct, release, rollback, key);
    put_bytes(cluster, &announcement_record(&model, &fleet), &serde_json::to_vec(&ann)?).await?;
    publish(cfg, &fleet, &ann).await?;
    Ok(ann)
}

/// The newest validly signed announcement of `model` to `fleet`: the one
/// kept in the namespace or the broker's retained one, whichever has the
/// higher release. Forged or unsigned ones are left out (and said so).
async fn last_announced(
    cfg: &ClientConfig,
    cluster: &Cluster,
    key: &ed25519_dalek::VerifyingKey,
    model: &str,
    fleet: &str,
) -> Result<Option<Announcement>> {
    let mut kept = Vec::new();
    let stored = match cluster.read_to(&announcement_record(model, fleet), 0, None, &mut kept).await {
        Ok(_) => serde_json::from_slice::<Announcement>(&kept).ok(),
        Err(ferry_protocol::ProtocolError::Remote { code: ferry_protocol::ErrorCode::NotFound, .. }) => None,
        Err(e) => return Err(e).context("read the last announcement"),
    };
    let retained = retained(cfg, &model_topic(fleet, model), Duration::from_secs(2))
        .await?
        .pop()
        .and_then(|(_, payload)| serde_json::from_slice::<Announcement>(&payload).ok());
    Ok(trusted(key, fleet, model, [stored, retained]))
}

/// The valid announcement with the highest release among `candidates`.
fn trusted(
    key: &ed25519_dalek::VerifyingKey,
    fleet: &str,
    model: &str,
    candidates: impl IntoIterator<Item = Option<Announcement>>,
) -> Option<Announcement> {
    let mut best: Option<Announcement> = None;
    for a in candidates.into_iter().flatten() {
        match a.verify(key, fleet) {
            Ok(m) if m.model == model => {
                if best.as_ref().is_none_or(|b| b.release < a.release) {
                    best = Some(a);
                }
            }
            Ok(_) => eprintln!("ferry: ignoring an announcement of {model} that names another model"),
            Err(e) => eprintln!("ferry: ignoring an announcement of {model} in fleet {fleet}: {e}"),
        }
    }
    best
}

/// Publishes a retained announcement and waits for the broker's acknowledgement.
async fn publish(cfg: &ClientConfig, fleet: &str, ann: &Announcement) -> Result<()> {
    let (client, mut events) = mqtt(cfg, "push")?;
    let topic = model_topic(fleet, &ann.manifest.manifest.model);
    client.publish(topic, QoS::AtLeastOnce, true, serde_json::to_vec(ann)?).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ev = tokio::time::timeout_at(deadline.into(), events.poll())
            .await
            .with_context(|| format!("the MQTT broker {} did not acknowledge the announcement", cfg.mqtt))?
            .with_context(|| format!("MQTT broker {}", cfg.mqtt))?;
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            break;
        }
    }
    let _ = client.disconnect().await;
    // Let the disconnect go out.
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while let Ok(ev) = events.poll().await {
            if let Event::Outgoing(Outgoing::Disconnect) = ev {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// Retained messages on `filter`, collected for `wait`.
async fn retained(cfg: &ClientConfig, filter: &str, wait: Duration) -> Result<Vec<(String, Vec<u8>)>> {
    let (client, mut events) = mqtt(cfg, "read")?;
    client.subscribe(filter, QoS::AtLeastOnce).await?;
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut connected = false;
    while let Ok(ev) = tokio::time::timeout_at(deadline.into(), events.poll()).await {
        match ev.with_context(|| format!("MQTT broker {}", cfg.mqtt))? {
            Event::Incoming(Packet::ConnAck(_)) => connected = true,
            Event::Incoming(Packet::Publish(p)) if !p.payload.is_empty() => {
                out.push((p.topic.clone(), p.payload.to_vec()))
            }
            _ => {}
        }
    }
    if !connected {
        bail!("no answer from the MQTT broker {}", cfg.mqtt);
    }
    let _ = client.disconnect().await;
    Ok(out)
}

/// The announcement in force for a model: the newest validly signed one.
async fn current(cfg: &ClientConfig, cluster: &Cluster, fleet: &str, model: &str) -> Result<Announcement> {
    let key = load_verifying_key(&cfg.certs)?;
    last_announced(cfg, cluster, &key, model, fleet)
        .await?
        .with_context(|| format!("nothing was pushed for {model} in fleet {fleet}"))
}

/// `ferry model push`.
pub async fn push(
    cfg: &ClientConfig,
    config_path: &Path,
    name: &str,
    file: &Path,
    fleet: &str,
    canary: u8,
) -> Result<()> {
    let (model, version) = split_name(name)?;
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", file.display()))?
        .to_string();
    // Refused before anything is uploaded.
    for (what, name) in [("model", &model), ("version", &version), ("file name", &file_name)] {
        if !ferry_protocol::manifest::plain_name(name) {
            bail!(
                "{what} {name:?} is not a plain name (1-128 of letters, digits, '-', '_', '.'; not starting with '.')"
            );
        }
    }
    let key = load_signing_key(&cfg.certs)?;
    let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    let cluster = crate::read::connect(cfg).await?;

    let path = file.to_path_buf();
    let (chunks, _) = tokio::task::spawn_blocking(move || ferry_protocol::chunk::cut(&path, 0, size, true)).await??;
    let bar = indicatif::ProgressBar::new(size).with_message(format!("{model} {version}"));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let src = Arc::new(std::fs::File::open(file)?);
    let mut seen = HashSet::new();
    let unique: Vec<_> = chunks.iter().filter(|c| seen.insert(c.2)).cloned().collect();
    let mut uploads = futures::stream::iter(unique.into_iter().map(|(off, len, hash)| {
        let (cluster, src, bar) = (cluster.clone(), src.clone(), bar.clone());
        async move {
            let path = chunk_path(&hash);
            // A chunk already stored is checked, not trusted: a bad copy
            // would fail this version (and every later one holding it) on
            // every robot.
            let mut stored = Vec::new();
            let (sent, repaired) = match cluster.read_to(&path, 0, None, &mut stored).await {
                Ok(_) if stored.len() == len as usize && blake3::hash(&stored).as_bytes() == &hash => (0, false),
                found => {
                    let mut buf = vec![0u8; len as usize];
                    src.read_exact_at(&mut buf, off)?;
                    put_bytes(&cluster, &path, &buf).await?;
                    (u64::from(len), found.is_ok())
                }
            };
            if repaired {
                bar.suspend(|| eprintln!("ferry: {path} in the store did not match its hash; uploaded it again"));
            }
            bar.inc(u64::from(len));
            Ok::<(u64, bool), anyhow::Error>((sent, repaired))
        }
    }))
    .buffer_unordered(UPLOADS);
    let (mut uploaded, mut repaired) = (0u64, 0u64);
    while let Some(r) = uploads.next().await {
        let (sent, fixed) = r?;
        uploaded += sent;
        repaired += u64::from(fixed);
    }
    bar.finish_and_clear();

    let manifest = Manifest {
        fleet: fleet.to_string(),
        model: model.clone(),
        version: version.clone(),
        file: file_name,
        size,
        created_ms: SystemClock.now_ms(),
        chunks: chunks.iter().map(|(_, len, h)| ManifestChunk::new(h, *len)).collect(),
    };
    let signed = manifest.sign(&key);
    signed.verify(&key.verifying_key(), fleet).context("the new manifest does not verify")?;
    let record = format!("/models/{model}/{version}/manifest.json");
    put_bytes(&cluster, &record, &serde_json::to_vec(&signed)?).await?;
    announce(cfg, &cluster, &key, signed, canary, false).await?;
    println!(
        "pushed {model} {version} to fleet {fleet}{}: {} in {} chunks, {} uploaded{}",
        if canary < 100 { format!(" (canary {canary}%)") } else { String::new() },
        crate::read::human(size),
        chunks.len(),
        crate::read::human(uploaded),
        if repaired > 0 { format!(", {repaired} corrupt stored chunk(s) repaired") } else { String::new() }
    );
    println!(
        "follow it with: {} model status {model} --fleet {fleet} --config {}",
        crate::invoked_as(),
        config_path.display()
    );
    Ok(())
}

async fn put_bytes(cluster: &Cluster, path: &str, bytes: &[u8]) -> Result<()> {
    cluster.put_bytes(path, bytes).await.with_context(|| format!("upload {path}"))?;
    Ok(())
}

/// `ferry model status`.
pub async fn status(cfg: &ClientConfig, model: &str, fleet: &str, wait: Duration, json: bool) -> Result<()> {
    let key = load_verifying_key(&cfg.certs)?;
    let msgs = retained(cfg, &format!("ferry/{fleet}/+/{model}/#"), wait).await?;
    let mut candidates = Vec::new();
    let mut devices: Vec<DeviceStatus> = Vec::new();
    for (topic, payload) in msgs {
        if topic == model_topic(fleet, model) {
            candidates.push(serde_json::from_slice::<Announcement>(&payload).ok());
        } else if let Ok(s) = serde_json::from_slice::<DeviceStatus>(&payload) {
            devices.retain(|d| d.device != s.device);
            devices.push(s);
        }
    }
    // What the namespace keeps counts as much as what the broker retains
    // (a forged retained message can replace the real one there).
    let cluster = crate::read::connect(cfg).await?;
    let mut kept = Vec::new();
    if cluster.read_to(&announcement_record(model, fleet), 0, None, &mut kept).await.is_ok() {
        candidates.push(serde_json::from_slice::<Announcement>(&kept).ok());
    }
    // The announcement topic has no level after the model; ask for it directly.
    if candidates.is_empty() {
        candidates.push(
            retained(cfg, &model_topic(fleet, model), Duration::from_secs(2))
                .await?
                .pop()
                .and_then(|(_, p)| serde_json::from_slice::<Announcement>(&p).ok()),
        );
    }
    let announced = trusted(&key, fleet, model, candidates);
    devices.sort_by(|a, b| a.device.cmp(&b.device));
    if json {
        println!("{}", serde_json::json!({ "announced": announced, "devices": devices }));
        return Ok(());
    }
    match &announced {
        Some(a) => println!(
            "{model} in fleet {fleet}: {} announced{}",
            a.manifest.manifest.version,
            if a.canary_pct < 100 { format!(" to {}% (canary)", a.canary_pct) } else { String::new() }
        ),
        None => println!("{model} in fleet {fleet}: nothing announced"),
    }
    if devices.is_empty() {
        println!("no device has reported");
        return Ok(());
    }
    println!(
        "{:<16} {:<12} {:<10} {:<10} {:>10} {:>10}  error",
        "device", "state", "version", "running", "fetched", "reused"
    );
    for d in devices {
        println!(
            "{:<16} {:<12} {:<10} {:<10} {:>10} {:>10}  {}",
            d.device,
            d.state,
            d.version,
            if d.current.is_empty() { "-" } else { &d.current },
            crate::read::human(d.fetched),
            crate::read::human(d.reused),
            d.error
        );
    }
    Ok(())
}

/// One model in one fleet, for `ferry model status` without a model.
#[derive(Debug, serde::Serialize)]
struct Rollout {
    model: String,
    fleet: String,
    /// The version announced (validly signed), if any.
    announced: Option<String>,
    canary_pct: u8,
    devices: usize,
    /// Devices running the announced version.
    running_announced: usize,
    /// Devices per state of their last report.
    states: std::collections::BTreeMap<String, usize>,
}

/// `ferry model status` without a model: every model announced (in the
/// namespace's records, or reported on by devices) in every fleet, or in
/// `fleet` only, with its devices counted per state.
pub async fn overview(cfg: &ClientConfig, fleet: Option<&str>, wait: Duration, json: bool) -> Result<()> {
    let key = load_verifying_key(&cfg.certs)?;
    let cluster = crate::read::connect(cfg).await?;
    let mut rollouts: std::collections::BTreeMap<(String, String), Rollout> = Default::default();
    let models = match cluster.list("/models").await {
        Ok(entries) => entries,
        Err(ferry_protocol::ProtocolError::Remote { code: ferry_protocol::ErrorCode::NotFound, .. }) => Vec::new(),
        Err(e) => return Err(e).context("list /models"),
    };
    for m in models.iter().filter(|e| e.info.kind == ferry_protocol::codec::EntryKind::Dir) {
        let Ok(records) = cluster.list(&format!("/models/{}/announced", m.name)).await else { continue };
        for r in records {
            let Some(f) = r.name.strip_suffix(".json") else { continue };
            if fleet.is_some_and(|want| want != f) {
                continue;
            }
            let mut kept = Vec::new();
            let record = match cluster.read_to(&announcement_record(&m.name, f), 0, None, &mut kept).await {
                Ok(_) => serde_json::from_slice::<Announcement>(&kept).ok(),
                Err(_) => None,
            };
            let r = rollout(&mut rollouts, &m.name, f);
            if let Some(a) = trusted(&key, f, &m.name, [record]) {
                r.announced = Some(a.manifest.manifest.version.clone());
                r.canary_pct = a.canary_pct;
            }
        }
    }
    let filter = format!("ferry/{}/status/#", fleet.unwrap_or("+"));
    let mut latest: std::collections::HashMap<(String, String, String), DeviceStatus> = Default::default();
    for (topic, payload) in retained(cfg, &filter, wait).await? {
        // ferry/FLEET/status/MODEL/DEVICE
        let parts: Vec<&str> = topic.split('/').collect();
        let [_, f, _, model, device] = parts[..] else { continue };
        let Ok(s) = serde_json::from_slice::<DeviceStatus>(&payload) else { continue };
        if s.device != device || s.model != model {
            continue;
        }
        latest.insert((model.to_string(), f.to_string(), device.to_string()), s);
    }
    for ((model, f, _), s) in latest {
        let r = rollout(&mut rollouts, &model, &f);
        r.devices += 1;
        *r.states.entry(s.state.clone()).or_default() += 1;
        if r.announced.as_deref().is_some_and(|v| v == s.current) {
            r.running_announced += 1;
        }
    }
    let rollouts: Vec<Rollout> = rollouts.into_values().collect();
    if json {
        println!("{}", serde_json::json!({ "models": rollouts }));
        return Ok(());
    }
    if rollouts.is_empty() {
        println!("no model has been pushed{}", fleet.map(|f| format!(" to fleet {f}")).unwrap_or_default());
        return Ok(());
    }
    println!("{:<20} {:<12} {:<16} {:>7} {:>9}  states", "model", "fleet", "announced", "devices", "running");
    for r in rollouts {
        let announced = match &r.announced {
            Some(v) if r.canary_pct < 100 => format!("{v} ({}%)", r.canary_pct),
            Some(v) => v.clone(),
            None => "-".into(),
        };
        let states: Vec<String> = r.states.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "{:<20} {:<12} {:<16} {:>7} {:>9}  {}",
            r.model,
            r.fleet,
            announced,
            r.devices,
            r.running_announced,
            if states.is_empty() { "-".to_string() } else { states.join(", ") }
        );
    }
    Ok(())
}

/// The row of `model` in `fleet`, added if new.
fn rollout<'a>(
    rollouts: &'a mut std::collections::BTreeMap<(String, String), Rollout>,
    model: &str,
    fleet: &str,
) -> &'a mut Rollout {
    rollouts.entry((model.to_string(), fleet.to_string())).or_insert_with(|| Rollout {
        model: model.to_string(),
        fleet: fleet.to_string(),
        announced: None,
        canary_pct: 0,
        devices: 0,
        running_announced: 0,
        states: Default::default(),
    })
}

/// `ferry model rollback`: announce the version pushed before the current one.
pub async fn rollback(cfg: &ClientConfig, model: &str, fleet: &str) -> Result<()> {
    let key = load_signing_key(&cfg.certs)?;
    let cluster = crate::read::connect(cfg).await?;
    let now = current(cfg, &cluster, fleet, model).await?;
    let entries =
        cluster.list(&format!("/models/{model}")).await.with_context(|| format!("list versions of {model}"))?;
    let mut best: Option<SignedManifest> = None;
    for e in entries {
        let mut bytes = Vec::new();
        if cluster.read_to(&format!("/models/{model}/{}/manifest.json", e.name), 0, None, &mut bytes).await.is_err() {
            continue;
        }
        let Ok(sm) = serde_json::from_slice::<SignedManifest>(&bytes) else { continue };
        if sm.verify(&key.verifying_key(), fleet).is_err() {
            continue;
        }
        let m = &sm.manifest;
        if m.fleet == fleet
            && m.created_ms < now.manifest.manifest.created_ms
            && best.as_ref().is_none_or(|b| b.manifest.created_ms < m.created_ms)
        {
            best = Some(sm);
        }
    }
    let prev = best.with_context(|| {
        format!("no version of {model} was pushed to {fleet} before {}", now.manifest.manifest.version)
    })?;
    let version = prev.manifest.version.clone();
    announce(cfg, &cluster, &key, prev, 100, true).await?;
    println!("rolled {model} in fleet {fleet} back from {} to {version}", now.manifest.manifest.version);
    Ok(())
}

/// `ferry model promote`: the announced canary goes to every device.
pub async fn promote(cfg: &ClientConfig, model: &str, fleet: &str) -> Result<()> {
    let key = load_signing_key(&cfg.certs)?;
    let cluster = crate::read::connect(cfg).await?;
    let now = current(cfg, &cluster, fleet, model).await?;
    if now.canary_pct >= 100 {
        println!("{model} {} already goes to every device of {fleet}", now.manifest.manifest.version);
        return Ok(());
    }
    let rollback = now.rollback;
    announce(cfg, &cluster, &key, now.manifest.clone(), 100, rollback).await?;
    println!("promoted {model} {} to every device of {fleet}", now.manifest.manifest.version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_model_and_version() {
        assert_eq!(split_name("detector-v7").expect("split"), ("detector".into(), "v7".into()));
        assert_eq!(split_name("lane-net-v2").expect("split"), ("lane-net".into(), "v2".into()));
        assert_eq!(split_name("lane-net@2024-06-01").expect("split"), ("lane-net".into(), "2024-06-01".into()));
        assert!(split_name("detector").is_err());
        assert!(split_name("detector-").is_err());
    }
}
