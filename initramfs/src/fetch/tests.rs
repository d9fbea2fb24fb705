//! Tests of the fetch pipeline against a tiny HTTP server on 127.0.0.1.

use super::*;
use crate::http::{agent, Timeouts};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::sync::Mutex;
use std::thread::JoinHandle;

/// How the test server misbehaves.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Serve correctly, honouring Range.
    Good,
    /// On the first request, announce the full length, send this many bytes, close.
    DropFirstAfter(usize),
    /// Every request drops after this many bytes.
    AlwaysDropAfter(usize),
    /// Answer 200 with the whole body even to a Range request (but drop the first).
    IgnoreRangeDropFirstAfter(usize),
    /// 404 everything.
    NotFound,
}

struct Server {
    url: String,
    ranges: Arc<Mutex<Vec<Option<u64>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve(body: Vec<u8>, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}/blob", listener.local_addr().expect("addr"));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r2, s2) = (ranges.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut n = 0;
        while !s2.load(Ordering::Relaxed) && Instant::now() < deadline && n < 50 {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            n += 1;
            stream.set_nonblocking(false).expect("blocking");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<u64>().ok();
                }
            }
            let first = r2.lock().map(|mut v| {
                v.push(range);
                v.len() == 1
            });
            let first = first.unwrap_or(false);
            let mut out = stream;
            let total = body.len();
            let (status, start, drop_after) = match mode {
                Mode::NotFound => {
                    let _ = out.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                Mode::Good => (
                    range.map_or(200, |_| 206),
                    range.unwrap_or(0) as usize,
                    None,
                ),
                Mode::DropFirstAfter(k) => (
                    range.map_or(200, |_| 206),
                    range.unwrap_or(0) as usize,
                    first.then_some(k),
                ),
                Mode::AlwaysDropAfter(k) => (
                    range.map_or(200, |_| 206),
                    range.unwrap_or(0) as usize,
                    Some(k),
                ),
                Mode::IgnoreRangeDropFirstAfter(k) => (200, 0, first.then_some(k)),
            };
            let mut head = if status == 206 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\n",
                    total - 1
                )
            } else {
                "HTTP/1.1 200 OK\r\n".to_string()
            };
            head.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                total - start
            ));
            let _ = out.write_all(head.as_bytes());
            let end = drop_after.map_or(total, |k| (start + k).min(total));
            let _ = out.write_all(&body[start..end]);
            let _ = out.flush();
            // Dropping the stream closes the connection, mid-body when `end < total`.
        }
    });
    Server {
        url,
        ranges,
        stop,
        handle: Some(handle),
    }
}

