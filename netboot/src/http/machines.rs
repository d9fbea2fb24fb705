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

use super::state::AppState;
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

/// The MAC and token of a machine request, or the error to answer.
fn machine_request(
    state: &AppState,
    mac: &str,
    headers: &HeaderMap,
) -> Result<(MacAddr, std::sync::Arc<crate::machines::Machines>, String), Box<Response>> {
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
    Ok((mac, images.machines.clone(), token.to_string()))
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
    let (mac, machines, token) = match machine_request(&state, &mac, &headers) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    match machines.plan(mac, &token) {
        Ok(plan) => {
            tracing::info!(%mac, layers = plan.layers.len(), "plan served");
            Json(plan).into_response()
        }
        Err(e) => refused(e),
    }
}

pub async fn event(
    State(state): State<AppState>,
    Path(mac): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Event>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let (mac, machines, token) = match machine_request(&state, &mac, &headers) {
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
    match machines.event(mac, &token, &event, crate::machines::now_ms()) {
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
