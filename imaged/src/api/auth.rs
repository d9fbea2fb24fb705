//! The bearer-token extractor: every route that takes `Authed` answers 401 without a
//! valid `Authorization: Bearer carte_...` header. What the principal may do is decided
//! later, by the store.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::{blocking, ApiError, ApiState};
use crate::access::Principal;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Authed(pub Principal);

impl FromRequestParts<ApiState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
            .ok_or_else(|| unauthorized("authorization must be: Bearer <token>"))?;
        let store = state.store.clone();
        match blocking(move || store.authenticate(&token)).await? {
            Some(p) => {
                tracing::Span::current().record("user", p.name.as_str());
                Ok(Authed(p))
            }
            None => {
                if let Some(suppressed) = state.log_limit.allow() {
                    tracing::warn!(uri = %parts.uri, suppressed, "rejected unknown token");
                }
                Err(unauthorized("unknown token"))
            }
        }
    }
}
