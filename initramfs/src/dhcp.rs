//! The DHCPv4 fallback of the boot NIC, for a boot that got no lease on its command line
//! (`ip=dhcp` or no `ip=`): DISCOVER, the first valid OFFER, REQUEST, its ACK (a NAK
//! starts over), on a UDP socket bound to the boot interface through [`Sys`]. The packets
//! are encoded and parsed here by pure functions; every reply is validated (op, xid,
//! chaddr, hlen, magic cookie, option lengths) and one that is malformed or not ours is
//! ignored, never trusted and never a panic. Retransmissions back off, and the whole
//! exchange has one time bound, measured on [`Sys::now`].
//!
//! Deliberately small: the lease is used once, to fetch the plan and the layers, and is
//! never renewed (the target's own network setup takes over after the switch); no
//! INIT-REBOOT, no ARP probe of the offered address, no option overload (options in
//! `sname`/`file` are not read). The socket sees replies broadcast to port 68, which the
//! broadcast flag asks every server for; a server that unicasts to the offered address
//! anyway is not heard.

use crate::cmdline::{mask_prefix, Lease, Mac};
use crate::sys::{Errno, SocketId, Sys};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The server's and the client's UDP ports.
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// Option 60, so a server log shows who asked.
pub const VENDOR_CLASS: &[u8] = b"carte-init";
/// A NAK starts over; after this many the exchange gives up.
pub const MAX_NAKS: u32 = 3;

const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// The fixed BOOTP header, before the cookie.
const HEADER_LEN: usize = 236;
/// BOOTP's minimum message size: relays and old servers drop shorter ones.
const MIN_LEN: usize = 300;
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
const BROADCAST_FLAG: u16 = 0x8000;

const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETER_LIST: u8 = 55;
const OPT_MESSAGE: u8 = 56;
const OPT_VENDOR_CLASS: u8 = 60;
const OPT_CLIENT_ID: u8 = 61;
const OPT_END: u8 = 255;

const DHCPDISCOVER: u8 = 1;
const DHCPOFFER: u8 = 2;
const DHCPREQUEST: u8 = 3;
const DHCPACK: u8 = 5;
const DHCPNAK: u8 = 6;

/// What this client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Looking for servers.
    Discover,
    /// Taking `server`'s offer of `address` (SELECTING state).
    Select { address: Ipv4Addr, server: Ipv4Addr },
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Discover => "DISCOVER",
            Request::Select { .. } => "REQUEST",
        }
    }
}

fn option(code: u8, data: &[u8], out: &mut Vec<u8>) {
    out.push(code);
    // Every option this client sends is far shorter than 255 bytes.
    out.push(data.len() as u8);
    out.extend_from_slice(data);
}

/// The bytes of `request` from `mac` in transaction `xid`, `secs` seconds after the
/// exchange began: broadcast flag set, client id (type 1, the MAC), the parameter list
/// (subnet mask, router), the vendor class, padded to 300 bytes.
pub fn encode(request: &Request, xid: u32, secs: u16, mac: Mac) -> Vec<u8> {
    let mut p = Vec::with_capacity(MIN_LEN);
    p.extend_from_slice(&[BOOTREQUEST, HTYPE_ETHERNET, 6, 0]); // op, htype, hlen, hops
    p.extend_from_slice(&xid.to_be_bytes());
    p.extend_from_slice(&secs.to_be_bytes());
    p.extend_from_slice(&BROADCAST_FLAG.to_be_bytes());
    p.extend_from_slice(&[0; 16]); // ciaddr, yiaddr, siaddr, giaddr
    p.extend_from_slice(&mac.0);
    p.extend_from_slice(&[0; 10]); // rest of chaddr
    p.extend_from_slice(&[0; 64 + 128]); // sname, file
    p.extend_from_slice(&MAGIC_COOKIE);
    let kind = match request {
        Request::Discover => DHCPDISCOVER,
        Request::Select { .. } => DHCPREQUEST,
    };
    option(OPT_MESSAGE_TYPE, &[kind], &mut p);
    let mut client_id = vec![HTYPE_ETHERNET];
    client_id.extend_from_slice(&mac.0);
    option(OPT_CLIENT_ID, &client_id, &mut p);
    if let Request::Select { address, server } = request {
        option(OPT_REQUESTED_IP, &address.octets(), &mut p);
        option(OPT_SERVER_ID, &server.octets(), &mut p);
    }
    option(OPT_PARAMETER_LIST, &[OPT_SUBNET_MASK, OPT_ROUTER], &mut p);
    option(OPT_VENDOR_CLASS, VENDOR_CLASS, &mut p);
    p.push(OPT_END);
    p.resize(p.len().max(MIN_LEN), OPT_PAD);
    p
}

/// The kind of a reply this client acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

impl fmt::Display for ReplyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyKind::Offer => "OFFER",
            ReplyKind::Ack => "ACK",
            ReplyKind::Nak => "NAK",
        })
    }
}

