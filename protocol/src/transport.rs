//! quinn endpoints tuned for bulk transfer.
//!
//! Defaults in quinn suit the internet at large; ferry moves pages of
//! megabytes between machines in one data centre or over loopback, so:
//!
//! - endpoints accept datagrams up to [`MTU_UPPER_BOUND`] bytes and MTU
//!   discovery probes up to it (loopback and jumbo-frame networks carry far
//!   more than quinn's 1472-byte default; probing stops at what the path
//!   actually carries);
//! - stream and connection flow-control windows are large enough for many
//!   pages in flight;
//! - UDP socket buffers are raised as far as the kernel allows, since a full
//!   receive buffer drops packets and collapses throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, MtuDiscoveryConfig, TransportConfig, VarInt};

use crate::error::ProtocolError;
use crate::tls::TlsMaterial;

/// Largest UDP payload MTU discovery will try.
pub const MTU_UPPER_BOUND: u16 = 65_000;
/// Per-stream receive window.
pub const STREAM_WINDOW: u32 = 16 << 20;
/// Per-connection receive window.
pub const CONNECTION_WINDOW: u32 = 128 << 20;
/// Socket buffer size asked of the kernel.
pub const SOCKET_BUFFER: usize = 16 << 20;

/// The transport parameters used by every ferry endpoint.
pub fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    t.mtu_discovery_config(Some(mtu));
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(CONNECTION_WINDOW));
    t.send_window(u64::from(CONNECTION_WINDOW));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Pages are whole responses; interleaving streams packet by packet buys nothing.
    t.send_fairness(false);
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    t
}

fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, ProtocolError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint, ProtocolError> {
    let socket = udp_socket(addr)?;
    let runtime = quinn::default_runtime().ok_or_else(|| ProtocolError::Connection("no async runtime".into()))?;
    // The endpoint advertises how large a datagram it accepts; quinn's default
    // (1472) would cap MTU discovery no matter the upper bound.
    let mut config = EndpointConfig::default();
    config
        .max_udp_payload_size(MTU_UPPER_BOUND)
        .map_err(|e| ProtocolError::Connection(format!("max UDP payload: {e}")))?;
    quinn::Endpoint::new(config, server, socket, runtime).map_err(ProtocolError::Io)
}

/// A server endpoint listening on `addr` with mutual TLS.
pub fn server_endpoint(addr: SocketAddr, tls: &TlsMaterial) -> Result<quinn::Endpoint, ProtocolError> {
    let crypto = QuicServerConfig::try_from(tls.server_config()?).map_err(|e| ProtocolError::Tls(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    endpoint(addr, Some(cfg))
}

/// A client endpoint presenting `tls`'s identity.
pub fn client_endpoint(tls: &TlsMaterial) -> Result<quinn::Endpoint, ProtocolError> {
    let crypto = QuicClientConfig::try_from(tls.client_config()?).map_err(|e| ProtocolError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    let bind: SocketAddr = "0.0.0.0:0".parse().expect("literal socket address");
    let mut ep = endpoint(bind, None)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}
