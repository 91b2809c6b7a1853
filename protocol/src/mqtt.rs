//! How every ferry process reaches the fleet's MQTT broker: the robot's
//! model receiver and the operator's `ferry model` commands share these
//! options (keep-alive, packet limits, credentials, TLS with a given CA).
//! Topics and payloads are in [`crate::manifest`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::MqttOptions;

/// A broker address or TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MqttError(String);

/// Splits `host:port`.
pub fn broker(addr: &str) -> Result<(String, u16), MqttError> {
    let (h, p) = addr.rsplit_once(':').ok_or_else(|| MqttError(format!("mqtt {addr:?} is not HOST:PORT")))?;
    let port = p.parse().map_err(|_| MqttError(format!("mqtt {addr:?}: bad port")))?;
    Ok((h.trim_matches(['[', ']']).to_string(), port))
}

/// How to reach an MQTT broker.
#[derive(Debug, Clone, Copy)]
pub struct BrokerAccess<'a> {
    /// `host:port`.
    pub addr: &'a str,
    /// User name (empty: none).
    pub user: &'a str,
    /// Password.
    pub password: &'a str,
    /// CA of a TLS broker (empty path: plain TCP).
    pub ca: &'a Path,
}

/// MQTT options for client `id`.
pub fn mqtt_options(id: &str, b: BrokerAccess<'_>) -> Result<MqttOptions, MqttError> {
    let (host, port) = broker(b.addr)?;
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_max_packet_size(4 << 20, 4 << 20);
    if !b.user.is_empty() {
        o.set_credentials(b.user, b.password);
    }
    if !b.ca.as_os_str().is_empty() {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(b.ca)
            .map_err(|e| MqttError(format!("mqtt CA {}: {e}", b.ca.display())))?
        {
            let cert = cert.map_err(|e| MqttError(format!("mqtt CA {}: {e}", b.ca.display())))?;
            roots.add(cert).map_err(|e| MqttError(format!("mqtt CA {}: {e}", b.ca.display())))?;
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| MqttError(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(cfg))));
    }
    Ok(o)
}
