//! A minimal TFTP read client (RFC 1350 + blksize, tsize, windowsize options).
//!
//! Each download runs as blocking code on its own thread, woken by the kernel straight out
//! of `recvfrom`: lockstep throughput is round-trip latency, and a client that added reactor
//! and timer hops per packet would cap every server at its own speed.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context};

const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// Downloads `file` and returns the number of bytes received.
pub async fn get(
    server: SocketAddr,
    file: &str,
    blksize: u16,
    windowsize: u16,
) -> anyhow::Result<u64> {
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || get_blocking(server, &file, blksize, windowsize))
        .await
        .context("tftp client thread")?
}

fn get_blocking(
    server: SocketAddr,
    file: &str,
    blksize: u16,
    windowsize: u16,
) -> anyhow::Result<u64> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut rrq = Vec::new();
    rrq.extend_from_slice(&OP_RRQ.to_be_bytes());
    for part in [file, "octet", "blksize", &blksize.to_string(), "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    if windowsize > 0 {
        for part in ["windowsize".to_string(), windowsize.to_string()] {
            rrq.extend_from_slice(part.as_bytes());
            rrq.push(0);
        }
    }
    sock.send_to(&rrq, server)?;

    let mut buf = vec![0u8; 65536];
    let mut peer: Option<SocketAddr> = None;
    let mut block_size = 512usize;
    let mut window = 1u32;
    let mut expected: u16 = 1;
    let mut since_ack = 0u32;
    let mut received = 0u64;
    let mut last_ack: Vec<u8> = rrq.clone();
    let mut retries = 0;
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                retries += 1;
                if retries > 5 {
                    bail!("tftp {file}: timed out after {received} bytes");
                }
                sock.send_to(&last_ack, peer.unwrap_or(server))?;
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("tftp receive"),
        };
        retries = 0;
        if peer.is_some_and(|p| p != from) || n < 4 {
            continue;
        }
        peer = Some(from);
        let pkt = &buf[..n];
        let op = u16::from_be_bytes([pkt[0], pkt[1]]);
        match op {
            OP_OACK => {
                let opts = parse_oack(&pkt[2..]);
                for (k, v) in opts {
                    match k.as_str() {
                        "blksize" => block_size = v.parse().context("oack blksize")?,
                        "windowsize" => window = v.parse().context("oack windowsize")?,
                        _ => {}
                    }
                }
                last_ack = ack(0);
                sock.send_to(&last_ack, from)?;
            }
            OP_DATA => {
                let block = u16::from_be_bytes([pkt[2], pkt[3]]);
                let data = &pkt[4..];
                if block != expected {
                    // Out of order: ask again from what we have.
                    sock.send_to(&last_ack, from)?;
                    since_ack = 0;
                    continue;
                }
                received += data.len() as u64;
                expected = expected.wrapping_add(1);
                since_ack += 1;
                let last = data.len() < block_size;
                if last || since_ack >= window {
                    last_ack = ack(block);
                    sock.send_to(&last_ack, from)?;
                    since_ack = 0;
                }
                if last {
                    return Ok(received);
                }
            }
            OP_ERROR => bail!(
                "tftp {file}: server error {}",
                String::from_utf8_lossy(&pkt[4..]).trim_end_matches('\0')
            ),
            _ => {}
        }
    }
}

fn ack(block: u16) -> Vec<u8> {
    let mut v = OP_ACK.to_be_bytes().to_vec();
    v.extend_from_slice(&block.to_be_bytes());
    v
}

fn parse_oack(body: &[u8]) -> Vec<(String, String)> {
    let parts: Vec<String> = body
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).to_ascii_lowercase())
        .collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect()
}
