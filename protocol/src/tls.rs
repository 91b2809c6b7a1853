//! The fleet CA, node identities and mutual-TLS configurations.
//!
//! Every node holds a certificate signed by the fleet CA. The certificate's
//! subject carries the node's id as common name and its role as
//! organizational unit, and its DNS names are `ID.ROLE.ferry` and
//! `ROLE.ferry`. A client connects to any cache node with the server name
//! `cloud.ferry`, so it accepts exactly the cloud nodes of its own fleet;
//! a node accepts only peers whose certificate chains to the same CA.
//!
//! Files in a certificate directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the fleet CA (keep `ca.key` offline in production) |
//! | `ID.pem`, `ID.key` | a node identity issued by `ferry cert issue` |

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "issue")]
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ProtocolError;
use crate::ids::{Identity, NodeId, Role};

/// Server name a client uses to reach cloud nodes.
pub const CLOUD_SERVER_NAME: &str = "cloud.ferry";

/// The CA certificate file inside a certificate directory.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// The CA key file inside a certificate directory.
pub fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

/// Certificate and key file of a node identity.
pub fn identity_paths(dir: &Path, id: &NodeId) -> (PathBuf, PathBuf) {
    (dir.join(format!("{id}.pem")), dir.join(format!("{id}.key")))
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::tls(format!("{what}: {e}"))
}

#[cfg(feature = "issue")]
/// Creates a fleet CA in `dir` (`ca.pem`, `ca.key`). Refuses to overwrite.
pub fn init_ca(dir: &Path, fleet_name: &str) -> Result<(), ProtocolError> {
    std::fs::create_dir_all(dir)?;
    if ca_cert_path(dir).exists() || ca_key_path(dir).exists() {
        return Err(ProtocolError::tls(format!("a CA already exists in {}", dir.display())));
    }
    let key = KeyPair::generate().map_err(|e| tls_err("generate CA key", e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, format!("ferry fleet CA {fleet_name}"));
    params.distinguished_name.push(DnType::OrganizationName, "ferry");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&key).map_err(|e| tls_err("self-sign CA", e))?;
    write_private(&ca_key_path(dir), key.serialize_pem().as_bytes())?;
    std::fs::write(ca_cert_path(dir), cert.pem())?;
    Ok(())
}

#[cfg(feature = "issue")]
/// Issues a node identity signed by the CA in `dir`, writing `ID.pem` and `ID.key`.
pub fn issue(dir: &Path, role: Role, id: &NodeId) -> Result<(PathBuf, PathBuf), ProtocolError> {
    issue_for_hosts(dir, role, id, &[])
}

#[cfg(feature = "issue")]
/// Like [`issue`], also naming `hosts` (DNS names or IP addresses) in the
/// certificate, so it can serve TLS under those names (e.g. an MQTT broker).
pub fn issue_for_hosts(
    dir: &Path,
    role: Role,
    id: &NodeId,
    hosts: &[String],
) -> Result<(PathBuf, PathBuf), ProtocolError> {
    let ca_pem = std::fs::read_to_string(ca_cert_path(dir))
        .map_err(|e| tls_err(&format!("read {}", ca_cert_path(dir).display()), e))?;
    let ca_key_pem = std::fs::read_to_string(ca_key_path(dir))
        .map_err(|e| tls_err(&format!("read {}", ca_key_path(dir).display()), e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| tls_err("parse CA key", e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| tls_err("parse CA certificate", e))?;

    let key = KeyPair::generate().map_err(|e| tls_err("generate key", e))?;
    let mut names = vec![format!("{id}.{role}.ferry"), format!("{role}.ferry")];
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names).map_err(|e| tls_err("certificate names", e))?;
    params.distinguished_name.push(DnType::CommonName, id.as_str());
    params.distinguished_name.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name.push(DnType::OrganizationName, "ferry");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.signed_by(&key, &issuer).map_err(|e| tls_err("sign certificate", e))?;
    let (cert_path, key_path) = identity_paths(dir, id);
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, cert.pem())?;
    Ok((cert_path, key_path))
}

