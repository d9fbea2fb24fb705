//! DHCP over crafted packets, no sockets: facts, boot answers, routing, malformed input,
//! the full-mode state machine with its lease file, and proxy mode.

mod dhcp_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use dhcp_support::{file_field, mac, reply_opt, yiaddr, Req};
use netboot::arch::{BootFileTable, ClientArch};
use netboot::config::{DhcpConfig, DhcpMode, Pool};
use netboot::dhcp::boot::BootEnv;
use netboot::dhcp::engine::{Engine, Outgoing, Port, SelectFn};
use netboot::dhcp::leases::{LeaseStore, LoadReport};
use netboot::dhcp::packet::{self, ArchSource, PacketError};
use netboot::mac::MacAddr;
use netboot::policy::{Answer, Decision, MachineEntry, MachineFacts, Policy, PolicyHandle};

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HTTP: &str = "http://192.0.2.1:8080";
const NOW: u64 = 1_800_000_000;

fn peer() -> SocketAddr {
    "0.0.0.0:68".parse().expect("addr")
}

fn config(mode: DhcpMode) -> DhcpConfig {
    DhcpConfig {
        mode,
        pool: Some(Pool {
            first: Ipv4Addr::new(192, 0, 2, 100),
            last: Ipv4Addr::new(192, 0, 2, 104),
        }),
        router: Some(Ipv4Addr::new(192, 0, 2, 254)),
        dns: vec![Ipv4Addr::new(192, 0, 2, 53)],
        ..DhcpConfig::default()
    }
}

fn env() -> BootEnv {
    BootEnv {
        server_ip: SERVER,
        http_base: HTTP.into(),
        boot_files: BootFileTable::default(),
    }
}

/// Test-only selection: machines labelled `ignore=yes` are ignored, all others boot.
fn select() -> Arc<SelectFn> {
    Arc::new(|p: &Policy, f: &MachineFacts| {
        let ignored = p
            .machines
            .get(&f.mac)
            .is_some_and(|m| m.labels.get("ignore").map(String::as_str) == Some("yes"));
        Decision {
            group: "test".into(),
            setup: if ignored { "ignore" } else { "boot" }.into(),
            answer: if ignored {
                Answer::Ignore
            } else {
                Answer::Local
            },
        }
    })
}

fn engine_with(mode: DhcpMode, policy: Policy, leases: LeaseStore) -> Engine {
    Engine::new(
        env(),
        &config(mode),
        PolicyHandle::new(policy),
        select(),
        leases,
    )
}

fn full() -> Engine {
    engine_with(DhcpMode::Full, Policy::default(), LeaseStore::in_memory())
}

fn proxy() -> Engine {
    engine_with(DhcpMode::Proxy, Policy::default(), LeaseStore::in_memory())
}

fn send(e: &Engine, r: &Req) -> Option<Outgoing> {
    e.handle(&r.encode(), peer(), Port::Dhcp, NOW)
}

fn must(e: &Engine, r: &Req) -> Outgoing {
    send(e, r).expect("a reply")
}

fn msg_type(o: &Outgoing) -> u8 {
    reply_opt(&o.bytes, 53).expect("option 53")[0]
}

fn machine(ip: Option<Ipv4Addr>, hostname: Option<&str>) -> MachineEntry {
    MachineEntry {
        ip,
        hostname: hostname.map(str::to_string),
        ..MachineEntry::default()
    }
}

// ---------------------------------------------------------------- facts and boot answers

