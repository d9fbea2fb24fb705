//! Errors of the HTTP service (binding, serving) and of one request (answered with a
//! status and a short text body). Request errors never carry file contents or paths
//! outside the served roots.

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ipxe::RenderError;
use crate::mac::MacParseError;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: server failed: {0}")]
    Serve(std::io::Error),
}

/// Why one request failed; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("bad mac in script request: {0}")]
    BadMac(#[from] MacParseError),
    #[error("cannot render the script: {0}")]
    Render(#[from] RenderError),
    #[error("bad path {0:?}")]
    BadPath(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// An image setup cannot be booted now (no store, missing initramfs, store failure).
    #[error("cannot boot image setup {setup}: {why}")]
    ImageSetup { setup: String, why: String },
}

impl RequestError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadMac(_) | Self::BadPath(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Render(_) | Self::Io { .. } | Self::ImageSetup { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let body = format!("{self}\n");
        (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}
