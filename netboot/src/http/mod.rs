//! HTTP: iPXE scripts and boot artefacts. STUB: being implemented.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::policy::PolicyHandle;

#[derive(Clone, Debug)]
pub struct HttpService {
    pub bind: SocketAddr,
    /// `http://IP:PORT` as machines see it.
    pub public_base: String,
    pub policy: PolicyHandle,
    /// Artefacts (kernels, initrds) are served from here at `/files/`.
    pub data_dir: PathBuf,
    /// iPXE binaries, served at `/ipxe-bin/` for UEFI HTTP-boot clients.
    pub ipxe_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: server failed: {0}")]
    Serve(std::io::Error),
}

impl HttpService {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HttpError> {
        shutdown.cancelled().await;
        Ok(())
    }
}
