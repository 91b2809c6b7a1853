//! Signed model manifests and their MQTT announcements.
//!
//! A model version is one file cut into content-defined chunks; each chunk
//! is an object `/models/chunks/HASH` (BLAKE3 of its bytes, hex) in the
//! namespace, and the manifest lists them in order. The fleet's ed25519 key
//! signs the manifest's canonical bytes (compact JSON of [`Manifest`], in
//! field order). An [`Announcement`] carries a signed manifest and the
//! rollout's canary share; it is published retained on
//! `ferry/FLEET/models/MODEL`. Devices report on
//! `ferry/FLEET/status/MODEL/DEVICE` (retained [`DeviceStatus`]).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Namespace directory of model chunks.
pub const CHUNK_DIR: &str = "/models/chunks";

/// The namespace path of a chunk.
pub fn chunk_path(hash: &[u8; 32]) -> String {
    format!("{CHUNK_DIR}/{}", hex::encode(hash))
}

/// Topic of a model's announcement.
pub fn model_topic(fleet: &str, model: &str) -> String {
    format!("ferry/{fleet}/models/{model}")
}

/// Topic of a device's status for a model.
pub fn status_topic(fleet: &str, model: &str, device: &str) -> String {
    format!("ferry/{fleet}/status/{model}/{device}")
}

/// One chunk of a model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestChunk {
    /// BLAKE3 of the bytes, hex.
    pub hash: String,
    /// Length in bytes.
    pub len: u32,
}

impl ManifestChunk {
    /// The entry of a chunk with BLAKE3 `hash` and `len` bytes.
    pub fn new(hash: &[u8; 32], len: u32) -> ManifestChunk {
        ManifestChunk { hash: hex::encode(hash), len }
    }
}

/// What a version is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Fleet it is for.
    pub fleet: String,
    /// Model name.
    pub model: String,
    /// Version name.
    pub version: String,
    /// File name it installs as.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was pushed, ms since the Unix epoch.
    pub created_ms: i64,
    /// The file's chunks in order.
    pub chunks: Vec<ManifestChunk>,
}

/// A manifest with the fleet key's signature over its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// ed25519 signature, hex.
    pub signature: String,
}

/// A rollout as published on MQTT.
///
/// The fleet key signs the announcement itself too ([`Announcement::sign`]):
/// its release number, which grows with every announcement of a model to
/// a fleet (push, rollback, promote), and its canary share. A device keeps
/// the highest release it accepted and refuses a lower one, so a replayed
/// old announcement (correctly signed once) changes nothing; and it moves
/// to an older version only for an announcement marked `rollback`, which
/// only `ferry model rollback` makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The version to run.
    pub manifest: SignedManifest,
    /// Share of devices (0-100) that install it; the others stay where they are.
    pub canary_pct: u8,
    /// Grows with every announcement of this model to this fleet
    /// (ms since the Unix epoch when made, or one more than the last).
    #[serde(default)]
    pub release: u64,
    /// Made by `ferry model rollback`: the version may be older than the
    /// one a device runs.
    #[serde(default)]
    pub rollback: bool,
    /// ed25519 signature (hex) over [`Announcement::canonical`].
    #[serde(default)]
    pub signature: String,
}

impl Announcement {
    /// A signed announcement of `manifest`.
    pub fn sign(manifest: SignedManifest, canary_pct: u8, release: u64, rollback: bool, key: &SigningKey) -> Self {
        let mut a = Announcement { manifest, canary_pct, release, rollback, signature: String::new() };
        a.signature = hex::encode(key.sign(&a.canonical()).to_bytes());
        a
    }

    /// The bytes the announcement's signature covers: what it announces
    /// (the manifest, through its signature), to whom, and in which order.
    pub fn canonical(&self) -> Vec<u8> {
        let m = &self.manifest.manifest;
        serde_json::to_vec(&serde_json::json!([
            "ferry-announcement-1",
            m.fleet,
            m.model,
            m.version,
            self.manifest.signature,
            self.canary_pct,
            self.release,
            self.rollback,
        ]))
        .expect("an announcement always serializes")
    }

