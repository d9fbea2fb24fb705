//! TFTP: read-only, first-stage files only. STUB: being implemented.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::config::TftpConfig;

#[derive(Clone, Debug)]
pub struct TftpService {
    pub bind: SocketAddr,
    /// Folders searched in order; the first that holds a requested name serves it.
    pub roots: Vec<PathBuf>,
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
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), TftpError> {
        shutdown.cancelled().await;
        Ok(())
    }
}
