//! One read transfer: from an accepted RRQ to the last ACK, on its own UDP socket.
//!
//! The file is read incrementally; at most one window of DATA packets is held in memory.
//! Windows follow RFC 7440: the client ACKs the last block it holds in order, and the next
//! window starts right after that block. Old and duplicate ACKs are ignored (no Sorcerer's
//! Apprentice), timeouts resend the window up to `retries` times, and a client ERROR ends the
//! transfer at once (the UEFI size probe). This module does not listen on port 69, resolve
//! names beyond calling `path.rs`, or decide what the roots are.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::options::{self, Negotiated};
use super::packet::{self, ErrorCode, Packet, Request};
use super::path::{self, Refusal};
use crate::config::TftpConfig;
use crate::ratelimit::RateLimiter;

/// File read buffer; bounded so memory per transfer does not grow with the file.
const READ_BUFFER: usize = 16 * 1024;

/// How a transfer ended, when it ended without an IO failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every block was acknowledged.
    Complete { bytes: u64, blocks: u64 },
    /// The client sent ERROR (after OACK this is the UEFI size probe).
    ClientError { code: u16, message: String },
    /// No usable answer after all retransmissions; `block` is the first unacknowledged one.
    GaveUp { block: u64 },
    /// The name was not served; the client got ERROR 1 or 2.
    Refused(Refusal),
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("tftp transfer: cannot bind a socket on {ip}: {source}")]
    Bind { ip: IpAddr, source: std::io::Error },
    #[error("tftp transfer: cannot open the resolved file: {0}")]
    Open(std::io::Error),
    #[error("tftp transfer: cannot read the file at block {block}: {source}")]
    Read { block: u64, source: std::io::Error },
    #[error("tftp transfer: cannot send to {peer}: {source}")]
    Send {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("tftp transfer: cannot receive from {peer}: {source}")]
    Recv {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("tftp transfer: path resolution task failed: {0}")]
    Resolve(tokio::task::JoinError),
}

/// What a transfer needs from the server.
#[derive(Clone, Debug)]
pub struct Context {
    /// The address transfer sockets bind to (port 0: the kernel picks the TID).
    pub ip: IpAddr,
    pub roots: Arc<[path::Root]>,
    pub config: TftpConfig,
    /// Shared limiter for log lines a client can trigger.
    pub noise: Arc<RateLimiter>,
}

/// Serves `request` from `peer`: resolves the name, negotiates options, sends the file.
pub async fn serve(
    ctx: Context,
    peer: SocketAddr,
    request: Request,
) -> Result<Outcome, TransferError> {
    let socket = UdpSocket::bind((ctx.ip, 0))
        .await
        .map_err(|source| TransferError::Bind { ip: ctx.ip, source })?;
    let roots = ctx.roots.clone();
    let name = request.filename.clone();
    let resolved = tokio::task::spawn_blocking(move || path::resolve(&roots, &name))
        .await
        .map_err(TransferError::Resolve)?;
    let real = match resolved {
        Ok(real) => real,
        Err(refusal) => {
            let (code, message) = match refusal {
                Refusal::NotFound => (ErrorCode::FileNotFound, "file not found"),
                Refusal::Refused(_) => (ErrorCode::AccessViolation, "access violation"),
            };
            send(&socket, peer, &packet::encode_error(code, message)).await?;
            return Ok(Outcome::Refused(refusal));
        }
    };
    // The name was checked a moment ago; open without following a link and without
    // blocking on a FIFO, then check again what was opened, so a swap in between is caught.
    let opened = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real)
        .await;
    let file = match opened {
        Ok(file) => file,
        Err(e) => {
            // Tell the client (an unreadable file would otherwise leave it waiting for
            // its own timeout); the real reason stays in our log.
            let err = packet::encode_error(ErrorCode::AccessViolation, "access violation");
            send(&socket, peer, &err).await?;
            return Err(TransferError::Open(e));
        }
    };
    let meta = file.metadata().await.map_err(TransferError::Open)?;
    if !meta.is_file() {
        let refusal = Refusal::Refused("not a regular file");
        let err = packet::encode_error(ErrorCode::AccessViolation, "access violation");
        send(&socket, peer, &err).await?;
        return Ok(Outcome::Refused(refusal));
    }
    let size = meta.len();
    let params = options::negotiate(&request.options, &ctx.config, size);
    tracing::debug!(
        size,
        blksize = params.blksize,
        windowsize = params.windowsize,
        oack = !params.oack.is_empty(),
        "transfer starts"
    );
    let transfer = Transfer {
        socket,
        peer,
        params,
        retries: ctx.config.retries,
        noise: ctx.noise,
    };
    transfer
        .run(BufReader::with_capacity(READ_BUFFER, file))
        .await
}

struct Transfer {
    socket: UdpSocket,
    peer: SocketAddr,
    params: Negotiated,
    retries: u8,
    noise: Arc<RateLimiter>,
}

/// What the client said while we waited.
enum Reply {
    Ack(u16),
    Error { code: u16, message: String },
    Timeout,
}

