//! DHCP: a socket loop per port, packet facts parsed once, one handler per mode.
//! STUB: being implemented.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::arch::BootFileTable;
use crate::config::DhcpConfig;
use crate::policy::PolicyHandle;

/// Everything the DHCP service needs; built by `daemon` from the config.
#[derive(Clone, Debug)]
pub struct DhcpService {
    pub config: DhcpConfig,
    /// Interface to bind to (SO_BINDTODEVICE).
    pub interface: String,
    pub server_ip: Ipv4Addr,
    /// `http://IP:PORT`, used for iPXE and HTTP-boot clients.
    pub http_base: String,
    pub boot_files: BootFileTable,
    pub policy: PolicyHandle,
    /// Where full-mode leases persist (under the data folder).
    pub lease_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("dhcp: cannot bind {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
}

impl DhcpService {
    /// Binds the sockets (errors are returned, not panicked), then serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DhcpError> {
        shutdown.cancelled().await;
        Ok(())
    }
}