#[derive(Debug)]
enum Want {
    Tftp(&'static str),
    Http(&'static str),
    NoBoot,
}

#[test]
fn each_arch_code_gets_its_first_stage() {
    let check = |code: u16, arch: ClientArch, want: Want| {
        let req = Req::pxe(mac(1), code);
        let facts = packet::parse(&req.encode()).expect("valid");
        assert_eq!(facts.arch, Some(arch), "code {code}");
        assert_eq!(facts.arch_source, ArchSource::Option93);
        let out = must(&full(), &req);
        assert_eq!(msg_type(&out), 2, "offer for code {code}");
        assert_ne!(yiaddr(&out.bytes), Ipv4Addr::UNSPECIFIED, "code {code}");
        let file = reply_opt(&out.bytes, 67).map(|v| String::from_utf8_lossy(&v).into_owned());
        match want {
            Want::Tftp(f) => {
                assert_eq!(file.as_deref(), Some(f), "code {code}");
                assert_eq!(file_field(&out.bytes), f);
                assert_eq!(out.reply.siaddr, SERVER);
                assert_eq!(reply_opt(&out.bytes, 66), Some(b"192.0.2.1".to_vec()));
                // No vendor class in full mode (EDK2 would turn to 4011; see boot.rs).
                assert_eq!(reply_opt(&out.bytes, 60), None);
            }
            Want::Http(f) => {
                let url = format!("{HTTP}/ipxe-bin/{f}");
                assert_eq!(file.as_deref(), Some(url.as_str()), "code {code}");
                assert_eq!(reply_opt(&out.bytes, 60), Some(b"HTTPClient".to_vec()));
            }
            Want::NoBoot => {
                assert_eq!(file, None, "code {code}: no file in the table");
                assert_eq!(file_field(&out.bytes), "");
            }
        }
    };
    check(0, ClientArch::Bios, Want::Tftp("undionly.kpxe"));
    check(6, ClientArch::EfiIa32, Want::Tftp("ipxe-ia32.efi"));
    check(7, ClientArch::EfiX64, Want::Tftp("ipxe.efi"));
    check(9, ClientArch::EfiX64, Want::Tftp("ipxe.efi"));
    // The default table has no 32-bit ARM binary: address yes, boot answer no.
    check(10, ClientArch::EfiArm32, Want::NoBoot);
    check(11, ClientArch::EfiArm64, Want::Tftp("ipxe-arm64.efi"));
    check(16, ClientArch::EfiX64Http, Want::Http("ipxe.efi"));
    check(19, ClientArch::EfiArm64Http, Want::Http("ipxe-arm64.efi"));
}

#[test]
fn arch_falls_back_to_vendor_class_never_to_bios() {
    let check = |req: Req, want: Option<ClientArch>, source: ArchSource| {
        let f = packet::parse(&req.encode()).expect("valid");
        assert_eq!((f.arch, f.arch_source), (want, source), "{req:?}");
    };
    let vc = "PXEClient:Arch:00007:UNDI:003016";
    // Option 93 missing.
    check(
        Req::discover(mac(1)).opt(60, vc),
        Some(ClientArch::EfiX64),
        ArchSource::VendorClass,
    );
    // Option 93 unreadable (one byte, or empty).
    check(
        Req::discover(mac(1)).opt(93, vec![7]).opt(60, vc),
        Some(ClientArch::EfiX64),
        ArchSource::VendorClass,
    );
    check(
        Req::discover(mac(1)).opt(93, vec![]).opt(60, vc),
        Some(ClientArch::EfiX64),
        ArchSource::VendorClass,
    );
    // Neither says: unknown, not BIOS.
    check(
        Req::discover(mac(1)).opt(93, vec![0]).opt(60, "PXEClient"),
        None,
        ArchSource::None,
    );
    // A PXE client of unknown arch gets an address but no boot answer.
    let out = must(&full(), &Req::discover(mac(1)).opt(60, "PXEClient"));
    assert_eq!(msg_type(&out), 2);
    assert_eq!(reply_opt(&out.bytes, 67), None);
    assert_eq!(out.reply.siaddr, Ipv4Addr::UNSPECIFIED);
    // In proxy mode an unknown arch gets nothing at all.
    assert!(send(&proxy(), &Req::discover(mac(1)).opt(60, "PXEClient")).is_none());
}

#[test]
fn ipxe_clients_get_the_entry_script() {
    let script = format!("{HTTP}/boot.ipxe");
    for (name, req) in [
        ("raw user class", Req::pxe(mac(2), 0).opt(77, "iPXE")),
        (
            "rfc 3004 user class",
            Req::pxe(mac(2), 7).opt(77, b"\x04iPXE".to_vec()),
        ),
        ("option 175", Req::pxe(mac(2), 7).opt(175, vec![19, 1, 1])),
    ] {
        let f = packet::parse(&req.encode()).expect("valid");
        assert!(f.is_ipxe, "{name}");
        for e in [full(), proxy()] {
            let out = must(&e, &req);
            assert_eq!(
                reply_opt(&out.bytes, 67),
                Some(script.clone().into_bytes()),
                "{name}"
            );
            assert_eq!(file_field(&out.bytes), script, "{name}");
            // iPXE ignores a proxy offer/ACK without next-server (dhcp_has_pxeopts).
            assert_eq!(&out.bytes[20..24], &SERVER.octets(), "{name}: siaddr");
        }
    }
    let f = packet::parse(&Req::pxe(mac(2), 0).opt(77, "gPXE").encode()).expect("valid");
    assert!(!f.is_ipxe);
}

#[test]
fn facts_read_uuid_params_and_ids() {
    let mut uuid = vec![0u8];
    uuid.extend(1..=16u8);
    let req = Req::request(mac(3))
        .opt(97, uuid)
        .opt(55, vec![1, 3, 67])
        .ip_opt(50, Ipv4Addr::new(192, 0, 2, 101))
        .ip_opt(54, SERVER);
    let f = packet::parse(&req.encode()).expect("valid");
    assert_eq!(
        f.uuid.as_deref(),
        Some("01020304-0506-0708-090a-0b0c0d0e0f10")
    );
    assert_eq!(f.params, vec![1, 3, 67]);
    assert_eq!(f.requested_ip, Some(Ipv4Addr::new(192, 0, 2, 101)));
    assert_eq!(f.server_id, Some(SERVER));
    assert_eq!(f.mac, Some(MacAddr(mac(3))));
}

// ---------------------------------------------------------------- reply shape and routing

#[test]
fn replies_have_53_first_server_id_and_bootp_size() {
    let out = must(&full(), &Req::pxe(mac(4), 0));
    assert!(out.bytes.len() >= 300);
    assert_eq!(&out.bytes[236..240], &[99, 130, 83, 99]);
    assert_eq!(&out.bytes[240..243], &[53, 1, 2]);
    assert_eq!(reply_opt(&out.bytes, 54), Some(SERVER.octets().to_vec()));
    assert_eq!(out.bytes[0], 2, "bootreply");
    assert_eq!(
        &out.bytes[4..8],
        &0x1234_5678u32.to_be_bytes(),
        "xid echoed"
    );
    assert_eq!(&out.bytes[28..34], &mac(4), "chaddr echoed");
}

#[test]
fn relayed_request_goes_back_to_the_relay() {
    let relay = Ipv4Addr::new(192, 0, 2, 250);
    let mut req = Req::pxe(mac(5), 7);
    req.giaddr = relay;
    let out = must(&full(), &req);
    assert_eq!(out.dest, SocketAddr::from((relay, 67)));
    assert_eq!(&out.bytes[24..28], &relay.octets(), "giaddr echoed");
    // Proxy mode answers a relay on another subnet (it gives no address).
    let other = Ipv4Addr::new(198, 51, 100, 1);
    req.giaddr = other;
    let out = must(&proxy(), &req);
    assert_eq!(out.dest, SocketAddr::from((other, 67)));
    // Full mode has one pool on one subnet: a relay elsewhere gets no address from it.
    assert!(send(&full(), &req).is_none());
}

#[test]
fn broadcast_flag_and_ciaddr_routing() {
    let mut req = Req::pxe(mac(6), 0);
    req.flags = 0x8000;
    let out = must(&full(), &req);
    assert_eq!(out.dest, "255.255.255.255:68".parse().expect("addr"));
    assert_eq!(&out.bytes[10..12], &[0x80, 0], "flags echoed");
    // Without the flag we still broadcast (no ARP entry for yiaddr; documented).
    let out = must(&full(), &Req::pxe(mac(6), 0));
    assert_eq!(out.dest, "255.255.255.255:68".parse().expect("addr"));
    // A client that has an address (INFORM) gets unicast.
    let mut inform = Req::new(8, mac(6));
    inform.ciaddr = Ipv4Addr::new(192, 0, 2, 77);
    let out = must(&full(), &inform);
    assert_eq!(out.dest, "192.0.2.77:68".parse().expect("addr"));
}

// ---------------------------------------------------------------- malformed input

#[test]
fn malformed_packets_are_clean_errors_and_unanswered() {
    let valid = Req::pxe(mac(7), 0);
    let mut hlen17 = valid.clone();
    hlen17.hlen = 17;
    let mut hlen255 = valid.clone();
    hlen255.hlen = 255;
    let mut no_cookie = valid.clone();
    no_cookie.cookie = false;
    let mut overrun = valid.clone();
    overrun.tail = vec![12, 200, b'x'];
    overrun.end = false;
    let mut no_len = valid.clone();
    no_len.tail = vec![12];
    no_len.end = false;
    let mut reply_op = valid.clone();
    reply_op.op = 2;
    let truncated = valid.encode()[..100].to_vec();

    let cases: Vec<(&str, Vec<u8>, PacketError)> = vec![
        ("hlen 17", hlen17.encode(), PacketError::BadHlen(17)),
        ("hlen 255", hlen255.encode(), PacketError::BadHlen(255)),
        (
            "no cookie",
            no_cookie.encode(),
            PacketError::NoMagicCookie([0; 4]),
        ),
        (
            "truncated header",
            truncated,
            PacketError::Truncated { len: 100, min: 240 },
        ),
        (
            "empty",
            Vec::new(),
            PacketError::Truncated { len: 0, min: 240 },
        ),
        ("reply op", reply_op.encode(), PacketError::NotARequest(2)),
    ];
    let e = full();
    for (name, bytes, want) in cases {
        assert_eq!(packet::parse(&bytes), Err(want), "{name}");
        assert!(
            e.handle(&bytes, peer(), Port::Dhcp, NOW).is_none(),
            "{name}"
        );
    }
    for (name, bytes) in [
        ("overrun", overrun.encode()),
        ("no length", no_len.encode()),
    ] {
        assert!(
            matches!(
                packet::parse(&bytes),
                Err(PacketError::OptionOverrun { code: 12, .. }
                    | PacketError::OptionNoLength { code: 12, .. })
            ),
            "{name}: {:?}",
            packet::parse(&bytes)
        );
        assert!(
            e.handle(&bytes, peer(), Port::Dhcp, NOW).is_none(),
            "{name}"
        );
    }
    // Non-Ethernet hardware parses but is not routed.
    let mut tr = valid.clone();
    tr.htype = 6;
    assert!(packet::parse(&tr.encode()).is_ok());
    assert!(e.handle(&tr.encode(), peer(), Port::Dhcp, NOW).is_none());
    // And the engine still answers a good packet afterwards.
    assert!(send(&e, &valid).is_some());
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn fuzzed_packets_never_panic() {
    let engines = [full(), proxy()];
    let seed = Req::pxe(mac(8), 7)
        .opt(77, "iPXE")
        .opt(97, vec![0; 17])
        .ip_opt(50, Ipv4Addr::new(192, 0, 2, 101))
        .encode();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut answered = 0;
    for i in 0..4000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            // Pure garbage, sometimes with a valid cookie to reach the option walk.
            let len = rng.below(700);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if b.len() >= 240 && i % 4 == 0 {
                b[0] = 1;
                b[236..240].copy_from_slice(&[99, 130, 83, 99]);
            }
            b
        } else {
            // A valid packet with a few random bytes changed and maybe truncated.
            let mut b = seed.clone();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(b.len());
                b[at] = rng.next() as u8;
            }
            let cut = rng.below(b.len() + 40).min(b.len());
            b.truncate(cut.max(200));
            b
        };
        for (n, e) in engines.iter().enumerate() {
            let port = if i % 3 == 0 {
                Port::ProxyBoot
            } else {
                Port::Dhcp
            };
            let port = if n == 0 { Port::Dhcp } else { port };
            if e.handle(&bytes, peer(), port, NOW).is_some() {
                answered += 1;
            }
        }
    }
    // Some mutated packets stay valid; the loop must have exercised the answer path.
    assert!(answered > 0);
}

