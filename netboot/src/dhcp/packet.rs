//! Raw DHCP request validation and the [`Facts`] of a packet, parsed once.
//!
//! Our own bounds-checked walk over the BOOTP header and the option list; every later
//! decision reads [`Facts`], never the raw bytes again. It deliberately does **not** use
//! dhcproto's decoder (which panics in `chaddr()` on hlen > 16 and silently drops every
//! option after a malformed one) and does not interpret option overload (52): boot
//! clients do not overload requests.

use std::net::Ipv4Addr;

use crate::arch::ClientArch;
use crate::mac::MacAddr;

/// Fixed BOOTP header length, up to and excluding the magic cookie.
pub const HEADER_LEN: usize = 236;
/// The DHCP magic cookie (RFC 2131 section 3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// DHCP message types (option 53) we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    /// Any other value; kept for logging.
    Other(u8),
}

impl MessageType {
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            other => Self::Other(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
            Self::Other(c) => c,
        }
    }
}

/// What kind of boot client the vendor class (option 60) announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VendorKind {
    /// `PXEClient...`: firmware PXE (or iPXE, which also says PXEClient).
    Pxe,
    /// `HTTPClient...`: UEFI HTTP boot.
    Http,
    /// Anything else, or no option 60.
    Other,
}

/// Where the client architecture came from, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchSource {
    Option93,
    VendorClass,
    None,
}

/// Everything netbootd needs from one request, read once from the raw bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The raw 16-byte chaddr field, echoed in replies.
    pub chaddr: [u8; 16],
    /// Set only for Ethernet (htype 1, hlen 6); nothing else is routed.
    pub mac: Option<MacAddr>,
    pub message_type: Option<MessageType>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 93 (first code), else the option 60 fallback; `None` when neither says.
    pub arch: Option<ClientArch>,
    pub arch_source: ArchSource,
    /// Option 60, lossily decoded.
    pub vendor_class: Option<String>,
    pub vendor_kind: VendorKind,
    /// User class "iPXE" (option 77, raw or RFC 3004 form) or option 175 present.
    pub is_ipxe: bool,
    /// Option 97 as a lowercase hyphenated UUID (bytes in packet order); `None` when
    /// absent, malformed, or all zeros / all ones (SMBIOS "not set").
    pub uuid: Option<String>,
    /// Option 97 raw bytes, echoed by proxy replies.
    pub uuid_raw: Option<Vec<u8>>,
    /// Option 55.
    pub params: Vec<u8>,
}

