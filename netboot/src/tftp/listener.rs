//! The request loop on the TFTP port: parses each datagram and starts one transfer task
//! (and so one transfer thread) per read request.
//!
//! Nothing a client sends stops this loop: malformed packets are logged (rate-limited) and
//! dropped, write requests are refused, stray DATA/ACK/OACK get ERROR 4, and a read request
//! past the transfer limits ([`Slots`]) gets ERROR 0 "server busy". The loop never
//! sends file data itself and keeps no per-client state, so a UEFI client's fresh RRQ
//! after its size probe is served at once, whatever the probe transfer is doing. Each
//! transfer holds a thread of tokio's blocking pool (512 by default), so the slot limits
//! (256 in total by default) also keep a flood of requests from taking every thread.

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::packet::{self, ErrorCode, Packet, ParseError};
use super::path::Refusal;
use super::slots::Slots;
use super::transfer::{self, Context, Outcome};

/// A TFTP server whose socket is bound; [`BoundTftp::run`] serves until shutdown.
#[derive(Debug)]
pub struct BoundTftp {
    pub(super) socket: UdpSocket,
    pub(super) slots: Slots,
    pub(super) ctx: Context,
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
            Ok(Packet::Rrq(request)) => match self.slots.take(peer.ip()) {
                Ok(slot) => {
                    let span = tracing::info_span!("tftp", %peer, file = %request.filename);
                    let ctx = self.ctx.clone();
                    transfers.spawn(
                        async move {
                            let _slot = slot;
                            let outcome = transfer::serve(ctx.clone(), peer, request).await;
                            log_outcome(&ctx, outcome);
                        }
                        .instrument(span),
                    );
                    return;
                }
                Err(full) => {
                    if let Some(suppressed) = self.ctx.noise.allow() {
                        tracing::warn!(%peer, file = %request.filename, limit = ?full, suppressed, "tftp: too many transfers, request refused");
                    }
                    packet::encode_error(ErrorCode::NotDefined, "server busy, try again")
                }
            },
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
