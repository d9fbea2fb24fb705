//! Uploads and downloads over a real server on 127.0.0.1: streamed upload with declared
//! sha256, mismatch and size limit refusals, and download semantics (Content-Length,
//! ETag, HEAD, single Range 206/416, If-None-Match 304), and the client's verified pull.

mod common;

use common::{agent, files_under, layer_version, Server};
use imaged::blob::sha256_of;
use imaged::model::{ArtefactName, ImageKind, NewImage};
use imaged::store::StoreConfig;

fn content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A user image `home` owned by alice with one version holding `content()`.
fn published(s: &Server) -> Vec<u8> {
    let c = s.client(&s.alice);
    c.create_image(&NewImage {
        name: "home".into(),
        kind: ImageKind::User,
        project: None,
        expires_at: None,
    })
    .expect("create");
    let data = content();
    let a = c
        .upload_blob("home", &mut &data[..], data.len() as u64, &sha256_of(&data))
        .expect("upload");
    assert_eq!(a.sha256, sha256_of(&data));
    let v = c
        .add_version("home", &layer_version(&data))
        .expect("version");
    assert_eq!(v.number, 1);
    data
}

struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

fn request(s: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let url = s.api(path);
    let mut b = ureq::http::Request::builder().method(method).uri(&url);
    b = b.header("Authorization", format!("Bearer {}", s.alice));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(()).expect("request");
    let mut resp = agent().run(req).expect("http");
    let body = resp
        .body_mut()
        .with_config()
        .limit(10 << 20)
        .read_to_vec()
        .expect("body");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}

