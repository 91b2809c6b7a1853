//! `ferry cert init|issue`: the fleet CA, the fleet's model-signing key, node identities.

use std::path::Path;

use anyhow::{Context, Result};
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ferry_protocol::ids::{NodeId, Role};
use ferry_protocol::tls;

/// File of the fleet's ed25519 model-signing key.
pub const SIGNING_KEY: &str = "fleet-signing.key";
/// File of its public half.
pub const SIGNING_PUB: &str = "fleet-signing.pub";

/// Creates the CA and the model-signing key in `dir`.
pub fn init(dir: &Path, fleet: &str) -> Result<()> {
    tls::init_ca(dir, fleet).with_context(|| format!("cannot create a CA in {}", dir.display()))?;
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let pem = key.to_pkcs8_pem(Default::default()).context("encode signing key")?;
    tls::write_private(&dir.join(SIGNING_KEY), pem.as_bytes())?;
    let public = key.verifying_key().to_public_key_pem(Default::default()).context("encode public key")?;
    std::fs::write(dir.join(SIGNING_PUB), public)?;
    Ok(())
}

/// Issues an identity.
pub fn issue(dir: &Path, role: Role, id: &str, hosts: &[String]) -> Result<()> {
    let id = NodeId::new(id).map_err(anyhow::Error::msg)?;
    let (cert, key) = tls::identity_paths(dir, &id);
    if cert.exists() || key.exists() {
        anyhow::bail!("identity {id} already exists in {}", dir.display());
    }
    tls::issue_for_hosts(dir, role, &id, hosts).with_context(|| format!("cannot issue {role} identity {id}"))?;
    Ok(())
}

#[cfg(feature = "cloud")]
/// Creates whatever of CA and identities is missing (used by `ferry up`).
pub fn ensure(dir: &Path, identities: &[(Role, &str)]) -> Result<()> {
    if !tls::ca_cert_path(dir).exists() {
        init(dir, "default")?;
    }
    for (role, id) in identities {
        let nid = NodeId::new(id).map_err(anyhow::Error::msg)?;
        if !tls::identity_paths(dir, &nid).0.exists() {
            issue(dir, *role, id, &[])?;
        }
    }
    Ok(())
}
