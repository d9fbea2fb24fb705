//! Encoding a BOOTREPLY by hand: header, option 53 first, options, end, padding.
//!
//! It deliberately knows nothing of modes, leases or policy: callers fill a [`Reply`]
//! and [`Reply::encode`] lays out the bytes (boot file in the `file` field when it fits,
//! long options split per RFC 3396, at least 300 bytes as BOOTP relays expect).

use std::net::Ipv4Addr;

use super::packet::{Facts, MessageType, HEADER_LEN, MAGIC_COOKIE};

/// Smallest reply we send; some BOOTP relays and old PXE ROMs drop shorter packets.
pub const MIN_REPLY_LEN: usize = 300;

/// A reply being built. Options are kept in insertion order after option 53.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub message_type: MessageType,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub sname: Option<String>,
    /// Boot file: written to option 67 and, when it fits, to the `file` field.
    pub boot_file: Option<String>,
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Reply {
    /// A reply to `req` echoing xid, flags, giaddr and chaddr.
    pub fn to(req: &Facts, message_type: MessageType) -> Self {
        Self {
            message_type,
            htype: req.htype,
            hlen: req.hlen,
            xid: req.xid,
            flags: req.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            sname: None,
            boot_file: None,
            options: Vec::new(),
        }
    }

    /// Adds or replaces option `code`.
    pub fn set(&mut self, code: u8, value: impl Into<Vec<u8>>) {
        let value = value.into();
        match self.options.iter_mut().find(|(c, _)| *c == code) {
            Some((_, v)) => *v = value,
            None => self.options.push((code, value)),
        }
    }

    pub fn set_ip(&mut self, code: u8, ip: Ipv4Addr) {
        self.set(code, ip.octets());
    }

    pub fn set_u32(&mut self, code: u8, v: u32) {
        self.set(code, v.to_be_bytes());
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = 2;
        b[1] = self.htype;
        b[2] = self.hlen;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[24..28].copy_from_slice(&self.giaddr.octets());
        b[28..44].copy_from_slice(&self.chaddr);
        if let Some(s) = &self.sname {
            // 64-byte field with a terminating NUL.
            if s.len() < 64 {
                b[44..44 + s.len()].copy_from_slice(s.as_bytes());
            }
        }
        if let Some(f) = &self.boot_file {
            // 128-byte field with a terminating NUL; option 67 always carries it too.
            if f.len() < 128 {
                b[108..108 + f.len()].copy_from_slice(f.as_bytes());
            }
        }
        b.extend_from_slice(&MAGIC_COOKIE);
        push_option(&mut b, 53, &[self.message_type.code()]);
        for (code, value) in &self.options {
            if *code != 53 && *code != 67 {
                push_option(&mut b, *code, value);
            }
        }
        if let Some(f) = &self.boot_file {
            push_option(&mut b, 67, f.as_bytes());
        }
        b.push(255);
        if b.len() < MIN_REPLY_LEN {
            b.resize(MIN_REPLY_LEN, 0);
        }
        b
    }
}

/// Writes one option, split into 255-byte pieces when longer (RFC 3396).
fn push_option(b: &mut Vec<u8>, code: u8, value: &[u8]) {
    if value.is_empty() {
        b.extend_from_slice(&[code, 0]);
        return;
    }
    for chunk in value.chunks(255) {
        b.push(code);
        b.push(chunk.len() as u8);
        b.extend_from_slice(chunk);
    }
}

/// Reads the options of an encoded reply (for tests and the bench client).
pub fn decode_options(bytes: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    let area = bytes.get(HEADER_LEN + 4..)?;
    super::packet::walk_options(area, HEADER_LEN + 4).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        let mut req = vec![0u8; 240];
        req[0] = 1;
        req[1] = 1;
        req[2] = 6;
        req[236..240].copy_from_slice(&MAGIC_COOKIE);
        super::super::packet::parse(&req).expect("minimal request")
    }

    #[test]
    fn layout_puts_53_first_and_pads() {
        let mut r = Reply::to(&facts(), MessageType::Offer);
        r.set_ip(54, Ipv4Addr::new(192, 0, 2, 1));
        r.boot_file = Some("undionly.kpxe".into());
        let b = r.encode();
        assert!(b.len() >= MIN_REPLY_LEN);
        assert_eq!(&b[240..243], &[53, 1, 2]);
        assert_eq!(&b[108..121], b"undionly.kpxe");
        assert_eq!(b[121], 0);
        let opts = decode_options(&b).expect("decodes");
        assert_eq!(opts[0], (53, vec![2]));
        assert!(opts.contains(&(67, b"undionly.kpxe".to_vec())));
    }

    #[test]
    fn long_boot_file_only_in_option_67() {
        let mut r = Reply::to(&facts(), MessageType::Ack);
        let long = "x".repeat(300);
        r.boot_file = Some(long.clone());
        let b = r.encode();
        assert!(b[108..236].iter().all(|x| *x == 0));
        let opts = decode_options(&b).expect("decodes");
        assert!(opts.contains(&(67, long.into_bytes())));
    }
}