    /// Checks both signatures with the fleet's key and that it is for
    /// `fleet`; gives the manifest.
    pub fn verify(&self, key: &VerifyingKey, fleet: &str) -> Result<&Manifest, ManifestError> {
        let m = self.manifest.verify(key, fleet)?;
        if self.signature.is_empty() {
            return Err(ManifestError::Unsigned);
        }
        let bytes = hex::decode(&self.signature).map_err(|_| ManifestError::BadSignature)?;
        let sig = Signature::from_slice(&bytes).map_err(|_| ManifestError::BadSignature)?;
        key.verify(&self.canonical(), &sig).map_err(|_| ManifestError::BadSignature)?;
        if self.canary_pct > 100 {
            return Err(ManifestError::Malformed(format!("canary share {}%", self.canary_pct)));
        }
        Ok(m)
    }
}

/// Why a manifest is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Malformed.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// The signature does not verify with the fleet key.
    #[error("signature does not verify with the fleet key")]
    BadSignature,
    /// Meant for another fleet.
    #[error("manifest is for fleet {0:?}")]
    OtherFleet(String),
    /// The announcement carries no signature of its own (made by a ferry
    /// before announcements were signed, or by someone without the key).
    #[error("announcement is not signed: push it again with this ferry")]
    Unsigned,
}

impl Manifest {
    /// The canonical bytes the signature covers.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// Signs with the fleet key.
    pub fn sign(self, key: &SigningKey) -> SignedManifest {
        let signature = hex::encode(key.sign(&self.canonical()).to_bytes());
        SignedManifest { manifest: self, signature }
    }

    /// The chunk hashes as bytes.
    pub fn hashes(&self) -> Result<Vec<[u8; 32]>, ManifestError> {
        self.chunks
            .iter()
            .map(|c| {
                let v = hex::decode(&c.hash).map_err(|e| ManifestError::Malformed(format!("chunk hash: {e}")))?;
                <[u8; 32]>::try_from(v.as_slice())
                    .map_err(|_| ManifestError::Malformed("chunk hash is not 32 bytes".into()))
            })
            .collect()
    }
}

impl SignedManifest {
    /// Checks the signature with the fleet's public key and that it is for `fleet`.
    pub fn verify(&self, key: &VerifyingKey, fleet: &str) -> Result<&Manifest, ManifestError> {
        let bytes = hex::decode(&self.signature).map_err(|_| ManifestError::BadSignature)?;
        let sig = Signature::from_slice(&bytes).map_err(|_| ManifestError::BadSignature)?;
        key.verify(&self.manifest.canonical(), &sig).map_err(|_| ManifestError::BadSignature)?;
        let m = &self.manifest;
        if m.fleet != fleet {
            return Err(ManifestError::OtherFleet(m.fleet.clone()));
        }
        let total: u64 = m.chunks.iter().map(|c| u64::from(c.len)).sum();
        if total != m.size {
            return Err(ManifestError::Malformed(format!("chunks hold {total} bytes, size says {}", m.size)));
        }
        if !plain_name(&m.model) || !plain_name(&m.version) || !plain_name(&m.file) {
            return Err(ManifestError::Malformed("model, version and file must be plain names".into()));
        }
        m.hashes()?;
        Ok(m)
    }
}

/// Whether `s` may be a model, version or file name: 1-128 of ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.`.
pub fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with('.')
}

/// What a device reports about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The device.
    pub device: String,
    /// The model.
    pub model: String,
    /// The version this is about.
    pub version: String,
    /// `downloading`, `verifying`, `installed`, `failed`, `skipped` (not in
    /// the canary share) or `refused` (older than what the device accepted).
    pub state: String,
    /// The version running now ("" if none).
    pub current: String,
    /// Bytes fetched over the network for this version.
    pub fetched: u64,
    /// Bytes reused from versions already on the device.
    pub reused: u64,
    /// What went wrong, for `failed`.
    pub error: String,
    /// When, ms since the Unix epoch.
    pub at_ms: i64,
}

