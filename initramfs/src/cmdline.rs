//! Parsing `/proc/cmdline` by hand: quoting as the kernel does it, `key=value` and bare
//! flags, then the carte keys (`carte.server`, `carte.token`, `carte.mac`), `BOOTIF` and
//! the iPXE lease passed as `ip=<client>::<gw>:<netmask>:::off`.
//!
//! It only reads text: it never looks at interfaces or the network. Unknown keys and
//! garbage are ignored (the kernel and other programs own them); carte's own keys are
//! validated and a bad one is an error naming the key.

use std::fmt;
use std::net::Ipv4Addr;

/// A MAC address, printed lowercase and colon separated like the contract wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parse `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case).
    pub fn parse(s: &str) -> Option<Mac> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return None;
            }
            *o = u8::from_str_radix(p, 16).ok()?;
        }
        Some(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The static lease iPXE already holds, as it passed it on `ip=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The machine's address.
    pub address: Ipv4Addr,
    /// Prefix length from the netmask.
    pub prefix_len: u8,
    /// Default gateway, when iPXE had one.
    pub gateway: Option<Ipv4Addr>,
}

/// How the network is to be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpConfig {
    /// Use this lease.
    Static(Lease),
    /// No lease given (`ip=dhcp` or no `ip=` at all): ask DHCP.
    Dhcp,
}

/// What carte-init needs from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// Base URL of netbootd (`http://192.0.2.1:8080`), without a trailing slash.
    pub server: String,
    /// The per-boot token for the plan request.
    pub token: String,
    /// MAC of the boot NIC (`carte.mac`, else `BOOTIF`).
    pub mac: Mac,
    /// Network configuration.
    pub ip: IpConfig,
    /// Benchmark mode (`carte.bench=<disk>`, set only by `carte-lab bench-flash`): the
    /// name of a scratch disk under /dev that the benchmark may overwrite. `None` boots.
    pub bench: Option<String>,
}

/// A command line carte cannot boot with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("kernel command line has no {0}")]
    Missing(&'static str),
    #[error("kernel command line: {key}={value:?} is not valid: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// One command-line word: key and, after `=`, value.
pub type Word = (String, Option<String>);

/// Split the command line into `(key, value)` words as the kernel does: whitespace
/// separates, double quotes group (and are removed), `=` splits at its first occurrence.
pub fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(split_word(&cur));
                    cur.clear();
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(split_word(&cur));
    }
    out
}

fn split_word(w: &str) -> Word {
    match w.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (w.to_string(), None),
    }
}

fn netmask_prefix(mask: &str) -> Option<u8> {
    if let Ok(n) = mask.parse::<u8>() {
        return (n <= 32).then_some(n);
    }
    mask_prefix(mask.parse::<Ipv4Addr>().ok()?)
}

/// The prefix length of a netmask, which must be contiguous ones then zeros (the `ip=`
/// netmask and DHCP's option 1).
pub(crate) fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// Parse the kernel's `ip=` syntax: `client:server:gw:netmask:host:device:autoconf`.
pub fn parse_ip(value: &str) -> Result<IpConfig, CmdlineError> {
    let bad = |why| CmdlineError::Invalid {
        key: "ip",
        value: value.to_string(),
        why,
    };
    if matches!(value, "dhcp" | "on" | "any" | "bootp") {
        return Ok(IpConfig::Dhcp);
    }
    let f: Vec<&str> = value.split(':').collect();
    if f.len() < 4 {
        return Err(bad("expected client::gateway:netmask:::off"));
    }
    let address = f[0].parse().map_err(|_| bad("client address"))?;
    let gateway = match f[2] {
        "" => None,
        g => Some(g.parse().map_err(|_| bad("gateway address"))?),
    };
    let prefix_len = netmask_prefix(f[3]).ok_or_else(|| bad("netmask"))?;
    Ok(IpConfig::Static(Lease {
        address,
        prefix_len,
        gateway,
    }))
}

