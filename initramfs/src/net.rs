//! The boot NIC: find it by its MAC in sysfs (path injected), and configure it through
//! rtnetlink requests sent via [`Sys::netlink`]: link up, the address, the default route.
//! The lease is the one iPXE passed on `ip=`; without one (`ip=dhcp` or no `ip=`), the
//! DHCP fallback ([`crate::dhcp`]) asks for it on the link once it is up. The messages
//! are built here, byte for byte, as pure functions.
//!
//! Besides the netlink requests to the kernel, only the DHCP fallback sends anything on
//! the network; the lease it gets is never renewed.

use crate::cmdline::{IpConfig, Lease, Mac};
use crate::dhcp::{self, DhcpError};
use crate::sys::{Errno, Sys};
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

/// Network step failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    #[error("network: no interface has MAC {mac} (is its driver loaded?)")]
    NoInterface { mac: String },
    #[error("network: DHCP on {interface}: {source}")]
    Dhcp {
        interface: String,
        source: DhcpError,
    },
    #[error("network: read {path}: {why}")]
    Sysfs { path: String, why: String },
    #[error("network: {what} on {interface}: {errno}")]
    Netlink {
        what: String,
        interface: String,
        errno: Errno,
    },
}

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

fn rtattr(kind: u16, data: &[u8], out: &mut Vec<u8>) {
    let len = 4 + data.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    // Attributes are 4-byte aligned.
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// RTM_NEWLINK setting IFF_UP on `ifindex`.
pub fn link_up_msg(ifindex: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.push(0); // ifi_family AF_UNSPEC
    p.push(0); // pad
    p.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    p.extend_from_slice(&ifindex.to_ne_bytes());
    p.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    p.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    nlmsg(RTM_NEWLINK, 0, 1, &p)
}

/// RTM_NEWADDR adding `addr/prefix_len` to `ifindex`.
pub fn add_addr_msg(ifindex: u32, addr: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    let mut p = vec![AF_INET, prefix_len, 0, 0];
    p.extend_from_slice(&ifindex.to_ne_bytes());
    rtattr(IFA_LOCAL, &addr.octets(), &mut p);
    rtattr(IFA_ADDRESS, &addr.octets(), &mut p);
    nlmsg(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, 2, &p)
}

/// RTM_NEWROUTE adding the default route via `gateway` out of `ifindex`.
pub fn default_route_msg(ifindex: u32, gateway: Ipv4Addr) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let mut p = vec![AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST];
    p.extend_from_slice(&0u32.to_ne_bytes());
    rtattr(RTA_GATEWAY, &gateway.octets(), &mut p);
    rtattr(RTA_OIF, &ifindex.to_ne_bytes(), &mut p);
    nlmsg(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, 3, &p)
}

/// The acknowledgement in a netlink reply: `Some(Ok)` for an ack, `Some(Err)` for a
/// refusal, `None` when the buffer holds no NLMSG_ERROR message.
pub fn netlink_ack(buf: &[u8]) -> Option<Result<(), Errno>> {
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        if len < 16 || len > rest.len() {
            return None;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            let code = i32::from_ne_bytes(rest[16..20].try_into().ok()?);
            return Some(if code == 0 {
                Ok(())
            } else {
                Err(Errno::from_raw(-code))
            });
        }
        rest = &rest[(len + 3) & !3..];
    }
    None
}

/// Configure the boot NIC: link up, wait (up to 10 s) for carrier, then the lease iPXE
/// passed or, without one, the one DHCP gives (printed through `say`): its address and
/// default route. An already-present address or route (a retried boot) is fine.
pub fn bring_up(
    sys: &mut dyn Sys,
    sys_root: &Path,
    mac: Mac,
    ip: &IpConfig,
    say: &mut dyn FnMut(&str),
) -> Result<String, NetError> {
    let interface = find_interface(sys_root, mac).ok_or(NetError::NoInterface {
        mac: mac.to_string(),
    })?;
    let dir = sys_root.join("class/net").join(&interface);
    let idx_path = dir.join("ifindex");
    let ifindex: u32 = fs::read_to_string(&idx_path)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            s.trim()
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())
        })
        .map_err(|why| NetError::Sysfs {
            path: idx_path.display().to_string(),
            why,
        })?;
    send(sys, &interface, link_up_msg(ifindex), "link up".into())?;
    for _ in 0..50 {
        if fs::read_to_string(dir.join("carrier")).is_ok_and(|c| c.trim() == "1") {
            break;
        }
        sys.sleep(Duration::from_millis(200));
    }
    let lease: Lease = match ip {
        IpConfig::Static(l) => *l,
        IpConfig::Dhcp => {
            let got =
                dhcp::obtain(sys, &interface, mac, dhcp::Timing::default()).map_err(|source| {
                    NetError::Dhcp {
                        interface: interface.clone(),
                        source,
                    }
                })?;
            say(&format!("network: DHCP lease {got}"));
            got.lease
        }
    };
    send(
        sys,
        &interface,
        add_addr_msg(ifindex, lease.address, lease.prefix_len),
        format!("add address {}/{}", lease.address, lease.prefix_len),
    )?;
    if let Some(gw) = lease.gateway {
        send(
            sys,
            &interface,
            default_route_msg(ifindex, gw),
            format!("add default route via {gw}"),
        )?;
    }
    Ok(interface)
}