fn h<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn download_semantics() {
    let s = Server::start();
    let data = published(&s);
    let etag = format!("\"{}\"", sha256_of(&data));
    let len = data.len().to_string();
    let path = "/images/home/versions/1/layer";

    let full = request(&s, "GET", path, &[]);
    assert_eq!(full.status, 200);
    assert_eq!(full.body, data);
    assert_eq!(h(&full, "content-length"), Some(len.as_str()));
    assert_eq!(h(&full, "etag"), Some(etag.as_str()));
    assert_eq!(h(&full, "accept-ranges"), Some("bytes"));

    let latest = request(&s, "GET", "/images/home/versions/latest/layer", &[]);
    assert_eq!((latest.status, latest.body == data), (200, true));

    let head = request(&s, "HEAD", path, &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(h(&head, "content-length"), Some(len.as_str()));
    assert_eq!(h(&head, "etag"), Some(etag.as_str()));

    let part = request(&s, "GET", path, &[("Range", "bytes=100-199")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[100..200]);
    assert_eq!(h(&part, "content-length"), Some("100"));
    let want_range = format!("bytes 100-199/{len}");
    assert_eq!(h(&part, "content-range"), Some(want_range.as_str()));

    let tail = request(&s, "GET", path, &[("Range", "bytes=-10")]);
    assert_eq!(
        (tail.status, tail.body.as_slice()),
        (206, &data[data.len() - 10..])
    );

    let open = request(&s, "GET", path, &[("Range", "bytes=299990-")]);
    assert_eq!((open.status, open.body.as_slice()), (206, &data[299_990..]));

    let head_part = request(&s, "HEAD", path, &[("Range", "bytes=0-9")]);
    assert_eq!(head_part.status, 206);
    assert_eq!(h(&head_part, "content-length"), Some("10"));
    assert!(head_part.body.is_empty());

    let beyond = request(&s, "GET", path, &[("Range", "bytes=300000-")]);
    assert_eq!(beyond.status, 416);
    let star = format!("bytes */{len}");
    assert_eq!(h(&beyond, "content-range"), Some(star.as_str()));

    let multi = request(&s, "GET", path, &[("Range", "bytes=0-1,5-6")]);
    assert_eq!((multi.status, multi.body.len()), (200, data.len()));

    let cached = request(&s, "GET", path, &[("If-None-Match", etag.as_str())]);
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(h(&cached, "etag"), Some(etag.as_str()));

    let stale = request(&s, "GET", path, &[("If-None-Match", "\"0000\"")]);
    assert_eq!(stale.status, 200);

    let if_range_old = request(
        &s,
        "GET",
        path,
        &[("Range", "bytes=0-9"), ("If-Range", "\"0000\"")],
    );
    assert_eq!(
        (if_range_old.status, if_range_old.body.len()),
        (200, data.len())
    );

    for (p, status) in [
        ("/images/home/versions/2/layer", 404),
        ("/images/home/versions/1/vmlinuz", 404),
        ("/images/home/versions/1/kernel", 400),
        ("/images/home/versions/0/layer", 400),
        ("/images/nope/versions/1/layer", 404),
    ] {
        let a = request(&s, "GET", p, &[]);
        assert_eq!(a.status, status, "{p}");
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("json error body");
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{p}: {v}"
        );
    }
}

#[test]
fn client_pull_verifies_and_renames() {
    let s = Server::start();
    let data = published(&s);
    let out = tempfile::tempdir().expect("tempdir");
    let dest = out.path().join("home.img");
    let mut seen = 0;
    let got = s
        .client(&s.alice)
        .download(
            &"home@latest".parse().expect("ref"),
            ArtefactName::Layer,
            &dest,
            &mut |n, total| {
                assert_eq!(total, data.len() as u64, "content length known");
                seen = n
            },
        )
        .expect("pull");
    assert_eq!(got.sha256, sha256_of(&data));
    assert_eq!(std::fs::read(&dest).expect("read"), data);
    assert_eq!(seen, data.len() as u64, "progress saw every byte");
    assert_eq!(files_under(out.path()), vec![dest], "no temp file left");
}

#[test]
fn mismatched_digest_stores_nothing() {
    let s = Server::start();
    published(&s);
    let before = files_under(&s.blobs_dir());
    let other = b"not what was declared".to_vec();
    let err = s
        .client(&s.alice)
        .upload_blob(
            "home",
            &mut &other[..],
            other.len() as u64,
            &sha256_of(b"x"),
        )
        .expect_err("mismatch");
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(files_under(&s.blobs_dir()), before, "no new blob");
    assert!(
        files_under(&s.data.path().join("tmp")).is_empty(),
        "no temp leftover"
    );
    let shown = s.client(&s.alice).show("home").expect("show");
    assert_eq!(shown.versions.len(), 1, "no new version");

    // A declared digest is required at all.
    let resp = agent()
        .put(s.api("/images/home/blobs"))
        .header("Authorization", format!("Bearer {}", s.alice))
        .send(&b"abc"[..])
        .expect("http");
    assert_eq!(resp.status().as_u16(), 400);
}

#[test]
fn size_limit_is_413_and_stores_nothing() {
    let s = Server::start_with(StoreConfig {
        max_upload: 1000,
        ..StoreConfig::default()
    });
    let c = s.client(&s.alice);
    c.create_image(&NewImage {
        name: "small".into(),
        kind: ImageKind::User,
        project: None,
        expires_at: None,
    })
    .expect("create");
    let big = vec![1u8; 5000];
    let err = c
        .upload_blob("small", &mut &big[..], big.len() as u64, &sha256_of(&big))
        .expect_err("too large");
    assert_eq!(err.status(), Some(413), "{err}");

    // Without a Content-Length (chunked), the limit still cuts the stream.
    let mut chunked = std::io::Cursor::new(big.clone());
    let resp = agent()
        .put(s.api("/images/small/blobs"))
        .header("Authorization", format!("Bearer {}", s.alice))
        .header("X-Carte-Sha256", sha256_of(&big).as_str())
        .send(ureq::SendBody::from_reader(&mut chunked))
        .expect("http");
    assert_eq!(resp.status().as_u16(), 413);
    assert!(files_under(&s.blobs_dir()).is_empty());
    assert!(files_under(&s.data.path().join("tmp")).is_empty());

    let ok = vec![2u8; 1000];
    c.upload_blob("small", &mut &ok[..], 1000, &sha256_of(&ok))
        .expect("exactly at the limit");
}
