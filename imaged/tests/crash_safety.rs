//! An interrupted upload never becomes a blob or a version; a restart cleans what a killed
//! process left in `$DATA/tmp`; recorded versions survive reopening the SQLite store.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{files_under, layer_version, Server};
use imaged::access::Principal;
use imaged::blob::sha256_of;
use imaged::model::{ArtefactName, ImageKind, ImageRef, NewImage};
use imaged::store::{no_references, Store, StoreConfig, StoreError};

/// Yields `good` bytes, then fails: a client that vanished mid-upload.
struct Dies {
    good: usize,
}

impl Read for Dies {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "peer vanished",
            ));
        }
        let n = buf.len().min(self.good);
        buf[..n].fill(0xaa);
        self.good -= n;
        Ok(n)
    }
}

fn system_image(store: &Store, name: &str) {
    store
        .create_image(
            &Principal::local_admin(),
            NewImage {
                name: name.into(),
                kind: ImageKind::System,
                project: None,
                expires_at: None,
            },
        )
        .expect("create");
}

#[test]
fn dropped_stream_leaves_no_blob_and_no_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), no_references(), StoreConfig::default()).expect("open");
    system_image(&store, "base");
    let err = store
        .upload_blob(
            &Principal::local_admin(),
            "base",
            &mut Dies { good: 1 << 20 },
            Some(&sha256_of(b"whatever")),
        )
        .expect_err("interrupted");
    assert!(matches!(err, StoreError::Interrupted(_)), "{err}");
    assert!(files_under(&dir.path().join("blobs")).is_empty());
    assert!(files_under(&dir.path().join("tmp")).is_empty());
    let shown = store
        .show_image(&Principal::local_admin(), "base")
        .expect("show");
    assert!(shown.versions.is_empty());
    // A version naming a blob that never arrived is refused.
    let err = store
        .add_version(
            &Principal::local_admin(),
            "base",
            layer_version(b"never sent"),
        )
        .expect_err("no blob");
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

#[test]
fn connection_closed_mid_upload_leaves_nothing() {
    let s = Server::start();
    system_image(&s.store, "base");
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut tcp = TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "PUT /api/v1/images/base/blobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         X-Carte-Sha256: {}\r\nContent-Length: 10000000\r\n\r\n",
        s.admin,
        sha256_of(b"x")
    );
    tcp.write_all(head.as_bytes()).expect("send head");
    tcp.write_all(&[0u8; 200_000])
        .expect("send part of the body");
    // The upload is in flight: its temp file exists.
    let deadline = Instant::now() + Duration::from_secs(5);
    while files_under(&s.data.path().join("tmp")).is_empty() {
        assert!(Instant::now() < deadline, "upload never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(tcp);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !files_under(&s.data.path().join("tmp")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "temp file not removed after the peer left"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(files_under(&s.blobs_dir()).is_empty());
    let shown = s.client(&s.admin).show("base").expect("show");
    assert!(shown.versions.is_empty());
}

#[test]
fn restart_cleans_tmp_and_keeps_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = Principal::local_admin();
    {
        let store = Store::open(dir.path(), no_references(), StoreConfig::default()).expect("open");
        system_image(&store, "base");
        for content in [&b"one"[..], b"two"] {
            store
                .upload_blob(&admin, "base", &mut &content[..], Some(&sha256_of(content)))
                .expect("upload");
            store
                .add_version(&admin, "base", layer_version(content))
                .expect("version");
        }
    }
    // What a process killed mid-upload leaves behind: a partial file (named after a pid
    // that no longer runs), and anything else.
    let tmp = dir.path().join("tmp");
    std::fs::write(tmp.join("upload-4000000000-0"), b"partial").expect("leftover");
    std::fs::write(tmp.join("junk"), b"?").expect("leftover");
    std::fs::create_dir(tmp.join("dir")).expect("leftover dir");

    let store = Store::open(dir.path(), no_references(), StoreConfig::default()).expect("reopen");
    assert!(files_under(&tmp).is_empty(), "tmp cleaned at start");
    assert!(std::fs::read_dir(&tmp).expect("tmp").next().is_none());
    let shown = store.show_image(&admin, "base").expect("show");
    assert_eq!(
        shown.versions.iter().map(|v| v.number).collect::<Vec<_>>(),
        [1, 2],
        "versions survive reopening"
    );
    let latest: ImageRef = "base@latest".parse().expect("ref");
    let (a, path) = store
        .artefact(&admin, &latest, ArtefactName::Layer)
        .expect("artefact");
    assert_eq!(a.sha256, sha256_of(b"two"));
    assert_eq!(std::fs::read(path).expect("blob"), b"two");
}

/// Kills the server we started (by its own handle) even when the test fails.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn server_killed_mid_upload_leaves_nothing_after_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let admin_token = {
        let store =
            Store::open(data.path(), no_references(), StoreConfig::default()).expect("open");
        system_image(&store, "base");
        store
            .create_token(
                &Principal::local_admin(),
                "root",
                imaged::model::Role::Admin,
            )
            .expect("token")
            .token
    };
    // Reserve a free port, then let the server take it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_imaged"))
            .args(["serve", "--listen", &addr, "--data"])
            .arg(data.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn imaged serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tcp = loop {
        match TcpStream::connect(&addr) {
            Ok(t) => break t,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("server did not start: {e}"),
        }
    };
    let head = format!(
        "PUT /api/v1/images/base/blobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin_token}\r\n\
         X-Carte-Sha256: {}\r\nContent-Length: 10000000\r\n\r\n",
        sha256_of(b"x")
    );
    tcp.write_all(head.as_bytes()).expect("send head");
    tcp.write_all(&[0u8; 300_000]).expect("send part");
    let tmp = data.path().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_under(&tmp).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let leftover = !files_under(&tmp).is_empty();
    child.0.kill().expect("kill -9");
    let _ = child.0.wait();
    drop(tcp);
    assert!(leftover, "the killed upload was in flight in tmp");
    assert!(files_under(&data.path().join("blobs")).is_empty());

    let store = Store::open(
        data.path(),
        Arc::new(|_: &str| Vec::new()),
        StoreConfig::default(),
    )
    .expect("restart");
    assert!(
        files_under(&tmp).is_empty(),
        "restart cleaned the partial upload"
    );
    let shown = store
        .show_image(&Principal::local_admin(), "base")
        .expect("show");
    assert!(shown.versions.is_empty());
}
