//! netbootd's TFTP server on loopback with real sockets, driven by a small test client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netboot::config::TftpConfig;
use netboot::tftp::{Root, TftpService};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// A running server; stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(roots: Vec<PathBuf>, config: TftpConfig) -> Server {
    let bound = TftpService {
        bind: "127.0.0.1:0".parse().expect("addr"),
        roots: roots.into_iter().map(Root::contained).collect(),
        config,
    }
    .bind()
    .await
    .expect("bind");
    let addr = bound.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    tokio::spawn(bound.run(stop.clone()));
    Server { addr, stop }
}

fn config() -> TftpConfig {
    TftpConfig {
        port: 0,
        max_blksize: 1468,
        max_windowsize: 8,
        timeout_secs: 1,
        retries: 5,
        ..TftpConfig::default()
    }
}

/// Deterministic bytes that differ block to block, so reordering shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, data).expect("write");
}

fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
    request(1, name, "octet", options)
}

fn request(op: u8, name: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, op];
    for s in [name, mode]
        .into_iter()
        .chain(options.iter().flat_map(|(a, b)| [*a, *b]))
    {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    p
}

fn ack(block: u16) -> Vec<u8> {
    let mut p = vec![0, 4];
    p.extend_from_slice(&block.to_be_bytes());
    p
}

fn opcode(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[0], p[1]])
}

fn block_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

fn oack_options(p: &[u8]) -> Vec<(String, String)> {
    let fields: Vec<String> = p[2..]
        .split(|&c| c == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    fields
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect()
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("client bind")
}

async fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70000];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        Ok(Err(e)) => panic!("client recv: {e}"),
        Err(_) => None,
    }
}

/// What a download produced.
#[derive(Debug, Default)]
struct Fetched {
    data: Vec<u8>,
    oack: Option<Vec<(String, String)>>,
    /// First packet's opcode and block (DATA 1 for a classic transfer).
    first: (u16, u16),
    /// Packets that came from any address but the transfer's.
    strays: Vec<SocketAddr>,
    tid: Option<SocketAddr>,
    /// How long the first answer took.
    first_after: Duration,
}

/// Downloads `name`; `Err((code, message))` when the server answers ERROR.
async fn fetch(
    server: SocketAddr,
    name: &str,
    options: &[(&str, &str)],
) -> Result<Fetched, (u16, String)> {
    let sock = client().await;
    fetch_on(&sock, server, &rrq(name, options)).await
}

async fn fetch_on(
    sock: &UdpSocket,
    server: SocketAddr,
    request: &[u8],
) -> Result<Fetched, (u16, String)> {
    sock.send_to(request, server).await.expect("send rrq");
    let sent = Instant::now();
    let mut out = Fetched::default();
    let mut blksize = 512usize;
    let mut windowsize = 1usize;
    let mut last: u16 = 0;
    let mut in_window = 0usize;
    loop {
        let Some((p, from)) = recv(sock, Duration::from_secs(5)).await else {
            panic!("no packet from the server within 5 s (block {last})");
        };
        match out.tid {
            None => {
                out.tid = Some(from);
                out.first_after = sent.elapsed();
                out.first = (opcode(&p), if p.len() >= 4 { block_of(&p) } else { 0 });
            }
            Some(tid) if tid != from => {
                out.strays.push(from);
                continue;
            }
            Some(_) => {}
        }
        let tid = from;
        match opcode(&p) {
            5 => {
                let msg = String::from_utf8_lossy(&p[4..])
                    .trim_end_matches('\0')
                    .to_string();
                return Err((block_of(&p), msg));
            }
            6 => {
                let opts = oack_options(&p);
                for (k, v) in &opts {
                    match k.as_str() {
                        "blksize" => blksize = v.parse().expect("blksize"),
                        "windowsize" => windowsize = v.parse().expect("windowsize"),
                        _ => {}
                    }
                }
                out.oack = Some(opts);
                sock.send_to(&ack(0), tid).await.expect("ack 0");
            }
            3 => {
                if block_of(&p) != last.wrapping_add(1) {
                    continue;
                }
                last = last.wrapping_add(1);
                in_window += 1;
                let payload = &p[4..];
                assert!(payload.len() <= blksize, "block larger than blksize");
                out.data.extend_from_slice(payload);
                let done = payload.len() < blksize;
                if done || in_window == windowsize {
                    sock.send_to(&ack(last), tid).await.expect("ack");
                    in_window = 0;
                }
                if done {
                    return Ok(out);
                }
            }
            op => panic!("unexpected opcode {op} from the server"),
        }
    }
}

