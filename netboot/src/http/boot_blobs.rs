//! `GET`/`HEAD /boot/blobs/sha256/{digest}`: kernel-image artefacts for machines, which
//! cannot send a bearer token from iPXE. Kernels are world-readable by contract, so this
//! route serves a blob **only** when it is an artefact of a kernel image the current
//! policy names (any of its versions, so a script rendered just before a push still
//! boots); anything else, a malformed digest included, is 404. Same answer as `/files/`
//! (Content-Length, Range, HEAD, 304), with the quoted sha256 as ETag.
//!
//! It does not authenticate and never serves system, user or other blobs.

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use imaged::model::Digest;

use super::error::RequestError;
use super::files::send_file_with_etag;
use super::state::AppState;
use crate::images;
use crate::ratelimit::RateLimiter;

static REFUSED: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new(20, Duration::from_secs(60)));

pub async fn boot_blob(
    State(state): State<AppState>,
    Path(digest): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    match serve(&state, &digest, &method, &headers).await {
        Ok(r) => r,
        Err(e) => {
            if let Some(suppressed) = REFUSED.allow() {
                tracing::warn!(suppressed, status = e.status().as_u16(), "boot blob: {e}");
            }
            e.into_response()
        }
    }
}

async fn serve(
    state: &AppState,
    digest: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, RequestError> {
    let not_found = || RequestError::NotFound(format!("boot blob {digest}"));
    let Some(images) = &state.images else {
        return Err(not_found());
    };
    let Ok(d) = digest.parse::<Digest>() else {
        return Err(not_found());
    };
    let kernels = state.select.kernel_images();
    let planned = images.machines.plan_layer(&d);
    let store = images.store.clone();
    let found =
        tokio::task::spawn_blocking(move || match images::boot_blob(&store, &kernels, &d)? {
            Some(blob) => Ok(Some(blob)),
            None => match planned {
                Some((name, version)) => images::plan_blob(&store, &name, version, &d),
                None => Ok(None),
            },
        })
        .await
        .map_err(|e| RequestError::Io {
            path: format!("boot blob {digest}"),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|e| RequestError::Io {
            path: format!("boot blob {digest}"),
            source: std::io::Error::other(e.to_string()),
        })?;
    let Some(blob) = found else {
        return Err(not_found());
    };
    let what = format!("boot blob {digest}");
    let file = tokio::fs::File::open(&blob.path)
        .await
        .map_err(|source| RequestError::Io {
            path: what.clone(),
            source,
        })?;
    let counted = Some((images.transfers.as_ref(), digest));
    send_file_with_etag(
        file,
        Some(format!("\"{digest}\"")),
        method,
        headers,
        &what,
        counted,
    )
    .await
}
