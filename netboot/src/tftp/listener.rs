//! The request loop on the TFTP port: parses each datagram and starts one transfer task
//! (and so one transfer thread) per read request.
//!
//! Nothing a client sends stops this loop: malformed packets are logged (rate-limited) and
//! dropped, write requests are refused, stray DATA/ACK/OACK get ERROR 4. The loop never
//! sends file data itself and keeps no per-client state, so a UEFI client's fresh RRQ
//! after its size probe is served at once, whatever the probe transfer is doing. Past
//! [`MAX_TRANSFERS`] running transfers a request is dropped unanswered: the client resends
//! it after its timeout, and a flood of requests cannot start threads without bound.

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::packet::{self, ErrorCode, Packet, ParseError};
use super::path::Refusal;
use super::transfer::{self, Context, Outcome};

/// Running transfers beyond which new requests are dropped. Each holds a thread of tokio's
/// blocking pool (512 by default), so this leaves room for the rest of the daemon's file IO.
pub const MAX_TRANSFERS: usize = 256;

/// A TFTP server whose socket is bound; [`BoundTftp::run`] serves until shutdown.
#[derive(Debug)]
pub struct BoundTftp {
    pub(super) socket: UdpSocket,
    pub(super) ctx: Context,
    /// [`MAX_TRANSFERS`], lowered by tests.
    pub(super) max_transfers: usize,
}

impl BoundTftp {
    /// The address actually bound (useful when the configured port was 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves requests until `shutdown` fires; running transfers are then aborted.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut transfers = JoinSet::new();
        // RFC 2347 keeps requests within 512 bytes; a larger datagram is truncated and then
        // fails to parse, which is the right outcome.
        let mut buf = vec![0u8; 2048];
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(joined) = transfers.join_next(), if !transfers.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            tracing::error!("tftp: transfer task panicked: {e}");
                        }
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, peer)) => self.handle(&buf[..len], peer, &mut transfers).await,
                    Err(e) => {
                        if let Some(suppressed) = self.ctx.noise.allow() {
                            tracing::warn!(error = %e, suppressed, "tftp: receive failed");
                        }
                        // Avoid spinning if the error persists.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
        transfers.shutdown().await;
    }

    async fn handle(&self, datagram: &[u8], peer: SocketAddr, transfers: &mut JoinSet<()>) {
        let reply = match packet::parse(datagram) {
            Ok(Packet::Rrq(request)) => {
                if transfers.len() >= self.max_transfers {
                    if let Some(suppressed) = self.ctx.noise.allow() {
                        let running = transfers.len();
                        tracing::warn!(
                            %peer,
                            running,
                            suppressed,
                            "tftp: too many transfers, request dropped"
                        );
                    }
                    return;
                }
                let span = tracing::info_span!("tftp", %peer, file = %request.filename);
                let ctx = self.ctx.clone();
                transfers.spawn(
                    async move {
                        let outcome = transfer::serve(ctx.clone(), peer, request).await;
                        log_outcome(&ctx, outcome);
                    }
                    .instrument(span),
                );
                return;
            }
            Ok(Packet::Wrq(request)) => {
                if let Some(suppressed) = self.ctx.noise.allow() {
                    tracing::info!(%peer, file = %request.filename, suppressed, "tftp: write request refused");
                }
                packet::encode_error(ErrorCode::AccessViolation, "read-only server")
            }
            // Never answer an ERROR, or two confused peers would loop.
            Ok(Packet::Error { .. }) => return,
            Ok(other) => {
                if let Some(suppressed) = self.ctx.noise.allow() {
                    tracing::info!(%peer, packet = ?other, suppressed, "tftp: not a request");
                }
                packet::encode_error(ErrorCode::IllegalOperation, "expected a read request")
            }
            Err(e) => {
                if let Some(suppressed) = self.ctx.noise.allow() {
                    tracing::info!(%peer, error = %e, suppressed, "tftp: malformed packet");
                }
                match e {
                    ParseError::BadMode(_) => packet::encode_error(
                        ErrorCode::IllegalOperation,
                        "only octet and netascii modes are served",
                    ),
                    // Requests we could not read still get an answer so the client fails
                    // fast; anything else is dropped (no replies to garbage).
                    ParseError::Unterminated | ParseError::NotUtf8 | ParseError::EmptyFilename => {
                        packet::encode_error(ErrorCode::IllegalOperation, "malformed request")
                    }
                    ParseError::TooShort
                    | ParseError::UnknownOpcode(_)
                    | ParseError::BadLength(_) => return,
                }
            }
        };
        if let Err(e) = self.socket.send_to(&reply, peer).await {
            if let Some(suppressed) = self.ctx.noise.allow() {
                tracing::info!(%peer, error = %e, suppressed, "tftp: cannot answer");
            }
        }
    }
}

