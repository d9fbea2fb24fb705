//! The receive loop of one UDP port: bind with SO_REUSEADDR, SO_BROADCAST and
//! SO_BINDTODEVICE, then hand every datagram to the [`Engine`] and send what it returns.
//!
//! It deliberately decides nothing about DHCP. Nothing a client sends can stop it:
//! receive and send errors are logged (rate-limited) and the loop goes on; a panic in the
//! engine is caught and logged as a bug.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::engine::{Engine, Port};
use super::DhcpError;
use crate::ratelimit::RateLimiter;

/// Binds 0.0.0.0:`port`, restricted to `interface` (no restriction when empty).
pub fn bind(port: u16, interface: &str) -> Result<UdpSocket, DhcpError> {
    let what = format!("udp 0.0.0.0:{port} on interface {interface:?}");
    let err = |source: std::io::Error| DhcpError::Bind {
        what: what.clone(),
        source,
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_broadcast(true).map_err(err)?;
    if !interface.is_empty() {
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    socket.bind(&addr.into()).map_err(err)?;
    UdpSocket::from_std(socket.into()).map_err(err)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves `socket` until `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    engine: Arc<Engine>,
    port: Port,
    shutdown: CancellationToken,
) {
    let errors = RateLimiter::new(10, Duration::from_secs(10));
    // Larger than any Ethernet frame; a longer datagram is truncated and then fails
    // validation or loses trailing options, which is fine for a request.
    let mut buf = vec![0u8; 4096];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, peer) = match received {
            Ok(x) => x,
            Err(e) => {
                if let Some(suppressed) = errors.allow() {
                    tracing::warn!(?port, suppressed, "dhcp: receive failed: {e}");
                }
                // Avoid spinning if the error repeats at once.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let data = &buf[..n];
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            engine.handle(data, peer, port, unix_now())
        }));
        let out = match outcome {
            Ok(Some(out)) => out,
            Ok(None) => continue,
            Err(_) => {
                if let Some(suppressed) = errors.allow() {
                    tracing::error!(%peer, suppressed, "dhcp: bug: handler panicked; packet dropped");
                }
                continue;
            }
        };
        if let Err(e) = socket.send_to(&out.bytes, out.dest).await {
            if let Some(suppressed) = errors.allow() {
                tracing::warn!(dest = %out.dest, suppressed, "dhcp: send failed: {e}");
            }
        }
    }
}
