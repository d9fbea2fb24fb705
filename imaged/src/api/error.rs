//! API errors: JSON `{"error": "..."}` with the status the failure deserves.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            StoreError::Invalid(_)
            | StoreError::DigestMismatch { .. }
            | StoreError::Interrupted(_) => StatusCode::BAD_REQUEST,
            StoreError::Conflict(_) | StoreError::Referenced { .. } => StatusCode::CONFLICT,
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::Meta(_)
            | StoreError::Blob(_)
            | StoreError::Token(_)
            | StoreError::Damaged(_) => {
                tracing::error!(error = %e, "store failure");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        if self.status == StatusCode::UNAUTHORIZED {
            return (
                self.status,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"carte\"")],
                body,
            )
                .into_response();
        }
        (self.status, body).into_response()
    }
}
