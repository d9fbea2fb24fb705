//! In-process HTTP tests: a real server bound on 127.0.0.1 and a raw TCP client, so the
//! bytes on the wire (Content-Length vs chunked, HEAD bodies) are what is asserted.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use netboot::arch::ClientArch;
use netboot::http::{serve, AppState, HttpError, HttpService, Select};
use netboot::mac::MacAddr;
use netboot::policy::{Answer, BootSpec, Decision, MachineFacts, PolicyHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const BASE: &str = "http://192.0.2.1:8080";

/// A selection seam that answers one fixed decision and records what it was asked.
struct Fixed {
    decision: Decision,
    seen: Mutex<Vec<MachineFacts>>,
}

impl Select for Fixed {
    fn select(&self, facts: &MachineFacts) -> Decision {
        self.seen.lock().expect("lock").push(facts.clone());
        self.decision.clone()
    }
}

struct Server {
    addr: SocketAddr,
    select: Arc<Fixed>,
    stop: CancellationToken,
    _dirs: tempfile::TempDir,
    data: std::path::PathBuf,
    ipxe: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(answer: Answer) -> Server {
    let dirs = tempfile::tempdir().expect("tempdir");
    let data = dirs.path().join("data");
    let ipxe = dirs.path().join("ipxe");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&ipxe).expect("mkdir");
    let select = Arc::new(Fixed {
        decision: Decision {
            group: "lab".into(),
            setup: "s1".into(),
            answer,
        },
        seen: Mutex::new(Vec::new()),
    });
    let state = AppState {
        public_base: BASE.into(),
        select: select.clone(),
        data_dir: data.clone(),
        ipxe_dir: ipxe.clone(),
        images: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { serve(listener, state, token).await });
    Server {
        addr,
        select,
        stop,
        _dirs: dirs,
        data,
        ipxe,
    }
}

fn boot_answer() -> Answer {
    Answer::Boot(BootSpec {
        kernel: "vmlinuz".into(),
        initrds: vec!["initrd.img".into()],
        cmdline: "console=ttyS0".into(),
    })
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection; reads until the server closes it.
async fn request(addr: SocketAddr, method: &str, target: &str, extra: &[(&str, &str)]) -> Resp {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).expect("utf8 head");
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body,
    }
}

async fn get(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "GET", target, &[]).await
}

#[tokio::test]
async fn boot_ipxe_chains_the_machine_script_with_bounded_retries() {
    let srv = start(Answer::Ignore).await;
    let r = get(srv.addr, "/boot.ipxe").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .expect("ct")
        .starts_with("text/plain"));
    let text = r.text();
    assert!(text.starts_with("#!ipxe\n"), "{text}");
    let chain = format!(
        "chain --replace --autofree {BASE}/ipxe/${{netX/mac}}?arch=${{buildarch}}&platform=${{platform}}&uuid=${{uuid}} ||"
    );
    assert!(text.lines().any(|l| l == chain), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("chain ")).count(), 5);
    assert!(text.lines().any(|l| l == "ifconf netX || dhcp netX ||"));
    assert!(text.ends_with(&format!(
        "echo carte: cannot reach netbootd at {BASE}; giving up\nexit\n"
    )));
}

#[tokio::test]
async fn mac_spellings_give_the_same_script_and_facts() {
    let srv = start(boot_answer()).await;
    let q = "?arch=i386&platform=pcbios&uuid=A1B2C3D4-0000-1111-2222-333344445555";
    let mut bodies = Vec::new();
    for mac in [
        "52:54:00:ab:cd:ef",
        "52-54-00-AB-CD-EF",
        "52%3A54%3A00%3Aab%3Acd%3Aef",
        "525400ABCDEF",
    ] {
        let r = get(srv.addr, &format!("/ipxe/{mac}{q}")).await;
        assert_eq!(r.status, 200, "{mac}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        bodies.push(r.text());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:#?}");
    let script = &bodies[0];
    assert!(script.starts_with("#!ipxe\n"));
    assert!(
        script.lines().any(|l| l
            == format!(
                "kernel {BASE}/files/vmlinuz console=ttyS0 carte.server={BASE} \
                 carte.mac=52:54:00:ab:cd:ef BOOTIF=01-52-54-00-ab-cd-ef \
                 ip=${{netX/ip}}::${{netX/gateway}}:${{netX/netmask}}:::off initrd=initrd0 \
                 || goto carte-boot-failed"
            )),
        "{script}"
    );
    assert!(script
        .lines()
        .any(|l| l
            == format!("initrd --name initrd0 {BASE}/files/initrd.img || goto carte-boot-failed")));
    assert!(script
        .lines()
        .any(|l| l == "boot || goto carte-boot-failed"));

    let seen = srv.select.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    for facts in seen {
        assert_eq!(
            facts,
            MachineFacts {
                mac: MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]),
                arch: Some(ClientArch::Bios),
                uuid: Some("a1b2c3d4-0000-1111-2222-333344445555".into()),
            }
        );
    }
}

