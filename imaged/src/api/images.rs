//! Image and version routes: create, list, show, delete, streamed blob upload, recording
//! a version, reading one.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use futures_util::TryStreamExt;
use serde::de::DeserializeOwned;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::auth::Authed;
use super::{blocking, ApiError, ApiState, SHA256_HEADER};
use crate::model::{
    Artefact, Digest, Image, ImageDetails, ImageRef, NewImage, NewVersion, Version,
};

/// JSON bodies are parsed here so a bad one gets our JSON 400, not axum's text 422.
pub(super) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

pub(super) fn parse_ref(name: &str, version: &str) -> Result<ImageRef, ApiError> {
    format!("{name}@{version}")
        .parse()
        .map_err(|e: crate::model::ModelError| ApiError::bad_request(e.to_string()))
}

pub async fn list(
    State(st): State<ApiState>,
    Authed(who): Authed,
) -> Result<Json<Vec<Image>>, ApiError> {
    let store = st.store.clone();
    Ok(Json(blocking(move || store.list_images(&who)).await?))
}

pub async fn create(
    State(st): State<ApiState>,
    Authed(who): Authed,
    body: Bytes,
) -> Result<(StatusCode, Json<Image>), ApiError> {
    let new: NewImage = parse_json(&body)?;
    let store = st.store.clone();
    let image = blocking(move || store.create_image(&who, new)).await?;
    Ok((StatusCode::CREATED, Json(image)))
}

pub async fn show(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path(name): Path<String>,
) -> Result<Json<ImageDetails>, ApiError> {
    let store = st.store.clone();
    Ok(Json(blocking(move || store.show_image(&who, &name)).await?))
}

pub async fn delete(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = st.store.clone();
    blocking(move || store.delete_image(&who, &name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../blobs`: the body is streamed into the blob store while hashed; the client
/// must declare its sha256 in `X-Carte-Sha256`. Answers the stored artefact (201).
pub async fn upload_blob(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Artefact>), ApiError> {
    let declared: Digest = headers
        .get(SHA256_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("declare the content's sha256 in X-Carte-Sha256"))?
        .trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e: crate::model::ModelError| ApiError::bad_request(e.to_string()))?;
    let limit = st.store.config().max_upload;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(crate::store::StoreError::TooLarge { limit }.into());
    }
    let stream = body.into_data_stream().map_err(io::Error::other);
    // The bridge blocks on the async body inside the blocking task: streamed, not buffered.
    let mut reader = SyncIoBridge::new(StreamReader::new(stream));
    let store = st.store.clone();
    let result =
        blocking(move || store.upload_blob(&who, &name, &mut reader, Some(&declared))).await;
    if let Err(e) = &result {
        if let Some(suppressed) = st.log_limit.allow() {
            tracing::info!(status = %e.status, error = %e.message, suppressed, "upload refused");
        }
    }
    Ok((StatusCode::CREATED, Json(result?)))
}

/// `POST .../versions`: records a version from already uploaded artefacts (201).
pub async fn add_version(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Version>), ApiError> {
    let new: NewVersion = parse_json(&body)?;
    let store = st.store.clone();
    let v = blocking(move || store.add_version(&who, &name, new)).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn version(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Version>, ApiError> {
    let r = parse_ref(&name, &version)?;
    let store = st.store.clone();
    Ok(Json(blocking(move || store.version(&who, &r)).await?))
}
