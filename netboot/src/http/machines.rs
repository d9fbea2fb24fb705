//! The machine API: `GET /api/v1/machines/{mac}/plan` and `POST .../events` for a booting
//! machine, authenticated by its boot token (the `carte.token=` of its iPXE script), and
//! `GET /api/v1/machines` for admins (a store token of role admin), which
//! `netbootd machines` prints.
//!
//! The handlers only translate HTTP to [`crate::machines::Machines`]; they hold no state
//! and build no plan (the script route issues it). JSON errors as imaged's API answers
//! them: `{"error": "..."}`.

use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use carte_contract::Event;

use super::state::{AppState, ImageRoutes};
use crate::mac::MacAddr;
use crate::machines::MachineError;
use crate::ratelimit::RateLimiter;

static REFUSED: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new(20, Duration::from_secs(60)));

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let message = message.to_string();
    if let Some(suppressed) = REFUSED.allow() {
        tracing::warn!(
            suppressed,
            status = status.as_u16(),
            "machine api: {message}"
        );
    }
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The MAC, the image routes and the token of a machine request, or the error to answer.
fn machine_request<'a>(
    state: &'a AppState,
    mac: &str,
    headers: &HeaderMap,
) -> Result<(MacAddr, &'a ImageRoutes, String), Box<Response>> {
    let Some(images) = &state.images else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "no machine api without an image store",
        )));
    };
    let mac: MacAddr = mac
        .parse()
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("bad mac: {e}"))))?;
    tracing::Span::current().record("mac", tracing::field::display(mac));
    let token = bearer(headers).ok_or_else(|| {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (the boot token)",
        ))
    })?;
    Ok((mac, images, token.to_string()))
}

/// A machine request whose bearer is this boot's token: the MAC, the image routes and
/// the boot's plan, or the error to answer.
fn boot_plan<'a>(
    state: &'a AppState,
    mac: &str,
    headers: &HeaderMap,
) -> Result<(MacAddr, &'a ImageRoutes, carte_contract::Plan), Box<Response>> {
    let (mac, images, token) = machine_request(state, mac, headers)?;
    let plan = images
        .machines
        .plan(mac, &token)
        .map_err(|e| Box::new(refused(e)))?;
    Ok((mac, images, plan))
}

fn refused(e: MachineError) -> Response {
    match e {
        MachineError::NoPlan(_) => error(StatusCode::NOT_FOUND, e),
        MachineError::BadToken(_) => error(StatusCode::UNAUTHORIZED, e),
    }
}

pub async fn plan(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
) -> Response {
    match boot_plan(&state, &mac, &headers) {
        Ok((mac, _, plan)) => {
            tracing::info!(%mac, layers = plan.layers.len(), "plan served");
            Json(plan).into_response()
        }
        Err(resp) => *resp,
    }
}

pub async fn event(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Event>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (mac, images, token) = match machine_request(&state, &mac, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Json(event) = match body {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad event: {}", e.body_text()),
            )
        }
    };
    match images
        .machines
        .event(mac, &token, &event, crate::machines::now_ms())
    {
        Ok(()) => {
            // Only a machine with this boot's token gets here; its message (an autostart's
            // output tail, a progress line) is logged bounded.
            let message = event.message.as_deref().map(|m| bounded(m, 512));
            tracing::info!(%mac, stage = ?event.stage, error = ?event.error, text = ?message, "machine event");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => refused(e),
    }
}

/// The sha256 a sync-back upload declares in `X-Carte-Sha256`, or the 400 to answer.
fn declared_sha256(headers: &HeaderMap) -> Result<imaged::model::Digest, Box<Response>> {
    match headers
        .get(imaged::api::SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase().parse())
    {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("bad sha256: {e}"),
        ))),
        None => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "declare the tar's sha256 in X-Carte-Sha256",
        ))),
    }
}

/// The request body as a blocking reader for the store, streamed: the bridge blocks on
/// the async body inside the blocking task, so nothing is buffered whole.
fn body_reader(body: axum::body::Body) -> impl std::io::Read + Send {
    use futures_util::TryStreamExt;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream))
}

