//! The real `DhcpService` on real sockets: a malformed packet does not stop the loop and
//! a valid DISCOVER is answered with a broadcast OFFER.
//!
//! Runs in two network namespaces this test creates (server and client, joined by a veth
//! pair with 192.0.2.0/24 addresses), so the broadcast never leaves them. Needs root;
//! without it the test prints a loud SKIPPED line and passes.

mod dhcp_support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcp_support::{mac, reply_opt, yiaddr, Req};
use netboot::arch::BootFileTable;
use netboot::config::{DhcpConfig, DhcpMode, Pool};
use netboot::dhcp::engine::SelectFn;
use netboot::dhcp::{DhcpError, DhcpService};
use netboot::policy::{Answer, Decision, MachineFacts, Policy, PolicyHandle};
use tokio_util::sync::CancellationToken;

const SERVER_PORT: u16 = 10067;
const CLIENT_PORT: u16 = 10068;
const PROXY_PORT: u16 = 14011;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by a veth pair; deleted on drop, also when the test fails.
struct Namespaces {
    server: String,
    client: String,
}

impl Namespaces {
    /// `tag` keeps the tests of this binary (which run in parallel) apart.
    fn create(tag: &str) -> Result<Self, String> {
        let id = std::process::id();
        let ns = Self {
            server: format!("carte-dhcp-s{tag}-{id}"),
            client: format!("carte-dhcp-c{tag}-{id}"),
        };
        ip(&["netns", "add", &ns.server])?;
        ip(&["netns", "add", &ns.client])?;
        ip(&[
            "-n", &ns.server, "link", "add", "dv0", "type", "veth", "peer", "name", "dv1", "netns",
            &ns.client,
        ])?;
        ip(&[
            "-n",
            &ns.server,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "dv0",
        ])?;
        ip(&[
            "-n",
            &ns.client,
            "addr",
            "add",
            "192.0.2.2/24",
            "dev",
            "dv1",
        ])?;
        ip(&["-n", &ns.server, "link", "set", "dv0", "up"])?;
        ip(&["-n", &ns.client, "link", "set", "dv1", "up"])?;
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Moves the calling thread into network namespace `name`.
fn enter(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns");
    // SAFETY: setns with a valid, open namespace fd only changes this thread's network
    // namespace; the fd outlives the call.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

fn can_run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    ip(&["-V"]).map_err(|e| format!("no ip tool: {e}"))
}

fn client_socket() -> UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    s.set_broadcast(true).expect("broadcast");
    s.set_reuse_address(true).expect("reuse");
    s.bind_device(Some(b"dv1")).expect("bind device");
    let addr: SocketAddr = (Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into();
    s.bind(&addr.into()).expect("bind");
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    s
}

/// Broadcasts `req` until a reply with its xid comes back (bounded).
fn exchange(s: &UdpSocket, req: &Req) -> Vec<u8> {
    exchange_to(s, req, (Ipv4Addr::BROADCAST, SERVER_PORT).into()).0
}

/// Sends `req` to `to` until a reply with its xid comes back (bounded); returns the
/// reply and where it came from.
fn exchange_to(s: &UdpSocket, req: &Req, to: SocketAddr) -> (Vec<u8>, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        s.send_to(&req.encode(), to).expect("send");
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                break;
            };
            if n >= 240 && buf[0] == 2 && buf[4..8] == req.xid.to_be_bytes() {
                return (buf[..n].to_vec(), from);
            }
        }
    }
    panic!("no reply to xid {:08x} within 10 s", req.xid);
}

#[test]
fn bind_errors_are_returned() {
    if let Err(why) = can_run() {
        eprintln!("SKIPPED dhcp bind test: {why} (needs root)");
        return;
    }
    let err = netboot::dhcp::socket::bind(10069, "no-such-if0").expect_err("no such interface");
    assert!(matches!(err, DhcpError::Bind { .. }));
    assert!(err.to_string().contains("no-such-if0"), "{err}");
}