fn opts(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    Some(
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

#[tokio::test]
async fn classic_transfer_starts_with_data_1_and_ends_on_a_short_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let odd = pattern(512 * 3 + 100, 1);
    let even = pattern(1024, 2);
    write(dir.path(), "odd.bin", &odd);
    write(dir.path(), "even.bin", &even);
    write(dir.path(), "empty.bin", b"");
    let server = start(vec![dir.path().into()], config()).await;

    let got = fetch(server.addr, "odd.bin", &[]).await.expect("odd");
    assert_eq!(got.first, (3, 1));
    assert!(got.oack.is_none());
    assert!(got.data == odd, "odd.bin differs");
    // A multiple of 512 ends with an empty block 3.
    let got = fetch(server.addr, "even.bin", &[]).await.expect("even");
    assert!(got.data == even, "even.bin differs");
    let got = fetch(server.addr, "empty.bin", &[]).await.expect("empty");
    assert_eq!(got.data, b"");
    // netascii is served byte for byte, like octet.
    let sock = client().await;
    let got = fetch_on(&sock, server.addr, &request(1, "odd.bin", "NETASCII", &[]))
        .await
        .expect("netascii");
    assert!(got.data == odd, "netascii differs");
}

#[tokio::test]
async fn negotiates_blksize_tsize_windowsize_within_caps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(100_000, 3);
    write(dir.path(), "f", &data);
    let server = start(vec![dir.path().into()], config()).await;
    let size = data.len().to_string();

    let got = fetch(
        server.addr,
        "f",
        &[
            ("blksize", "1024"),
            ("tsize", "0"),
            ("windowsize", "4"),
            ("foo", "1"),
        ],
    )
    .await
    .expect("fetch");
    assert_eq!(
        got.oack,
        opts(&[("blksize", "1024"), ("tsize", &size), ("windowsize", "4")])
    );
    assert!(got.data == data);

    // Caps: max_blksize 1468, max_windowsize 8.
    let got = fetch(
        server.addr,
        "f",
        &[("BLKSIZE", "65464"), ("windowsize", "64"), ("timeout", "3")],
    )
    .await
    .expect("fetch capped");
    assert_eq!(
        got.oack,
        opts(&[("blksize", "1468"), ("windowsize", "8"), ("timeout", "3")])
    );
    assert!(got.data == data);

    // tsize alone: the file size, and the default 512-byte blocks.
    let got = fetch(server.addr, "f", &[("tsize", "0")])
        .await
        .expect("tsize");
    assert_eq!(got.oack, opts(&[("tsize", &size)]));
    assert!(got.data == data);

    // Only bad or unknown options: no OACK at all, classic transfer.
    let got = fetch(
        server.addr,
        "f",
        &[("blksize", "7"), ("windowsize", "0"), ("x", "y")],
    )
    .await
    .expect("bad options");
    assert_eq!(got.first, (3, 1));
    assert!(got.data == data);
}

#[tokio::test]
async fn error_after_oack_ends_that_transfer_and_the_new_request_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(300_000, 4);
    write(dir.path(), "ipxe.efi", &data);
    let server = start(vec![dir.path().into()], config()).await;
    let sock = client().await;

    // The UEFI size probe.
    sock.send_to(
        &rrq("ipxe.efi", &[("tsize", "0"), ("blksize", "1468")]),
        server.addr,
    )
    .await
    .expect("send");
    let (p, probe_tid) = recv(&sock, Duration::from_secs(2)).await.expect("oack");
    assert_eq!(opcode(&p), 6);
    assert_eq!(
        oack_options(&p),
        opts(&[("tsize", "300000"), ("blksize", "1468")]).expect("opts")
    );
    let mut err = vec![0, 5, 0, 8];
    err.extend_from_slice(b"tsize probe done\0");
    sock.send_to(&err, probe_tid).await.expect("send error");

    let got = fetch_on(&sock, server.addr, &rrq("ipxe.efi", &[("blksize", "1468")]))
        .await
        .expect("real download");
    assert!(got.data == data);
    assert_ne!(got.tid, Some(probe_tid));
    // Well under the 1 s retransmission timeout: nothing waited for the probe.
    assert!(
        got.first_after < Duration::from_millis(500),
        "first answer after {:?}",
        got.first_after
    );
    // The probe transfer stays silent: no OACK retransmission, nothing at all.
    assert!(
        got.strays.is_empty(),
        "strays during download: {:?}",
        got.strays
    );
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while let Some((p, from)) =
        recv(&sock, quiet_until.saturating_duration_since(Instant::now())).await
    {
        assert_ne!(from, probe_tid, "probe transfer sent opcode {}", opcode(&p));
    }
}