/// One netlink request; "already there" counts as done.
fn send(sys: &mut dyn Sys, interface: &str, msg: Vec<u8>, what: String) -> Result<(), NetError> {
    match sys.netlink(&msg, &what) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(NetError::Netlink {
            what,
            interface: interface.to_string(),
            errno,
        }),
    }
}

/// The interface whose address is `mac`, if any.
pub fn find_interface(sys_root: &Path, mac: Mac) -> Option<String> {
    let want = mac.to_string();
    let mut names: Vec<String> = fs::read_dir(sys_root.join("class/net"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find(|n| {
        fs::read_to_string(sys_root.join("class/net").join(n).join("address"))
            .is_ok_and(|a| a.trim().eq_ignore_ascii_case(&want))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::FakeSys;

    #[test]
    fn netlink_messages_are_laid_out_as_the_kernel_expects() {
        let m = link_up_msg(3);
        assert_eq!(m.len(), 16 + 16);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().expect("4")), 32);
        assert_eq!(
            u16::from_ne_bytes(m[4..6].try_into().expect("2")),
            RTM_NEWLINK
        );
        assert_eq!(
            u16::from_ne_bytes(m[6..8].try_into().expect("2")),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(
            u32::from_ne_bytes(m[20..24].try_into().expect("4")),
            3,
            "ifindex"
        );
        assert_eq!(u32::from_ne_bytes(m[24..28].try_into().expect("4")), IFF_UP);

        let a = add_addr_msg(3, Ipv4Addr::new(192, 0, 2, 50), 24);
        // header 16 + ifaddrmsg 8 + two 8-byte attributes.
        assert_eq!(a.len(), 40);
        assert_eq!(&a[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(
            &a[24..28],
            &8u16
                .to_ne_bytes()
                .iter()
                .chain(&IFA_LOCAL.to_ne_bytes())
                .copied()
                .collect::<Vec<u8>>()[..]
        );
        assert_eq!(&a[28..32], &[192, 0, 2, 50]);

        let r = default_route_msg(3, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(r.len(), 16 + 12 + 8 + 8);
        assert_eq!(
            &r[16..24],
            &[AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST]
        );
        assert_eq!(&r[32..36], &[192, 0, 2, 1]);
    }

    fn ack(code: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(&[0; 16]);
        m
    }

    #[test]
    fn acks_and_refusals_are_read() {
        assert_eq!(netlink_ack(&ack(0)), Some(Ok(())));
        assert_eq!(netlink_ack(&ack(-17)), Some(Err(Errno::EEXIST)));
        assert_eq!(netlink_ack(&[0; 8]), None);
        let mut garbage = ack(0);
        garbage[0..4].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(netlink_ack(&garbage), None);
    }

    #[test]
    fn bring_up_sends_link_address_route() {
        let t = tempfile::tempdir().expect("tempdir");
        nic(t.path(), "eth0", "52:54:00:00:00:01");
        fs::write(t.path().join("class/net/eth0/ifindex"), "2\n").expect("w");
        fs::write(t.path().join("class/net/eth0/carrier"), "1\n").expect("w");
        let mut sys = FakeSys::new();
        sys.fail_prefix = Some("netlink add address".into());
        sys.fail_errno = Some(Errno::EEXIST);
        let lease = IpConfig::Static(Lease {
            address: Ipv4Addr::new(192, 0, 2, 50),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        });
        let mac = Mac::parse("52:54:00:00:00:01").expect("mac");
        let mut said = Vec::new();
        let mut say = |l: &str| said.push(l.to_string());
        assert_eq!(
            bring_up(&mut sys, t.path(), mac, &lease, &mut say),
            Ok("eth0".into())
        );
        assert!(said.is_empty(), "{said:?}");
        assert_eq!(
            sys.calls,
            [
                "netlink link up (32 bytes)",
                "netlink add address 192.0.2.50/24 (40 bytes)",
                "netlink add default route via 192.0.2.1 (44 bytes)",
            ]
        );
        let mut sys = FakeSys::new();
        sys.fail_prefix = Some("netlink link up".into());
        sys.fail_errno = Some(Errno::EPERM);
        let e = bring_up(&mut sys, t.path(), mac, &lease, &mut |_| {}).expect_err("eperm");
        assert_eq!(
            e.to_string(),
            "network: link up on eth0: EPERM: Operation not permitted"
        );
    }

    /// An interface in a fake sysfs, by name and MAC (nothing reads its operstate).
    fn nic(root: &Path, name: &str, mac: &str) {
        let d = root.join("class/net").join(name);
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("address"), format!("{mac}\n")).expect("w");
    }

    #[test]
    fn finds_the_nic_by_mac() {
        let t = tempfile::tempdir().expect("tempdir");
        nic(t.path(), "lo", "00:00:00:00:00:00");
        nic(t.path(), "eth0", "52:54:00:00:00:01");
        nic(t.path(), "eth1", "52:54:00:00:00:02");
        let mac = |s| Mac::parse(s).expect("mac");
        assert_eq!(
            find_interface(t.path(), mac("52:54:00:00:00:02")),
            Some("eth1".into())
        );
        assert_eq!(
            find_interface(t.path(), mac("52:54:00:00:00:01")),
            Some("eth0".into())
        );
        assert_eq!(find_interface(t.path(), mac("52:54:00:00:00:09")), None);
        let mut sys = FakeSys::new();
        assert_eq!(
            bring_up(
                &mut sys,
                t.path(),
                mac("52:54:00:00:00:09"),
                &IpConfig::Dhcp,
                &mut |_| {}
            ),
            Err(NetError::NoInterface {
                mac: "52:54:00:00:00:09".into()
            })
        );
    }

    #[test]
    fn without_a_lease_dhcp_gives_one_once_the_link_is_up() {
        let t = tempfile::tempdir().expect("tempdir");
        nic(t.path(), "eth0", "52:54:00:c0:07:02");
        fs::write(t.path().join("class/net/eth0/ifindex"), "2\n").expect("w");
        // No carrier at first: the client waits for it before it sends.
        let mac = Mac::parse("52:54:00:c0:07:02").expect("mac");
        let mut sys = FakeSys::new();
        sys.random = dhcp::tests::XID;
        sys.udp_inbox = [Some(dhcp::tests::offer()), Some(dhcp::tests::ack())].into();
        let mut said = Vec::new();
        let got = bring_up(&mut sys, t.path(), mac, &IpConfig::Dhcp, &mut |l| {
            said.push(l.to_string())
        });
        assert_eq!(got, Ok("eth0".into()));
        assert_eq!(
            said,
            ["network: DHCP lease 192.0.2.105/24 via 192.0.2.1 from server 192.0.2.1"]
        );
        let calls: Vec<&str> = sys
            .calls
            .iter()
            .map(String::as_str)
            .filter(|c| *c != "sleep 200ms")
            .collect();
        assert_eq!(
            calls,
            [
                "netlink link up (32 bytes)",
                "udp_open eth0 port 68",
                "udp_broadcast 1 to port 67 (300 bytes)",
                "udp_recv 1 2000ms: 300 bytes",
                "udp_broadcast 1 to port 67 (300 bytes)",
                "udp_recv 1 2000ms: 300 bytes",
                "udp_close 1",
                "netlink add address 192.0.2.105/24 (40 bytes)",
                "netlink add default route via 192.0.2.1 (44 bytes)",
            ]
        );
        assert_eq!(sys.calls.iter().filter(|c| *c == "sleep 200ms").count(), 50);

        // Silence: the error names the interface and what was tried.
        fs::write(t.path().join("class/net/eth0/carrier"), "1\n").expect("w");
        let mut sys = FakeSys::new();
        let e =
            bring_up(&mut sys, t.path(), mac, &IpConfig::Dhcp, &mut |_| {}).expect_err("no server");
        assert_eq!(
            e.to_string(),
            "network: DHCP on eth0: no offer after 30s (5 DISCOVERs sent)"
        );
        assert!(!sys.calls.iter().any(|c| c.contains("add address")));
    }
}