fn log_outcome(ctx: &Context, outcome: Result<Outcome, transfer::TransferError>) {
    match outcome {
        Ok(Outcome::Complete { bytes, blocks }) => tracing::info!(bytes, blocks, "sent"),
        // The UEFI size probe ends this way on every boot: not worth more than debug.
        Ok(Outcome::ClientError { code, message }) => {
            tracing::debug!(code, %message, "client ended the transfer")
        }
        Ok(Outcome::GaveUp { block }) => {
            if let Some(suppressed) = ctx.noise.allow() {
                tracing::info!(
                    block,
                    retries = ctx.config.retries,
                    suppressed,
                    "no answer, transfer abandoned"
                );
            }
        }
        Ok(Outcome::Refused(refusal)) => {
            if let Some(suppressed) = ctx.noise.allow() {
                match refusal {
                    Refusal::NotFound => tracing::info!(suppressed, "file not found"),
                    Refusal::Refused(reason) => {
                        tracing::info!(reason, suppressed, "request refused")
                    }
                }
            }
        }
        // A transfer stops only once nobody awaits it, so this is not reached in practice.
        Ok(Outcome::Stopped { block }) => tracing::debug!(block, "transfer stopped"),
        Err(e) => {
            if let Some(suppressed) = ctx.noise.allow() {
                tracing::warn!(error = %e, suppressed, "transfer failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::TftpConfig;
    use crate::tftp::TftpService;

    async fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = vec![0u8; 2048];
        let (n, from) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv");
        buf.truncate(n);
        Some((buf, from))
    }

    #[tokio::test]
    async fn requests_past_the_transfer_cap_are_dropped_until_one_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), vec![3u8; 2000]).expect("write");
        let mut bound = TftpService {
            bind: "127.0.0.1:0".parse().expect("addr"),
            roots: vec![dir.path().into()],
            config: TftpConfig::default(),
        }
        .bind()
        .await
        .expect("bind");
        bound.max_transfers = 1;
        let server = bound.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(bound.run(stop.clone()));
        let _stop = stop.drop_guard();
        let rrq = b"\0\x01f\0octet\0";

        let first = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        first.send_to(rrq, server).await.expect("rrq");
        let (p, tid) = recv(&first, Duration::from_secs(2)).await.expect("data 1");
        assert_eq!(&p[..4], b"\0\x03\0\x01");

        let second = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        second.send_to(rrq, server).await.expect("rrq");
        assert_eq!(recv(&second, Duration::from_millis(500)).await, None);

        // The first client gives up; its transfer ends and frees the slot.
        first
            .send_to(b"\0\x05\0\0stop\0", tid)
            .await
            .expect("error");
        // Like a client after its timeout, ask again until served (the slot frees within
        // one loop turn of the listener, but a loaded machine may take a while).
        let mut served = None;
        for _ in 0..20 {
            second.send_to(rrq, server).await.expect("rrq again");
            served = recv(&second, Duration::from_millis(200)).await;
            if served.is_some() {
                break;
            }
        }
        let (p, _) = served.expect("data 1 once the slot is free");
        assert_eq!(&p[..4], b"\0\x03\0\x01");
    }
}