/// The answer to a stored sync-back (201 with the version) or to the store's refusal.
fn stored(
    what: &str,
    result: Result<
        Result<imaged::model::Version, imaged::store::StoreError>,
        tokio::task::JoinError,
    >,
) -> Response {
    use imaged::store::StoreError;
    match result {
        Ok(Ok(version)) => {
            tracing::info!(image = %version.image, version = version.number, base = ?version.layer.base, "{what} synced back");
            (StatusCode::CREATED, Json(version)).into_response()
        }
        Ok(Err(e)) => {
            let status = match &e {
                StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
                StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
                StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, format!("sync-back of {what}: {e}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `PUT /api/v1/machines/{mac}/sync/machine`: the tar of the machine layer's last
/// session (carte-init's sync-back), its sha256 in `X-Carte-Sha256`, from a machine whose
/// current plan asks for it (bearer = the boot token). Streamed into the store and
/// recorded as the next version of the machine's image (`machine-<mac>`, created on first
/// use); a body that does not match its sha256 leaves no version. 201 with the version.
pub async fn sync_machine(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (mac, images, plan) = match boot_plan(&state, &mac, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if !plan
        .sync_back
        .iter()
        .any(|s| s.target == carte_contract::SyncTarget::Machine)
    {
        return error(
            StatusCode::FORBIDDEN,
            "this boot's plan does not sync the machine layer back",
        );
    }
    let declared = match declared_sha256(&headers) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    let mut reader = body_reader(body);
    let store = images.store.clone();
    let result = tokio::task::spawn_blocking(move || {
        let admin = imaged::access::Principal::local_admin();
        let image = store.ensure_machine_image(&mac.to_string())?;
        let artefact = store.upload_blob(&admin, &image.name, &mut reader, Some(&declared))?;
        store.add_version(
            &admin,
            &image.name,
            imaged::model::NewVersion {
                layer: imaged::model::LayerMeta::plain(imaged::model::LayerFormat::Tar),
                artefacts: [(imaged::model::ArtefactName::Layer, artefact)].into(),
            },
        )
    })
    .await;
    stored(&format!("the machine layer of {mac}"), result)
}

/// `PUT /api/v1/machines/{mac}/sync/layer/{name}`: the tar of a writable layer's upper
/// (the changes the last session made to it), its sha256 in `X-Carte-Sha256`, from a
/// machine whose current plan mounts `name` writable and asks for its sync-back (bearer =
/// the boot token). Recorded as the next version of that image, a `tar` whose `base` is
/// the version this plan mounts (the version the machine shows those changes on top of);
/// the store writes it as the image's owner ([`imaged::access::sync_writer`]), so no
/// plan lets a machine write a system, kernel or foreign image. A body that does not
/// match its sha256, or is cut off, leaves no version. 201 with the version.
pub async fn sync_layer(
    State(state): State<AppState>,
    Path((mac, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (mac, images, plan) = match boot_plan(&state, &mac, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let target = carte_contract::SyncTarget::Layer(name.clone());
    let base = plan
        .layers
        .iter()
        .find(|l| l.name == name && l.writable())
        .map(|l| l.version);
    let (true, Some(base)) = (plan.sync_back.iter().any(|s| s.target == target), base) else {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "this boot's plan does not sync layer {} back",
                bounded(&name, 64)
            ),
        );
    };
    let Ok(base) = u32::try_from(base) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("layer {name}: bad version {base}"),
        );
    };
    let declared = match declared_sha256(&headers) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    let mut reader = body_reader(body);
    let store = images.store.clone();
    let image = name.clone();
    let result = tokio::task::spawn_blocking(move || {
        store.add_synced_changes(&image, base, &mut reader, &declared)
    })
    .await;
    stored(&format!("layer {name} of {mac}"), result)
}

/// The image routes, when `headers` carry an admin's store token; else the error to
/// answer.
async fn admin(
    state: &AppState,
    headers: &HeaderMap,
    what: &str,
) -> Result<super::state::ImageRoutes, Response> {
    let Some(images) = &state.images else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no machine api without an image store",
        ));
    };
    let Some(token) = bearer(headers).map(str::to_string) else {
        return Err(error(StatusCode::UNAUTHORIZED, "missing bearer token"));
    };
    let store = images.store.clone();
    let who = match tokio::task::spawn_blocking(move || store.authenticate(&token)).await {
        Ok(Ok(Some(who))) => who,
        Ok(Ok(None)) => return Err(error(StatusCode::UNAUTHORIZED, "unknown token")),
        Ok(Err(e)) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
    };
    if !who.is_admin() {
        return Err(error(StatusCode::FORBIDDEN, format!("only admins {what}")));
    }
    Ok(images.clone())
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match admin(&state, &headers, "list machines").await {
        Ok(images) => Json(images.machines.states()).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/transfers`: bytes sent per blob digest since netbootd started.
pub async fn transfers(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match admin(&state, &headers, "read transfer totals").await {
        Ok(images) => Json(images.transfers.snapshot()).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn bounded_cuts_at_a_character_boundary() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcd", 3), "abc…");
        assert_eq!(bounded("aé", 2), "a…");
    }
}
