//! Serving files: `GET`/`HEAD /files/{*path}` from the data folder and
//! `/ipxe-bin/{file}` from the iPXE binaries folder.
//!
//! **Bodies are streamed from the file in bounded chunks, never read whole, and always
//! carry Content-Length (never chunked).** Validators: a strong ETag from size, mtime and
//! inode, and Last-Modified; `If-None-Match` / `If-Modified-Since` answer 304, a single
//! `Range` answers 206 (416 when unsatisfiable), `If-Range` is honoured. Directories are
//! not listed (404). Path checks live in `safe_path`, range parsing in `range`.
//! `send_file_with_etag` is the same answer for a file found another way (boot blobs).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::error::RequestError;
use super::range::{parse_range, RangeSpec};
use super::safe_path::{resolve_with, Links, PathRefused};
use super::state::AppState;
use crate::ratelimit::RateLimiter;
use crate::transfers::Transfers;

/// Read size per body chunk: large enough for throughput, small enough that memory per
/// client stays bounded.
const CHUNK: usize = 64 * 1024;

static REFUSED: LazyLock<RateLimiter> =
    LazyLock::new(|| RateLimiter::new(20, Duration::from_secs(60)));

/// Top-level names of the data folder that belong to the image store: its database and
/// its blobs are reached only through the API and the boot-blob route, never here.
pub const STORE_NAMES: [&str; 5] = ["carte.db", "carte.db-wal", "carte.db-shm", "blobs", "tmp"];

pub async fn data_file(
    State(state): State<AppState>,
    UrlPath(path): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let first = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
    if STORE_NAMES.contains(&first) {
        return respond(Err(RequestError::NotFound(path)));
    }
    respond(serve(&state.data_dir, Links::StayInside, &path, &method, &headers).await)
}

pub async fn ipxe_bin(
    State(state): State<AppState>,
    UrlPath(file): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // Debian's ipxe.efi is a link to /boot: the package's links are followed.
    respond(serve(&state.ipxe_dir, Links::MayLeave, &file, &method, &headers).await)
}

fn respond(result: Result<Response, RequestError>) -> Response {
    match result {
        Ok(response) => response,
        Err(e) => {
            if let Some(suppressed) = REFUSED.allow() {
                tracing::warn!(suppressed, status = e.status().as_u16(), "{e}");
            }
            e.into_response()
        }
    }
}

/// The validators and size of one file version.
struct FileInfo {
    size: u64,
    etag: String,
    modified: Option<SystemTime>,
}

impl FileInfo {
    fn of(meta: &std::fs::Metadata) -> Self {
        let modified = meta.modified().ok();
        let mtime_ns = modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Self {
            size: meta.len(),
            etag: format!("\"{:x}-{:x}-{:x}\"", meta.len(), mtime_ns, meta.ino()),
            modified,
        }
    }

    fn last_modified(&self) -> Option<String> {
        self.modified.map(httpdate::fmt_http_date)
    }

    /// `If-None-Match` uses the weak comparison: `W/` prefixes do not matter.
    fn none_match(&self, header: &str) -> bool {
        header
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag)
    }

    /// True when the file has not changed since `since` (to the second, as HTTP dates go).
    fn unmodified_since(&self, since: &str) -> bool {
        let (Some(modified), Ok(since)) = (self.modified, httpdate::parse_http_date(since)) else {
            return false;
        };
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        secs(modified) <= secs(since)
    }

    /// `If-Range`: the range applies only to the version the client already has. An
    /// ETag must match strongly; a date must equal Last-Modified.
    fn range_still_valid(&self, if_range: &str) -> bool {
        let if_range = if_range.trim();
        if if_range.starts_with('"') {
            if_range == self.etag
        } else {
            self.last_modified().as_deref() == Some(if_range)
        }
    }
}

