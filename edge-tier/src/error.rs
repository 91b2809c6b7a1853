//! The edge agent's error type.

use ferry_protocol::mqtt::MqttError;
use ferry_protocol::ProtocolError;

/// Why the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The spool database.
    #[error("spool: {0}")]
    Spool(#[from] rusqlite::Error),
    /// A local file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Talking to the cache nodes.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The MQTT broker's address or TLS setting.
    #[error("mqtt: {0}")]
    Mqtt(#[from] MqttError),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// Bytes under a recorded chunk changed: the file was rewritten.
    #[error("the file changed under a recorded chunk")]
    Rewritten,
}
