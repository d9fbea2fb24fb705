//! The image REST API under `/api/v1`, as an axum `Router` netbootd mounts and
//! `imaged serve` runs alone. Every route takes a bearer token; the store decides what
//! the token's principal may do.
//!
//! Handlers translate HTTP to `Store` calls and `StoreError` to statuses; they hold no
//! rule of their own. Uploads and downloads stream: nothing is buffered whole.
//!
//! | route | what |
//! |---|---|
//! | `GET /images`, `POST /images` | list readable images; create (`NewImage`) |
//! | `GET /images/{name}`, `DELETE /images/{name}` | image with versions; delete (409 naming setups) |
//! | `PUT /images/{name}/blobs` | stream one artefact; `X-Carte-Sha256` required; 201 `Artefact` |
//! | `POST /images/{name}/versions` | record a version (`NewVersion`) from uploaded blobs |
//! | `GET /images/{name}/versions/{N or latest}` | one version |
//! | `GET/HEAD /images/{name}/versions/{v}/{layer,vmlinuz,modules}` | download |
//! | `GET/POST /projects`, `GET /projects/{p}`, `POST /projects/{p}/members` | projects |
//! | `GET/POST /tokens`, `POST /gc` | admins only |

mod auth;
mod download;
mod error;
mod images;
mod others;
pub mod range;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;

pub use error::ApiError;

use crate::ratelimit::RateLimiter;
use crate::store::Store;

/// Header in which a client declares the sha256 of what it uploads.
pub const SHA256_HEADER: &str = "x-carte-sha256";

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub store: Store,
    /// For log lines a client can trigger (bad tokens, failed uploads).
    log_limit: Arc<RateLimiter>,
}

impl ApiState {
    pub fn new(store: Store) -> ApiState {
        ApiState {
            store,
            log_limit: Arc::new(RateLimiter::new(20, std::time::Duration::from_secs(10))),
        }
    }
}

/// Runs a blocking store call off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("store task failed: {e}"))),
    }
}

/// The `/api/v1` routes, ready to be merged into a bigger router or served alone.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/images", get(images::list).post(images::create))
        .route("/images/{name}", get(images::show).delete(images::delete))
        .route("/images/{name}/blobs", put(images::upload_blob))
        .route("/images/{name}/versions", post(images::add_version))
        .route("/images/{name}/versions/{version}", get(images::version))
        .route(
            "/images/{name}/versions/{version}/{artefact}",
            get(download::artefact),
        )
        .route(
            "/projects",
            get(others::projects).post(others::create_project),
        )
        .route("/projects/{name}", get(others::project))
        .route("/projects/{name}/members", post(others::add_member))
        .route("/tokens", get(others::tokens).post(others::create_token))
        .route("/gc", post(others::gc))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .with_state(state);
    // One span per request; `user` is filled in once the token is known.
    let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(
        |req: &axum::http::Request<axum::body::Body>| {
            tracing::info_span!(
                "api",
                method = %req.method(),
                uri = %req.uri(),
                user = tracing::field::Empty,
            )
        },
    );
    Router::new().nest("/api/v1", v1).layer(trace)
}