// ---------------------------------------------------------------- full mode

fn request_for(m: [u8; 6], ip: Ipv4Addr) -> Req {
    Req::request(m).ip_opt(50, ip).ip_opt(54, SERVER)
}

#[test]
fn offers_are_stable_and_distinct() {
    let e = full();
    let a1 = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    let a2 = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    let b = yiaddr(&must(&e, &Req::discover(mac(2))).bytes);
    assert_eq!(a1, a2, "same mac, same offer");
    assert_ne!(a1, b, "offers are held for their machine");
    assert_eq!(a1, Ipv4Addr::new(192, 0, 2, 100));
    // After binding, a new DISCOVER still gets the bound address.
    assert_eq!(msg_type(&must(&e, &request_for(mac(1), a1))), 5);
    assert_eq!(yiaddr(&must(&e, &Req::discover(mac(1))).bytes), a1);
}

#[test]
fn ack_carries_lease_options_and_hostname() {
    let mut policy = Policy::default();
    policy
        .machines
        .insert(MacAddr(mac(1)), machine(None, Some("node-1")));
    let e = engine_with(DhcpMode::Full, policy, LeaseStore::in_memory());
    let ip = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    let ack = must(&e, &request_for(mac(1), ip));
    assert_eq!(msg_type(&ack), 5);
    assert_eq!(yiaddr(&ack.bytes), ip);
    let opt = |c| reply_opt(&ack.bytes, c);
    assert_eq!(opt(1), Some(vec![255, 255, 255, 0]));
    assert_eq!(opt(3), Some(vec![192, 0, 2, 254]));
    assert_eq!(opt(6), Some(vec![192, 0, 2, 53]));
    assert_eq!(opt(51), Some(3600u32.to_be_bytes().to_vec()));
    assert_eq!(opt(58), Some(1800u32.to_be_bytes().to_vec()));
    assert_eq!(opt(59), Some(3150u32.to_be_bytes().to_vec()));
    assert_eq!(opt(12), Some(b"node-1".to_vec()));
}

