//! HTTP: the iPXE entry script, per-machine iPXE scripts and boot artefacts.
//!
//! [`router`] builds the routes from an [`AppState`] so tests can drive them without a
//! socket; [`HttpService::run`] binds and serves them until shutdown. **Files are
//! streamed, never buffered whole, never chunked. Every connection is bounded: headers
//! within a time limit, a cap on open connections, a grace period at shutdown
//! ([`Limits`]).** This module does not choose setups
//! (that is [`crate::policy`], behind the [`Select`] seam) and does not write iPXE syntax
//! (that is [`crate::ipxe`]). With an image store ([`ImageRoutes`]) it also serves kernel
//! artefacts at `/boot/blobs/sha256/{digest}`, mounts imaged's API at `/api/v1` and
//! answers machines (`/api/v1/machines/{mac}/plan` and `/events`, with the boot token).

mod boot_blobs;
mod error;
mod files;
mod machines;
mod range;
mod safe_path;
mod scripts;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Extension;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ratelimit::RateLimiter;

use crate::policy::PolicyHandle;

pub use error::HttpError;
pub use range::{parse_range, RangeSpec};
pub use safe_path::{resolve, resolve_with, Links, PathRefused};
pub use scripts::{arch_from_ipxe, facts_from_query, ScriptQuery};
pub use state::{router, AppState, ImageRoutes, Select};

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
    /// The image store, when netbootd has one.
    pub images: Option<ImageRoutes>,
}

impl HttpService {
    /// The routes' shared state, selecting from the live policy.
    pub fn state(&self) -> AppState {
        AppState {
            public_base: self.public_base.trim_end_matches('/').to_string(),
            select: Arc::new(self.policy.clone()),
            data_dir: self.data_dir.clone(),
            ipxe_dir: self.ipxe_dir.clone(),
            images: self.images.clone(),
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

/// What keeps one client (or many) from holding the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request's head must arrive within this, also on an idle keep-alive connection,
    /// so half-sent requests (slowloris) do not hold a socket for ever.
    pub header_read: Duration,
    /// Connections served at once; more wait in the listen backlog, so the process never
    /// runs out of file descriptors (which TFTP transfers need too).
    pub max_connections: usize,
    /// After shutdown, how long open connections may finish before they are dropped, so
    /// a client holding a connection cannot hold the daemon.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(15),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves the routes on an already bound listener (tests bind 127.0.0.1:0) until
/// `shutdown` fires, with the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    serve_with_limits(listener, state, shutdown, Limits::default()).await
}

/// [`serve`] with explicit limits. HTTP/1.1 only: iPXE and UEFI HTTP boot speak nothing
/// else.
pub async fn serve_with_limits(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    limits: Limits,
) -> Result<(), HttpError> {
    let app = router(state);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let accept_errors = RateLimiter::new(5, Duration::from_secs(10));
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning on the error.
                if let Some(suppressed) = accept_errors.allow() {
                    tracing::warn!(suppressed, "http: accept failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let app = app.clone().layer(Extension(ConnectInfo(peer)));
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read);
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "http: connection ended: {e}");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = connections.len(),
            "http: closing connections still open after the shutdown grace"
        );
        connections.shutdown().await;
    }
    Ok(())
}
