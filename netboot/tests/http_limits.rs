//! HTTP under hostile or unlucky conditions, against the real listener on loopback:
//! half-sent requests time out, open connections are capped, shutdown does not wait for
//! clients that hold a connection, the lease file under the data folder is not served,
//! and the Debian iPXE folder's links out (`ipxe.efi -> /boot/ipxe.efi`) are followed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netboot::http::{serve_with_limits, AppState, Limits, Select};
use netboot::policy::{Answer, Decision, MachineFacts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Wait;

impl Select for Wait {
    fn select(&self, _: &MachineFacts) -> Decision {
        Decision {
            group: "g".into(),
            setup: "wait".into(),
            answer: Answer::Wait,
        }
    }
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    data: PathBuf,
    ipxe: PathBuf,
    outside: PathBuf,
    _dirs: tempfile::TempDir,
}

async fn start(limits: Limits) -> Server {
    let dirs = tempfile::tempdir().expect("tempdir");
    let data = dirs.path().join("data");
    let ipxe = dirs.path().join("ipxe");
    let outside = dirs.path().join("boot");
    for d in [&data, &ipxe, &outside] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let state = AppState {
        public_base: "http://192.0.2.1:8080".into(),
        select: Arc::new(Wait),
        data_dir: data.clone(),
        ipxe_dir: ipxe.clone(),
        images: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let token = stop.clone();
    let done = tokio::spawn(async move {
        serve_with_limits(listener, state, token, limits)
            .await
            .expect("serve");
    });
    Server {
        addr,
        stop,
        done,
        data,
        ipxe,
        outside,
        _dirs: dirs,
    }
}

/// Sends `raw` and reads until the server closes, at most `within`; `None` if it did not.
async fn exchange(addr: SocketAddr, raw: &[u8], within: Duration) -> Option<Vec<u8>> {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(raw).await.expect("write");
    let mut got = Vec::new();
    match tokio::time::timeout(within, conn.read_to_end(&mut got)).await {
        Ok(_) => Some(got),
        Err(_) => None,
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

fn status(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

fn short_header_timeout() -> Limits {
    Limits {
        header_read: Duration::from_millis(300),
        ..Limits::default()
    }
}

#[tokio::test]
async fn half_sent_and_idle_connections_are_closed() {
    let srv = start(short_header_timeout()).await;
    let partial = exchange(
        srv.addr,
        b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(partial.is_some(), "a half-sent request held its connection");
    let idle = exchange(srv.addr, b"", Duration::from_secs(5)).await;
    assert!(idle.is_some(), "an idle connection was never closed");
    // A whole request is still served.
    let ok = exchange(srv.addr, &get("/boot.ipxe"), Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(status(&ok), 200);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let srv = start(Limits {
        max_connections: 2,
        header_read: Duration::from_secs(60),
        ..Limits::default()
    })
    .await;
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(srv.addr).await.expect("connect");
        c.write_all(b"GET /boot.ipxe HTTP/1.1\r\n")
            .await
            .expect("write");
        holders.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = srv.addr;
    let waiting =
        tokio::spawn(
            async move { exchange(addr, &get("/boot.ipxe"), Duration::from_secs(10)).await },
        );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a third connection was served past the cap of 2"
    );
    drop(holders.pop());
    let answered = waiting
        .await
        .expect("join")
        .expect("served once a slot was free");
    assert_eq!(status(&answered), 200);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_clients_holding_connections() {
    let srv = start(Limits {
        header_read: Duration::from_secs(600),
        shutdown_grace: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let mut held = TcpStream::connect(srv.addr).await.expect("connect");
    held.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    srv.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), srv.done)
        .await
        .expect("serve returned after shutdown despite the held connection")
        .expect("join");
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn hidden_state_is_not_served_and_packaged_links_are() {
    let srv = start(Limits::default()).await;
    std::fs::create_dir_all(srv.data.join(".netbootd")).expect("mkdir");
    std::fs::write(srv.data.join(".netbootd/leases.json"), b"{}").expect("write");
    std::fs::write(srv.data.join("k"), b"kernel").expect("write");
    std::fs::write(srv.outside.join("ipxe.efi"), b"EFI").expect("write");
    std::os::unix::fs::symlink(srv.outside.join("ipxe.efi"), srv.ipxe.join("ipxe.efi"))
        .expect("ln");
    std::os::unix::fs::symlink(srv.outside.join("ipxe.efi"), srv.data.join("out")).expect("ln");
    let check = |path: &'static str, want: u16| {
        let addr = srv.addr;
        async move {
            let got = exchange(addr, &get(path), Duration::from_secs(5))
                .await
                .expect("answered");
            assert_eq!(status(&got), want, "{path}");
            got
        }
    };
    check("/files/.netbootd/leases.json", 404).await;
    check("/files/%2enetbootd/leases.json", 404).await;
    check("/files/k", 200).await;
    // The data folder's links stay inside; the iPXE folder's may leave (Debian).
    check("/files/out", 404).await;
    let efi = check("/ipxe-bin/ipxe.efi", 200).await;
    assert!(
        efi.ends_with(b"\r\n\r\nEFI"),
        "{:?}",
        String::from_utf8_lossy(&efi)
    );
}