#[tokio::test]
async fn a_33_mib_file_at_blksize_512_rolls_block_numbers_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(33 * 1024 * 1024 + 17, 5);
    write(dir.path(), "big", &data);
    let server = start(vec![dir.path().into()], config()).await;
    let started = Instant::now();
    // Windows of 7 do not divide 65536, so one window straddles the 65535 -> 0 rollover
    // (and the suite stays fast; windowsize 1 takes the same ACK arithmetic).
    let got = fetch(server.addr, "big", &[("windowsize", "7")])
        .await
        .expect("big");
    assert_eq!(got.oack, opts(&[("windowsize", "7")]));
    eprintln!("33 MiB at blksize 512 took {:?}", started.elapsed());
    assert_eq!(got.data.len(), data.len());
    assert!(got.data == data, "33 MiB file differs");
}

#[tokio::test]
async fn windowsize_8_sends_whole_windows_and_a_lower_ack_resends_from_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(512 * 30 + 5, 6);
    write(dir.path(), "w", &data);
    let server = start(vec![dir.path().into()], config()).await;
    let sock = client().await;
    sock.send_to(&rrq("w", &[("windowsize", "8")]), server.addr)
        .await
        .expect("send");
    let (p, tid) = recv(&sock, Duration::from_secs(2)).await.expect("oack");
    assert_eq!(oack_options(&p), opts(&[("windowsize", "8")]).expect("o"));
    sock.send_to(&ack(0), tid).await.expect("ack 0");
    // A whole window arrives without any further ACK.
    let mut blocks = Vec::new();
    for _ in 0..8 {
        let (p, _) = recv(&sock, Duration::from_millis(800)).await.expect("data");
        blocks.push(block_of(&p));
    }
    assert_eq!(blocks, (1..=8).collect::<Vec<u16>>());
    // Pretend blocks 6..8 were lost: the next window starts at 6.
    sock.send_to(&ack(5), tid).await.expect("ack 5");
    let mut blocks = Vec::new();
    for _ in 0..8 {
        let (p, _) = recv(&sock, Duration::from_millis(800)).await.expect("data");
        blocks.push(block_of(&p));
    }
    assert_eq!(blocks, (6..=13).collect::<Vec<u16>>());
    // A stale ACK changes nothing; the full download still works.
    sock.send_to(&ack(3), tid).await.expect("old ack");
    assert!(recv(&sock, Duration::from_millis(300)).await.is_none());
    drop(sock);
    let got = fetch(server.addr, "w", &[("windowsize", "8")])
        .await
        .expect("fetch");
    assert!(got.data == data);
}

#[tokio::test]
async fn lost_ack_means_retransmission_then_giving_up_after_retries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(2000, 7);
    write(dir.path(), "f", &data);
    let server = start(
        vec![dir.path().into()],
        TftpConfig {
            retries: 2,
            ..config()
        },
    )
    .await;
    let sock = client().await;
    sock.send_to(&rrq("f", &[]), server.addr)
        .await
        .expect("send");
    let started = Instant::now();
    let mut copies = Vec::new();
    while let Some((p, _)) = recv(&sock, Duration::from_millis(1800)).await {
        assert_eq!((opcode(&p), block_of(&p)), (3, 1));
        copies.push(started.elapsed());
    }
    // One send and two retransmissions, a timeout (1 s) apart, then silence.
    assert_eq!(copies.len(), 3, "copies at {copies:?}");
    assert!(copies[1] >= Duration::from_millis(900), "{copies:?}");
    assert!(copies[2] >= Duration::from_millis(1800), "{copies:?}");
}