fn sha(b: &[u8]) -> String {
    hex(Sha256::digest(b))
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn plain_source(url: &str, body: &[u8]) -> Source {
    Source {
        url: url.to_string(),
        size: body.len() as u64,
        sha256: sha(body),
        encoding: Encoding::None,
        uncompressed_size: body.len() as u64,
        sha256_written: sha(body),
    }
}

fn opts() -> Options {
    Options {
        resumes: 3,
        backoff: Duration::from_millis(1),
        progress_every: Duration::ZERO,
    }
}

fn run(src: &Source, dir: &Path) -> (Result<Verified, FetchError>, Vec<Progress>) {
    let temp = dir.join("x.part");
    let mut seen = Vec::new();
    let t = Timeouts {
        connect: Duration::from_secs(5),
        per_read: Duration::from_secs(5),
    };
    let r = fetch(&agent(t), src, &temp, opts(), &mut |p| seen.push(*p));
    (r, seen)
}

#[test]
fn plain_download_verifies_and_reports_progress() {
    let body = data(3 * CHUNK + 123);
    let srv = serve(body.clone(), Mode::Good);
    let d = tempfile::tempdir().expect("tempdir");
    let (r, progress) = run(&plain_source(&srv.url, &body), d.path());
    let v = r.expect("fetch");
    assert_eq!(v.sha256(), sha(&body));
    assert_eq!(std::fs::read(&v.temp).expect("read"), body);
    let last = progress.last().expect("progress");
    assert_eq!(
        (last.done, last.total),
        (body.len() as u64, body.len() as u64)
    );
    assert!(last.to_string().contains("MB/s"), "{last}");
}

#[test]
fn zstd_download_decodes_and_checks_both_hashes() {
    let raw = data(2 * CHUNK + 5);
    let wire = zstd::encode_all(&raw[..], 3).expect("encode");
    let srv = serve(wire.clone(), Mode::DropFirstAfter(wire.len() / 3));
    let d = tempfile::tempdir().expect("tempdir");
    let src = Source {
        url: srv.url.clone(),
        size: wire.len() as u64,
        sha256: sha(&wire),
        encoding: Encoding::Zstd,
        uncompressed_size: raw.len() as u64,
        sha256_written: sha(&raw),
    };
    let (r, _) = run(&src, d.path());
    let v = r.expect("fetch");
    assert_eq!(v.sha256(), sha(&raw));
    assert_eq!(std::fs::read(&v.temp).expect("read"), raw);
    let ranges = srv.ranges.lock().expect("lock").clone();
    assert_eq!(
        ranges,
        [None, Some((wire.len() / 3) as u64)],
        "resumed mid-stream"
    );

    // Same wire bytes, but the plan's decoded hash is wrong: refused, no file left.
    let bad = Source {
        sha256_written: sha(b"other"),
        ..src
    };
    let srv2 = serve(wire.clone(), Mode::Good);
    let (r, _) = run(
        &Source {
            url: srv2.url.clone(),
            ..bad
        },
        d.path(),
    );
    assert!(matches!(r, Err(FetchError::WrittenSha256 { .. })), "{r:?}");
    assert!(!d.path().join("x.part").exists());

    // Right decoded bytes, but the wire bytes are not the blob the plan names: refused on
    // the wire hash (computed on its own thread), which names what was received.
    let srv3 = serve(wire.clone(), Mode::Good);
    let (r, _) = run(
        &Source {
            url: srv3.url.clone(),
            sha256: sha(b"another blob"),
            sha256_written: sha(&raw),
            ..bad
        },
        d.path(),
    );
    match r {
        Err(FetchError::Sha256 { got, .. }) => assert_eq!(got, sha(&wire)),
        other => panic!("expected a wire sha256 mismatch, got {other:?}"),
    }
}

#[test]
fn dropped_connection_is_resumed_with_range() {
    let body = data(CHUNK + 4096);
    let srv = serve(body.clone(), Mode::DropFirstAfter(1000));
    let d = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(&plain_source(&srv.url, &body), d.path());
    let v = r.expect("fetch");
    assert_eq!(std::fs::read(&v.temp).expect("read"), body);
    assert_eq!(*srv.ranges.lock().expect("lock"), [None, Some(1000)]);
}

#[test]
fn a_server_ignoring_range_is_handled() {
    let body = data(50_000);
    let srv = serve(body.clone(), Mode::IgnoreRangeDropFirstAfter(20_000));
    let d = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(&plain_source(&srv.url, &body), d.path());
    let v = r.expect("fetch");
    assert_eq!(std::fs::read(&v.temp).expect("read"), body);
}

#[test]
fn a_corrupt_body_never_leaves_a_file() {
    let body = data(10_000);
    let mut corrupt = body.clone();
    corrupt[5000] ^= 0xff;
    let srv = serve(corrupt, Mode::Good);
    let d = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(&plain_source(&srv.url, &body), d.path());
    let e = r.expect_err("corrupt");
    assert!(matches!(e, FetchError::Sha256 { .. }), "{e:?}");
    assert!(
        e.to_string().contains("sha256 of the bytes received"),
        "{e}"
    );
    assert!(!d.path().join("x.part").exists());
}

#[test]
fn endless_truncation_gives_up_and_leaves_no_file() {
    let body = data(10_000);
    let srv = serve(body.clone(), Mode::AlwaysDropAfter(1000));
    let d = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(&plain_source(&srv.url, &body), d.path());
    let e = r.expect_err("truncated");
    assert!(matches!(e, FetchError::GaveUp { resumes: 3, .. }), "{e:?}");
    assert!(!d.path().join("x.part").exists());
    // Each resume asked for exactly what was missing.
    assert_eq!(
        *srv.ranges.lock().expect("lock"),
        [None, Some(1000), Some(2000), Some(3000)]
    );
}

#[test]
fn a_client_error_is_final() {
    let srv = serve(Vec::new(), Mode::NotFound);
    let d = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(&plain_source(&srv.url, b"abc"), d.path());
    assert!(
        matches!(r, Err(FetchError::Status { status: 404, .. })),
        "{r:?}"
    );
    assert_eq!(srv.ranges.lock().expect("lock").len(), 1, "no retry on 404");
}

#[test]
fn a_wrong_announced_length_is_refused() {
    let body = data(100);
    let srv = serve(body.clone(), Mode::Good);
    let d = tempfile::tempdir().expect("tempdir");
    let mut src = plain_source(&srv.url, &body);
    src.size = 99;
    src.uncompressed_size = 99;
    let (r, _) = run(&src, d.path());
    assert!(
        matches!(
            r,
            Err(FetchError::Length {
                got: 100,
                want: 99,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn verified_file_commits_into_the_cache() {
    let body = data(4096);
    let srv = serve(body.clone(), Mode::Good);
    let d = tempfile::tempdir().expect("tempdir");
    let (mut cache, _) = crate::cache::Cache::open(d.path()).expect("open");
    let src = plain_source(&srv.url, &body);
    let temp = cache.temp_path(&src.sha256_written).expect("temp");
    let v = fetch(
        &agent(Timeouts::default()),
        &src,
        &temp,
        opts(),
        &mut |_| {},
    )
    .expect("fetch");
    let path = cache
        .commit(v, "l", 1, carte_contract::LayerKind::System)
        .expect("commit");
    assert_eq!(std::fs::read(path).expect("read"), body);
    assert!(cache.contains(&sha(&body)));
}

/// A sink whose `fail_at`-th write fails.
struct FailingSink {
    writes: usize,
    fail_at: usize,
}

impl Sink for FailingSink {
    fn write_chunk(&mut self, _chunk: &[u8]) -> io::Result<()> {
        self.writes += 1;
        if self.writes >= self.fail_at {
            return Err(io::Error::other("disk on fire"));
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_write_failure_stops_the_download() {
    // Every connection drops after two chunks, so each request is visible; the layer is
    // bigger than what the channels hold, so draining it after the failure would show.
    let chunks = 4 * CHANNEL_DEPTH;
    let body = data(chunks * CHUNK);
    let srv = serve(body.clone(), Mode::AlwaysDropAfter(2 * CHUNK));
    let src = plain_source(&srv.url, &body);
    let t = Timeouts {
        connect: Duration::from_secs(5),
        per_read: Duration::from_secs(5),
    };
    let many = Options {
        resumes: 100,
        ..opts()
    };
    let mut sink = FailingSink {
        writes: 0,
        fail_at: 1,
    };
    let r = stream(
        &agent(t),
        &src,
        &mut sink,
        Path::new("/dev/x"),
        many,
        &mut |_| {},
    );
    match r {
        Err(FetchError::Write { path, source }) => {
            assert_eq!(path, Path::new("/dev/x"));
            assert_eq!(source.to_string(), "disk on fire");
        }
        other => panic!("expected the write error, got {other:?}"),
    }
    // At most what the two channels and the threads hold was read ahead.
    let requests = srv.ranges.lock().expect("lock").len();
    let read_ahead = (2 * CHANNEL_DEPTH + 3).div_ceil(2);
    assert!(
        requests <= read_ahead && requests < chunks / 2,
        "{requests} requests: the download went on after the write failed"
    );
}
