//! Load clients for `scripts/bench-images`: a raw TCP sender/receiver pair (the loopback
//! baseline) and a streamed HTTP upload of a file with caller-given headers (the image
//! store's `PUT .../blobs`). Downloads use `http::get_with_headers`.
//!
//! Every transfer moves 256 KiB buffers and reads its file the same way, so the raw pair
//! and the HTTP clients differ only in the protocol. Nothing here keeps what it moves, and
//! nothing here starts, watches or judges a server: the script does that.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of every read and write.
pub const BUF: usize = 256 * 1024;

/// Largest HTTP response head plus body kept from an upload (a JSON answer).
const MAX_ANSWER: usize = 1 << 20;

/// Which side of the connection this process is.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    /// Bind here and take exactly one connection.
    Listen(SocketAddr),
    /// Connect here, retrying while the peer is not listening yet.
    Connect(SocketAddr),
}

/// A loopback port that was free a moment ago, for the script to hand to a server.
pub fn free_port() -> anyhow::Result<u16> {
    let l = StdListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn open(ep: Endpoint) -> anyhow::Result<TcpStream> {
    match ep {
        Endpoint::Listen(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?;
            let (s, _) = l
                .accept()
                .await
                .with_context(|| format!("accept on {addr}"))?;
            Ok(s)
        }
        Endpoint::Connect(addr) => {
            // The peer is started just before us by the script; give it a few seconds.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) if Instant::now() < deadline => {
                        if e.kind() != std::io::ErrorKind::ConnectionRefused {
                            return Err(e).with_context(|| format!("connect {addr}"));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e).with_context(|| format!("connect {addr}")),
                }
            }
        }
    }
}

/// Reads the next chunk of `file`. A blocking read on purpose: one transfer per process,
/// the file sits in the page cache, and a `spawn_blocking` round trip per chunk would cost
/// more than the copy; the baseline and the HTTP upload pay the same.
fn next_chunk(file: &mut File, buf: &mut [u8], path: &Path) -> anyhow::Result<usize> {
    loop {
        match file.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
    }
}

/// Sends all of `path` over one connection, then half-closes and waits for the peer to
/// close, so the time covers delivery, not just filling the local socket buffer.
/// Returns bytes sent and the time from connection to the peer's close.
pub async fn tcp_send(ep: Endpoint, path: &Path) -> anyhow::Result<(u64, Duration)> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut s = open(ep).await?;
    let start = Instant::now();
    let mut buf = vec![0u8; BUF];
    let mut sent = 0u64;
    loop {
        let n = next_chunk(&mut file, &mut buf, path)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await.context("tcp send")?;
        sent += n as u64;
    }
    s.shutdown().await.context("tcp send: half-close")?;
    // The receiver closes once it has read everything.
    while s.read(&mut buf).await.context("tcp send: wait for close")? > 0 {}
    Ok((sent, start.elapsed()))
}

