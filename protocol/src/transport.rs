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
//!   receive buffer drops packets and collapses throughput;
//! - a send never hands the kernel more than one UDP payload's worth of
//!   segments ([`BoundedGso`]): quinn batches up to ten datagrams of the path
//!   MTU per send (GSO), and with a 65000-byte MTU the kernel refused every
//!   batch of two or more, which quinn took for packet loss and then for an
//!   MTU black hole, dropping to 1200-byte packets for good;
//! - MTU discovery runs again a second after a black hole was detected
//!   (quinn's default is a minute), since congestion alone can look like one.
//!
//! A robot's endpoint ([`Link::Robot`]) keeps to Ethernet-sized datagrams
//! and windows sized for a cellular or Wi-Fi uplink: its paths carry 1500
//! bytes, and quinn sizes its receive buffer (and its send batches) by the
//! largest datagram the endpoint accepts — 64 KB datagrams cost a robot
//! megabytes it does not use.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, EndpointConfig, MtuDiscoveryConfig, TransportConfig, UdpPoller, VarInt};

use crate::error::ProtocolError;
use crate::tls::TlsMaterial;

/// Largest UDP payload MTU discovery will try.
pub const MTU_UPPER_BOUND: u16 = 65_000;
/// How soon MTU discovery runs again after a black hole was detected.
pub const BLACK_HOLE_COOLDOWN: Duration = Duration::from_secs(1);
/// Per-stream receive window.
pub const STREAM_WINDOW: u32 = 16 << 20;
/// Per-connection receive window.
pub const CONNECTION_WINDOW: u32 = 128 << 20;
/// Socket buffer size asked of the kernel.
pub const SOCKET_BUFFER: usize = 16 << 20;

/// Largest UDP payload a robot's endpoint accepts and probes for: an
/// Ethernet frame less the IPv6 and UDP headers.
pub const ROBOT_MTU_UPPER_BOUND: u16 = 1452;
/// A robot's per-stream receive window.
pub const ROBOT_STREAM_WINDOW: u32 = 4 << 20;
/// A robot's per-connection receive and send window: several seconds of a
/// fast uplink in flight.
pub const ROBOT_CONNECTION_WINDOW: u32 = 16 << 20;

/// Which links an endpoint is tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Nodes and clients in a data centre (or on one machine): large
    /// datagrams where the path carries them, large windows.
    Bulk,
    /// A robot's agent: Ethernet-sized datagrams and smaller windows, so
    /// that its memory stays small.
    Robot,
}

impl Link {
    fn mtu_upper_bound(self) -> u16 {
        match self {
            Link::Bulk => MTU_UPPER_BOUND,
            Link::Robot => ROBOT_MTU_UPPER_BOUND,
        }
    }

    /// How often an idle connection is pinged, and how long a connection
    /// that hears nothing lives. A data-centre client gives up on a node
    /// that went silent (killed, its host gone) after 10 s and reads from
    /// the next replica; a robot's uplink may drop out for longer than that.
    fn liveness(self) -> (Duration, Duration) {
        match self {
            Link::Bulk => (Duration::from_secs(2), Duration::from_secs(10)),
            Link::Robot => (Duration::from_secs(5), Duration::from_secs(30)),
        }
    }

    fn windows(self) -> (u32, u32) {
        match self {
            Link::Bulk => (STREAM_WINDOW, CONNECTION_WINDOW),
            Link::Robot => (ROBOT_STREAM_WINDOW, ROBOT_CONNECTION_WINDOW),
        }
    }
}

/// The transport parameters for an endpoint on `link`.
pub fn transport_config_for(link: Link) -> TransportConfig {
    let mut t = TransportConfig::default();
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(link.mtu_upper_bound());
    mtu.black_hole_cooldown(BLACK_HOLE_COOLDOWN);
    t.mtu_discovery_config(Some(mtu));
    let (stream, connection) = link.windows();
    t.stream_receive_window(VarInt::from_u32(stream));
    t.receive_window(VarInt::from_u32(connection));
    t.send_window(u64::from(connection));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Pages are whole responses; interleaving streams packet by packet buys nothing.
    t.send_fairness(false);
    set_liveness(&mut t, link);
    t
}

fn set_liveness(t: &mut TransportConfig, link: Link) {
    let (ping, idle) = link.liveness();
    t.keep_alive_interval(Some(ping));
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle).expect("idle timeout within QUIC's range")));
}

