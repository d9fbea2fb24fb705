//! One read transfer: from an accepted RRQ to the last ACK, on its own UDP socket and a
//! thread of its own for its duration.
//!
//! Lockstep TFTP is bound by round-trip latency, not CPU, so each transfer runs as plain
//! blocking code on a tokio blocking-pool thread: the kernel wakes that thread straight out
//! of `recvfrom` when the ACK lands, with no reactor, timer wheel or worker hand-off in
//! between. The pool reuses idle threads, which matters on a loaded machine: a freshly
//! created thread queues behind every runnable task, a woken one runs at once. [`serve`] is
//! the async face the listener awaits; dropping it (shutdown, abort) tells the thread to
//! stop, which it notices within [`STOP_POLL`].
//!
//! The file is read incrementally; at most one window of DATA packets is held in memory.
//! Windows follow RFC 7440: the client ACKs the last block it holds in order, and the next
//! window starts right after that block. Old and duplicate ACKs are ignored (no Sorcerer's
//! Apprentice), timeouts resend the window up to `retries` times, and a client ERROR ends the
//! transfer at once (the UEFI size probe). Packets from any other address get ERROR 5 (the
//! socket stays unconnected so they reach us; one address comparison per packet).
//!
//! This module does not listen on port 69, resolve names beyond calling `path.rs`, decide
//! what the roots are, or limit how many transfers run at once (the listener does).

use std::collections::VecDeque;
use std::io::{BufReader, ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::options::{self, Negotiated};
use super::packet::{self, ErrorCode, Packet, Request};
use super::path::{self, Refusal};
use crate::config::TftpConfig;
use crate::ratelimit::RateLimiter;

/// File read buffer; bounded so memory per transfer does not grow with the file.
const READ_BUFFER: usize = 16 * 1024;

/// Longest single wait in `recvfrom`, so a transfer whose caller is gone stops soon.
pub const STOP_POLL: Duration = Duration::from_millis(200);

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
    /// The server stopped (or dropped [`serve`]) while the transfer ran.
    Stopped { block: u64 },
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
    #[error("tftp transfer: cannot set the receive timeout for {peer}: {source}")]
    Timeout {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("tftp transfer: the transfer thread for {peer} failed: {source}")]
    Thread {
        peer: SocketAddr,
        source: tokio::task::JoinError,
    },
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

/// Sets the stop flag when the awaiting side goes away, finished or not.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Serves `request` from `peer` on a blocking-pool thread: resolves the name, negotiates
/// options, sends the file. The thread runs inside the caller's tracing span.
pub async fn serve(
    ctx: Context,
    peer: SocketAddr,
    request: Request,
) -> Result<Outcome, TransferError> {
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| serve_blocking(&ctx, peer, &request, &stop))
    })
    .await
    .map_err(|source| TransferError::Thread { peer, source })?
}

/// The whole transfer, blocking; `stop` ends it early.
fn serve_blocking(
    ctx: &Context,
    peer: SocketAddr,
    request: &Request,
    stop: &AtomicBool,
) -> Result<Outcome, TransferError> {
    let socket = UdpSocket::bind((ctx.ip, 0))
        .map_err(|source| TransferError::Bind { ip: ctx.ip, source })?;
    let real = match path::resolve(&ctx.roots, &request.filename) {
        Ok(real) => real,
        Err(refusal) => {
            let (code, message) = match refusal {
                Refusal::NotFound => (ErrorCode::FileNotFound, "file not found"),
                Refusal::Refused(_) => (ErrorCode::AccessViolation, "access violation"),
            };
            send(&socket, peer, &packet::encode_error(code, message))?;
            return Ok(Outcome::Refused(refusal));
        }
    };
    // The name was checked a moment ago; open without following a link and without
    // blocking on a FIFO, then check again what was opened, so a swap in between is caught.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real);
    let file = match opened {
        Ok(file) => file,
        Err(e) => {
            // Tell the client (an unreadable file would otherwise leave it waiting for
            // its own timeout); the real reason stays in our log.
            let err = packet::encode_error(ErrorCode::AccessViolation, "access violation");
            send(&socket, peer, &err)?;
            return Err(TransferError::Open(e));
        }
    };
    let meta = file.metadata().map_err(TransferError::Open)?;
    if !meta.is_file() {
        let refusal = Refusal::Refused("not a regular file");
        let err = packet::encode_error(ErrorCode::AccessViolation, "access violation");
        send(&socket, peer, &err)?;
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
    let mut transfer = Transfer {
        socket,
        peer,
        params,
        retries: ctx.config.retries,
        noise: &ctx.noise,
        stop,
        wait: None,
    };
    transfer.run(BufReader::with_capacity(READ_BUFFER, file))
}

struct Transfer<'a> {
    socket: UdpSocket,
    peer: SocketAddr,
    params: Negotiated,
    retries: u8,
    noise: &'a RateLimiter,
    stop: &'a AtomicBool,
    /// The receive timeout last set on the socket, to skip setting it again.
    wait: Option<Duration>,
}