/// Whether `device` is in the first `pct` percent for `version` (a stable draw per device and version).
pub fn in_canary(device: &str, version: &str, pct: u8) -> bool {
    if pct >= 100 {
        return true;
    }
    let h = blake3::hash(format!("{device}\0{version}").as_bytes());
    let draw = u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) % 100;
    draw < u16::from(pct)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            fleet: "warehouse-a".into(),
            model: "detector".into(),
            version: "v7".into(),
            file: "model.safetensors".into(),
            size: 3,
            created_ms: 1,
            chunks: vec![ManifestChunk { hash: hex::encode([1u8; 32]), len: 3 }],
        }
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let signed = manifest().sign(&key);
        signed.verify(&key.verifying_key(), "warehouse-a").expect("verifies");
        assert_eq!(signed.verify(&other.verifying_key(), "warehouse-a"), Err(ManifestError::BadSignature));
        assert!(matches!(signed.verify(&key.verifying_key(), "warehouse-b"), Err(ManifestError::OtherFleet(_))));
        let mut tampered = signed.clone();
        tampered.manifest.chunks[0].hash = hex::encode([2u8; 32]);
        assert_eq!(tampered.verify(&key.verifying_key(), "warehouse-a"), Err(ManifestError::BadSignature));
        let json = serde_json::to_string(&signed).expect("json");
        let back: SignedManifest = serde_json::from_str(&json).expect("parse");
        back.verify(&key.verifying_key(), "warehouse-a").expect("round trip verifies");
    }

    #[test]
    fn announcements_are_signed_as_a_whole() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let a = Announcement::sign(manifest().sign(&key), 10, 5, false, &key);
        a.verify(&key.verifying_key(), "warehouse-a").expect("verifies");
        let json = serde_json::to_string(&a).expect("json");
        let back: Announcement = serde_json::from_str(&json).expect("parse");
        back.verify(&key.verifying_key(), "warehouse-a").expect("round trip verifies");
        // Each field the device acts on is covered.
        for tamper in [
            |a: &mut Announcement| a.canary_pct = 100,
            |a: &mut Announcement| a.release = 6,
            |a: &mut Announcement| a.rollback = true,
        ] {
            let mut t = a.clone();
            tamper(&mut t);
            assert_eq!(t.verify(&key.verifying_key(), "warehouse-a"), Err(ManifestError::BadSignature));
        }
        let forged = Announcement::sign(manifest().sign(&key), 10, 6, false, &other);
        assert_eq!(forged.verify(&key.verifying_key(), "warehouse-a"), Err(ManifestError::BadSignature));
        let unsigned = Announcement { signature: String::new(), ..a };
        assert_eq!(unsigned.verify(&key.verifying_key(), "warehouse-a"), Err(ManifestError::Unsigned));
    }

    #[test]
    fn canary_share_is_roughly_honoured_and_stable() {
        let n = (0..1000).filter(|i| in_canary(&format!("robot-{i}"), "v7", 10)).count();
        assert!((60..=140).contains(&n), "{n} of 1000 in a 10% canary");
        // Growing a canary keeps every device already in it.
        for i in 0..1000 {
            let d = format!("robot-{i}");
            if in_canary(&d, "v7", 10) {
                assert!(in_canary(&d, "v7", 50), "{d} left the canary as it grew");
            }
        }
        // Each version draws its own devices, so one unlucky robot is not first every time.
        let draw = |v: &str| (0..1000).filter(|i| in_canary(&format!("robot-{i}"), v, 10)).collect::<Vec<_>>();
        assert_ne!(draw("v7"), draw("v8"));
        assert!(in_canary("robot-3", "v7", 100));
        assert!(!in_canary("robot-3", "v7", 0));
    }
}