#[test]
fn reservation_wins() {
    let reserved = Ipv4Addr::new(192, 0, 2, 100);
    let outside = Ipv4Addr::new(192, 0, 2, 200);
    let mut policy = Policy::default();
    policy
        .machines
        .insert(MacAddr(mac(9)), machine(Some(reserved), None));
    policy
        .machines
        .insert(MacAddr(mac(8)), machine(Some(outside), None));
    let e = engine_with(DhcpMode::Full, policy, LeaseStore::in_memory());
    // Another machine never gets the reserved address, even when asking for it.
    let other = must(&e, &Req::discover(mac(1)).ip_opt(50, reserved));
    assert_eq!(yiaddr(&other.bytes), Ipv4Addr::new(192, 0, 2, 101));
    let nak = must(&e, &request_for(mac(1), reserved));
    assert_eq!(msg_type(&nak), 6);
    // The reserved machine gets its address, in the pool or outside it.
    assert_eq!(yiaddr(&must(&e, &Req::discover(mac(9))).bytes), reserved);
    assert_eq!(msg_type(&must(&e, &request_for(mac(9), reserved))), 5);
    assert_eq!(yiaddr(&must(&e, &Req::discover(mac(8))).bytes), outside);
    assert_eq!(msg_type(&must(&e, &request_for(mac(8), outside))), 5);
}

