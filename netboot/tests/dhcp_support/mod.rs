//! Crafting DHCP requests for the DHCP tests (shared by tests/dhcp*.rs).
#![allow(dead_code)]

use std::net::Ipv4Addr;

/// A BOOTREQUEST under construction; `encode` lays it out byte by byte.
#[derive(Clone, Debug)]
pub struct Req {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub cookie: bool,
    pub options: Vec<(u8, Vec<u8>)>,
    /// Raw bytes appended after the options (before the end option is added).
    pub tail: Vec<u8>,
    pub end: bool,
}

pub fn mac(last: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x00, 0x00, last]
}

impl Req {
    pub fn new(msg: u8, mac: [u8; 6]) -> Self {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        Self {
            op: 1,
            htype: 1,
            hlen: 6,
            xid: 0x1234_5678,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            cookie: true,
            options: vec![(53, vec![msg])],
            tail: Vec::new(),
            end: true,
        }
    }

    pub fn discover(mac: [u8; 6]) -> Self {
        Self::new(1, mac)
    }

    pub fn request(mac: [u8; 6]) -> Self {
        Self::new(3, mac)
    }

    /// A firmware PXE DISCOVER for option 93 `arch` with the matching vendor class.
    pub fn pxe(mac: [u8; 6], arch: u16) -> Self {
        let kind = if arch == 16 || arch == 19 {
            "HTTPClient"
        } else {
            "PXEClient"
        };
        Self::discover(mac)
            .opt(93, arch.to_be_bytes().to_vec())
            .opt(60, format!("{kind}:Arch:{arch:05}:UNDI:003016"))
    }

    pub fn opt(mut self, code: u8, value: impl Into<Vec<u8>>) -> Self {
        self.options.push((code, value.into()));
        self
    }

    pub fn ip_opt(self, code: u8, ip: Ipv4Addr) -> Self {
        self.opt(code, ip.octets().to_vec())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = self.op;
        b[1] = self.htype;
        b[2] = self.hlen;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[24..28].copy_from_slice(&self.giaddr.octets());
        b[28..44].copy_from_slice(&self.chaddr);
        if self.cookie {
            b.extend_from_slice(&[99, 130, 83, 99]);
        } else {
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        for (code, value) in &self.options {
            b.push(*code);
            b.push(value.len() as u8);
            b.extend_from_slice(value);
        }
        b.extend_from_slice(&self.tail);
        if self.end {
            b.push(255);
        }
        b
    }
}

/// Option `code` of an encoded reply.
pub fn reply_opt(bytes: &[u8], code: u8) -> Option<Vec<u8>> {
    netboot::dhcp::reply::decode_options(bytes)?
        .into_iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v)
}

/// The NUL-terminated `file` header field of a reply.
pub fn file_field(bytes: &[u8]) -> String {
    let f = &bytes[108..236];
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end]).into_owned()
}

pub fn yiaddr(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19])
}
