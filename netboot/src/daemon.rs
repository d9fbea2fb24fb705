//! Starts every service of `netbootd serve` from one [`Config`] and stops them together.
//! The image store in the data folder is opened first; the HTTP service mounts its API.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, DhcpMode};
use crate::dhcp::DhcpService;
use std::sync::Arc;

use crate::http::{HttpService, ImageRoutes};
use crate::images::{self, PolicyReferences, StoreCatalog};
use crate::policy::{self, PolicyHandle};
use crate::tftp::{Root, TftpService};

/// netbootd's own state (the full-mode lease file), inside the data folder.
pub const STATE_DIR: &str = ".netbootd";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("policy {dir} is invalid:\n{errors}")]
    Policy {
        dir: std::path::PathBuf,
        errors: policy::PolicyErrors,
    },
    #[error("cannot create data folder {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Images(#[from] images::ImagesError),
    #[error(transparent)]
    Dhcp(#[from] crate::dhcp::DhcpError),
    #[error(transparent)]
    Tftp(#[from] crate::tftp::TftpError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

/// Runs all services until `shutdown` fires or one of them fails; a failure in one
/// stops the others.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Under the data folder, but hidden: `/files/` never serves dot names. Only full mode
    // writes leases there.
    let state_dir = config.data_dir.join(STATE_DIR);
    if config.dhcp.mode == DhcpMode::Full {
        std::fs::create_dir_all(&state_dir).map_err(|source| DaemonError::DataDir {
            path: state_dir.clone(),
            source,
        })?;
    }
    // The store's deletion guard reads the policy, and the policy is validated against
    // the store: open the store first, point the guard at the policy once it is loaded.
    // `/files/` never serves the store's own files (`http::files::STORE_NAMES`).
    let refs = PolicyReferences::default();
    let store = images::open_store(&config.data_dir, refs.clone())?;
    let policy: PolicyHandle =
        policy::watch_with(&config.policy_dir, Arc::new(StoreCatalog(store.clone()))).map_err(
            |errors| DaemonError::Policy {
                dir: config.policy_dir.clone(),
                errors,
            },
        )?;
    refs.set(policy.clone());

    let server_ip = config.server_ip();
    let http = HttpService {
        bind: config.http_bind(),
        public_base: config.http_base(),
        policy: policy.clone(),
        data_dir: config.data_dir.clone(),
        ipxe_dir: config.ipxe_dir.clone(),
        images: Some(ImageRoutes::new(store, &config.initramfs)),
    };
    // The iPXE folder is the package's (Debian links ipxe.efi to /boot); the extra
    // folder is the admin's own and keeps its links inside.
    let mut roots = vec![Root::packaged(&config.ipxe_dir)];
    roots.extend(config.tftp.extra_dir.iter().map(Root::contained));
    let tftp = TftpService {
        bind: SocketAddr::from((server_ip, config.tftp.port)),
        roots,
        config: config.tftp.clone(),
    };

    // Bind before announcing anything, so a bad address is the only thing reported.
    let listener = tokio::net::TcpListener::bind(http.bind)
        .await
        .map_err(|source| crate::http::HttpError::Bind {
            addr: http.bind,
            source,
        })?;
    let tftp = tftp.bind().await?;

    let mut tasks = tokio::task::JoinSet::new();
    let stop = shutdown.clone();
    let state = http.state();
    tasks.spawn(async move {
        crate::http::serve(listener, state, stop)
            .await
            .map_err(DaemonError::from)
    });
    let stop = shutdown.clone();
    tasks.spawn(async move {
        tftp.run(stop).await;
        Ok(())
    });
    if config.dhcp.mode != DhcpMode::Off {
        let dhcp = DhcpService {
            config: config.dhcp.clone(),
            interface: config.interface.clone().unwrap_or_default(),
            server_ip,
            http_base: config.http_base(),
            boot_files: config.boot_files.clone(),
            policy: policy.clone(),
            lease_file: state_dir.join("leases.json"),
        };
        let stop = shutdown.clone();
        tasks.spawn(async move { dhcp.run(stop).await.map_err(DaemonError::from) });
    }
    tracing::info!(
        server = %server_ip,
        http = %config.http_base(),
        dhcp = ?config.dhcp.mode,
        interface = ?config.interface,
        "netbootd started"
    );

    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        // The first service to end (error or shutdown) ends them all.
        shutdown.cancel();
        match joined {
            Ok(Err(e)) if result.is_ok() => result = Err(e),
            Err(e) if e.is_panic() => tracing::error!("service panicked: {e}"),
            _ => {}
        }
    }
    result
}