#[test]
fn naks_and_ignored_requests() {
    let e = full();
    let a = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    assert_eq!(msg_type(&must(&e, &request_for(mac(1), a))), 5);
    // Someone else's address: NAK, broadcast, no yiaddr.
    let nak = must(&e, &request_for(mac(2), a));
    assert_eq!(msg_type(&nak), 6);
    assert_eq!(yiaddr(&nak.bytes), Ipv4Addr::UNSPECIFIED);
    assert_eq!(nak.dest, "255.255.255.255:68".parse().expect("addr"));
    // Outside the pool (init-reboot form: no server id).
    let out = Req::request(mac(2)).ip_opt(50, Ipv4Addr::new(198, 51, 100, 7));
    assert_eq!(msg_type(&must(&e, &out)), 6);
    // Renewing from ciaddr outside the pool.
    let mut renew = Req::request(mac(3));
    renew.ciaddr = Ipv4Addr::new(198, 51, 100, 8);
    assert_eq!(msg_type(&must(&e, &renew)), 6);
    // Renewing its own lease: ACK, unicast to ciaddr.
    let mut renew = Req::request(mac(1));
    renew.ciaddr = a;
    let ack = must(&e, &renew);
    assert_eq!(msg_type(&ack), 5);
    assert_eq!(ack.dest, SocketAddr::from((a, 68)));
    // A REQUEST selecting another server: silence, and our offer is released.
    let b = yiaddr(&must(&e, &Req::discover(mac(4))).bytes);
    let elsewhere = Req::request(mac(4))
        .ip_opt(50, Ipv4Addr::new(198, 51, 100, 9))
        .ip_opt(54, Ipv4Addr::new(198, 51, 100, 1));
    assert!(send(&e, &elsewhere).is_none());
    assert_eq!(yiaddr(&must(&e, &Req::discover(mac(5))).bytes), b);
}

