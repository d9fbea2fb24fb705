//! Project, member, token and gc routes.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::Authed;
use super::images::parse_json;
use super::{blocking, ApiError, ApiState};
use crate::model::{NewToken, Project, Role, TokenInfo};
use crate::store::GcReport;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: Role,
}

pub async fn projects(
    State(st): State<ApiState>,
    Authed(who): Authed,
) -> Result<Json<Vec<Project>>, ApiError> {
    let store = st.store.clone();
    Ok(Json(blocking(move || store.projects(&who)).await?))
}

pub async fn create_project(
    State(st): State<ApiState>,
    Authed(who): Authed,
    body: Bytes,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let NameBody { name } = parse_json(&body)?;
    let store = st.store.clone();
    let p = blocking(move || store.create_project(&who, &name)).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

pub async fn project(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path(name): Path<String>,
) -> Result<Json<Project>, ApiError> {
    let store = st.store.clone();
    Ok(Json(blocking(move || store.project(&who, &name)).await?))
}

pub async fn add_member(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Project>, ApiError> {
    let MemberBody { user } = parse_json(&body)?;
    let store = st.store.clone();
    Ok(Json(
        blocking(move || store.add_member(&who, &name, &user)).await?,
    ))
}

pub async fn tokens(
    State(st): State<ApiState>,
    Authed(who): Authed,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let store = st.store.clone();
    Ok(Json(blocking(move || store.tokens(&who)).await?))
}

pub async fn create_token(
    State(st): State<ApiState>,
    Authed(who): Authed,
    body: Bytes,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let TokenBody { name, role } = parse_json(&body)?;
    let store = st.store.clone();
    let t = blocking(move || store.create_token(&who, &name, role)).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

pub async fn gc(
    State(st): State<ApiState>,
    Authed(who): Authed,
) -> Result<Json<GcReport>, ApiError> {
    let store = st.store.clone();
    Ok(Json(
        blocking(move || store.gc(&who, crate::store::now())).await?,
    ))
}