/// Writes a secret (private key) readable by its owner only, fsynced.
/// Never overwrites: an existing file is an error.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), ProtocolError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| tls_err(&format!("create {}", path.display()), e))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Reads the role and id out of a DER certificate issued by [`issue`].
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, ProtocolError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| tls_err("parse certificate", e))?;
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| ProtocolError::tls("certificate has no common name"))?;
    let ou = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| ProtocolError::tls("certificate names no role"))?;
    let role: Role = ou.parse().map_err(ProtocolError::tls)?;
    let id = NodeId::new(cn).map_err(|e| ProtocolError::tls_from("certificate common name", e))?;
    Ok(Identity { role, id })
}

/// A node's TLS material: the fleet CA and its own certificate and key.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The fleet CA certificate.
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
    /// This node's identity as read from its certificate.
    pub identity: Identity,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            identity: self.identity.clone(),
        }
    }
}

impl TlsMaterial {
    /// Loads `ca.pem` and a node identity from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<TlsMaterial, ProtocolError> {
        let ca = CertificateDer::from_pem_file(ca).map_err(|e| tls_err(&format!("read CA {}", ca.display()), e))?;
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| tls_err(&format!("read certificate {}", cert.display()), e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_err(&format!("parse certificate {}", cert.display()), e))?;
        let leaf = chain.first().ok_or_else(|| ProtocolError::tls(format!("no certificate in {}", cert.display())))?;
        let identity = identity_of(leaf)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(&format!("read key {}", key.display()), e))?;
        Ok(TlsMaterial { ca, chain, key, identity })
    }

    /// Loads the identity `id` from a certificate directory.
    pub fn load_dir(dir: &Path, id: &NodeId) -> Result<TlsMaterial, ProtocolError> {
        let (cert, key) = identity_paths(dir, id);
        TlsMaterial::load(&ca_cert_path(dir), &cert, &key)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        // AES-128-GCM first: as strong as needed here and cheaper per byte
        // than AES-256-GCM, which is what bulk transfer spends its CPU on.
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites = vec![
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        Arc::new(p)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, ProtocolError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(|e| tls_err("add CA to trust store", e))?;
        Ok(roots)
    }

    /// rustls server configuration requiring a client certificate from the fleet CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, ProtocolError> {
        let provider = Self::provider();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .map_err(|e| tls_err("client verifier", e))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err("server certificate", e))?;
        cfg.alpn_protocols = vec![crate::ALPN.to_vec()];
        cfg.max_early_data_size = 0;
        Ok(cfg)
    }

    /// rustls client configuration presenting this identity and trusting only the fleet CA.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, ProtocolError> {
        let provider = Self::provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("protocol versions", e))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err("client certificate", e))?;
        cfg.alpn_protocols = vec![crate::ALPN.to_vec()];
        Ok(cfg)
    }
}

/// The verified identity of the peer on a QUIC connection.
pub fn peer_identity(conn: &quinn::Connection) -> Result<Identity, ProtocolError> {
    let any = conn.peer_identity().ok_or_else(|| ProtocolError::tls("peer presented no certificate"))?;
    let certs = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| ProtocolError::tls("unexpected peer identity type"))?;
    let leaf = certs.first().ok_or_else(|| ProtocolError::tls("empty peer certificate chain"))?;
    identity_of(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_read_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        init_ca(dir.path(), "test").expect("init");
        assert!(init_ca(dir.path(), "test").is_err(), "CA must not be overwritten");
        let id = NodeId::new("robot-17").expect("id");
        issue(dir.path(), Role::Edge, &id).expect("issue");
        let m = TlsMaterial::load_dir(dir.path(), &id).expect("load");
        assert_eq!(m.identity, Identity { role: Role::Edge, id });
        m.server_config().expect("server config");
        m.client_config().expect("client config");
    }
}