#[test]
fn release_frees_and_decline_quarantines() {
    let e = full();
    let a = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    must(&e, &request_for(mac(1), a));
    let mut release = Req::new(7, mac(1)).ip_opt(54, SERVER);
    release.ciaddr = a;
    assert!(send(&e, &release).is_none(), "release has no reply");
    assert_eq!(yiaddr(&must(&e, &Req::discover(mac(2))).bytes), a, "freed");

    let e = full();
    let a = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    must(&e, &request_for(mac(1), a));
    let decline = Req::new(4, mac(1)).ip_opt(50, a).ip_opt(54, SERVER);
    assert!(send(&e, &decline).is_none(), "decline has no reply");
    for m in [1, 2, 3] {
        assert_ne!(
            yiaddr(&must(&e, &Req::discover(mac(m))).bytes),
            a,
            "quarantined"
        );
    }
    assert_eq!(msg_type(&must(&e, &request_for(mac(9), a))), 6);
}

#[test]
fn inform_gets_ack_without_address() {
    let mut inform = Req::new(8, mac(1)).opt(60, "PXEClient:Arch:00000");
    inform.ciaddr = Ipv4Addr::new(192, 0, 2, 50);
    let out = must(&full(), &inform);
    assert_eq!(msg_type(&out), 5);
    assert_eq!(yiaddr(&out.bytes), Ipv4Addr::UNSPECIFIED);
    assert_eq!(&out.bytes[12..16], &[192, 0, 2, 50], "ciaddr echoed");
    assert_eq!(reply_opt(&out.bytes, 51), None, "no lease time");
    assert_eq!(reply_opt(&out.bytes, 1), Some(vec![255, 255, 255, 0]));
    assert_eq!(reply_opt(&out.bytes, 67), Some(b"undionly.kpxe".to_vec()));
}

#[test]
fn pool_exhaustion_is_silent() {
    let e = full();
    for m in 1..=5 {
        let ip = yiaddr(&must(&e, &Req::discover(mac(m))).bytes);
        must(&e, &request_for(mac(m), ip));
    }
    assert!(send(&e, &Req::discover(mac(6))).is_none());
}

#[test]
fn ignore_answer_sends_nothing() {
    let mut policy = Policy::default();
    let mut entry = machine(None, None);
    entry.labels.insert("ignore".into(), "yes".into());
    policy.machines.insert(MacAddr(mac(1)), entry);
    for mode in [DhcpMode::Full, DhcpMode::Proxy] {
        let e = engine_with(mode, policy.clone(), LeaseStore::in_memory());
        assert!(send(&e, &Req::pxe(mac(1), 0)).is_none(), "{mode:?}");
        assert!(send(&e, &Req::pxe(mac(2), 0)).is_some(), "{mode:?}");
    }
}

#[test]
fn leases_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leases.json");
    let (store, report) = LeaseStore::load(&path);
    assert_eq!(report, LoadReport::Fresh);
    let e = engine_with(DhcpMode::Full, Policy::default(), store);
    let a = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    must(&e, &request_for(mac(1), a));
    let b = yiaddr(&must(&e, &Req::discover(mac(2))).bytes);
    must(&e, &request_for(mac(2), b));
    drop(e);
    let text = std::fs::read_to_string(&path).expect("lease file written");
    assert!(text.contains("52:54:00:00:00:01"), "{text}");
    assert!(
        !dir.path().join("leases.json.tmp").exists(),
        "temp file renamed"
    );

    let (store, report) = LeaseStore::load(&path);
    assert_eq!(report, LoadReport::Loaded(2));
    let e = engine_with(DhcpMode::Full, Policy::default(), store);
    assert_eq!(yiaddr(&must(&e, &Req::discover(mac(1))).bytes), a);
    assert_eq!(msg_type(&must(&e, &request_for(mac(3), b))), 6, "still b's");
    let c = yiaddr(&must(&e, &Req::discover(mac(3))).bytes);
    assert!(c != a && c != b);
}

#[test]
fn corrupt_lease_file_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leases.json");
    std::fs::write(&path, b"{\"version\":1,\"leases\":[{\"mac\":").expect("write");
    let (store, report) = LeaseStore::load(&path);
    let LoadReport::SetAside { to, .. } = report else {
        panic!("expected set aside, got {report:?}");
    };
    assert!(to.exists(), "corrupt file kept at {}", to.display());
    assert!(!path.exists());
    let e = engine_with(DhcpMode::Full, Policy::default(), store);
    let a = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    assert_eq!(msg_type(&must(&e, &request_for(mac(1), a))), 5);
    assert!(path.exists(), "a fresh file is written");
    assert!(matches!(LeaseStore::load(&path).1, LoadReport::Loaded(1)));
}

// ---------------------------------------------------------------- proxy mode

