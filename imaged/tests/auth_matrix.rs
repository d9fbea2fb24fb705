//! Every route × every kind of caller (no token, a forged token, another user, the owner,
//! an admin) => the expected status, as one table.

mod common;

use common::{agent, layer_version, Server};
use imaged::access::Principal;
use imaged::blob::sha256_of;
use imaged::model::{ImageKind, NewImage, Role};

/// Callers, in the order of the expectation columns.
const CALLERS: [&str; 5] = ["none", "forged", "other", "owner", "admin"];

struct Row {
    method: &'static str,
    /// `{c}` is replaced by the caller's column name, so creations do not collide.
    path: &'static str,
    body: Option<&'static str>,
    expected: [u16; 5],
}

const fn row(
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    expected: [u16; 5],
) -> Row {
    Row {
        method,
        path,
        body,
        expected,
    }
}

fn table() -> Vec<Row> {
    let v = Box::leak(
        serde_json::to_string(&layer_version(b"shared"))
            .expect("json")
            .into_boxed_str(),
    );
    vec![
        row("GET", "/images", None, [401, 401, 200, 200, 200]),
        row(
            "POST",
            "/images",
            Some(r#"{"name":"new-{c}","kind":"user"}"#),
            [401, 401, 201, 201, 201],
        ),
        row("GET", "/images/home", None, [401, 401, 403, 200, 200]),
        row("DELETE", "/images/del-{c}", None, [401, 401, 403, 204, 204]),
        row(
            "PUT",
            "/images/home/blobs",
            Some("blob-{c}"),
            [401, 401, 403, 201, 403],
        ),
        row(
            "POST",
            "/images/home/versions",
            Some(v),
            [401, 401, 403, 201, 403],
        ),
        row(
            "GET",
            "/images/home/versions/1",
            None,
            [401, 401, 403, 200, 200],
        ),
        row(
            "GET",
            "/images/home/versions/latest/layer",
            None,
            [401, 401, 403, 200, 200],
        ),
        row(
            "HEAD",
            "/images/home/versions/1/layer",
            None,
            [401, 401, 403, 200, 200],
        ),
        row("GET", "/images/base", None, [401, 401, 200, 200, 200]),
        row("GET", "/projects", None, [401, 401, 200, 200, 200]),
        row(
            "POST",
            "/projects",
            Some(r#"{"name":"p-{c}"}"#),
            [401, 401, 201, 201, 201],
        ),
        row("GET", "/projects/lab", None, [401, 401, 403, 200, 200]),
        row(
            "POST",
            "/projects/lab/members",
            Some(r#"{"user":"carol"}"#),
            [401, 401, 403, 200, 200],
        ),
        row("GET", "/tokens", None, [401, 401, 403, 403, 200]),
        row(
            "POST",
            "/tokens",
            Some(r#"{"name":"t-{c}","role":"user"}"#),
            [401, 401, 403, 403, 201],
        ),
        row("POST", "/gc", Some("{}"), [401, 401, 403, 403, 200]),
    ]
}

#[test]
fn every_route_checks_token_role_and_ownership() {
    let s = Server::start();
    let alice = Principal::new("alice", Role::User);
    let admin = Principal::local_admin();
    let new = |name: &str, kind| NewImage {
        name: name.into(),
        kind,
        project: None,
        expires_at: None,
    };
    s.store
        .create_image(&alice, new("home", ImageKind::User))
        .expect("home");
    s.store
        .upload_blob(&alice, "home", &mut &b"shared"[..], None)
        .expect("blob");
    s.store
        .add_version(&alice, "home", layer_version(b"shared"))
        .expect("v1");
    s.store
        .create_image(&admin, new("base", ImageKind::System))
        .expect("base");
    s.store.create_project(&alice, "lab").expect("lab");
    for c in CALLERS {
        s.store
            .create_image(&alice, new(&format!("del-{c}"), ImageKind::User))
            .expect("del image");
    }
    let forged = format!("carte_{}", "0".repeat(64));
    let tokens = [
        None,
        Some(forged.as_str()),
        Some(s.bob.as_str()),
        Some(s.alice.as_str()),
        Some(s.admin.as_str()),
    ];

    let mut failures = Vec::new();
    for r in table() {
        for (i, c) in CALLERS.iter().enumerate() {
            let path = r.path.replace("{c}", c);
            let body = r.body.map(|b| b.replace("{c}", c)).unwrap_or_default();
            let mut req = ureq::http::Request::builder()
                .method(r.method)
                .uri(s.api(&path));
            if let Some(t) = tokens[i] {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            if path.ends_with("/blobs") {
                req = req.header("X-Carte-Sha256", sha256_of(body.as_bytes()).as_str());
            }
            let req = req.body(body.into_bytes()).expect("request");
            let mut resp = agent().run(req).expect("http");
            let status = resp.status().as_u16();
            if status != r.expected[i] {
                failures.push(format!(
                    "{} {path} as {c}: got {status}, want {}",
                    r.method, r.expected[i]
                ));
            }
            if status >= 400 && r.method != "HEAD" {
                let text = resp.body_mut().read_to_string().expect("body");
                let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
                assert!(v["error"].is_string(), "{} {path}: {text}", r.method);
            }
            if status == 401 {
                assert!(resp.headers().contains_key("www-authenticate"));
            }
        }
    }
    assert!(failures.is_empty(), "auth matrix:\n{}", failures.join("\n"));
}

#[test]
fn malformed_authorization_is_401() {
    let s = Server::start();
    for value in [
        "Basic abc",
        "Bearer",
        "Bearer carte_",
        "bearer x",
        &format!("Token {}", s.alice),
    ] {
        let resp = agent()
            .get(s.api("/images"))
            .header("Authorization", value)
            .call()
            .expect("http");
        assert_eq!(resp.status().as_u16(), 401, "{value}");
    }
}

#[test]
fn unknown_routes_and_methods_answer_json() {
    let s = Server::start();
    for (method, path, want) in [
        ("GET", "/nothing-here", 404),
        ("PATCH", "/images", 405),
        ("DELETE", "/tokens", 405),
    ] {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(s.api(path))
            .header("Authorization", format!("Bearer {}", s.admin))
            .body(())
            .expect("request");
        let mut resp = agent().run(req).expect("http");
        assert_eq!(resp.status().as_u16(), want, "{method} {path}");
        let text = resp.body_mut().read_to_string().expect("body");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON error");
        assert!(v["error"].is_string(), "{text}");
    }
}

/// A metadata store whose every call fails, as a broken disk would.
struct Broken;

fn broken() -> imaged::meta::MetaError {
    imaged::meta::MetaError::Corrupt {
        table: "images",
        detail: "disk on fire".into(),
    }
}

impl imaged::meta::MetaStore for Broken {
    fn create_image(&self, _: &imaged::model::Image) -> Result<(), imaged::meta::MetaError> {
        Err(broken())
    }
    fn image(&self, _: &str) -> Result<Option<imaged::model::Image>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn images(&self) -> Result<Vec<imaged::model::Image>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn delete_image(&self, _: &str) -> Result<bool, imaged::meta::MetaError> {
        Err(broken())
    }
    fn add_version(
        &self,
        _: &str,
        _: &imaged::model::NewVersion,
        _: u64,
    ) -> Result<Option<imaged::model::Version>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn versions(&self, _: &str) -> Result<Vec<imaged::model::Version>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn version(
        &self,
        _: &str,
        _: imaged::model::VersionSpec,
    ) -> Result<Option<imaged::model::Version>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn referenced_blobs(
        &self,
    ) -> Result<std::collections::BTreeSet<imaged::model::Digest>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn record_upload(
        &self,
        _: &str,
        _: &imaged::model::Digest,
        _: u64,
    ) -> Result<(), imaged::meta::MetaError> {
        Err(broken())
    }
    fn has_upload(
        &self,
        _: &str,
        _: &imaged::model::Digest,
    ) -> Result<bool, imaged::meta::MetaError> {
        Err(broken())
    }
    fn create_project(&self, _: &str, _: &str) -> Result<(), imaged::meta::MetaError> {
        Err(broken())
    }
    fn project(&self, _: &str) -> Result<Option<imaged::model::Project>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn projects(&self) -> Result<Vec<imaged::model::Project>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn add_member(&self, _: &str, _: &str) -> Result<bool, imaged::meta::MetaError> {
        Err(broken())
    }
    fn create_token(&self, _: &imaged::meta::TokenRecord) -> Result<(), imaged::meta::MetaError> {
        Err(broken())
    }
    fn token(
        &self,
        _: &imaged::model::Digest,
    ) -> Result<Option<imaged::meta::TokenRecord>, imaged::meta::MetaError> {
        Err(broken())
    }
    fn tokens(&self) -> Result<Vec<imaged::meta::TokenRecord>, imaged::meta::MetaError> {
        Err(broken())
    }
}

#[test]
fn a_failing_store_answers_500_json_not_401_or_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = imaged::blob::FsBlobStore::open(dir.path()).expect("blobs");
    let store = imaged::store::Store::new(
        std::sync::Arc::new(Broken),
        std::sync::Arc::new(blobs),
        imaged::store::no_references(),
        imaged::store::StoreConfig::default(),
    )
    .expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = imaged::api::router(imaged::api::ApiState::new(store));
    let token = imaged::token::generate().expect("token");
    let req = axum::http::Request::builder()
        .uri("/api/v1/images")
        .header("Authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = rt.block_on(async {
        use tower::ServiceExt;
        app.oneshot(req).await.expect("infallible")
    });
    assert_eq!(resp.status().as_u16(), 500);
    let body = rt
        .block_on(axum::body::to_bytes(resp.into_body(), 1 << 16))
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|m| m.contains("disk on fire")),
        "{v}"
    );
}
