//! The routes' shared state and the router. Selection sits behind the [`Select`] seam so
//! route tests can fix the decision; the daemon passes the live [`PolicyHandle`]. The
//! state holds no per-machine or per-request data: every request reads the policy anew.

use std::collections::BTreeSet;
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

    /// The kernel images the policy names, whose artefacts machines fetch without a
    /// token at `/boot/blobs/sha256/`. None by default.
    fn kernel_images(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }
}

impl Select for PolicyHandle {
    fn select(&self, facts: &MachineFacts) -> Decision {
        self.current().select(facts)
    }

    fn kernel_images(&self) -> BTreeSet<String> {
        self.current().kernel_images()
    }
}

/// The image store as the HTTP service uses it: image setups boot from it, its API is
/// mounted under `/api/v1`.
#[derive(Clone, Debug)]
pub struct ImageRoutes {
    pub store: imaged::store::Store,
    /// The carte initramfs, a path under the data folder, served at `/files/`.
    pub initramfs: String,
    /// Plans issued per boot and the machines' states.
    pub machines: Arc<crate::machines::Machines>,
    /// Bytes sent per blob at `/boot/blobs/`.
    pub transfers: Arc<crate::transfers::Transfers>,
}

impl ImageRoutes {
    /// Routes over `store`, with no machine known yet.
    pub fn new(store: imaged::store::Store, initramfs: &str) -> ImageRoutes {
        ImageRoutes {
            store,
            initramfs: initramfs.to_string(),
            machines: Arc::default(),
            transfers: Arc::default(),
        }
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
    /// `None`: no image store, so image setups answer 500 and `/api/v1` is absent.
    pub images: Option<ImageRoutes>,
}

/// All routes, with one tracing span per request (method, path, peer; `mac` is filled in
/// by the per-machine script route).
pub fn router(state: AppState) -> Router {
    let api = state
        .images
        .as_ref()
        .map(|i| imaged::api::router(imaged::api::ApiState::new(i.store.clone())));
    let boot = Router::new()
        .route("/boot.ipxe", get(super::scripts::entry))
        .route("/ipxe/{mac}", get(super::scripts::machine))
        .route("/files/{*path}", get(super::files::data_file))
        .route("/ipxe-bin/{file}", get(super::files::ipxe_bin))
        .route(
            "/boot/blobs/sha256/{digest}",
            get(super::boot_blobs::boot_blob),
        )
        .route("/api/v1/machines", get(super::machines::list))
        .route("/api/v1/transfers", get(super::machines::transfers))
        .route(
            "/api/v1/machines/{mac}/sync/machine",
            axum::routing::put(super::machines::sync_machine),
        )
        .route(
            "/api/v1/machines/{mac}/sync/layer/{name}",
            axum::routing::put(super::machines::sync_layer),
        )
        .route("/api/v1/machines/{mac}/plan", get(super::machines::plan))
        .route(
            "/api/v1/machines/{mac}/events",
            axum::routing::post(super::machines::event),
        )
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state);
    // The API carries its own span layer (with the token's user).
    match api {
        Some(api) => boot.merge(api),
        None => boot,
    }
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