#[test]
fn proxy_never_sets_yiaddr_and_never_naks() {
    let e = proxy();
    let mut requests = vec![
        Req::pxe(mac(1), 0),
        Req::pxe(mac(1), 7),
        Req::pxe(mac(1), 16),
        Req::pxe(mac(1), 7).opt(77, "iPXE"),
        Req::request(mac(1))
            .opt(60, "PXEClient:Arch:00000")
            .ip_opt(50, Ipv4Addr::new(192, 0, 2, 9)),
        Req::discover(mac(1)),
        Req::new(8, mac(1)).opt(60, "PXEClient:Arch:00007"),
    ];
    let mut relayed = Req::pxe(mac(1), 0);
    relayed.giaddr = Ipv4Addr::new(198, 51, 100, 1);
    requests.push(relayed);
    let mut offers = 0;
    for r in &requests {
        for port in [Port::Dhcp, Port::ProxyBoot] {
            if let Some(out) = e.handle(&r.encode(), peer(), port, NOW) {
                assert_eq!(yiaddr(&out.bytes), Ipv4Addr::UNSPECIFIED, "{r:?}");
                assert_ne!(msg_type(&out), 6, "never a NAK");
                offers += 1;
            }
        }
    }
    assert!(offers >= 5, "boot clients were answered ({offers})");
    // A plain DHCP client is left to the real server.
    assert!(send(&e, &Req::discover(mac(1))).is_none());
}

#[test]
fn proxy_offer_and_boot_server_ack() {
    let e = proxy();
    let offer = must(&e, &Req::pxe(mac(1), 0));
    assert_eq!(msg_type(&offer), 2);
    assert_eq!(reply_opt(&offer.bytes, 60), Some(b"PXEClient".to_vec()));
    assert_eq!(reply_opt(&offer.bytes, 43), Some(vec![6, 1, 8, 255]));
    assert_eq!(reply_opt(&offer.bytes, 67), Some(b"undionly.kpxe".to_vec()));
    assert_eq!(offer.reply.siaddr, SERVER);
    assert_eq!(offer.dest, "255.255.255.255:68".parse().expect("addr"));
    // A REQUEST on 67 is the real server's business.
    let req = Req::request(mac(1)).opt(60, "PXEClient:Arch:00000:UNDI:002001");
    assert!(send(&e, &req).is_none());
    // On 4011 it is answered with an ACK back to where it came from.
    let mut req = req.opt(93, vec![0, 0]);
    req.ciaddr = Ipv4Addr::new(192, 0, 2, 60);
    let from: SocketAddr = "192.0.2.60:4011".parse().expect("addr");
    let ack = e
        .handle(&req.encode(), from, Port::ProxyBoot, NOW)
        .expect("ack on 4011");
    assert_eq!(msg_type(&ack), 5);
    assert_eq!(ack.dest, from);
    assert_eq!(reply_opt(&ack.bytes, 67), Some(b"undionly.kpxe".to_vec()));
    assert_eq!(yiaddr(&ack.bytes), Ipv4Addr::UNSPECIFIED);
    // iPXE in proxy mode gets the script and the PXEClient class it looks for.
    let ipxe = must(&e, &Req::pxe(mac(1), 7).opt(77, "iPXE"));
    assert_eq!(reply_opt(&ipxe.bytes, 60), Some(b"PXEClient".to_vec()));
    assert_eq!(reply_opt(&ipxe.bytes, 43), None);
}

// ---------------------------------------------------------------- captured packets

fn corpus(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dhcp")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn captured_qemu_ipxe_discover() {
    let bytes = corpus("qemu-seabios-ipxe-discover.bin");
    let f = packet::parse(&bytes).expect("valid");
    assert_eq!(f.mac, Some("52:54:00:12:34:56".parse().expect("mac")));
    assert_eq!(f.arch, Some(ClientArch::Bios));
    assert!(f.is_ipxe);
    assert!(!f.broadcast());
    assert_eq!(f.uuid, None, "all-zero uuid is no uuid");
    assert_eq!(f.uuid_raw.as_ref().map(Vec::len), Some(17));
    for e in [full(), proxy()] {
        let out = e.handle(&bytes, peer(), Port::Dhcp, NOW).expect("answered");
        assert_eq!(
            reply_opt(&out.bytes, 67),
            Some(format!("{HTTP}/boot.ipxe").into_bytes())
        );
    }
}

