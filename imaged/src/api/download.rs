//! `GET`/`HEAD .../versions/{v}/{artefact}`: streams an artefact from its blob file with
//! Content-Length, a strong ETag (the quoted sha256), single-range 206/416 and
//! If-None-Match 304. The decision is `range::plan`; this only does the IO.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::auth::Authed;
use super::images::parse_ref;
use super::range::{plan, Plan};
use super::{blocking, ApiError, ApiState};
use crate::model::ArtefactName;

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn hv(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|e| ApiError::internal(format!("bad header value: {e}")))
}

pub async fn artefact(
    State(st): State<ApiState>,
    Authed(who): Authed,
    Path((name, version, artefact)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = parse_ref(&name, &version)?;
    let which: ArtefactName = artefact
        .parse()
        .map_err(|e: crate::model::ModelError| ApiError::bad_request(e.to_string()))?;
    let store = st.store.clone();
    let (meta, path) = blocking(move || store.artefact(&who, &r, which)).await?;

    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("open blob {}: {e}", path.display())))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("stat blob {}: {e}", path.display())))?
        .len();
    if len != meta.size {
        // Blobs are immutable once named; a size change means the data folder was damaged.
        return Err(ApiError::internal(format!(
            "blob {} has {len} bytes, recorded {}",
            meta.sha256, meta.size
        )));
    }
    let etag = format!("\"{}\"", meta.sha256);
    let decision = plan(
        len,
        &etag,
        header_str(&headers, header::RANGE),
        header_str(&headers, header::IF_RANGE),
        header_str(&headers, header::IF_NONE_MATCH),
    );

    let mut resp = Response::builder()
        .header(header::ETAG, hv(&etag)?)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream");
    let (status, start, count) = match decision {
        Plan::NotModified => (StatusCode::NOT_MODIFIED, 0, 0),
        Plan::Unsatisfiable => {
            resp = resp.header(header::CONTENT_RANGE, hv(&format!("bytes */{len}"))?);
            (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0)
        }
        Plan::Full => (StatusCode::OK, 0, len),
        Plan::Partial { start, end } => {
            resp = resp.header(
                header::CONTENT_RANGE,
                hv(&format!("bytes {start}-{end}/{len}"))?,
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    let send_body =
        method != Method::HEAD && matches!(status, StatusCode::OK | StatusCode::PARTIAL_CONTENT);
    let body = if send_body {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(format!("seek blob {}: {e}", path.display())))?;
        Body::from_stream(ReaderStream::with_capacity(file.take(count), 256 * 1024))
    } else {
        Body::empty()
    };
    if status != StatusCode::NOT_MODIFIED {
        resp = resp.header(header::CONTENT_LENGTH, count);
    }
    resp.status(status)
        .body(body)
        .map_err(|e| ApiError::internal(format!("build response: {e}")))
}
