//! The HTTP service logs every boot decision inside a per-request span carrying method,
//! path, peer and MAC. Its own test binary, because it installs a global subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use netboot::http::{serve, AppState, Select};
use netboot::policy::{Answer, Decision, MachineFacts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Parked;

impl Select for Parked {
    fn select(&self, _: &MachineFacts) -> Decision {
        Decision {
            group: "rack-3".into(),
            setup: "wait".into(),
            answer: Answer::Wait,
        }
    }
}

#[tokio::test]
async fn decision_is_logged_with_mac_arch_group_setup_answer_in_a_request_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");

    let state = AppState {
        public_base: "http://192.0.2.1:8080".into(),
        select: Arc::new(Parked),
        data_dir: "/nonexistent".into(),
        ipxe_dir: "/nonexistent".into(),
        images: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, state, stop.clone()));

    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let client = conn.local_addr().expect("client addr");
    conn.write_all(
        b"GET /ipxe/52-54-00-AA-BB-01?platform=efi&arch=x86_64 HTTP/1.1\r\n\
          Host: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.expect("read");
    assert!(response.starts_with(b"HTTP/1.1 200"));
    stop.cancel();

    let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    let line = log
        .lines()
        .find(|l| l.contains("boot decision"))
        .unwrap_or_else(|| panic!("no decision logged:\n{log}"));
    for want in [
        "method=GET",
        "path=/ipxe/52-54-00-AA-BB-01",
        &format!("peer={client}"),
        "mac=52:54:00:aa:bb:01",
        "arch=efi-x64",
        "group=rack-3",
        "setup=wait",
        "answer=wait",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }
}