/// The transport parameters of a node: those of the data centre, except
/// that it accepts the longest idle time any of its clients asks for (the
/// shorter of the two sides' applies, so each client's own setting decides).
fn server_transport_config() -> TransportConfig {
    let mut t = transport_config_for(Link::Bulk);
    set_liveness(&mut t, Link::Robot);
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

/// Most bytes of UDP payload one send may carry in all, GSO segments
/// included (65535 less the IPv4 and UDP headers).
pub const MAX_SEND_PAYLOAD: usize = 65_507;

/// A UDP socket that splits a GSO batch larger than [`MAX_SEND_PAYLOAD`]
/// into sends the kernel accepts, each of whole segments.
#[derive(Debug)]
pub struct BoundedGso(Arc<dyn AsyncUdpSocket>);

impl AsyncUdpSocket for BoundedGso {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, t: &Transmit) -> io::Result<()> {
        let seg = match t.segment_size {
            Some(seg) if seg > 0 && t.contents.len() > MAX_SEND_PAYLOAD => seg,
            _ => return self.0.try_send(t),
        };
        let per_send = (MAX_SEND_PAYLOAD / seg).max(1) * seg;
        for part in t.contents.chunks(per_send) {
            let one = Transmit {
                destination: t.destination,
                ecn: t.ecn,
                contents: part,
                segment_size: (part.len() > seg).then_some(seg),
                src_ip: t.src_ip,
            };
            // On WouldBlock quinn sends the whole batch again later: the parts
            // already sent arrive twice, which the peer ignores, rather than never.
            self.0.try_send(&one)?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    link: Link,
) -> Result<quinn::Endpoint, ProtocolError> {
    let socket = udp_socket(addr)?;
    let runtime = quinn::default_runtime().ok_or_else(|| ProtocolError::connection("no async runtime"))?;
    let socket = Arc::new(BoundedGso(runtime.wrap_udp_socket(socket)?));
    // The endpoint advertises how large a datagram it accepts; quinn's default
    // (1472) would cap MTU discovery no matter the upper bound.
    let mut config = EndpointConfig::default();
    config
        .max_udp_payload_size(link.mtu_upper_bound())
        .map_err(|e| ProtocolError::connection_from(format!("max UDP payload: {e}"), e))?;
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime).map_err(ProtocolError::Io)
}

/// A server endpoint listening on `addr` with mutual TLS.
pub fn server_endpoint(addr: SocketAddr, tls: &TlsMaterial) -> Result<quinn::Endpoint, ProtocolError> {
    let crypto =
        QuicServerConfig::try_from(tls.server_config()?).map_err(|e| ProtocolError::tls_from(e.to_string(), e))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(server_transport_config()));
    endpoint(addr, Some(cfg), Link::Bulk)
}

/// A client endpoint presenting `tls`'s identity.
pub fn client_endpoint(tls: &TlsMaterial) -> Result<quinn::Endpoint, ProtocolError> {
    client_endpoint_for(tls, Link::Bulk)
}

/// A client endpoint presenting `tls`'s identity, tuned for `link`.
pub fn client_endpoint_for(tls: &TlsMaterial, link: Link) -> Result<quinn::Endpoint, ProtocolError> {
    let crypto =
        QuicClientConfig::try_from(tls.client_config()?).map_err(|e| ProtocolError::tls_from(e.to_string(), e))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config_for(link)));
    let bind: SocketAddr = "0.0.0.0:0".parse().expect("literal socket address");
    let mut ep = endpoint(bind, None, link)?;
    ep.set_default_client_config(cfg);
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the size and segment size of every send.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(usize, Option<usize>)>>);

    impl AsyncUdpSocket for Recorder {
        fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
            unreachable!("sends never block here")
        }
        fn try_send(&self, t: &Transmit) -> io::Result<()> {
            self.0.lock().expect("lock").push((t.contents.len(), t.segment_size));
            Ok(())
        }
        fn poll_recv(
            &self,
            _: &mut Context,
            _: &mut [io::IoSliceMut<'_>],
            _: &mut [RecvMeta],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok("127.0.0.1:1".parse().expect("literal address"))
        }
    }

    fn sends(contents: usize, segment: Option<usize>) -> Vec<(usize, Option<usize>)> {
        let rec = Arc::new(Recorder::default());
        let socket = BoundedGso(rec.clone());
        let buf = vec![0u8; contents];
        let t = Transmit {
            destination: "127.0.0.1:2".parse().expect("literal address"),
            ecn: None,
            contents: &buf,
            segment_size: segment,
            src_ip: None,
        };
        socket.try_send(&t).expect("send");
        let v = rec.0.lock().expect("lock").clone();
        v
    }

    #[test]
    fn batches_of_large_datagrams_are_split_into_sends_the_kernel_takes() {
        // Ten 65000-byte datagrams, the last one short: one send each.
        let got = sends(9 * 65_000 + 700, Some(65_000));
        assert_eq!(got.len(), 10);
        assert!(got[..9].iter().all(|&(len, seg)| len == 65_000 && seg.is_none()));
        assert_eq!(got[9], (700, None));
        // 20000-byte datagrams: three to a send, segment size kept.
        let got = sends(10 * 20_000, Some(20_000));
        assert_eq!(got, vec![(60_000, Some(20_000)), (60_000, Some(20_000)), (60_000, Some(20_000)), (20_000, None)]);
        // What fits goes through untouched.
        assert_eq!(sends(10 * 1452, Some(1452)), vec![(14_520, Some(1452))]);
        assert_eq!(sends(65_000, None), vec![(65_000, None)]);
        assert!(got.iter().all(|&(len, _)| len <= MAX_SEND_PAYLOAD));
    }
}
