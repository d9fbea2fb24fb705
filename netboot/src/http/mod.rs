//! HTTP: the iPXE entry script, per-machine iPXE scripts and boot artefacts.
//!
//! [`router`] builds the routes from an [`AppState`] so tests can drive them without a
//! socket; [`HttpService::run`] binds and serves them until shutdown. **Files are
//! streamed, never buffered whole, never chunked.** This module does not choose setups
//! (that is [`crate::policy`], behind the [`Select`] seam) and does not write iPXE syntax
//! (that is [`crate::ipxe`]). It has no upload or machine API yet.

mod error;
mod files;
mod range;
mod safe_path;
mod scripts;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::policy::PolicyHandle;

pub use error::HttpError;
pub use range::{parse_range, RangeSpec};
pub use safe_path::{resolve, PathRefused};
pub use scripts::{arch_from_ipxe, facts_from_query, ScriptQuery};
pub use state::{router, AppState, Select};

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

impl HttpService {
    /// The routes' shared state, selecting from the live policy.
    pub fn state(&self) -> AppState {
        AppState {
            public_base: self.public_base.trim_end_matches('/').to_string(),
            select: Arc::new(self.policy.clone()),
            data_dir: self.data_dir.clone(),
            ipxe_dir: self.ipxe_dir.clone(),
        }
    }

    /// Binds `bind` and serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HttpError> {
        let listener = TcpListener::bind(self.bind)
            .await
            .map_err(|source| HttpError::Bind {
                addr: self.bind,
                source,
            })?;
        serve(listener, self.state(), shutdown).await
    }
}

/// Serves the routes on an already bound listener (tests bind 127.0.0.1:0) until
/// `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(HttpError::Serve)
}