fn parse_bootif(value: &str) -> Result<Mac, CmdlineError> {
    // PXELINUX/iPXE form: hardware type "01" (Ethernet), then the MAC with dashes.
    let mac = value.strip_prefix("01-").unwrap_or(value);
    Mac::parse(mac).ok_or(CmdlineError::Invalid {
        key: "BOOTIF",
        value: value.to_string(),
        why: "expected 01-aa-bb-cc-dd-ee-ff",
    })
}

/// Parse the whole command line into [`BootArgs`]. A later key wins over an earlier one,
/// as with the kernel's own parameters.
pub fn parse(text: &str) -> Result<BootArgs, CmdlineError> {
    let mut server = None;
    let mut token = None;
    let mut carte_mac = None;
    let mut bootif = None;
    let mut ip = IpConfig::Dhcp;
    let mut bench = None;
    for (k, v) in words(text) {
        let Some(v) = v else { continue };
        match k.as_str() {
            "carte.server" => {
                let s = v.trim_end_matches('/');
                if !s.starts_with("http://") || s.len() <= "http://".len() {
                    return Err(CmdlineError::Invalid {
                        key: "carte.server",
                        value: v,
                        why: "expected http://host[:port]",
                    });
                }
                server = Some(s.to_string());
            }
            "carte.token" => token = Some(v),
            "carte.mac" => {
                carte_mac = Some(Mac::parse(&v).ok_or(CmdlineError::Invalid {
                    key: "carte.mac",
                    value: v.clone(),
                    why: "expected aa:bb:cc:dd:ee:ff",
                })?)
            }
            "BOOTIF" => bootif = Some(parse_bootif(&v)?),
            "ip" => ip = parse_ip(&v)?,
            "carte.bench" => {
                let plain = !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric());
                if !plain {
                    return Err(CmdlineError::Invalid {
                        key: "carte.bench",
                        value: v,
                        why: "expected a disk name under /dev, such as vdb",
                    });
                }
                bench = Some(v);
            }
            _ => {}
        }
    }
    Ok(BootArgs {
        server: server.ok_or(CmdlineError::Missing("carte.server"))?,
        token: token
            .filter(|t| !t.is_empty())
            .ok_or(CmdlineError::Missing("carte.token"))?,
        mac: carte_mac
            .or(bootif)
            .ok_or(CmdlineError::Missing("carte.mac or BOOTIF"))?,
        ip,
        bench,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(text: &str) -> Vec<Word> {
        words(text)
    }

    #[test]
    fn words_table() {
        let kv = |k: &str, v: Option<&str>| (k.to_string(), v.map(str::to_string));
        let cases: Vec<(&str, Vec<Word>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("quiet", vec![kv("quiet", None)]),
            ("a=1 b", vec![kv("a", Some("1")), kv("b", None)]),
            ("a=b=c", vec![kv("a", Some("b=c"))]),
            (
                "x=\"two words\" y",
                vec![kv("x", Some("two words")), kv("y", None)],
            ),
            ("\"k=v w\"", vec![kv("k", Some("v w"))]),
            ("e=", vec![kv("e", Some(""))]),
            ("t\tn\n", vec![kv("t", None), kv("n", None)]),
            (
                "u=\"unterminated rest",
                vec![kv("u", Some("unterminated rest"))],
            ),
            ("\"\"", vec![kv("", None)]),
        ];
        for (input, expected) in cases {
            assert_eq!(w(input), expected, "input {input:?}");
        }
    }

    fn check(text: &str, expected: Result<BootArgs, CmdlineError>) {
        assert_eq!(parse(text), expected, "cmdline {text:?}");
    }

    const MAC: Mac = Mac([0x52, 0x54, 0, 0, 0, 0x01]);

    fn args(ip: IpConfig) -> BootArgs {
        BootArgs {
            server: "http://192.0.2.1:8080".into(),
            token: "t0k".into(),
            mac: MAC,
            ip,
            bench: None,
        }
    }

    #[test]
    fn parse_table() {
        let lease = IpConfig::Static(Lease {
            address: Ipv4Addr::new(192, 0, 2, 50),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        });
        let base = "carte.server=http://192.0.2.1:8080/ carte.token=t0k";
        check(
            &format!(
                "BOOT_IMAGE=vmlinuz console=ttyS0 {base} BOOTIF=01-52-54-00-00-00-01 \
                 ip=192.0.2.50::192.0.2.1:255.255.255.0:::off quiet"
            ),
            Ok(args(lease)),
        );
        check(
            &format!("{base} carte.mac=52:54:00:00:00:01"),
            Ok(args(IpConfig::Dhcp)),
        );
        // carte.mac wins over BOOTIF.
        check(
            &format!("{base} BOOTIF=01-aa-aa-aa-aa-aa-aa carte.mac=52:54:00:00:00:01"),
            Ok(args(IpConfig::Dhcp)),
        );
        // Uppercase MAC, prefix-length netmask, no gateway.
        check(
            &format!("{base} BOOTIF=01-52-54-00-00-00-01 ip=192.0.2.50:::24:::off"),
            Ok(args(IpConfig::Static(Lease {
                address: Ipv4Addr::new(192, 0, 2, 50),
                prefix_len: 24,
                gateway: None,
            }))),
        );
        check(
            &format!("{base} BOOTIF=01-52-54-00-00-00-01 ip=dhcp"),
            Ok(args(IpConfig::Dhcp)),
        );
        // Quoted value with garbage around it.
        check(
            &format!("=== \"\" {base} %%% carte.mac=\"52:54:00:00:00:01\" ==x"),
            Ok(args(IpConfig::Dhcp)),
        );
        check(
            &format!("{base} carte.mac=52:54:00:00:00:01 carte.bench=vdb"),
            Ok(BootArgs {
                bench: Some("vdb".into()),
                ..args(IpConfig::Dhcp)
            }),
        );
    }

    #[test]
    fn errors_name_the_key() {
        check("", Err(CmdlineError::Missing("carte.server")));
        check(
            "carte.server=http://192.0.2.1 carte.mac=52:54:00:00:00:01",
            Err(CmdlineError::Missing("carte.token")),
        );
        check(
            "carte.server=http://192.0.2.1 carte.token=",
            Err(CmdlineError::Missing("carte.token")),
        );
        check(
            "carte.server=http://192.0.2.1 carte.token=t",
            Err(CmdlineError::Missing("carte.mac or BOOTIF")),
        );
        for (text, key) in [
            ("carte.server=ftp://x", "carte.server"),
            ("carte.server=http://", "carte.server"),
            ("carte.mac=52:54:00", "carte.mac"),
            ("carte.mac=zz:54:00:00:00:01", "carte.mac"),
            ("BOOTIF=01-52-54", "BOOTIF"),
            ("ip=192.0.2.300::192.0.2.1:255.255.255.0:::off", "ip"),
            ("ip=192.0.2.5::192.0.2.1:255.0.255.0:::off", "ip"),
            ("ip=192.0.2.5::192.0.2.1:33:::off", "ip"),
            ("ip=192.0.2.5", "ip"),
            ("carte.bench=../sda", "carte.bench"),
            ("carte.bench=", "carte.bench"),
        ] {
            match parse(text) {
                Err(CmdlineError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an invalid {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn mac_display_is_lowercase_colons() {
        let m = Mac::parse("AA-BB-CC-DD-EE-0F").expect("mac");
        assert_eq!(m.to_string(), "aa:bb:cc:dd:ee:0f");
        assert_eq!(Mac::parse("aa:bb:cc:dd:ee:f"), None);
        assert_eq!(Mac::parse("aa:bb:cc:dd:ee:ff:00"), None);
    }
}