/// A reply that passed validation: addressed to this NIC in this transaction, well formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    /// The offered or acknowledged address (`0.0.0.0` in a NAK).
    pub yiaddr: Ipv4Addr,
    /// Option 54; always there in an OFFER or ACK.
    pub server: Option<Ipv4Addr>,
    /// Option 1 as a prefix length.
    pub prefix_len: Option<u8>,
    /// The first address of option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 56 (why a NAK refused), control characters replaced.
    pub message: Option<String>,
}

/// Why a received datagram was not taken as a reply to this client.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Ignored {
    #[error("{0} bytes, too short for a DHCP message")]
    Short(usize),
    #[error("op {0} is not a BOOTREPLY")]
    NotReply(u8),
    #[error("hardware type {htype} with address length {hlen} is not Ethernet")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("transaction {0:08x} is not ours")]
    OtherTransaction(u32),
    #[error("addressed to {0}, not this NIC")]
    OtherClient(Mac),
    #[error("no DHCP magic cookie")]
    NoCookie,
    #[error("option {0} runs past the end of the packet")]
    OptionOverrun(u8),
    #[error("option {code} has length {len}")]
    OptionLength { code: u8, len: usize },
    #[error("no message type (option 53)")]
    NoMessageType,
    #[error("message type {0} is not OFFER, ACK or NAK")]
    OtherType(u8),
    #[error("{0} without a server identifier (option 54)")]
    NoServerId(ReplyKind),
    #[error("{kind} of {address}, which no host can use")]
    BadAddress { kind: ReplyKind, address: Ipv4Addr },
    #[error("subnet mask {0} is not contiguous")]
    BadMask(Ipv4Addr),
    #[error("subnet mask 0.0.0.0 (a /0 network)")]
    ZeroMask,
    #[error("{kind} from server identifier {server}, which no server can have")]
    BadServerId { kind: ReplyKind, server: Ipv4Addr },
    #[error("unexpected {kind} from {server}")]
    Unexpected { kind: ReplyKind, server: String },
}

fn ipv4(code: u8, data: &[u8]) -> Result<Ipv4Addr, Ignored> {
    let octets: [u8; 4] = data.try_into().map_err(|_| Ignored::OptionLength {
        code,
        len: data.len(),
    })?;
    Ok(Ipv4Addr::from(octets))
}

/// An address a host on a LAN can have: not 0.0.0.0/8, loopback, multicast, the
/// reserved 240.0.0.0/4 or broadcast.
fn usable(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    first != 0 && !a.is_loopback() && !a.is_multicast() && first < 240
}

/// Whether `a` is in the `prefix_len` network of `b`.
fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// The options after the cookie as (code, data), split instances concatenated (RFC 3396).
/// A missing end option is fine; an option running past the packet is not.
fn walk_options(bytes: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, Ignored> {
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut i = 0;
    while let Some(&code) = bytes.get(i) {
        match code {
            OPT_PAD => i += 1,
            OPT_END => break,
            _ => {
                let len = usize::from(*bytes.get(i + 1).ok_or(Ignored::OptionOverrun(code))?);
                let data = bytes
                    .get(i + 2..i + 2 + len)
                    .ok_or(Ignored::OptionOverrun(code))?;
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, d)) => d.extend_from_slice(data),
                    None => out.push((code, data.to_vec())),
                }
                i += 2 + len;
            }
        }
    }
    Ok(out)
}