#[tokio::test]
async fn arch_comes_from_platform_and_buildarch() {
    let srv = start(Answer::Local).await;
    let check = |q: &'static str, want: Option<ClientArch>, sanboot: bool| {
        let addr = srv.addr;
        let select = srv.select.clone();
        async move {
            let r = get(addr, &format!("/ipxe/52:54:00:00:00:01{q}")).await;
            assert_eq!(r.status, 200);
            let facts = select.seen.lock().expect("lock").pop().expect("asked");
            assert_eq!(facts.arch, want, "{q}");
            assert_eq!(
                r.text().contains("\nsanboot "),
                sanboot,
                "{q}: {}",
                r.text()
            );
            assert!(r.text().ends_with("exit\n"));
        }
    };
    check("?platform=pcbios&arch=i386", Some(ClientArch::Bios), true).await;
    check("?platform=efi&arch=x86_64", Some(ClientArch::EfiX64), false).await;
    // Regression: `buildarch=` (the iPXE setting's name) was ignored, so the arch was
    // unknown and the machine fell through to a group it should not match.
    check(
        "?platform=efi&buildarch=x86_64",
        Some(ClientArch::EfiX64),
        false,
    )
    .await;
    check("?platform=efi&arch=i386", Some(ClientArch::EfiIa32), false).await;
    check(
        "?platform=efi&arch=arm64",
        Some(ClientArch::EfiArm64),
        false,
    )
    .await;
    check("?uuid=", None, false).await;
    check("", None, false).await;
}