impl Facts {
    /// True when the broadcast bit (the top bit of flags) is set.
    pub fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// A boot client: says PXEClient / HTTPClient, or is iPXE.
    pub fn is_boot_client(&self) -> bool {
        self.is_ipxe || self.vendor_kind != VendorKind::Other
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet of {len} bytes is shorter than the {min}-byte bootp header and cookie")]
    Truncated { len: usize, min: usize },
    #[error("op {0} is not a bootp request")]
    NotARequest(u8),
    #[error("hlen {0} is larger than the 16-byte chaddr field")]
    BadHlen(u8),
    #[error("magic cookie missing (found {0:02x?})")]
    NoMagicCookie([u8; 4]),
    #[error("option {code} at offset {offset} has no length byte")]
    OptionNoLength { code: u8, offset: usize },
    #[error("option {code} at offset {offset} claims {len} bytes past the end of the packet")]
    OptionOverrun { code: u8, offset: usize, len: u8 },
    #[error("option 53 has length {0}, expected 1")]
    BadMessageType(usize),
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn ip_opt(v: &[u8]) -> Option<Ipv4Addr> {
    match v {
        [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => None,
    }
}

/// Walks the option area, concatenating repeated options (RFC 3396). Stops at option 255
/// or at the end of the data; an option whose length runs past the end is an error.
pub fn walk_options(area: &[u8], base: usize) -> Result<Vec<(u8, Vec<u8>)>, PacketError> {
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut i = 0;
    while i < area.len() {
        let code = area[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = area.get(i + 1) else {
            return Err(PacketError::OptionNoLength {
                code,
                offset: base + i,
            });
        };
        let start = i + 2;
        let end = start + len as usize;
        let Some(value) = area.get(start..end) else {
            return Err(PacketError::OptionOverrun {
                code,
                offset: base + i,
                len,
            });
        };
        match out.iter_mut().find(|(c, _)| *c == code) {
            Some((_, v)) => v.extend_from_slice(value),
            None => out.push((code, value.to_vec())),
        }
        i = end;
    }
    Ok(out)
}

/// True when option 77 says "iPXE", either as the raw string iPXE sends or as one
/// RFC 3004 user-class instance (length-prefixed).
fn user_class_is_ipxe(v: &[u8]) -> bool {
    if v == b"iPXE" {
        return true;
    }
    let mut i = 0;
    while let Some(&len) = v.get(i) {
        let Some(item) = v.get(i + 1..i + 1 + len as usize) else {
            return false;
        };
        if item == b"iPXE" {
            return true;
        }
        i += 1 + len as usize;
    }
    false
}

fn format_uuid(b: &[u8]) -> String {
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    )
}

/// Validates `bytes` as a BOOTREQUEST and reads its [`Facts`].
pub fn parse(bytes: &[u8]) -> Result<Facts, PacketError> {
    let min = HEADER_LEN + MAGIC_COOKIE.len();
    if bytes.len() < min {
        return Err(PacketError::Truncated {
            len: bytes.len(),
            min,
        });
    }
    let op = bytes[0];
    if op != 1 {
        return Err(PacketError::NotARequest(op));
    }
    let htype = bytes[1];
    let hlen = bytes[2];
    if hlen > 16 {
        return Err(PacketError::BadHlen(hlen));
    }
    let cookie = [bytes[236], bytes[237], bytes[238], bytes[239]];
    if cookie != MAGIC_COOKIE {
        return Err(PacketError::NoMagicCookie(cookie));
    }
    let xid = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let flags = u16::from_be_bytes([bytes[10], bytes[11]]);
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&bytes[28..44]);
    let mac = (htype == 1 && hlen == 6).then(|| {
        let mut m = [0u8; 6];
        m.copy_from_slice(&chaddr[..6]);
        MacAddr(m)
    });

    let options = walk_options(&bytes[min..], min)?;
    let get = |code: u8| {
        options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    };

    let message_type = match get(53) {
        None => None,
        Some([t]) => Some(MessageType::from_code(*t)),
        Some(v) => return Err(PacketError::BadMessageType(v.len())),
    };
    let vendor_class = get(60).map(|v| String::from_utf8_lossy(v).into_owned());
    let vendor_kind = match vendor_class.as_deref() {
        Some(s) if s.starts_with("PXEClient") => VendorKind::Pxe,
        Some(s) if s.starts_with("HTTPClient") => VendorKind::Http,
        _ => VendorKind::Other,
    };
    let from_93 = match get(93) {
        Some([hi, lo, ..]) => Some(ClientArch::from_code(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    };
    let from_60 = vendor_class
        .as_deref()
        .and_then(ClientArch::from_vendor_class);
    let (arch, arch_source) = match (from_93, from_60) {
        (Some(a), _) => (Some(a), ArchSource::Option93),
        (None, Some(a)) => (Some(a), ArchSource::VendorClass),
        (None, None) => (None, ArchSource::None),
    };
    let is_ipxe = get(77).is_some_and(user_class_is_ipxe) || get(175).is_some();
    // Option 97: type 0 followed by 16 bytes (RFC 4578 section 2.2).
    let uuid_raw = get(97).map(<[u8]>::to_vec);
    // All zeros or all ones mean "no UUID" in SMBIOS; never match a policy on them.
    let uuid = match get(97) {
        Some([0, rest @ ..])
            if rest.len() == 16
                && !rest.iter().all(|b| *b == 0)
                && !rest.iter().all(|b| *b == 0xff) =>
        {
            Some(format_uuid(rest))
        }
        _ => None,
    };

    Ok(Facts {
        op,
        htype,
        hlen,
        xid,
        flags,
        ciaddr: ip_at(bytes, 12),
        giaddr: ip_at(bytes, 24),
        chaddr,
        mac,
        message_type,
        requested_ip: get(50).and_then(ip_opt),
        server_id: get(54).and_then(ip_opt),
        arch,
        arch_source,
        vendor_class,
        vendor_kind,
        is_ipxe,
        uuid,
        uuid_raw,
        params: get(55).map(<[u8]>::to_vec).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_walk_concatenates_and_stops_at_end() {
        let area = [0, 12, 2, b'a', b'b', 12, 1, b'c', 255, 99, 99];
        let got = walk_options(&area, 240).expect("valid");
        assert_eq!(got, vec![(12, b"abc".to_vec())]);
        assert_eq!(
            walk_options(&[12, 5, 1], 240),
            Err(PacketError::OptionOverrun {
                code: 12,
                offset: 240,
                len: 5
            })
        );
        assert_eq!(
            walk_options(&[0, 12], 240),
            Err(PacketError::OptionNoLength {
                code: 12,
                offset: 241
            })
        );
    }

    #[test]
    fn user_class_forms() {
        assert!(user_class_is_ipxe(b"iPXE"));
        assert!(user_class_is_ipxe(b"\x04iPXE"));
        assert!(user_class_is_ipxe(b"\x03abc\x04iPXE"));
        assert!(!user_class_is_ipxe(b"\x09iPXE"));
        assert!(!user_class_is_ipxe(b"gPXE"));
    }
}
