//! Lazy layers with the recording fake `Sys` and a tiny HTTP server on 127.0.0.1.

use super::*;
use carte_contract::{Encoding, Format, LayerKind};
use carte_init::sys::FakeSys;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serve `body` to every GET for 20 s; counts requests.
fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/blob", listener.local_addr().expect("addr"));
    listener.set_nonblocking(true).expect("nonblocking");
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            h2.fetch_add(1, Ordering::Relaxed);
            stream.set_nonblocking(false).expect("blocking");
            let mut r = BufReader::new(stream.try_clone().expect("clone"));
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let mut out = stream;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
        }
    });
    (url, hits)
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn layer(url: &str, body: &[u8], mount_point: Option<&str>) -> Layer {
    Layer {
        name: "data".into(),
        version: 4,
        kind: LayerKind::Project,
        format: Format::Erofs,
        encoding: Encoding::None,
        size: body.len() as u64,
        uncompressed_size: body.len() as u64,
        sha256: hex(Sha256::digest(body)),
        sha256_written: hex(Sha256::digest(body)),
        url: url.into(),
        mount_point: mount_point.map(str::to_string),
        lazy: true,
        autostart: None,
        restore: None,
    }
}

fn env(root: &Path) -> LazyEnv {
    LazyEnv {
        cache_dir: root.join("cache"),
        root: root.join("target"),
        unmounted_dir: root.join("run/lazy"),
        attempts: 2,
    }
}

fn ua() -> ureq::Agent {
    carte_init::http::agent(carte_init::http::Timeouts {
        connect: Duration::from_secs(5),
        per_read: Duration::from_secs(5),
    })
}

/// Calls with the temporary folder written as `T`.
fn calls(sys: &FakeSys, root: &Path) -> Vec<String> {
    let r = root.display().to_string();
    sys.mutations().iter().map(|c| c.replace(&r, "T")).collect()
}

#[test]
fn fetched_once_then_mounted_read_only_at_its_mount_point() {
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let (url, hits) = serve(body.clone());
    let t = tempfile::tempdir().expect("tempdir");
    let e = env(t.path());
    let l = layer(&url, &body, Some("/srv/data"));
    let mut sys = FakeSys::new();
    let mut events = Vec::new();
    let at = mount(&mut sys, &ua(), &e, &HashSet::new(), &l, &mut |ev| {
        events.push(ev)
    })
    .expect("mount");
    assert_eq!(at, t.path().join("target/srv/data"));
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    let cached = t.path().join("cache/layers").join(&l.sha256_written);
    assert_eq!(std::fs::read(&cached).expect("cached"), body);
    assert_eq!(
        calls(&sys, t.path()),
        [
            "mkdir T/target/srv/data",
            &format!("loop_attach T/cache/layers/{} ro", l.sha256_written),
            "mount /dev/loop0 T/target/srv/data erofs ro -",
        ]
    );
    assert!(events.iter().all(|e| e.stage == Stage::LazyLayers));

    // Next boot: the cache has it, nothing is downloaded.
    let mut sys = FakeSys::new();
    mount(&mut sys, &ua(), &e, &HashSet::new(), &l, &mut |_| {}).expect("again");
    assert_eq!(hits.load(Ordering::Relaxed), 1, "served from the cache");
}

#[test]
fn a_failed_mount_gives_the_loop_device_back_and_names_the_target() {
    let body = b"layer bytes".to_vec();
    let (url, _) = serve(body.clone());
    let t = tempfile::tempdir().expect("tempdir");
    let l = layer(&url, &body, None);
    let mut sys = FakeSys::new();
    sys.fail_prefix = Some("mount ".into());
    sys.fail_errno = Some(Errno::EINVAL);
    let err = mount(
        &mut sys,
        &ua(),
        &env(t.path()),
        &HashSet::new(),
        &l,
        &mut |_| {},
    )
    .expect_err("mount fails");
    assert_eq!(
        err.to_string(),
        format!(
            "lazy layer data: mount /dev/loop0 on {}/run/lazy/data: EINVAL: Invalid argument",
            t.path().display()
        )
    );
    assert_eq!(
        calls(&sys, t.path()).last().map(String::as_str),
        Some("loop_detach /dev/loop0")
    );
}

#[test]
fn bad_mount_points_and_raw_layers_are_refused_before_anything() {
    let t = tempfile::tempdir().expect("tempdir");
    let e = env(t.path());
    for mp in ["srv/x", "/srv/../etc", "/"] {
        let l = layer("http://127.0.0.1:9/x", b"x", Some(mp));
        let mut sys = FakeSys::new();
        let err = mount(&mut sys, &ua(), &e, &HashSet::new(), &l, &mut |_| {}).expect_err(mp);
        assert!(
            matches!(err, LazyError::BadMountPoint { .. }),
            "{mp}: {err}"
        );
        assert!(sys.calls.is_empty(), "{mp}");
    }
    let mut l = layer("http://127.0.0.1:9/x", b"x", Some("/srv/x"));
    l.format = Format::Raw;
    let mut sys = FakeSys::new();
    let err = mount(&mut sys, &ua(), &e, &HashSet::new(), &l, &mut |_| {}).expect_err("raw");
    assert!(matches!(err, LazyError::Raw { .. }), "{err}");
}

#[test]
fn a_corrupt_layer_never_enters_the_cache() {
    let body = b"the real bytes".to_vec();
    let (url, hits) = serve(b"other  bytes!!".to_vec());
    let t = tempfile::tempdir().expect("tempdir");
    let l = layer(&url, &body, Some("/srv/data"));
    let mut sys = FakeSys::new();
    let mut events = Vec::new();
    let err = mount(
        &mut sys,
        &ua(),
        &env(t.path()),
        &HashSet::new(),
        &l,
        &mut |e| events.push(e),
    )
    .expect_err("corrupt");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert_eq!(hits.load(Ordering::Relaxed), 2, "fetched again once");
    assert!(events.iter().any(|e| e.error.is_some()));
    assert!(!t
        .path()
        .join("cache/layers")
        .join(&l.sha256_written)
        .exists());
    assert!(!sys.calls.iter().any(|c| c.starts_with("mount")));
}