#[test]
fn service_survives_malformed_packets_and_answers_discover() {
    if let Err(why) = can_run() {
        eprintln!("SKIPPED dhcp socket test: {why} (needs root to create network namespaces)");
        return;
    }
    let ns = Namespaces::create("f").expect("create namespaces");
    let dir = tempfile::tempdir().expect("tempdir");
    let service = service(DhcpMode::Full, dir.path());
    let (first, second) = with_service(&ns, service, |s| {
        let first = exchange(s, &Req::pxe(mac(1), 0));
        // The loop is up. Now garbage: bad hlen, truncated, option overrun, no cookie.
        let to: SocketAddr = (Ipv4Addr::BROADCAST, SERVER_PORT).into();
        let mut bad = Req::pxe(mac(2), 0);
        bad.hlen = 255;
        let mut overrun = Req::pxe(mac(2), 0);
        overrun.tail = vec![12, 250, 1];
        overrun.end = false;
        let mut no_cookie = Req::pxe(mac(2), 0);
        no_cookie.cookie = false;
        for junk in [
            bad.encode(),
            overrun.encode(),
            no_cookie.encode(),
            vec![1, 2, 3],
            vec![0xff; 600],
        ] {
            s.send_to(&junk, to).expect("send junk");
        }
        let mut second = Req::pxe(mac(3), 7);
        second.xid = 0x0bad_cafe;
        second.flags = 0x8000;
        (first, exchange(s, &second))
    });
    assert_eq!(reply_opt(&first, 53), Some(vec![2]), "offer");
    assert_eq!(yiaddr(&first), Ipv4Addr::new(192, 0, 2, 100));
    assert_eq!(reply_opt(&first, 67), Some(b"undionly.kpxe".to_vec()));
    assert_eq!(
        reply_opt(&second, 53),
        Some(vec![2]),
        "answered after the junk"
    );
    assert_eq!(yiaddr(&second), Ipv4Addr::new(192, 0, 2, 101));
    assert_eq!(reply_opt(&second, 67), Some(b"ipxe.efi".to_vec()));
    drop(ns);
}

#[test]
fn proxy_service_answers_on_67_and_4011() {
    if let Err(why) = can_run() {
        eprintln!(
            "SKIPPED dhcp proxy socket test: {why} (needs root to create network namespaces)"
        );
        return;
    }
    let ns = Namespaces::create("p").expect("create namespaces");
    let dir = tempfile::tempdir().expect("tempdir");
    let service = service(DhcpMode::Proxy, dir.path());
    let (offer, ack, from) = with_service(&ns, service, |s| {
        let offer = exchange(s, &Req::pxe(mac(1), 7));
        // After the real server gave 192.0.2.2, the client asks the boot server directly.
        let mut req = Req::request(mac(1))
            .opt(93, vec![0, 7])
            .opt(60, "PXEClient:Arch:00007:UNDI:003000");
        req.ciaddr = Ipv4Addr::new(192, 0, 2, 2);
        req.xid = 0x4011_4011;
        let to: SocketAddr = (Ipv4Addr::new(192, 0, 2, 1), PROXY_PORT).into();
        let (ack, from) = exchange_to(s, &req, to);
        (offer, ack, from)
    });
    assert_eq!(reply_opt(&offer, 53), Some(vec![2]), "proxy offer");
    assert_eq!(yiaddr(&offer), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply_opt(&offer, 60), Some(b"PXEClient".to_vec()));
    assert_eq!(
        reply_opt(&ack, 53),
        Some(vec![5]),
        "ack on the boot-server port"
    );
    assert_eq!(yiaddr(&ack), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply_opt(&ack, 67), Some(b"ipxe.efi".to_vec()));
    assert_eq!(
        from,
        SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), PROXY_PORT))
    );
    drop(ns);
}

fn service(mode: DhcpMode, dir: &std::path::Path) -> DhcpService {
    DhcpService {
        config: DhcpConfig {
            mode,
            pool: Some(Pool {
                first: Ipv4Addr::new(192, 0, 2, 100),
                last: Ipv4Addr::new(192, 0, 2, 110),
            }),
            port: SERVER_PORT,
            client_port: CLIENT_PORT,
            proxy_port: PROXY_PORT,
            ..DhcpConfig::default()
        },
        interface: "dv0".into(),
        server_ip: Ipv4Addr::new(192, 0, 2, 1),
        http_base: "http://192.0.2.1:8080".into(),
        boot_files: BootFileTable::default(),
        policy: PolicyHandle::new(Policy::default()),
        lease_file: dir.join("leases.json"),
    }
}

/// Runs `service` in the server namespace and `client` (with a socket on dv1) in the
/// client namespace, then stops the service and checks it ended cleanly.
fn with_service<T: Send + 'static>(
    ns: &Namespaces,
    service: DhcpService,
    client: impl FnOnce(&UdpSocket) -> T + Send + 'static,
) -> T {
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server_ns = ns.server.clone();
    let server = std::thread::spawn(move || -> Result<(), DhcpError> {
        enter(&server_ns);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let select: Arc<SelectFn> = Arc::new(|_: &Policy, _: &MachineFacts| Decision {
            group: "test".into(),
            setup: "local".into(),
            answer: Answer::Local,
        });
        rt.block_on(service.run_with(stop, select))
    });
    let client_ns = ns.client.clone();
    let client = std::thread::spawn(move || {
        enter(&client_ns);
        client(&client_socket())
    });
    let client_result = client.join();
    shutdown.cancel();
    let server_result = server.join().expect("server thread");
    let out = client_result.expect("client thread");
    server_result.expect("service ran and stopped cleanly");
    out
}