#[tokio::test]
async fn invalid_mac_is_400_text() {
    let srv = start(Answer::Ignore).await;
    for mac in [
        "zz:54:00:ab:cd:ef",
        "52:54:00:ab:cd",
        "hello",
        "52:54:00:ab:cd:ef:01",
    ] {
        let r = get(srv.addr, &format!("/ipxe/{mac}")).await;
        assert_eq!(r.status, 400, "{mac}");
        assert!(r
            .header("content-type")
            .expect("ct")
            .starts_with("text/plain"));
        assert!(r.text().contains("invalid MAC address"), "{}", r.text());
    }
    assert!(srv.select.seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn render_failure_is_500_not_404() {
    let srv = start(Answer::Boot(BootSpec {
        kernel: "../outside".into(),
        initrds: vec![],
        cmdline: String::new(),
    }))
    .await;
    let r = get(srv.addr, "/ipxe/52:54:00:00:00:01").await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("cannot render"), "{}", r.text());
}

#[tokio::test]
async fn wait_and_ignore_scripts_over_http() {
    let srv = start(Answer::Wait).await;
    let r = get(srv.addr, "/ipxe/52:54:00:00:00:01?platform=efi&arch=x86_64").await;
    assert!(r.text().lines().any(|l| l == "sleep 10"), "{}", r.text());
    assert!(r.text().lines().any(|l| l.starts_with(&format!(
        "chain --replace --autofree {BASE}/ipxe/${{netX/mac}}?"
    ))));
    let srv = start(Answer::Ignore).await;
    let r = get(srv.addr, "/ipxe/52:54:00:00:00:01").await;
    let text = r.text();
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(lines, ["#!ipxe", "echo", "exit"]);
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn write(dir: &Path, rel: &str, content: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

const SIZE: usize = 100_000;

#[tokio::test]
async fn full_get_has_length_and_validators_and_is_never_chunked() {
    let srv = start(Answer::Ignore).await;
    let content = pattern(SIZE);
    write(&srv.data, "debian/vmlinuz", &content);
    let r = get(srv.addr, "/files/debian/vmlinuz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").expect("etag");
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
    let lm = r.header("last-modified").expect("last-modified");
    assert!(httpdate::parse_http_date(lm).is_ok(), "{lm}");
    assert_eq!(r.body, content);

    let h = request(srv.addr, "HEAD", "/files/debian/vmlinuz", &[]).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("100000"));
    assert_eq!(h.header("transfer-encoding"), None);
    assert_eq!(h.header("etag"), Some(etag));
    assert_eq!(h.header("last-modified"), Some(lm));
    assert!(h.body.is_empty());
}

#[tokio::test]
async fn ranges() {
    let srv = start(Answer::Ignore).await;
    let content = pattern(SIZE);
    write(&srv.data, "f", &content);
    let check =
        |range: &'static str, status: u16, content_range: Option<&'static str>, want: &[u8]| {
            let addr = srv.addr;
            let want = want.to_vec();
            async move {
                let r = request(addr, "GET", "/files/f", &[("Range", range)]).await;
                assert_eq!(r.status, status, "{range}");
                assert_eq!(r.header("content-range"), content_range, "{range}");
                assert_eq!(r.header("transfer-encoding"), None, "{range}");
                assert_eq!(
                    r.header("content-length"),
                    Some(want.len().to_string().as_str()),
                    "{range}"
                );
                assert!(r.body == want, "{range}: body of {} bytes", r.body.len());
            }
        };
    check(
        "bytes=10-19",
        206,
        Some("bytes 10-19/100000"),
        &content[10..20],
    )
    .await;
    check(
        "bytes=99990-",
        206,
        Some("bytes 99990-99999/100000"),
        &content[99990..],
    )
    .await;
    check(
        "bytes=-5",
        206,
        Some("bytes 99995-99999/100000"),
        &content[99995..],
    )
    .await;
    check("bytes=0-", 206, Some("bytes 0-99999/100000"), &content).await;
    check(
        "bytes=50-999999",
        206,
        Some("bytes 50-99999/100000"),
        &content[50..],
    )
    .await;
    check("bytes=100000-", 416, Some("bytes */100000"), &[]).await;
    check("bytes=-0", 416, Some("bytes */100000"), &[]).await;
    check("bytes=0-1,5-6", 200, None, &content).await;

    let h = request(srv.addr, "HEAD", "/files/f", &[("Range", "bytes=-5")]).await;
    assert_eq!(h.status, 206);
    assert_eq!(h.header("content-length"), Some("5"));
    assert_eq!(h.header("content-range"), Some("bytes 99995-99999/100000"));
    assert!(h.body.is_empty());
}

#[tokio::test]
async fn conditional_requests() {
    let srv = start(Answer::Ignore).await;
    write(&srv.data, "f", &pattern(SIZE));
    let first = get(srv.addr, "/files/f").await;
    let etag = first.header("etag").expect("etag").to_string();
    let lm = first.header("last-modified").expect("lm").to_string();

    let r = request(srv.addr, "GET", "/files/f", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.body.is_empty());
    let list = format!("\"nope\", W/{etag}");
    let r = request(srv.addr, "GET", "/files/f", &[("If-None-Match", &list)]).await;
    assert_eq!(r.status, 304);
    let r = request(
        srv.addr,
        "GET",
        "/files/f",
        &[("If-None-Match", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), SIZE);
    let r = request(srv.addr, "GET", "/files/f", &[("If-Modified-Since", &lm)]).await;
    assert_eq!(r.status, 304);

    // If-Range: the range only applies to the version the client already has.
    let r = request(
        srv.addr,
        "GET",
        "/files/f",
        &[("Range", "bytes=0-9"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!(r.status, 206);
    let r = request(
        srv.addr,
        "GET",
        "/files/f",
        &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), SIZE);

    // A changed file gets a new ETag.
    write(&srv.data, "f", &pattern(SIZE + 1));
    let r = request(srv.addr, "GET", "/files/f", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn traversal_never_leaves_the_root() {
    let srv = start(Answer::Ignore).await;
    let secret = b"TOP-SECRET-CONTENT";
    let outside = srv.data.parent().expect("parent");
    std::fs::write(outside.join("secret"), secret).expect("write");
    write(&srv.data, "sub/ok", b"fine");
    std::os::unix::fs::symlink(outside.join("secret"), srv.data.join("link-out")).expect("ln");
    std::os::unix::fs::symlink("sub/ok", srv.data.join("link-in")).expect("ln");

    for (target, want) in [
        ("/files/../secret", 400),
        ("/files/%2e%2e/secret", 400),
        ("/files/%2E%2E%2Fsecret", 400),
        ("/files/sub/..%2f..%2fsecret", 400),
        ("/files/sub/%2e%2e/%2e%2e/secret", 400),
        ("/files//etc/passwd", 400),
        ("/files/%2Fetc%2Fpasswd", 400),
        ("/files/..%5csecret", 400),
        ("/files/sub%00", 400),
        ("/files/sub/", 400),
        // Escaping symlinks, directories and missing files all look alike: 404.
        ("/files/link-out", 404),
        ("/files/sub", 404),
        ("/files/missing", 404),
        ("/ipxe-bin/..%2fdata%2fsub%2fok", 400),
        ("/ipxe-bin/%2e%2e", 400),
    ] {
        for method in ["GET", "HEAD"] {
            let r = request(srv.addr, method, target, &[]).await;
            assert_eq!(r.status, want, "{method} {target}");
            assert!(
                !r.body.windows(secret.len()).any(|w| w == secret),
                "{method} {target} leaked"
            );
        }
    }
    let r = get(srv.addr, "/files/link-in").await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"fine".as_slice()));
}

#[tokio::test]
async fn ipxe_binaries_are_served() {
    let srv = start(Answer::Ignore).await;
    write(&srv.ipxe, "ipxe.efi", &pattern(4096));
    let r = get(srv.addr, "/ipxe-bin/ipxe.efi").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("4096"));
    assert_eq!(r.body, pattern(4096));
    let r = request(
        srv.addr,
        "GET",
        "/ipxe-bin/ipxe.efi",
        &[("Range", "bytes=-1")],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (206, 1));
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("kB");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_is_streamed_without_growing_memory() {
    const BIG: u64 = 64 * 1024 * 1024;
    let srv = start(Answer::Ignore).await;
    let file = std::fs::File::create(srv.data.join("big")).expect("create");
    file.set_len(BIG).expect("sparse");
    // Warm up the server and allocator with a small request first.
    write(&srv.data, "small", &pattern(1000));
    let _ = get(srv.addr, "/files/small").await;
    let before = rss_bytes();

    let mut conn = TcpStream::connect(srv.addr).await.expect("connect");
    conn.write_all(b"GET /files/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // Read and discard: the client must not hold the file either.
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut body_bytes = 0u64;
    let mut peak = before;
    loop {
        let n = conn.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        if body_bytes == 0 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            head.extend_from_slice(&buf[..n]);
            if let Some(split) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body_bytes = (head.len() - split - 4) as u64;
            }
        } else {
            body_bytes += n as u64;
        }
        peak = peak.max(rss_bytes());
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.contains(&format!("content-length: {BIG}")), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body_bytes, BIG);
    let growth = peak.saturating_sub(before);
    assert!(growth < 16 * 1024 * 1024, "RSS grew by {growth} bytes");
}

#[tokio::test]
async fn service_binds_serves_and_reports_a_taken_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let service = HttpService {
        bind: addr,
        public_base: BASE.into(),
        policy: PolicyHandle::default(),
        data_dir: "/nonexistent".into(),
        ipxe_dir: "/nonexistent".into(),
        images: None,
    };
    let err = service
        .run(CancellationToken::new())
        .await
        .expect_err("port is taken");
    assert!(
        matches!(err, HttpError::Bind { addr: a, .. } if a == addr),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with(&format!("http: cannot bind {addr}")));
}
