//! Blocking HTTP client of the image API (ureq), used by the CLI's `--server` mode and by
//! tests; plus `save_verified`, the pull half that both modes share.
//!
//! It streams in both directions and never holds a layer in memory. It holds no rule: the
//! server decides and this reports its JSON error.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::api::SHA256_HEADER;
use crate::model::{
    Artefact, ArtefactName, Digest, Image, ImageDetails, ImageRef, NewImage, NewToken, NewVersion,
    Project, Role, TokenInfo, Version,
};
use crate::store::GcReport;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("talking to {url}: {source}")]
    Transport { url: String, source: ureq::Error },
    #[error("bad answer from {url}: {detail}")]
    Answer { url: String, detail: String },
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("downloaded content has sha256 {actual}, expected {expected}; nothing kept")]
    Mismatch { expected: Digest, actual: Digest },
}

impl ClientError {
    /// The HTTP status, when the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Calls `progress(total_so_far)` as bytes flow through.
pub struct Progress<'a, R> {
    inner: R,
    done: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<'a, R> Progress<'a, R> {
    pub fn new(inner: R, progress: &'a mut dyn FnMut(u64)) -> Self {
        Progress {
            inner,
            done: 0,
            progress,
        }
    }
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done);
        Ok(n)
    }
}

/// Streams `body` into a temporary file beside `dest`, checks its sha256 against
/// `expected`, fsyncs and renames it onto `dest`. On any failure `dest` is untouched
/// and the temporary file removed.
pub fn save_verified(
    body: &mut dyn Read,
    expected: &Digest,
    dest: &Path,
) -> Result<u64, ClientError> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let tmp = dir.join(format!(".{name}.part-{}", std::process::id()));
    let io = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| ClientError::Io { step, path, source }
    };
    let result = (|| {
        let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("download into", &tmp)(e)),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io("write", &tmp))?;
            size += n as u64;
        }
        let actual = Digest::from_bytes(&hasher.finalize());
        if actual != *expected {
            return Err(ClientError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        file.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, dest).map_err(io("rename onto", dest))?;
        Ok(size)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A client of one server with one token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

type Resp = ureq::http::Response<ureq::Body>;

impl Client {
    /// `base` is the server's root, e.g. `http://127.0.0.1:8080` (the API lives under
    /// `/api/v1`).
    pub fn new(base: &str, token: &str) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            auth: format!("Bearer {}", token.trim()),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn check(&self, url: &str, r: Result<Resp, ureq::Error>) -> Result<Resp, ClientError> {
        let mut resp = r.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(text);
        Err(ClientError::Status { status, message })
    }

    fn json<T: DeserializeOwned>(&self, url: &str, mut resp: Resp) -> Result<T, ClientError> {
        let text = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .map_err(|e| ClientError::Answer {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        serde_json::from_str(&text).map_err(|e| ClientError::Answer {
            url: url.to_string(),
            detail: e.to_string(),
        })
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let r = self
            .agent
            .get(&url)
            .header("Authorization", &self.auth)
            .call();
        let resp = self.check(&url, r)?;
        self.json(&url, resp)
    }

    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let data = serde_json::to_vec(body).map_err(|e| ClientError::Answer {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let r = self
            .agent
            .post(&url)
            .header("Authorization", &self.auth)
            .header("Content-Type", "application/json")
            .send(&data[..]);
        let resp = self.check(&url, r)?;
        self.json(&url, resp)
    }

    pub fn list_images(&self) -> Result<Vec<Image>, ClientError> {
        self.get("/images")
    }

    pub fn show(&self, name: &str) -> Result<ImageDetails, ClientError> {
        self.get(&format!("/images/{name}"))
    }

    pub fn create_image(&self, new: &NewImage) -> Result<Image, ClientError> {
        self.post("/images", new)
    }

    pub fn delete(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/images/{name}"));
        let r = self
            .agent
            .delete(&url)
            .header("Authorization", &self.auth)
            .call();
        self.check(&url, r).map(|_| ())
    }

    /// Streams `size` bytes of `body`, whose sha256 is `sha256`, as a blob of `image`.
    pub fn upload_blob(
        &self,
        image: &str,
        body: &mut dyn Read,
        size: u64,
        sha256: &Digest,
    ) -> Result<Artefact, ClientError> {
        let url = self.url(&format!("/images/{image}/blobs"));
        let r = self
            .agent
            .put(&url)
            .header("Authorization", &self.auth)
            .header(SHA256_HEADER, sha256.as_str())
            .header("Content-Length", size.to_string())
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(body));
        let resp = self.check(&url, r)?;
        self.json(&url, resp)
    }

    pub fn add_version(&self, image: &str, new: &NewVersion) -> Result<Version, ClientError> {
        self.post(&format!("/images/{image}/versions"), new)
    }

    pub fn version(&self, r: &ImageRef) -> Result<Version, ClientError> {
        self.get(&format!("/images/{}/versions/{}", r.name, r.version))
    }

    /// Downloads an artefact into `dest` (via a verified temporary file), calling
    /// `progress(bytes_so_far, content_length)` as it goes.
    pub fn download(
        &self,
        r: &ImageRef,
        artefact: ArtefactName,
        dest: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Artefact, ClientError> {
        let url = self.url(&format!(
            "/images/{}/versions/{}/{artefact}",
            r.name, r.version
        ));
        let resp = self
            .agent
            .get(&url)
            .header("Authorization", &self.auth)
            .call();
        let mut resp = self.check(&url, resp)?;
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim_matches('"').to_string())
            .and_then(|s| s.parse::<Digest>().ok())
            .ok_or_else(|| ClientError::Answer {
                url: url.clone(),
                detail: "no sha256 ETag".into(),
            })?;
        let total = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let mut cb = |n| progress(n, total);
        let mut body = Progress::new(resp.body_mut().as_reader(), &mut cb);
        let size = save_verified(&mut body, &etag, dest)?;
        Ok(Artefact { sha256: etag, size })
    }

    pub fn projects(&self) -> Result<Vec<Project>, ClientError> {
        self.get("/projects")
    }

    pub fn create_project(&self, name: &str) -> Result<Project, ClientError> {
        self.post("/projects", &serde_json::json!({ "name": name }))
    }

    pub fn add_member(&self, project: &str, user: &str) -> Result<Project, ClientError> {
        self.post(
            &format!("/projects/{project}/members"),
            &serde_json::json!({ "user": user }),
        )
    }

    pub fn create_token(&self, name: &str, role: Role) -> Result<NewToken, ClientError> {
        self.post(
            "/tokens",
            &serde_json::json!({ "name": name, "role": role }),
        )
    }

    pub fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.get("/tokens")
    }

    pub fn gc(&self) -> Result<GcReport, ClientError> {
        self.post("/gc", &serde_json::json!({}))
    }
}