impl Transfer {
    async fn run(&self, mut file: impl AsyncRead + Unpin) -> Result<Outcome, TransferError> {
        if !self.params.oack.is_empty() {
            if let Some(end) = self.negotiate().await? {
                return Ok(end);
            }
        }
        let blksize = usize::from(self.params.blksize);
        let windowsize = usize::from(self.params.windowsize);
        // DATA packets (header included) from block `base` on; `base` counts from 1 without
        // wrapping, the wire number is its low 16 bits.
        let mut window: VecDeque<Vec<u8>> = VecDeque::with_capacity(windowsize);
        let mut base: u64 = 1;
        let mut read_all = false;
        let mut bytes: u64 = 0;
        let mut misses: u8 = 0;
        loop {
            while window.len() < windowsize && !read_all {
                let block = base + window.len() as u64;
                let pkt = read_block(&mut file, block, blksize)
                    .await
                    .map_err(|source| TransferError::Read { block, source })?;
                let data_len = pkt.len() - 4;
                read_all = data_len < blksize;
                bytes += data_len as u64;
                window.push_back(pkt);
            }
            for pkt in &window {
                send(&self.socket, self.peer, pkt).await?;
            }
            let deadline = Instant::now() + self.params.timeout;
            loop {
                match self.next_reply(deadline).await? {
                    Reply::Ack(n) => {
                        // How many blocks of the window this ACK covers; 0 or past the
                        // window means an old, duplicate or bogus ACK.
                        let covered = usize::from(n.wrapping_sub(base.wrapping_sub(1) as u16));
                        if covered == 0 || covered > window.len() {
                            continue;
                        }
                        window.drain(..covered);
                        base += covered as u64;
                        misses = 0;
                        if read_all && window.is_empty() {
                            return Ok(Outcome::Complete {
                                bytes,
                                blocks: base - 1,
                            });
                        }
                        break;
                    }
                    Reply::Error { code, message } => {
                        return Ok(Outcome::ClientError { code, message })
                    }
                    Reply::Timeout => {
                        if misses >= self.retries {
                            return Ok(Outcome::GaveUp { block: base });
                        }
                        misses += 1;
                        break;
                    }
                }
            }
        }
    }

    /// Sends OACK until ACK 0 arrives; `Some` when the transfer ends here.
    async fn negotiate(&self) -> Result<Option<Outcome>, TransferError> {
        let oack = packet::encode_oack(&self.params.oack);
        let mut misses: u8 = 0;
        loop {
            send(&self.socket, self.peer, &oack).await?;
            let deadline = Instant::now() + self.params.timeout;
            loop {
                match self.next_reply(deadline).await? {
                    Reply::Ack(0) => return Ok(None),
                    Reply::Ack(_) => continue,
                    Reply::Error { code, message } => {
                        return Ok(Some(Outcome::ClientError { code, message }))
                    }
                    Reply::Timeout => break,
                }
            }
            if misses >= self.retries {
                return Ok(Some(Outcome::GaveUp { block: 0 }));
            }
            misses += 1;
        }
    }

    /// Waits until `deadline` for an ACK or ERROR from the peer. Packets from any other
    /// address get ERROR 5 and the wait goes on.
    async fn next_reply(&self, deadline: Instant) -> Result<Reply, TransferError> {
        let mut buf = [0u8; 1024];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await;
            let (len, from) = match received {
                Err(_elapsed) => return Ok(Reply::Timeout),
                Ok(Err(source)) => {
                    return Err(TransferError::Recv {
                        peer: self.peer,
                        source,
                    })
                }
                Ok(Ok(got)) => got,
            };
            if from != self.peer {
                if let Some(suppressed) = self.noise.allow() {
                    tracing::info!(%from, suppressed, "packet from an unknown transfer id");
                }
                let err = packet::encode_error(ErrorCode::UnknownTransferId, "unknown transfer id");
                // Best effort: a failure to answer a stranger must not end our transfer.
                let _ = self.socket.send_to(&err, from).await;
                continue;
            }
            match packet::parse(&buf[..len]) {
                Ok(Packet::Ack { block }) => return Ok(Reply::Ack(block)),
                Ok(Packet::Error { code, message }) => return Ok(Reply::Error { code, message }),
                Ok(other) => {
                    if let Some(suppressed) = self.noise.allow() {
                        tracing::info!(packet = ?other, suppressed, "unexpected packet ignored");
                    }
                }
                Err(e) => {
                    if let Some(suppressed) = self.noise.allow() {
                        tracing::info!(error = %e, suppressed, "malformed packet ignored");
                    }
                }
            }
        }
    }
}

/// Reads up to `blksize` bytes into a DATA packet for `block`; shorter only at end of file.
async fn read_block(
    file: &mut (impl AsyncRead + Unpin),
    block: u64,
    blksize: usize,
) -> std::io::Result<Vec<u8>> {
    let mut pkt = packet::encode_data(block as u16, &[]);
    pkt.resize(4 + blksize, 0);
    let mut filled = 4;
    while filled < pkt.len() {
        let n = file.read(&mut pkt[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    pkt.truncate(filled);
    Ok(pkt)
}

async fn send(socket: &UdpSocket, peer: SocketAddr, pkt: &[u8]) -> Result<(), TransferError> {
    socket
        .send_to(pkt, peer)
        .await
        .map(drop)
        .map_err(|source| TransferError::Send { peer, source })
}
