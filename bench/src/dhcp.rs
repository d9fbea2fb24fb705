//! DISCOVER -> OFFER round trips, one at a time, as a PXE BIOS client would send them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::timeout;

fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag: the reply comes back without ARP
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 1]);
    p.extend_from_slice(&[93, 2, 0, 0]);
    let class = b"PXEClient:Arch:00000:UNDI:002001";
    p.push(60);
    p.push(class.len() as u8);
    p.extend_from_slice(class);
    p.extend_from_slice(&[55, 4, 1, 3, 66, 67]);
    p.push(255);
    p.resize(300, 0);
    p
}

/// Returns (round trips, lost, elapsed).
pub async fn discover_loop(
    iface: &str,
    duration: Duration,
) -> anyhow::Result<(u64, u64, Duration)> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_broadcast(true)?;
    sock.bind_device(Some(iface.as_bytes()))
        .with_context(|| format!("binding to {iface}"))?;
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
    sock.set_nonblocking(true)?;
    let sock = UdpSocket::from_std(sock.into())?;
    let dest = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    let mac = [0x52, 0x54, 0x00, 0xbe, 0x0c, 0x01];
    let start = Instant::now();
    let (mut ok, mut lost) = (0u64, 0u64);
    let mut xid: u32 = 0x1000_0000;
    let mut buf = vec![0u8; 1500];
    while start.elapsed() < duration {
        xid = xid.wrapping_add(1);
        sock.send_to(&discover(xid, mac), dest).await?;
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) if n >= 240 && buf[0] == 2 && buf[4..8] == xid.to_be_bytes() => {
                    ok += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    Ok((ok, lost, start.elapsed()))
}
