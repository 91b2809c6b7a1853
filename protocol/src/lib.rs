//! ferry's block protocol, shared by cache nodes, edge agents and clients.
//!
//! A tour of the modules:
//!
//! - [`codec`]: the wire format. Pure: bytes in, [`codec::Request`] /
//!   [`codec::Response`] out, or [`codec::DecodeError::Incomplete`] when more
//!   bytes are needed. Documented byte by byte in `docs/PROTOCOL.md`.
//! - [`ids`]: newtypes for the names that cross the wire (roles, node ids,
//!   page indices, chunk hashes) and namespace path validation.
//! - [`tls`]: the fleet CA, node identities (role and id in the certificate),
//!   and the rustls configurations for mutual TLS.
//! - [`transport`]: quinn endpoints tuned for bulk transfer.
//! - [`wire`]: the thin async layer that moves codec frames over QUIC streams.
//! - [`ring`]: consistent hashing with virtual nodes (who owns a page).
//! - [`membership`]: the member list, fixed or watched in etcd (`etcd`,
//!   feature `etcd`: leased registration, the pending-write registry).
//! - [`client`]: a cluster-aware client: picks each page's owner itself and
//!   falls back to the next owner when a node fails.
//! - [`chunk`]: content-defined chunking (FastCDC) and the zstd encoding of
//!   chunks, both directions, for logs, commits and model weights.
//! - [`manifest`]: signed model manifests and fleet announcements.
//! - [`clock`]: the one place that reads the wall clock; logic takes a
//!   [`clock::Clock`].
//! - `mqtt` (feature `mqtt`): options for reaching the fleet's broker.

pub mod chunk;
pub mod client;
pub mod clock;
pub mod codec;
pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod ids;
pub mod manifest;
pub mod membership;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod ring;
pub mod tls;
pub mod transport;
pub mod wire;

pub use quinn;

pub use error::{ErrorCode, ProtocolError};

/// Version of the block protocol spoken by this build. Sent in `Hello`.
pub const PROTOCOL_VERSION: u16 = 6;
/// ALPN identifier negotiated during the TLS handshake.
pub const ALPN: &[u8] = b"ferry/1";
