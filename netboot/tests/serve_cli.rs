//! `netbootd serve` as a real process on loopback (DHCP off): a bad bind address or
//! config is one clear line and exit 1, never a panic; SIGTERM stops every listener and
//! exits 0 even while a client holds a connection open.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT: &str = "[[group]]\nsetup = \"wait\"\n";

/// A free port on 127.0.0.1 for both TCP and UDP (good enough: nothing else races here).
fn free_port() -> u16 {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.local_addr().expect("addr").port()
}

fn netbootd(dir: &std::path::Path, extra: &[&str]) -> Command {
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).expect("mkdir");
    std::fs::write(policy.join("p.toml"), DEFAULT).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netbootd"));
    cmd.arg("serve")
        .args(["--dhcp-mode", "off", "--policy-dir"])
        .arg(&policy)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--ipxe-dir")
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn finish(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err).expect("stderr");
            }
            return (status.code(), err);
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netbootd did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bad_bind_address_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    // A documentation address this host does not have: the bind fails, nothing is sent.
    let child = netbootd(
        dir.path(),
        &[
            "--server-addr",
            "198.51.100.9",
            "--http-port",
            &port,
            "--tftp-port",
            &port,
        ],
    )
    .spawn()
    .expect("spawn");
    let (code, err) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("netbootd: "))
        .unwrap_or_else(|| panic!("no error line in {err:?}"));
    assert!(line.contains("cannot bind 198.51.100.9:"), "{line}");
    assert_eq!(
        line.matches("os error 99").count(),
        1,
        "the cause is printed once: {line}"
    );
}

#[test]
fn config_errors_name_the_file_or_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("netbootd.toml");
    std::fs::write(&cfg, "server_addr = \"192.0.2.1\"\nhttp_prot = 80\n").expect("write");
    let out = netbootd(dir.path(), &["--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&cfg.display().to_string()) && err.contains("http_prot"),
        "{err}"
    );

    let out = netbootd(dir.path(), &["--server-addr", "0.0.0.0"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server_addr 0.0.0.0"), "{err}");
}

#[test]
fn sigterm_stops_every_listener_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = free_port();
    let tftp = free_port();
    let child = netbootd(
        dir.path(),
        &[
            "--server-addr",
            "127.0.0.1",
            "--http-port",
            &http.to_string(),
            "--tftp-port",
            &tftp.to_string(),
        ],
    )
    .spawn()
    .expect("spawn");
    let start = Instant::now();
    let mut held = loop {
        match TcpStream::connect(("127.0.0.1", http)) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "never listened: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    // DHCP is off: nothing is written under the data folder, so it may be read-only.
    assert!(dir.path().join("data").is_dir());
    assert!(!dir.path().join("data/.netbootd").exists());
    // A client in the middle of sending its request holds the connection open.
    held.write_all(b"GET /boot.ipxe HTTP/1.1\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(200));
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on the pid of the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (code, err) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        TcpStream::connect(("127.0.0.1", http)).is_err(),
        "http still listening"
    );
    UdpSocket::bind(("127.0.0.1", tftp)).expect("tftp port released");
}
