//! The routes' shared state and the router. Selection sits behind the [`Select`] seam so
//! route tests can fix the decision; the daemon passes the live [`PolicyHandle`]. The
//! state holds no per-machine or per-request data: every request reads the policy anew.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::policy::{Decision, MachineFacts, PolicyHandle};

/// Chooses the setup for a machine. Must be pure and quick: it runs on every script
/// request.
pub trait Select: Send + Sync + 'static {
    fn select(&self, facts: &MachineFacts) -> Decision;
}

impl Select for PolicyHandle {
    fn select(&self, facts: &MachineFacts) -> Decision {
        self.current().select(facts)
    }
}

/// Everything a request handler reads. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// `http://IP:PORT` as machines see it, without a trailing slash.
    pub public_base: String,
    pub select: Arc<dyn Select>,
    /// Served at `/files/`.
    pub data_dir: PathBuf,
    /// Served at `/ipxe-bin/`.
    pub ipxe_dir: PathBuf,
}

/// All routes, with one tracing span per request (method, path, peer; `mac` is filled in
/// by the per-machine script route).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/boot.ipxe", get(super::scripts::entry))
        .route("/ipxe/{mac}", get(super::scripts::machine))
        .route("/files/{*path}", get(super::files::data_file))
        .route("/ipxe-bin/{file}", get(super::files::ipxe_bin))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

fn request_span(req: &Request) -> tracing::Span {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        peer = %peer,
        mac = tracing::field::Empty,
    )
}