async fn serve(
    root: &Path,
    links: Links,
    rel: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, RequestError> {
    let path = resolve_with(root, rel, links).map_err(|e| match e {
        PathRefused::Malformed(p) => RequestError::BadPath(p),
        PathRefused::NotServed(p) => RequestError::NotFound(p),
    })?;
    let io = |source: std::io::Error| RequestError::Io {
        path: rel.to_string(),
        source,
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RequestError::NotFound(rel.to_string()))
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().await.map_err(io)?;
    if !meta.is_file() {
        return Err(RequestError::NotFound(rel.to_string()));
    }
    send_file(file, FileInfo::of(&meta), method, headers, rel, None).await
}

/// Answers a request for an open regular file: validators, 304, Range, HEAD, and the
/// body streamed with an explicit Content-Length. `etag`, when given, replaces the
/// size-mtime-inode ETag (content-addressed blobs use their quoted sha256).
/// `counted`: the transfer totals and the blob digest that the body's bytes are added to.
pub(super) async fn send_file_with_etag(
    file: tokio::fs::File,
    etag: Option<String>,
    method: &Method,
    headers: &HeaderMap,
    what: &str,
    counted: Option<(&Transfers, &str)>,
) -> Result<Response, RequestError> {
    let meta = file.metadata().await.map_err(|source| RequestError::Io {
        path: what.to_string(),
        source,
    })?;
    let mut info = FileInfo::of(&meta);
    if let Some(etag) = etag {
        info.etag = etag;
    }
    send_file(file, info, method, headers, what, counted).await
}

async fn send_file(
    mut file: tokio::fs::File,
    info: FileInfo,
    method: &Method,
    headers: &HeaderMap,
    rel: &str,
    counted: Option<(&Transfers, &str)>,
) -> Result<Response, RequestError> {
    let io = |source: std::io::Error| RequestError::Io {
        path: rel.to_string(),
        source,
    };
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());

    let mut out = HeaderMap::new();
    insert(&mut out, header::ETAG, &info.etag);
    if let Some(lm) = info.last_modified() {
        insert(&mut out, header::LAST_MODIFIED, &lm);
    }
    insert(&mut out, header::ACCEPT_RANGES, "bytes");

    let not_modified = match header_str(header::IF_NONE_MATCH) {
        Some(inm) => info.none_match(inm),
        None => header_str(header::IF_MODIFIED_SINCE).is_some_and(|s| info.unmodified_since(s)),
    };
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }

    let range_header = match header_str(header::IF_RANGE) {
        Some(if_range) if !info.range_still_valid(if_range) => None,
        _ => header_str(header::RANGE),
    };
    let (status, start, len) = match parse_range(range_header, info.size) {
        RangeSpec::Full => (StatusCode::OK, 0, info.size),
        RangeSpec::Partial { start, end } => {
            let content_range = format!("bytes {start}-{end}/{}", info.size);
            insert(&mut out, header::CONTENT_RANGE, &content_range);
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeSpec::Unsatisfiable => {
            insert(
                &mut out,
                header::CONTENT_RANGE,
                &format!("bytes */{}", info.size),
            );
            insert(&mut out, header::CONTENT_LENGTH, "0");
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
        }
    };
    insert(&mut out, header::CONTENT_TYPE, "application/octet-stream");
    // An explicit length makes hyper frame the body by length, never chunked.
    insert(&mut out, header::CONTENT_LENGTH, &len.to_string());

    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(io)?;
        }
        // `take` bounds the stream to the announced length even if the file grows.
        let bounded = file.take(len);
        match counted {
            Some((transfers, digest)) => Body::from_stream(ReaderStream::with_capacity(
                transfers.reader(digest, bounded),
                CHUNK,
            )),
            None => Body::from_stream(ReaderStream::with_capacity(bounded, CHUNK)),
        }
    };
    Ok((status, out, body).into_response())
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    // Every value here is built from digits, hex and HTTP dates; skip rather than panic.
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}