/// What the client said while we waited.
enum Reply {
    Ack(u16),
    Error { code: u16, message: String },
    Timeout,
    Stopped,
}

impl Transfer<'_> {
    fn run(&mut self, mut file: impl Read) -> Result<Outcome, TransferError> {
        if !self.params.oack.is_empty() {
            if let Some(end) = self.negotiate()? {
                return Ok(end);
            }
        }
        let blksize = usize::from(self.params.blksize);
        let windowsize = usize::from(self.params.windowsize);
        // DATA packets (header included) from block `base` on; `base` counts from 1 without
        // wrapping, the wire number is its low 16 bits. Acknowledged packets go to `spare`
        // and are refilled, so a transfer allocates one window's worth of buffers.
        let mut window: VecDeque<Vec<u8>> = VecDeque::with_capacity(windowsize);
        let mut spare: Vec<Vec<u8>> = Vec::with_capacity(windowsize);
        let mut base: u64 = 1;
        let mut read_all = false;
        let mut bytes: u64 = 0;
        let mut misses: u8 = 0;
        loop {
            while window.len() < windowsize && !read_all {
                let block = base + window.len() as u64;
                let mut pkt = spare.pop().unwrap_or_default();
                read_block(&mut file, block, blksize, &mut pkt)
                    .map_err(|source| TransferError::Read { block, source })?;
                let data_len = pkt.len() - 4;
                read_all = data_len < blksize;
                bytes += data_len as u64;
                window.push_back(pkt);
            }
            for pkt in &window {
                send(&self.socket, self.peer, pkt)?;
            }
            let deadline = Instant::now() + self.params.timeout;
            loop {
                match self.next_reply(deadline)? {
                    Reply::Ack(n) => {
                        // How many blocks of the window this ACK covers; 0 or past the
                        // window means an old, duplicate or bogus ACK.
                        let covered = usize::from(n.wrapping_sub(base.wrapping_sub(1) as u16));
                        if covered == 0 || covered > window.len() {
                            continue;
                        }
                        spare.extend(window.drain(..covered));
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
                    Reply::Stopped => return Ok(Outcome::Stopped { block: base }),
                }
            }
        }
    }

    /// Sends OACK until ACK 0 arrives; `Some` when the transfer ends here.
    fn negotiate(&mut self) -> Result<Option<Outcome>, TransferError> {
        let oack = packet::encode_oack(&self.params.oack);
        let mut misses: u8 = 0;
        loop {
            send(&self.socket, self.peer, &oack)?;
            let deadline = Instant::now() + self.params.timeout;
            loop {
                match self.next_reply(deadline)? {
                    Reply::Ack(0) => return Ok(None),
                    Reply::Ack(_) => continue,
                    Reply::Error { code, message } => {
                        return Ok(Some(Outcome::ClientError { code, message }))
                    }
                    Reply::Timeout => break,
                    Reply::Stopped => return Ok(Some(Outcome::Stopped { block: 0 })),
                }
            }
            if misses >= self.retries {
                return Ok(Some(Outcome::GaveUp { block: 0 }));
            }
            misses += 1;
        }
    }

    /// Waits until `deadline` for an ACK or ERROR from the peer. Packets from any other
    /// address get ERROR 5 and the wait goes on; so do packets that are not ACK or ERROR.
    fn next_reply(&mut self, deadline: Instant) -> Result<Reply, TransferError> {
        let mut buf = [0u8; 1024];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Reply::Stopped);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(Reply::Timeout);
            };
            if left.is_zero() {
                return Ok(Reply::Timeout);
            }
            // In steady state this is STOP_POLL every time, so no syscall per packet.
            self.set_wait(left.min(STOP_POLL))?;
            let (len, from) = match self.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(source) => {
                    return Err(TransferError::Recv {
                        peer: self.peer,
                        source,
                    })
                }
            };
            if from != self.peer {
                if let Some(suppressed) = self.noise.allow() {
                    tracing::info!(%from, suppressed, "packet from an unknown transfer id");
                }
                let err = packet::encode_error(ErrorCode::UnknownTransferId, "unknown transfer id");
                // Best effort: a failure to answer a stranger must not end our transfer.
                let _ = self.socket.send_to(&err, from);
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

    fn set_wait(&mut self, wait: Duration) -> Result<(), TransferError> {
        if self.wait != Some(wait) {
            self.socket
                .set_read_timeout(Some(wait))
                .map_err(|source| TransferError::Timeout {
                    peer: self.peer,
                    source,
                })?;
            self.wait = Some(wait);
        }
        Ok(())
    }
}