/// Validate `bytes` as an OFFER, ACK or NAK for `mac` in transaction `xid`.
pub fn parse(bytes: &[u8], xid: u32, mac: Mac) -> Result<Reply, Ignored> {
    if bytes.len() < HEADER_LEN + MAGIC_COOKIE.len() {
        return Err(Ignored::Short(bytes.len()));
    }
    if bytes[0] != BOOTREPLY {
        return Err(Ignored::NotReply(bytes[0]));
    }
    let (htype, hlen) = (bytes[1], bytes[2]);
    if htype != HTYPE_ETHERNET || hlen != 6 {
        return Err(Ignored::NotEthernet { htype, hlen });
    }
    let got = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if got != xid {
        return Err(Ignored::OtherTransaction(got));
    }
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&bytes[28..34]);
    if chaddr != mac.0 {
        return Err(Ignored::OtherClient(Mac(chaddr)));
    }
    if bytes[HEADER_LEN..HEADER_LEN + 4] != MAGIC_COOKIE {
        return Err(Ignored::NoCookie);
    }
    let yiaddr = Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]);
    let options = walk_options(&bytes[HEADER_LEN + 4..])?;
    let get = |code: u8| {
        options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d.as_slice())
    };
    let kind = match get(OPT_MESSAGE_TYPE) {
        None => return Err(Ignored::NoMessageType),
        Some([DHCPOFFER]) => ReplyKind::Offer,
        Some([DHCPACK]) => ReplyKind::Ack,
        Some([DHCPNAK]) => ReplyKind::Nak,
        Some([other]) => return Err(Ignored::OtherType(*other)),
        Some(d) => {
            return Err(Ignored::OptionLength {
                code: OPT_MESSAGE_TYPE,
                len: d.len(),
            })
        }
    };
    let server = get(OPT_SERVER_ID)
        .map(|d| ipv4(OPT_SERVER_ID, d))
        .transpose()?;
    let prefix_len = match get(OPT_SUBNET_MASK) {
        None => None,
        Some(d) => {
            let mask = ipv4(OPT_SUBNET_MASK, d)?;
            match mask_prefix(mask).ok_or(Ignored::BadMask(mask))? {
                0 => return Err(Ignored::ZeroMask),
                n => Some(n),
            }
        }
    };
    let router = match get(OPT_ROUTER) {
        None => None,
        Some(d) if d.is_empty() || d.len() % 4 != 0 => {
            return Err(Ignored::OptionLength {
                code: OPT_ROUTER,
                len: d.len(),
            })
        }
        Some(d) => Some(ipv4(OPT_ROUTER, &d[..4])?),
    };
    let message = get(OPT_MESSAGE).map(|d| {
        String::from_utf8_lossy(d)
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    });
    if kind != ReplyKind::Nak {
        match server {
            None => return Err(Ignored::NoServerId(kind)),
            Some(s) if !usable(s) => return Err(Ignored::BadServerId { kind, server: s }),
            Some(_) => {}
        }
        if !usable(yiaddr) {
            return Err(Ignored::BadAddress {
                kind,
                address: yiaddr,
            });
        }
    }
    Ok(Reply {
        kind,
        yiaddr,
        server,
        prefix_len,
        router,
        message,
    })
}

/// How long the exchange waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The wait for an answer after the first send; it doubles after each unanswered one.
    pub first_wait: Duration,
    /// The longest wait between two sends.
    pub max_wait: Duration,
    /// The bound of the whole exchange, NAKs and restarts included.
    pub total: Duration,
}

impl Default for Timing {
    /// Sends at 0, 2, 6, 14 and 22 s; gives up at 30 s.
    fn default() -> Timing {
        Timing {
            first_wait: Duration::from_secs(2),
            max_wait: Duration::from_secs(8),
            total: Duration::from_secs(30),
        }
    }
}

/// The datagrams that were not taken, for the error if nothing was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredNote {
    pub count: u32,
    pub last: Option<Ignored>,
}

impl fmt::Display for IgnoredNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.last {
            Some(why) => write!(
                f,
                "; {} other datagram{} ignored, the last: {why}",
                self.count,
                if self.count == 1 { "" } else { "s" }
            ),
            None => Ok(()),
        }
    }
}

/// Why no lease was obtained. [`crate::net::NetError::Dhcp`] names the interface.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    #[error("{what}: {errno}")]
    Socket { what: String, errno: Errno },
    #[error("no offer after {secs}s ({sent} DISCOVERs sent{ignored})")]
    NoOffer {
        secs: u64,
        sent: u32,
        ignored: IgnoredNote,
    },
    #[error(
        "no answer from server {server} to the REQUEST of {address} within {secs}s \
         ({sent} REQUESTs sent{ignored})"
    )]
    NoAck {
        server: Ipv4Addr,
        address: Ipv4Addr,
        secs: u64,
        sent: u32,
        ignored: IgnoredNote,
    },
    #[error("server {server} refused {address} {naks} {} (NAK: {message})", times(*.naks))]
    Refused {
        server: Ipv4Addr,
        address: Ipv4Addr,
        naks: u32,
        message: String,
    },
    #[error("the ACK of {address} from server {server} has no subnet mask (option 1)")]
    NoMask { server: Ipv4Addr, address: Ipv4Addr },
}

fn times(n: u32) -> &'static str {
    if n == 1 {
        "time"
    } else {
        "times"
    }
}

/// A lease and who gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obtained {
    pub lease: Lease,
    pub server: Ipv4Addr,
}

impl fmt::Display for Obtained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.lease;
        write!(f, "{}/{}", l.address, l.prefix_len)?;
        match l.gateway {
            Some(gw) => write!(f, " via {gw}")?,
            None => f.write_str(" (no router)")?,
        }
        write!(f, " from server {}", self.server)
    }
}

/// Obtain a lease on `interface` (already up) for `mac`, within `timing.total`.
pub fn obtain(
    sys: &mut dyn Sys,
    interface: &str,
    mac: Mac,
    timing: Timing,
) -> Result<Obtained, DhcpError> {
    let socket = sys
        .udp_open(interface, CLIENT_PORT)
        .map_err(|errno| DhcpError::Socket {
            what: format!("open UDP port {CLIENT_PORT}"),
            errno,
        })?;
    let start = sys.now();
    let mut client = Client {
        sys,
        socket,
        mac,
        timing,
        start,
        ignored: IgnoredNote::default(),
    };
    let result = client.run();
    client.sys.udp_close(socket);
    result
}

