//! TFTP: a small read-only server on tokio for first-stage files (iPXE binaries and one
//! optional small folder). The request loop is async; each transfer runs as blocking code
//! on a blocking-pool thread, because lockstep TFTP is bound by wake-up latency.
//!
//! Modules: `packet` (wire format), `options` (negotiation), `path` (name to file inside a
//! root), `transfer` (one RRQ on its own socket and blocking-pool thread), `slots` (how many
//! transfers may run, in total and per client), `listener` (the request loop).
//!
//! Deliberately absent: writes (WRQ gets ERROR 2), netascii translation (netascii requests
//! are served byte for byte like octet, since only binaries are served here), large files
//! (kernels and images go over HTTP), and per-client state in the listener. We do not use
//! async-tftp 0.4: it ignores the client's ERROR after OACK (the UEFI tsize probe) and keeps
//! retransmitting, which delays OVMF's boot.

mod listener;
pub mod options;
pub mod packet;
pub mod path;
pub mod slots;
pub mod transfer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

pub use listener::BoundTftp;
pub use path::Root;

use crate::config::TftpConfig;
use crate::ratelimit::RateLimiter;

#[derive(Clone, Debug)]
pub struct TftpService {
    /// Port 0 binds an ephemeral port (tests learn it from [`BoundTftp::local_addr`]).
    pub bind: SocketAddr,
    /// Folders searched in order; the first that holds a requested name serves it.
    pub roots: Vec<Root>,
    pub config: TftpConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("tftp: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl TftpService {
    /// Binds the request socket; nothing is served until [`BoundTftp::run`].
    pub async fn bind(self) -> Result<BoundTftp, TftpError> {
        let socket = UdpSocket::bind(self.bind)
            .await
            .map_err(|source| TftpError::Bind {
                addr: self.bind,
                source,
            })?;
        Ok(BoundTftp {
            socket,
            slots: slots::Slots::new(
                self.config.max_transfers,
                self.config.max_transfers_per_client,
            ),
            ctx: transfer::Context {
                ip: self.bind.ip(),
                roots: self.roots.into(),
                config: self.config,
                noise: Arc::new(RateLimiter::new(20, Duration::from_secs(10))),
            },
        })
    }

    /// Binds and serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), TftpError> {
        self.bind().await?.run(shutdown).await;
        Ok(())
    }
}