/// Fills `pkt` with the DATA packet for `block`: up to `blksize` bytes, shorter only at end
/// of file.
fn read_block(
    file: &mut impl Read,
    block: u64,
    blksize: usize,
    pkt: &mut Vec<u8>,
) -> std::io::Result<()> {
    pkt.clear();
    pkt.extend_from_slice(&packet::data_header(block as u16));
    pkt.resize(4 + blksize, 0);
    let mut filled = 4;
    while filled < pkt.len() {
        match file.read(&mut pkt[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    pkt.truncate(filled);
    Ok(())
}

fn send(socket: &UdpSocket, peer: SocketAddr, pkt: &[u8]) -> Result<(), TransferError> {
    socket
        .send_to(pkt, peer)
        .map(drop)
        .map_err(|source| TransferError::Send { peer, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::Mode;

    fn context(dir: &std::path::Path) -> Context {
        Context {
            ip: "127.0.0.1".parse().expect("ip"),
            roots: vec![crate::tftp::path::Root::contained(dir)].into(),
            config: TftpConfig {
                timeout_secs: 1,
                retries: 2,
                ..TftpConfig::default()
            },
            noise: Arc::new(RateLimiter::new(20, Duration::from_secs(10))),
        }
    }

    fn request(name: &str) -> Request {
        Request {
            filename: name.into(),
            mode: Mode::Octet,
            options: Vec::new(),
        }
    }

    async fn recv(sock: &tokio::net::UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 2048];
        let (n, from) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv");
        buf.truncate(n);
        Some((buf, from))
    }

    /// Runs a lockstep client against `serve` for a file of `len` bytes and checks what
    /// `serve` reports (the listener logs this), not only what went over the wire.
    async fn check_complete(len: usize, blocks: u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), vec![7u8; len]).expect("write");
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let me = client.local_addr().expect("addr");
        let task = tokio::spawn(serve(context(dir.path()), me, request("f")));
        let mut got = 0;
        loop {
            let (p, tid) = recv(&client, Duration::from_secs(2)).await.expect("data");
            assert_eq!(&p[..2], &[0, 3], "DATA");
            got += p.len() - 4;
            client.send_to(&[0, 4, p[2], p[3]], tid).await.expect("ack");
            if p.len() - 4 < 512 {
                break;
            }
        }
        assert_eq!(got, len);
        let outcome = task.await.expect("join").expect("transfer");
        assert_eq!(
            outcome,
            Outcome::Complete {
                bytes: len as u64,
                blocks
            },
            "file of {len} bytes"
        );
    }

    #[tokio::test]
    async fn serve_reports_bytes_and_blocks_sent() {
        check_complete(0, 1).await;
        check_complete(1000, 2).await;
        check_complete(1024, 3).await;
    }

    #[tokio::test]
    async fn serve_reports_a_missing_file_as_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let me = client.local_addr().expect("addr");
        let outcome = serve(context(dir.path()), me, request("absent"))
            .await
            .expect("transfer");
        assert_eq!(outcome, Outcome::Refused(Refusal::NotFound));
        let (p, _) = recv(&client, Duration::from_secs(1)).await.expect("error");
        assert_eq!(&p[..4], &[0, 5, 0, 1]);
    }

    #[tokio::test]
    async fn dropping_serve_stops_the_transfer_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), vec![1u8; 5000]).expect("write");
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let me = client.local_addr().expect("addr");
        let task = tokio::spawn(serve(context(dir.path()), me, request("f")));
        let (p, _) = recv(&client, Duration::from_secs(2)).await.expect("data 1");
        assert_eq!(&p[..4], &[0, 3, 0, 1]);
        task.abort();
        // A live transfer would resend DATA 1 after its 1 s timeout.
        assert_eq!(recv(&client, Duration::from_millis(1500)).await, None);
    }
}
