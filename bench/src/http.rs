//! A minimal HTTP/1.1 GET client that counts body bytes without keeping them.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn get(server: SocketAddr, path: &str) -> anyhow::Result<u64> {
    get_with_headers(server, path, &[]).await
}

/// `get` with extra request header lines (`Name: value`), e.g. an `Authorization`.
pub async fn get_with_headers(
    server: SocketAddr,
    path: &str,
    headers: &[String],
) -> anyhow::Result<u64> {
    let mut stream = TcpStream::connect(server).await?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {server}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    let mut body = 0u64;
    let mut in_body = false;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if in_body {
            body += n as u64;
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&head[..pos]);
            if !status.starts_with("HTTP/1.1 200") {
                bail!("GET {path}: {}", status.lines().next().unwrap_or_default());
            }
            body += (head.len() - pos - 4) as u64;
            in_body = true;
            head.clear();
        }
    }
    if !in_body {
        return Err(anyhow::anyhow!("GET {path}: no response")).context("http");
    }
    Ok(body)
}
