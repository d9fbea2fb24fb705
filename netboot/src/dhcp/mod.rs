//! DHCP: a socket loop per port, packet facts parsed once, one handler per mode.
//!
//! - [`packet`]: raw validation and the [`packet::Facts`] of a request (our own walk).
//! - [`reply`]: encoding replies by hand.
//! - [`boot`]: which first stage or URL a client gets.
//! - [`full`] + [`leases`]: full mode, the address state machine and its lease file.
//! - [`proxy`]: proxy mode (67 and 4011), never an address.
//! - [`route`]: where a reply is sent.
//! - [`engine`]: one datagram in, at most one reply out.
//! - [`socket`]: binding and the receive loop.
//!
//! It deliberately does not select setups (the policy does, through [`engine::SelectFn`])
//! and never reads routing options from dhcproto's decoded map.

pub mod boot;
pub mod engine;
pub mod full;
pub mod leases;
pub mod packet;
pub mod proxy;
pub mod reply;
pub mod route;
pub mod socket;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::arch::BootFileTable;
use crate::config::{DhcpConfig, DhcpMode};
use crate::policy::{MachineFacts, Policy, PolicyHandle};

use boot::BootEnv;
use engine::{Engine, Port, SelectFn};
use leases::{LeaseStore, LoadReport};

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
        let select: Arc<SelectFn> = Arc::new(|p: &Policy, f: &MachineFacts| p.select(f));
        self.run_with(shutdown, select).await
    }

    /// [`DhcpService::run`] with the policy selection passed in (tests use their own).
    pub async fn run_with(
        self,
        shutdown: CancellationToken,
        select: Arc<SelectFn>,
    ) -> Result<(), DhcpError> {
        if self.config.mode == DhcpMode::Off {
            shutdown.cancelled().await;
            return Ok(());
        }
        let main = socket::bind(self.config.port, &self.interface)?;
        let boot_server = match self.config.mode {
            DhcpMode::Proxy => Some(socket::bind(self.config.proxy_port, &self.interface)?),
            _ => None,
        };
        let leases = match self.config.mode {
            DhcpMode::Full => {
                let (store, report) = LeaseStore::load(&self.lease_file);
                match report {
                    LoadReport::Loaded(n) => {
                        tracing::info!(path = %self.lease_file.display(), "loaded {n} leases")
                    }
                    LoadReport::Fresh => {
                        tracing::info!(path = %self.lease_file.display(), "no lease file yet")
                    }
                    LoadReport::SetAside { .. } => {} // logged by the store
                }
                store
            }
            _ => LeaseStore::in_memory(),
        };
        let env = BootEnv {
            server_ip: self.server_ip,
            http_base: self.http_base.clone(),
            boot_files: self.boot_files.clone(),
        };
        let engine = Arc::new(Engine::new(
            env,
            &self.config,
            self.policy.clone(),
            select,
            leases,
        ));
        tracing::info!(
            mode = ?self.config.mode,
            port = self.config.port,
            interface = %self.interface,
            "dhcp listening"
        );
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(socket::serve(
            main,
            engine.clone(),
            Port::Dhcp,
            shutdown.clone(),
        ));
        if let Some(s) = boot_server {
            tasks.spawn(socket::serve(s, engine, Port::ProxyBoot, shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {
            // A loop ends only on shutdown or by a panic; either way the daemon stops.
            shutdown.cancel();
        }
        Ok(())
    }
}
