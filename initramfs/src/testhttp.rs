//! A tiny HTTP/1.1 server on 127.0.0.1 for unit tests: one connection per request, the
//! request (with a Content-Length or chunked body) recorded, the answer decided by a
//! closure. Test-only; the misbehaving server of the fetch tests lives with them.
//!
//! It does not do keep-alive, TLS or anything a real server needs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of this (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running server; stops when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// The requests so far.
    pub fn seen(&self) -> Vec<Request> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length").and_then(|v| v.parse::<u64>().ok()) {
        reader.take(len).read_to_end(&mut body).ok()?;
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = u64::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = Vec::new();
            reader.take(n).read_to_end(&mut chunk).ok()?;
            body.extend(chunk);
            let mut crlf = String::new();
            reader.read_line(&mut crlf).ok()?;
            if n == 0 {
                break;
            }
        }
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Serve until dropped (at most 30 s): `respond` gives (status, body) for each request.
pub fn serve(respond: impl Fn(&Request) -> (u16, Vec<u8>) + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (r2, s2) = (requests.clone(), stop.clone());
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s2.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            stream.set_nonblocking(false).expect("blocking");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let Some(req) = read_request(&mut reader) else {
                continue;
            };
            let (status, body) = respond(&req);
            if let Ok(mut v) = r2.lock() {
                v.push(req);
            }
            let mut out = stream;
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
            let _ = out.flush();
        }
    });
    Server {
        base,
        requests,
        stop,
        handle: Some(handle),
    }
}