#[test]
fn captured_ovmf_pxe_discover() {
    let bytes = corpus("qemu-ovmf-x64-pxe-discover.bin");
    let f = packet::parse(&bytes).expect("valid");
    assert_eq!(f.mac, Some("52:54:00:12:34:57".parse().expect("mac")));
    assert_eq!(f.arch, Some(ClientArch::EfiX64));
    assert_eq!(f.arch_source, ArchSource::Option93);
    assert!(!f.is_ipxe);
    assert!(f.broadcast());
    let out = full()
        .handle(&bytes, peer(), Port::Dhcp, NOW)
        .expect("offer");
    assert_eq!(reply_opt(&out.bytes, 67), Some(b"ipxe.efi".to_vec()));
    assert_eq!(file_field(&out.bytes), "ipxe.efi");
    assert_eq!(out.dest, "255.255.255.255:68".parse().expect("addr"));
    let out = proxy()
        .handle(&bytes, peer(), Port::Dhcp, NOW)
        .expect("proxy offer");
    assert_eq!(yiaddr(&out.bytes), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply_opt(&out.bytes, 97), f.uuid_raw, "uuid echoed");
}

/// Regression: any client could DECLINE any address, which ended the holder's lease,
/// quarantined the address, and (with random addresses) grew the lease file for ever.
#[test]
fn decline_counts_only_for_the_decliners_own_address() {
    let e = full();
    let a = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    must(&e, &request_for(mac(1), a));
    // Another machine declines mac(1)'s address, and a free pool address it never got.
    let free = Ipv4Addr::new(192, 0, 2, 104);
    for ip in [a, free, Ipv4Addr::new(203, 0, 113, 7)] {
        let decline = Req::new(4, mac(2)).ip_opt(50, ip).ip_opt(54, SERVER);
        assert!(send(&e, &decline).is_none(), "decline has no reply");
    }
    // mac(1) keeps its lease, and the free address is still handed out.
    assert_eq!(msg_type(&must(&e, &request_for(mac(1), a))), 5);
    assert_eq!(yiaddr(&must(&e, &Req::discover(mac(1))).bytes), a);
    assert_eq!(msg_type(&must(&e, &request_for(mac(3), free))), 5);
}

/// Regression: expired offers were never removed, so DISCOVERs from ever new MACs (a
/// random-MAC flood) grew the offer table, and the per-request scan over it, for ever.
#[test]
fn expired_offers_are_dropped() {
    use netboot::dhcp::full::{FullMode, OFFER_HOLD_SECS};
    let mut full = FullMode::new(config(DhcpMode::Full), LeaseStore::in_memory());
    let policy = Policy::default();
    for round in 0..20u8 {
        let now = NOW + u64::from(round) * (OFFER_HOLD_SECS + 1);
        for m in 0..5u8 {
            let facts =
                packet::parse(&Req::discover([2, 0, 0, 0, round, m]).encode()).expect("parse");
            let mac = facts.mac.expect("ethernet");
            full.handle(&env(), &policy, &facts, mac, None, now);
        }
    }
    assert_eq!(
        full.leases.offers_held(),
        5,
        "only the last round's offers are held"
    );
}

/// Regression: every REQUEST rewrote and fsynced the lease file, so one client repeating
/// its renewal held the server to a few dozen answers a second. A renewal is written only
/// once the file's copy has less than half a lease left.
#[test]
fn early_renewals_do_not_rewrite_the_lease_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("leases.json");
    let (store, _) = LeaseStore::load(&path);
    let e = engine_with(DhcpMode::Full, Policy::default(), store);
    let a = yiaddr(&must(&e, &Req::discover(mac(1))).bytes);
    must(&e, &request_for(mac(1), a));
    let first = std::fs::read_to_string(&path).expect("written");
    let lease = u64::from(DhcpConfig::default().lease_secs);
    let at = |now: u64| {
        let out = e
            .handle(&request_for(mac(1), a).encode(), peer(), Port::Dhcp, now)
            .expect("ack");
        assert_eq!(msg_type(&out), 5);
    };
    for later in [1, 10, lease / 4] {
        at(NOW + later);
    }
    assert_eq!(std::fs::read_to_string(&path).expect("read"), first);
    at(NOW + lease / 2 + 1);
    let rewritten = std::fs::read_to_string(&path).expect("read");
    assert_ne!(rewritten, first, "a late renewal is persisted");
    assert!(
        rewritten.contains(&(NOW + lease / 2 + 1 + lease).to_string()),
        "{rewritten}"
    );
}