/// One exchange in progress.
struct Client<'a> {
    sys: &'a mut dyn Sys,
    socket: SocketId,
    mac: Mac,
    timing: Timing,
    start: Duration,
    ignored: IgnoredNote,
}

/// How one request ended.
enum Answer {
    Taken(Reply),
    /// The time bound passed after this many sends.
    Silence(u32),
}

impl Client<'_> {
    fn deadline(&self) -> Duration {
        self.start + self.timing.total
    }

    fn run(&mut self) -> Result<Obtained, DhcpError> {
        let secs = self.timing.total.as_secs();
        let mut naks = 0;
        loop {
            let xid = self.sys.random_u32();
            let offer = match self.ask(xid, Request::Discover, |r| r.kind == ReplyKind::Offer)? {
                Answer::Taken(r) => r,
                Answer::Silence(sent) => {
                    return Err(DhcpError::NoOffer {
                        secs,
                        sent,
                        ignored: std::mem::take(&mut self.ignored),
                    })
                }
            };
            // parse() guarantees an OFFER names its server.
            let server = offer.server.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let address = offer.yiaddr;
            let request = Request::Select { address, server };
            let answer = self.ask(xid, request, |r| {
                r.server == Some(server)
                    && (r.kind == ReplyKind::Nak
                        || (r.kind == ReplyKind::Ack && r.yiaddr == address))
            })?;
            let reply = match answer {
                Answer::Taken(r) => r,
                Answer::Silence(sent) => {
                    return Err(DhcpError::NoAck {
                        server,
                        address,
                        secs,
                        sent,
                        ignored: std::mem::take(&mut self.ignored),
                    })
                }
            };
            if reply.kind == ReplyKind::Nak {
                naks += 1;
                if naks >= MAX_NAKS || self.sys.now() >= self.deadline() {
                    return Err(DhcpError::Refused {
                        server,
                        address,
                        naks,
                        message: reply.message.unwrap_or_else(|| "no reason given".into()),
                    });
                }
                continue;
            }
            let prefix_len = reply
                .prefix_len
                .or(offer.prefix_len)
                .ok_or(DhcpError::NoMask { server, address })?;
            // A router outside the lease's subnet cannot be reached: boot without one (the
            // server is on the link anyway) rather than fail adding the route.
            let gateway = reply
                .router
                .or(offer.router)
                .filter(|r| same_subnet(*r, address, prefix_len));
            return Ok(Obtained {
                lease: Lease {
                    address,
                    prefix_len,
                    gateway,
                },
                server,
            });
        }
    }

    /// Send `request` with backoff until a reply `wanted` takes it or time runs out. What
    /// it ignored meanwhile is in `self.ignored` (for the error when nothing came).
    fn ask(
        &mut self,
        xid: u32,
        request: Request,
        wanted: impl Fn(&Reply) -> bool,
    ) -> Result<Answer, DhcpError> {
        self.ignored = IgnoredNote::default();
        let mut wait = self.timing.first_wait;
        let mut sent = 0;
        let mut buf = vec![0u8; 1500];
        loop {
            let now = self.sys.now();
            if now >= self.deadline() {
                return Ok(Answer::Silence(sent));
            }
            let secs = u16::try_from(now.saturating_sub(self.start).as_secs()).unwrap_or(u16::MAX);
            let packet = encode(&request, xid, secs, self.mac);
            self.sys
                .udp_broadcast(self.socket, SERVER_PORT, &packet)
                .map_err(|errno| DhcpError::Socket {
                    what: format!("send {}", request.name()),
                    errno,
                })?;
            sent += 1;
            let until = (now + wait).min(self.deadline());
            while let Some(left) = until.checked_sub(self.sys.now()).filter(|d| !d.is_zero()) {
                let got = match self.sys.udp_recv(self.socket, &mut buf, left) {
                    Ok(Some(n)) => n.min(buf.len()),
                    Ok(None) => continue,
                    Err(errno) => {
                        return Err(DhcpError::Socket {
                            what: "receive".into(),
                            errno,
                        })
                    }
                };
                match parse(&buf[..got], xid, self.mac) {
                    Ok(r) if wanted(&r) => return Ok(Answer::Taken(r)),
                    Ok(r) => self.ignore(Ignored::Unexpected {
                        kind: r.kind,
                        server: r
                            .server
                            .map_or_else(|| "an unnamed server".into(), |s| s.to_string()),
                    }),
                    Err(why) => self.ignore(why),
                }
            }
            wait = (wait * 2).min(self.timing.max_wait);
        }
    }

    fn ignore(&mut self, why: Ignored) {
        self.ignored.count += 1;
        self.ignored.last = Some(why);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sys::FakeSys;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0xc0, 0x07, 0x02]);
    pub(crate) const XID: u32 = 0x1234_5678;
    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 105);

    #[test]
    fn discover_is_laid_out_byte_for_byte() {
        let p = encode(&Request::Discover, XID, 3, MAC);
        assert_eq!(p.len(), 300);
        assert_eq!(&p[0..4], &[1, 1, 6, 0], "op htype hlen hops");
        assert_eq!(&p[4..8], &[0x12, 0x34, 0x56, 0x78], "xid");
        assert_eq!(&p[8..10], &[0, 3], "secs");
        assert_eq!(&p[10..12], &[0x80, 0], "broadcast flag");
        assert_eq!(&p[12..28], &[0; 16], "ciaddr yiaddr siaddr giaddr");
        assert_eq!(&p[28..34], &MAC.0, "chaddr");
        assert!(
            p[34..236].iter().all(|b| *b == 0),
            "chaddr pad, sname, file"
        );
        assert_eq!(&p[236..240], &[99, 130, 83, 99], "cookie");
        let mut options = vec![53, 1, 1, 61, 7, 1, 0x52, 0x54, 0x00, 0xc0, 0x07, 0x02];
        options.extend_from_slice(&[55, 2, 1, 3, 60, 10]);
        options.extend_from_slice(b"carte-init");
        options.push(255);
        assert_eq!(&p[240..240 + options.len()], &options[..]);
        assert!(p[240 + options.len()..].iter().all(|b| *b == 0), "padding");
    }

    #[test]
    fn request_names_the_address_and_server() {
        let request = Request::Select {
            address: ADDRESS,
            server: SERVER,
        };
        let p = encode(&request, XID, 0, MAC);
        assert_eq!(p.len(), 300);
        assert_eq!(
            &p[0..12],
            &[1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78, 0, 0, 0x80, 0]
        );
        let mut options = vec![53, 1, 3, 61, 7, 1, 0x52, 0x54, 0x00, 0xc0, 0x07, 0x02];
        options.extend_from_slice(&[50, 4, 192, 0, 2, 105, 54, 4, 192, 0, 2, 1]);
        options.extend_from_slice(&[55, 2, 1, 3, 60, 10]);
        options.extend_from_slice(b"carte-init");
        options.push(255);
        assert_eq!(&p[240..240 + options.len()], &options[..]);
    }

    /// A reply as a server sends it (the layout of netbootd's and dnsmasq's).
    fn reply(kind: u8, xid: u32, mac: Mac, yiaddr: Ipv4Addr, options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![2, 1, 6, 0];
        p.extend_from_slice(&xid.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x80, 0]);
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&yiaddr.octets());
        p.extend_from_slice(&SERVER.octets()); // siaddr
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&mac.0);
        p.extend_from_slice(&[0; 10 + 64 + 128]);
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[53, 1, kind]);
        for (code, data) in options {
            p.push(*code);
            p.push(data.len() as u8);
            p.extend_from_slice(data);
        }
        p.push(255);
        p.resize(300, 0);
        p
    }

    fn lease_options() -> Vec<(u8, &'static [u8])> {
        vec![
            (54, &[192, 0, 2, 1]),
            (1, &[255, 255, 255, 0]),
            (3, &[192, 0, 2, 1, 192, 0, 2, 254]),
            (51, &[0, 0, 0x0e, 0x10]),
            (58, &[0, 0, 7, 8]),
            (6, &[192, 0, 2, 53]),
        ]
    }

    /// An OFFER of 192.0.2.105/24 via 192.0.2.1 to 52:54:00:c0:07:02 in [`XID`].
    pub(crate) fn offer() -> Vec<u8> {
        reply(DHCPOFFER, XID, MAC, ADDRESS, &lease_options())
    }

    /// The ACK of [`offer`].
    pub(crate) fn ack() -> Vec<u8> {
        reply(DHCPACK, XID, MAC, ADDRESS, &lease_options())
    }

    fn nak(message: &[u8]) -> Vec<u8> {
        reply(
            DHCPNAK,
            XID,
            MAC,
            Ipv4Addr::UNSPECIFIED,
            &[(54, &[192, 0, 2, 1]), (56, message)],
        )
    }

    #[test]
    fn offer_and_ack_are_read() {
        let expected = Reply {
            kind: ReplyKind::Offer,
            yiaddr: ADDRESS,
            server: Some(SERVER),
            prefix_len: Some(24),
            router: Some(SERVER),
            message: None,
        };
        assert_eq!(parse(&offer(), XID, MAC), Ok(expected.clone()));
        assert_eq!(
            parse(&ack(), XID, MAC),
            Ok(Reply {
                kind: ReplyKind::Ack,
                ..expected
            })
        );
        let n = parse(&nak(b"192.0.2.105: InUse\n"), XID, MAC).expect("nak");
        assert_eq!(n.kind, ReplyKind::Nak);
        assert_eq!(n.message.as_deref(), Some("192.0.2.105: InUse?"));
        // Split options are concatenated (RFC 3396); no end option is fine.
        let mut split = reply(
            DHCPOFFER,
            XID,
            MAC,
            ADDRESS,
            &[(54, &[192, 0, 2, 1]), (1, &[255, 255]), (1, &[240, 0])],
        );
        let end = split.iter().rposition(|b| *b == 255).expect("end");
        split.truncate(end);
        let r = parse(&split, XID, MAC).expect("split");
        assert_eq!((r.prefix_len, r.router), (Some(20), None));
    }

    #[test]
    fn a_router_is_kept_only_inside_the_lease_subnet() {
        let a = Ipv4Addr::new(192, 0, 2, 105);
        assert!(same_subnet(Ipv4Addr::new(192, 0, 2, 1), a, 24));
        assert!(!same_subnet(Ipv4Addr::new(198, 51, 100, 1), a, 24));
        assert!(same_subnet(Ipv4Addr::new(192, 0, 3, 1), a, 16));
        assert!(!same_subnet(Ipv4Addr::new(192, 0, 2, 1), a, 32));
        assert!(usable(a) && !usable(Ipv4Addr::BROADCAST) && !usable(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn malformed_or_foreign_replies_are_ignored() {
        let good = offer();
        let other_mac = Mac([0x52, 0x54, 0, 0, 0, 9]);
        let mut cases: Vec<(Vec<u8>, Ignored)> = vec![
            (good[..239].to_vec(), Ignored::Short(239)),
            (Vec::new(), Ignored::Short(0)),
            (
                reply(DHCPOFFER, XID + 1, MAC, ADDRESS, &lease_options()),
                Ignored::OtherTransaction(XID + 1),
            ),
            (
                reply(DHCPOFFER, XID, other_mac, ADDRESS, &lease_options()),
                Ignored::OtherClient(other_mac),
            ),
            (
                reply(DHCPOFFER, XID, MAC, Ipv4Addr::UNSPECIFIED, &lease_options()),
                Ignored::BadAddress {
                    kind: ReplyKind::Offer,
                    address: Ipv4Addr::UNSPECIFIED,
                },
            ),
            (
                reply(DHCPOFFER, XID, MAC, Ipv4Addr::LOCALHOST, &lease_options()),
                Ignored::BadAddress {
                    kind: ReplyKind::Offer,
                    address: Ipv4Addr::LOCALHOST,
                },
            ),
            (
                reply(
                    DHCPOFFER,
                    XID,
                    MAC,
                    Ipv4Addr::new(240, 0, 0, 1),
                    &lease_options(),
                ),
                Ignored::BadAddress {
                    kind: ReplyKind::Offer,
                    address: Ipv4Addr::new(240, 0, 0, 1),
                },
            ),
            (
                reply(
                    DHCPOFFER,
                    XID,
                    MAC,
                    Ipv4Addr::new(0, 1, 2, 3),
                    &lease_options(),
                ),
                Ignored::BadAddress {
                    kind: ReplyKind::Offer,
                    address: Ipv4Addr::new(0, 1, 2, 3),
                },
            ),
            (
                reply(
                    DHCPOFFER,
                    XID,
                    MAC,
                    Ipv4Addr::new(224, 0, 0, 5),
                    &lease_options(),
                ),
                Ignored::BadAddress {
                    kind: ReplyKind::Offer,
                    address: Ipv4Addr::new(224, 0, 0, 5),
                },
            ),
            (
                reply(DHCPOFFER, XID, MAC, ADDRESS, &[(1, &[255, 255, 255, 0])]),
                Ignored::NoServerId(ReplyKind::Offer),
            ),
            (
                reply(DHCPOFFER, XID, MAC, ADDRESS, &[(54, &[0, 0, 0, 0])]),
                Ignored::BadServerId {
                    kind: ReplyKind::Offer,
                    server: Ipv4Addr::UNSPECIFIED,
                },
            ),
            (
                reply(
                    DHCPOFFER,
                    XID,
                    MAC,
                    ADDRESS,
                    &[(54, &[192, 0, 2, 1]), (1, &[0, 0, 0, 0])],
                ),
                Ignored::ZeroMask,
            ),
            (
                reply(DHCPOFFER, XID, MAC, ADDRESS, &[(54, &[192, 0, 2])]),
                Ignored::OptionLength { code: 54, len: 3 },
            ),
            (
                reply(
                    DHCPOFFER,
                    XID,
                    MAC,
                    ADDRESS,
                    &[(54, &[192, 0, 2, 1]), (3, &[192, 0, 2])],
                ),
                Ignored::OptionLength { code: 3, len: 3 },
            ),
            (
                reply(
                    DHCPOFFER,
                    XID,
                    MAC,
                    ADDRESS,
                    &[(54, &[192, 0, 2, 1]), (1, &[255, 0, 255, 0])],
                ),
                Ignored::BadMask(Ipv4Addr::new(255, 0, 255, 0)),
            ),
            (
                reply(DHCPREQUEST, XID, MAC, ADDRESS, &lease_options()),
                Ignored::OtherType(3),
            ),
        ];
        let mut m = good.clone();
        m[0] = 1;
        cases.push((m, Ignored::NotReply(1)));
        let mut m = good.clone();
        m[2] = 17; // hlen > 16
        cases.push((m, Ignored::NotEthernet { htype: 1, hlen: 17 }));
        let mut m = good.clone();
        m[1] = 6;
        cases.push((m, Ignored::NotEthernet { htype: 6, hlen: 6 }));
        let mut m = good.clone();
        m[236] = 0;
        cases.push((m, Ignored::NoCookie));
        // An option length running past the end of the datagram.
        let mut m = good[..243].to_vec();
        m.extend_from_slice(&[54, 200, 192, 0, 2, 1]);
        cases.push((m, Ignored::OptionOverrun(54)));
        // A code with no length byte at the very end.
        let mut m = good[..243].to_vec();
        m.push(54);
        cases.push((m, Ignored::OptionOverrun(54)));
        let mut m = good[..240].to_vec();
        m.extend_from_slice(&[54, 4, 192, 0, 2, 1, 255]);
        cases.push((m, Ignored::NoMessageType));
        let mut m = good[..240].to_vec();
        m.extend_from_slice(&[53, 2, 2, 2, 255]);
        cases.push((m, Ignored::OptionLength { code: 53, len: 2 }));
        for (bytes, why) in cases {
            assert_eq!(parse(&bytes, XID, MAC), Err(why.clone()), "{why}");
        }
        // Every truncation of a good reply is refused or read, never a panic.
        for n in 0..good.len() {
            let _ = parse(&good[..n], XID, MAC);
        }
    }

    fn fake(replies: Vec<Option<Vec<u8>>>) -> FakeSys {
        let mut sys = FakeSys::new();
        sys.random = XID;
        sys.udp_inbox = replies.into();
        sys
    }

    fn obtained() -> Obtained {
        Obtained {
            lease: Lease {
                address: ADDRESS,
                prefix_len: 24,
                gateway: Some(SERVER),
            },
            server: SERVER,
        }
    }

    #[test]
    fn discover_offer_request_ack() {
        // Silence, a stranger's offer, then ours; the ACK after one more datagram.
        let stranger = reply(
            DHCPOFFER,
            7,
            Mac([2, 0, 0, 0, 0, 1]),
            ADDRESS,
            &lease_options(),
        );
        let mut sys = fake(vec![
            None,
            Some(stranger),
            Some(offer()),
            Some(b"garbage".to_vec()),
            Some(ack()),
        ]);
        let got = obtain(&mut sys, "eth0", MAC, Timing::default()).expect("lease");
        assert_eq!(got, obtained());
        assert_eq!(
            got.to_string(),
            "192.0.2.105/24 via 192.0.2.1 from server 192.0.2.1"
        );
        assert_eq!(
            sys.calls,
            [
                "udp_open eth0 port 68",
                "udp_broadcast 1 to port 67 (300 bytes)",
                "udp_recv 1 2000ms: timeout",
                "udp_broadcast 1 to port 67 (300 bytes)",
                "udp_recv 1 4000ms: 300 bytes",
                "udp_recv 1 3999ms: 300 bytes",
                "udp_broadcast 1 to port 67 (300 bytes)",
                "udp_recv 1 2000ms: 7 bytes",
                "udp_recv 1 1999ms: 300 bytes",
                "udp_close 1",
            ]
        );
        // The second DISCOVER says how long the client has been at it.
        assert_eq!(&sys.udp_sent[1][8..10], &[0, 2]);
        assert_eq!(sys.udp_sent[2][242], DHCPREQUEST);
        assert_eq!(&sys.udp_sent[2][4..8], &XID.to_be_bytes());
    }

    #[test]
    fn silence_ends_after_the_time_bound() {
        let mut sys = fake(vec![]);
        let e = obtain(&mut sys, "eth0", MAC, Timing::default()).expect_err("silence");
        assert_eq!(e.to_string(), "no offer after 30s (5 DISCOVERs sent)");
        let waits: Vec<&str> = sys
            .calls
            .iter()
            .filter(|c| c.starts_with("udp_recv"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            waits,
            [
                "udp_recv 1 2000ms: timeout",
                "udp_recv 1 4000ms: timeout",
                "udp_recv 1 8000ms: timeout",
                "udp_recv 1 8000ms: timeout",
                "udp_recv 1 8000ms: timeout",
            ]
        );
        assert_eq!(sys.calls.last().map(String::as_str), Some("udp_close 1"));

        // What was ignored is told.
        let mut sys = fake(vec![Some(reply(
            DHCPOFFER,
            XID + 1,
            MAC,
            ADDRESS,
            &lease_options(),
        ))]);
        let e = obtain(&mut sys, "eth0", MAC, Timing::default()).expect_err("silence");
        assert_eq!(
            e.to_string(),
            "no offer after 30s (5 DISCOVERs sent; 1 other datagram ignored, the last: \
             transaction 12345679 is not ours)"
        );

        // An offer, then no ACK.
        let mut sys = fake(vec![Some(offer())]);
        let e = obtain(&mut sys, "eth0", MAC, Timing::default()).expect_err("no ack");
        assert_eq!(
            e.to_string(),
            "no answer from server 192.0.2.1 to the REQUEST of 192.0.2.105 within 30s \
             (5 REQUESTs sent)"
        );
    }

    #[test]
    fn a_nak_starts_over_and_three_give_up() {
        // NAK, then the second round's offer and ACK (the xid changed: the fake's next).
        let second = |kind| reply(kind, XID + 1, MAC, ADDRESS, &lease_options());
        let mut sys = fake(vec![
            Some(offer()),
            Some(nak(b"192.0.2.105: InUse")),
            Some(second(DHCPOFFER)),
            Some(second(DHCPACK)),
        ]);
        assert_eq!(
            obtain(&mut sys, "eth0", MAC, Timing::default()),
            Ok(obtained())
        );
        let types: Vec<u8> = sys.udp_sent.iter().map(|p| p[242]).collect();
        assert_eq!(
            types,
            [DHCPDISCOVER, DHCPREQUEST, DHCPDISCOVER, DHCPREQUEST]
        );

        let round = |x: u32| {
            vec![
                Some(reply(DHCPOFFER, XID + x, MAC, ADDRESS, &lease_options())),
                Some(reply(
                    DHCPNAK,
                    XID + x,
                    MAC,
                    Ipv4Addr::UNSPECIFIED,
                    &[(54, &[192, 0, 2, 1])],
                )),
            ]
        };
        let mut sys = fake([round(0), round(1), round(2)].concat());
        let e = obtain(&mut sys, "eth0", MAC, Timing::default()).expect_err("naks");
        assert_eq!(
            e,
            DhcpError::Refused {
                server: SERVER,
                address: ADDRESS,
                naks: 3,
                message: "no reason given".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "server 192.0.2.1 refused 192.0.2.105 3 times (NAK: no reason given)"
        );

        // A NAK when the time is up ends the exchange at once.
        let mut sys = fake(vec![Some(offer()), Some(nak(b"no"))]);
        let short = Timing {
            total: Duration::from_millis(2),
            ..Timing::default()
        };
        let e = obtain(&mut sys, "eth0", MAC, short).expect_err("nak at the deadline");
        assert_eq!(
            e.to_string(),
            "server 192.0.2.1 refused 192.0.2.105 1 time (NAK: no)"
        );

        // A NAK or ACK from another server than the one chosen is not ours to take.
        let other = reply(
            DHCPNAK,
            XID,
            MAC,
            Ipv4Addr::UNSPECIFIED,
            &[(54, &[192, 0, 2, 9])],
        );
        let mut sys = fake(vec![Some(offer()), Some(other), Some(ack())]);
        assert_eq!(
            obtain(&mut sys, "eth0", MAC, Timing::default()),
            Ok(obtained())
        );
    }

    #[test]
    fn an_ack_without_a_mask_and_socket_failures_are_errors() {
        let bare = |kind| reply(kind, XID, MAC, ADDRESS, &[(54, &[192, 0, 2, 1])]);
        let mut sys = fake(vec![Some(bare(DHCPOFFER)), Some(bare(DHCPACK))]);
        let e = obtain(&mut sys, "eth0", MAC, Timing::default()).expect_err("no mask");
        assert_eq!(
            e.to_string(),
            "the ACK of 192.0.2.105 from server 192.0.2.1 has no subnet mask (option 1)"
        );
        // The mask of the offer is enough.
        let mut sys = fake(vec![Some(offer()), Some(bare(DHCPACK))]);
        let got = obtain(&mut sys, "eth0", MAC, Timing::default()).expect("offer's mask");
        assert_eq!(got.lease.prefix_len, 24);

        let mut sys = fake(vec![]);
        sys.fail_prefix = Some("udp_broadcast".into());
        sys.fail_errno = Some(Errno::ENETDOWN);
        let e = obtain(&mut sys, "eth0", MAC, Timing::default()).expect_err("down");
        assert_eq!(e.to_string(), "send DISCOVER: ENETDOWN: Network is down");
        assert_eq!(sys.calls.last().map(String::as_str), Some("udp_close 1"));

        let mut sys = fake(vec![]);
        sys.fail_prefix = Some("udp_open".into());
        sys.fail_errno = Some(Errno::ENODEV);
        let e = obtain(&mut sys, "eth0", MAC, Timing::default()).expect_err("no dev");
        assert_eq!(e.to_string(), "open UDP port 68: ENODEV: No such device");
    }
}