#[tokio::test]
async fn lost_ack_is_recovered_and_the_transfer_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(1500, 8);
    write(dir.path(), "f", &data);
    let server = start(vec![dir.path().into()], config()).await;
    let sock = client().await;
    sock.send_to(&rrq("f", &[]), server.addr)
        .await
        .expect("send");
    let (p, tid) = recv(&sock, Duration::from_secs(2)).await.expect("data 1");
    assert_eq!(block_of(&p), 1);
    sock.send_to(&ack(1), tid).await.expect("ack 1");
    let (p, _) = recv(&sock, Duration::from_secs(2)).await.expect("data 2");
    assert_eq!(block_of(&p), 2);
    // ACK 2 "lost": block 2 comes again after the timeout.
    let (p, _) = recv(&sock, Duration::from_secs(2))
        .await
        .expect("data 2 again");
    assert_eq!(block_of(&p), 2);
    let mut got = data[..1024].to_vec();
    sock.send_to(&ack(2), tid).await.expect("ack 2");
    let (p, _) = recv(&sock, Duration::from_secs(2)).await.expect("data 3");
    assert_eq!(block_of(&p), 3);
    got.extend_from_slice(&p[4..]);
    sock.send_to(&ack(3), tid).await.expect("ack 3");
    assert!(got == data);
    // After the last ACK, nothing more.
    assert!(recv(&sock, Duration::from_millis(1300)).await.is_none());
}

#[tokio::test]
async fn ack_from_another_port_gets_error_5_and_the_transfer_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(5000, 9);
    write(dir.path(), "f", &data);
    let server = start(vec![dir.path().into()], config()).await;
    let sock = client().await;
    sock.send_to(&rrq("f", &[]), server.addr)
        .await
        .expect("send");
    let (p, tid) = recv(&sock, Duration::from_secs(2)).await.expect("data 1");
    assert_eq!(block_of(&p), 1);
    let intruder = client().await;
    intruder.send_to(&ack(1), tid).await.expect("intruder ack");
    let (p, from) = recv(&intruder, Duration::from_secs(2))
        .await
        .expect("error 5");
    assert_eq!((from, opcode(&p), block_of(&p)), (tid, 5, 5));
    // The real client is unaffected: block 1 was not acknowledged by the intruder.
    sock.send_to(&ack(1), tid).await.expect("ack 1");
    let (p, _) = recv(&sock, Duration::from_secs(2)).await.expect("data 2");
    assert_eq!(block_of(&p), 2);
}

#[tokio::test]
async fn write_requests_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(vec![dir.path().into()], config()).await;
    let sock = client().await;
    sock.send_to(&request(2, "upload", "octet", &[]), server.addr)
        .await
        .expect("send");
    let (p, _) = recv(&sock, Duration::from_secs(2)).await.expect("reply");
    assert_eq!((opcode(&p), block_of(&p)), (5, 2));
    assert!(!dir.path().join("upload").exists());
}

#[tokio::test]
async fn traversal_never_leaves_the_root_and_missing_is_error_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    write(tmp.path(), "x", b"outside");
    write(&root, "a/inside", b"inside");
    write(&root, "etc/passwd", b"root-local passwd");
    std::fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    std::os::unix::fs::symlink(tmp.path().join("x"), root.join("link")).expect("symlink");
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let server = start(vec![root.clone()], config()).await;

    for name in [
        "../x",
        "/../x",
        "..\\x",
        "a/../../x",
        "a\\..\\..\\x",
        "link",
        "empty-dir",
        "fifo",
    ] {
        let got = fetch(server.addr, name, &[]).await;
        assert!(matches!(got, Err((2, _))), "{name:?}: {got:?}");
        if let Err((_, msg)) = got {
            assert!(
                !msg.contains(tmp.path().to_string_lossy().as_ref()),
                "{msg}"
            );
        }
    }
    for name in ["missing", "a/missing", "/x", "a/inside/x"] {
        let got = fetch(server.addr, name, &[]).await;
        assert!(matches!(got, Err((1, _))), "{name:?}: {got:?}");
    }
    let got = fetch(server.addr, "/etc/passwd", &[])
        .await
        .expect("inside root");
    assert_eq!(got.data, b"root-local passwd");
    let got = fetch(server.addr, "\\a\\inside", &[])
        .await
        .expect("backslashes");
    assert_eq!(got.data, b"inside");
}