/// Counts bytes on one connection until the peer half-closes, then closes.
/// Returns bytes received and the time from connection to end of stream.
pub async fn tcp_recv(ep: Endpoint) -> anyhow::Result<(u64, Duration)> {
    let mut s = open(ep).await?;
    let start = Instant::now();
    let mut buf = vec![0u8; BUF];
    let mut got = 0u64;
    loop {
        let n = s.read(&mut buf).await.context("tcp receive")?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let elapsed = start.elapsed();
    drop(s);
    Ok((got, elapsed))
}

/// What an upload got back.
#[derive(Debug)]
pub struct Uploaded {
    pub bytes: u64,
    pub elapsed: Duration,
    pub status: u16,
    /// The response body (imaged answers the stored artefact as JSON).
    pub body: String,
}

/// Streams `path` as the body of `method path` with `Content-Length` and the extra header
/// lines (`Name: value`), then reads the whole answer. The time runs from connecting to
/// the end of the answer, so it includes whatever the server does before answering
/// (imaged hashes, writes and fsyncs the blob). A non-2xx answer is an error.
pub async fn http_upload(
    server: SocketAddr,
    method: &str,
    url_path: &str,
    path: &Path,
    headers: &[String],
) -> anyhow::Result<Uploaded> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let start = Instant::now();
    let mut s = TcpStream::connect(server)
        .await
        .with_context(|| format!("connect {server}"))?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {url_path} HTTP/1.1\r\nHost: {server}\r\n{extra}\
         Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.context("send head")?;
    let mut buf = vec![0u8; BUF];
    let mut sent = 0u64;
    // A server that refuses early (413, 401) may stop reading: keep its answer, not EPIPE.
    let mut send_error = None;
    loop {
        let n = next_chunk(&mut file, &mut buf, path)?;
        if n == 0 {
            break;
        }
        if let Err(e) = s.write_all(&buf[..n]).await {
            send_error = Some(e);
            break;
        }
        sent += n as u64;
    }
    let mut answer = Vec::new();
    let read = async {
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let room = MAX_ANSWER.saturating_sub(answer.len());
            answer.extend_from_slice(&buf[..n.min(room)]);
        }
    };
    let read_result = read.await;
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        if let Some(e) = send_error {
            return Err(e).with_context(|| format!("{method} {url_path}: send body"));
        }
        read_result.with_context(|| format!("{method} {url_path}: read answer"))?;
        bail!("{method} {url_path}: no answer");
    };
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{method} {url_path}: bad status line {status_line:?}"))?;
    if !(200..300).contains(&status) {
        bail!("{method} {url_path}: {status_line}: {}", body.trim());
    }
    if let Some(e) = send_error {
        return Err(e).with_context(|| format!("{method} {url_path}: send body"));
    }
    if sent != size {
        bail!(
            "{method} {url_path}: sent {sent} of {size} bytes of {}",
            path.display()
        );
    }
    Ok(Uploaded {
        bytes: sent,
        elapsed,
        status,
        body: body.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file whose size is not a multiple of the buffer, so the last short chunk counts.
    fn sample(bytes: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).expect("write sample");
        f
    }

    fn loopback() -> SocketAddr {
        let port = free_port().expect("free port");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn tcp_pair_moves_every_byte_both_ways() {
        let size = 3 * BUF + 5;
        let f = sample(size);
        // Receiver listens (the upload baseline's shape).
        let addr = loopback();
        let recv = tokio::spawn(tcp_recv(Endpoint::Listen(addr)));
        let (sent, _) = tcp_send(Endpoint::Connect(addr), f.path())
            .await
            .expect("send");
        let (got, _) = recv.await.expect("join").expect("recv");
        assert_eq!((sent, got), (size as u64, size as u64));
        // Sender listens (the download baseline's shape).
        let addr = loopback();
        let path = f.path().to_path_buf();
        let send = tokio::spawn(async move { tcp_send(Endpoint::Listen(addr), &path).await });
        let (got, _) = tcp_recv(Endpoint::Connect(addr)).await.expect("recv");
        let (sent, _) = send.await.expect("join").expect("send");
        assert_eq!((sent, got), (size as u64, size as u64));
    }

    /// A one-shot HTTP server: reads the head and `Content-Length` body bytes, answers
    /// `status` with a body saying what it saw. Returns the head it received.
    async fn one_shot(status: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut data = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let head_end = loop {
                let n = s.read(&mut buf).await.expect("read head");
                assert!(n > 0, "client closed before the head ended");
                data.extend_from_slice(&buf[..n]);
                if let Some(p) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = data.len() - head_end;
            while body < len {
                let n = s.read(&mut buf).await.expect("read body");
                assert!(n > 0, "client closed mid-body");
                body += n;
            }
            let answer = format!("{{\"received\":{body}}}");
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            s.write_all(reply.as_bytes()).await.expect("reply");
            head
        });
        (addr, task)
    }

    #[tokio::test]
    async fn upload_streams_the_file_with_its_headers() {
        let size = 2 * BUF + 17;
        let f = sample(size);
        let (addr, server) = one_shot("201 Created").await;
        let headers = vec!["X-Carte-Sha256: abc".to_string()];
        let up = http_upload(addr, "PUT", "/api/v1/images/b/blobs", f.path(), &headers)
            .await
            .expect("upload");
        let head = server.await.expect("server");
        assert!(head.starts_with("PUT /api/v1/images/b/blobs HTTP/1.1\r\n"));
        assert!(head.contains("\r\nX-Carte-Sha256: abc\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nContent-Length: {size}\r\n")));
        assert_eq!(up.status, 201);
        assert_eq!(up.bytes, size as u64);
        assert_eq!(up.body, format!("{{\"received\":{size}}}"));
    }

    #[tokio::test]
    async fn upload_refused_is_an_error_with_the_status() {
        let f = sample(1000);
        let (addr, _server) = one_shot("413 Payload Too Large").await;
        let e = http_upload(addr, "PUT", "/x", f.path(), &[])
            .await
            .expect_err("a 413 must fail");
        let msg = format!("{e:#}");
        assert!(msg.contains("413 Payload Too Large"), "{msg}");
        assert!(msg.contains("\"received\":1000"), "{msg}");
    }

    #[tokio::test]
    async fn get_sends_extra_headers_and_counts_the_body() {
        let (addr, server) = one_shot("200 OK").await;
        let auth = vec!["Authorization: Bearer t0k".to_string()];
        let got = crate::http::get_with_headers(addr, "/f", &auth)
            .await
            .expect("get");
        let head = server.await.expect("server");
        assert!(head.contains("\r\nAuthorization: Bearer t0k\r\n"), "{head}");
        assert_eq!(got, "{\"received\":0}".len() as u64);
    }
}