#[tokio::test]
async fn malformed_packets_do_not_stop_the_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(700, 10);
    write(dir.path(), "f", &data);
    let server = start(vec![dir.path().into()], config()).await;
    let junk = client().await;
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![0, 1],
        b"\0\x01no-terminator".to_vec(),
        b"\0\x01f\0octet".to_vec(),
        b"\0\x01\0octet\0".to_vec(),
        b"\0\x01\xff\xfe\0octet\0".to_vec(),
        b"\0\x01f\0mail\0".to_vec(),
        b"\0\x63whatever".to_vec(),
        ack(1),
        vec![0, 5, 0, 0],
        vec![0xff; 4000],
    ];
    garbage.push(rrq(
        "f",
        &[("blksize", "abc"), ("tsize", "-1"), ("windowsize", "99999")],
    ));
    for g in &garbage {
        junk.send_to(g, server.addr).await.expect("send junk");
    }
    let got = fetch(server.addr, "f", &[])
        .await
        .expect("good request after junk");
    assert!(got.data == data);
}

#[tokio::test]
async fn first_root_holding_the_name_wins() {
    let one = tempfile::tempdir().expect("tempdir");
    let two = tempfile::tempdir().expect("tempdir");
    write(one.path(), "both", b"from one");
    write(two.path(), "both", b"from two");
    write(two.path(), "only-two", b"two only");
    let server = start(vec![one.path().into(), two.path().into()], config()).await;
    assert_eq!(
        fetch(server.addr, "both", &[]).await.expect("both").data,
        b"from one"
    );
    assert_eq!(
        fetch(server.addr, "only-two", &[]).await.expect("two").data,
        b"two only"
    );
}

#[tokio::test]
async fn negotiated_timeout_governs_retransmission() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "f", &pattern(100, 11));
    let server = start(vec![dir.path().into()], config()).await;
    let sock = client().await;
    sock.send_to(&rrq("f", &[("timeout", "2")]), server.addr)
        .await
        .expect("send");
    let (p, tid) = recv(&sock, Duration::from_secs(2)).await.expect("oack");
    assert_eq!(oack_options(&p), opts(&[("timeout", "2")]).expect("o"));
    sock.send_to(&ack(0), tid).await.expect("ack 0");
    let (p, _) = recv(&sock, Duration::from_secs(1)).await.expect("data 1");
    assert_eq!(block_of(&p), 1);
    let sent = Instant::now();
    // Not after the configured 1 s, but after the 2 s the client asked for.
    let (p, _) = recv(&sock, Duration::from_secs(3))
        .await
        .expect("data 1 again");
    assert_eq!(block_of(&p), 1);
    assert!(
        sent.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        sent.elapsed()
    );
}

/// Regression: every RRQ started a transfer, so a flood of requests that are never
/// acknowledged (with `timeout` 255, each held its socket for 25 minutes) took one file
/// descriptor each until the daemon had none left.
#[tokio::test]
async fn transfers_are_capped_per_client_and_freed_when_they_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "f", &pattern(4000, 1));
    let server = start(
        vec![dir.path().into()],
        TftpConfig {
            retries: 0,
            max_transfers_per_client: 2,
            ..config()
        },
    )
    .await;
    let sock = client().await;
    // Two transfers start (DATA 1 from their own ports); the third is refused.
    for _ in 0..2 {
        sock.send_to(&rrq("f", &[]), server.addr)
            .await
            .expect("send");
        let (p, from) = recv(&sock, Duration::from_secs(2)).await.expect("data");
        assert_eq!((opcode(&p), block_of(&p)), (3, 1));
        assert_ne!(from, server.addr);
    }
    sock.send_to(&rrq("f", &[]), server.addr)
        .await
        .expect("send");
    let (p, from) = recv(&sock, Duration::from_secs(2)).await.expect("busy");
    assert_eq!((opcode(&p), block_of(&p), from), (5, 0, server.addr));
    // Once the unanswered transfers give up, the client is served again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = fetch(server.addr, "f", &[])
        .await
        .expect("served after the others ended");
    assert_eq!(got.data, pattern(4000, 1));
}

#[tokio::test]
async fn transfers_are_capped_in_total() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "f", &pattern(4000, 2));
    let server = start(
        vec![dir.path().into()],
        TftpConfig {
            retries: 0,
            max_transfers: 1,
            ..config()
        },
    )
    .await;
    let first = client().await;
    first
        .send_to(&rrq("f", &[]), server.addr)
        .await
        .expect("send");
    let (p, _) = recv(&first, Duration::from_secs(2)).await.expect("data");
    assert_eq!(opcode(&p), 3);
    let second = client().await;
    second
        .send_to(&rrq("f", &[]), server.addr)
        .await
        .expect("send");
    let (p, _) = recv(&second, Duration::from_secs(2)).await.expect("busy");
    assert_eq!((opcode(&p), block_of(&p)), (5, 0));
}
