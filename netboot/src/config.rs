//! netbootd's configuration: a TOML file where every key can also be given as a flag.
//!
//! Only `main` reads files, flags and the environment; services receive plain structs.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::arch::BootFileTable;

/// How netbootd takes part in DHCP on its interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Hand out addresses from the pool and boot information.
    Full,
    /// Beside an existing DHCP server: boot information only (ports 67 and 4011).
    Proxy,
    /// No DHCP at all (another server points clients at us).
    Off,
}

/// An inclusive range of IPv4 addresses, written `first-last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl std::str::FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("pool {s:?}: expected FIRST-LAST"))?;
        let first: Ipv4Addr = a.trim().parse().map_err(|e| format!("pool {s:?}: {e}"))?;
        let last: Ipv4Addr = b.trim().parse().map_err(|e| format!("pool {s:?}: {e}"))?;
        if u32::from(first) > u32::from(last) {
            return Err(format!("pool {s:?}: first address is above the last"));
        }
        Ok(Pool { first, last })
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    /// Addresses handed out in full mode.
    pub pool: Option<Pool>,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub lease_secs: u32,
    /// UDP port the server listens on (67; tests use others).
    pub port: u16,
    /// UDP port clients listen on (68; tests use others).
    pub client_port: u16,
    /// PXE boot-server port answered in proxy mode (4011).
    pub proxy_port: u16,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        Self {
            mode: DhcpMode::Full,
            pool: None,
            prefix_len: 24,
            router: None,
            dns: Vec::new(),
            lease_secs: 3600,
            port: 67,
            client_port: 68,
            proxy_port: 4011,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TftpConfig {
    pub port: u16,
    /// Largest blksize granted to a client (1468 fits a 1500-byte MTU).
    pub max_blksize: u16,
    /// Largest windowsize granted (RFC 7440).
    pub max_windowsize: u16,
    /// Seconds to wait for an ACK before resending, unless the client asks otherwise.
    pub timeout_secs: u8,
    pub retries: u8,
    /// An extra small folder served after the iPXE binaries (first-stage files only).
    pub extra_dir: Option<PathBuf>,
    /// Transfers running at once; more read requests get "server busy".
    pub max_transfers: usize,
    /// Transfers one client address may run at once (a UEFI client needs two: the size
    /// probe and the download).
    pub max_transfers_per_client: usize,
}

impl Default for TftpConfig {
    fn default() -> Self {
        Self {
            port: 69,
            max_blksize: 1468,
            max_windowsize: 64,
            timeout_secs: 1,
            retries: 5,
            extra_dir: None,
            max_transfers: 256,
            max_transfers_per_client: 8,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The interface DHCP binds to (required unless DHCP is off).
    pub interface: Option<String>,
    /// The address clients reach netbootd at (next-server, URLs, server identifier).
    pub server_addr: Option<Ipv4Addr>,
    pub http_port: u16,
    /// Also holds the image store (`carte.db`, `blobs/`).
    pub data_dir: PathBuf,
    /// The carte initramfs image setups boot with, a path under `data_dir`.
    pub initramfs: String,
    pub policy_dir: PathBuf,
    /// Where the iPXE first stages are (Debian's `ipxe` package puts them here).
    pub ipxe_dir: PathBuf,
    pub dhcp: DhcpConfig,
    pub tftp: TftpConfig,
    pub boot_files: BootFileTable,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interface: None,
            server_addr: None,
            http_port: 8080,
            data_dir: PathBuf::from("/var/lib/carte"),
            initramfs: "carte/initramfs.cpio.zst".into(),
            policy_dir: PathBuf::from("/etc/carte/policy"),
            ipxe_dir: PathBuf::from("/usr/lib/ipxe"),
            dhcp: DhcpConfig::default(),
            tftp: TftpConfig::default(),
            boot_files: BootFileTable::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks what the services need before anything binds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.server_addr {
            None => {
                return Err(ConfigError::Invalid(
                    "server_addr is required (the address machines reach netbootd at)".into(),
                ))
            }
            // Machines are sent this address in DHCP and URLs: it must be one of ours
            // that they can reach, not a wildcard.
            Some(ip) if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() => {
                return Err(ConfigError::Invalid(format!(
                    "server_addr {ip} is not an address machines can reach; \
                     give this host's address on the boot network"
                )))
            }
            Some(_) => {}
        }
        if self.dhcp.mode != DhcpMode::Off && self.interface.is_none() {
            return Err(ConfigError::Invalid(
                "interface is required when DHCP is on (full or proxy)".into(),
            ));
        }
        if self.dhcp.mode == DhcpMode::Full && self.dhcp.pool.is_none() {
            return Err(ConfigError::Invalid(
                "dhcp.pool is required in full mode (for example 192.0.2.100-192.0.2.200)".into(),
            ));
        }
        if self.dhcp.prefix_len > 32 {
            return Err(ConfigError::Invalid(
                "dhcp.prefix_len must be 0..=32".into(),
            ));
        }
        if self.initramfs.is_empty()
            || self.initramfs.starts_with('/')
            || self.initramfs.split('/').any(|c| c == "..")
        {
            return Err(ConfigError::Invalid(
                "initramfs must be a path under data_dir (relative, without ..)".into(),
            ));
        }
        if !(512..=65464).contains(&self.tftp.max_blksize) && self.tftp.max_blksize != 0 {
            return Err(ConfigError::Invalid(
                "tftp.max_blksize must be 512..=65464".into(),
            ));
        }
        Ok(())
    }

    /// The server address; call only after [`Config::validate`].
    pub fn server_ip(&self) -> Ipv4Addr {
        self.server_addr.unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Base URL machines use for HTTP, such as `http://192.0.2.1:8080`.
    pub fn http_base(&self) -> String {
        format!("http://{}:{}", self.server_ip(), self.http_port)
    }

    pub fn http_bind(&self) -> SocketAddr {
        SocketAddr::from((self.server_ip(), self.http_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file_and_rejects_unknown_keys() {
        let cfg: Config = toml::from_str(
            r#"
            interface = "br0"
            server_addr = "192.0.2.1"
            [dhcp]
            mode = "proxy"
            pool = "192.0.2.100-192.0.2.200"
            [tftp]
            max_blksize = 1024
            [boot_files]
            bios = "undionly.kkpxe"
            "#,
        )
        .expect("valid config");
        assert_eq!(cfg.dhcp.mode, DhcpMode::Proxy);
        assert_eq!(cfg.tftp.max_blksize, 1024);
        assert_eq!(
            cfg.boot_files.0.get("bios").map(String::as_str),
            Some("undionly.kkpxe")
        );
        assert!(cfg.validate().is_ok());
        assert!(toml::from_str::<Config>("intreface = \"br0\"").is_err());
    }

    #[test]
    fn validation_names_the_missing_key() {
        let cfg = Config {
            server_addr: Some(Ipv4Addr::new(192, 0, 2, 1)),
            interface: Some("br0".into()),
            ..Config::default()
        };
        let err = cfg.validate().expect_err("full mode without pool");
        assert!(err.to_string().contains("dhcp.pool"), "{err}");
        assert!("192.0.2.9-192.0.2.1".parse::<Pool>().is_err());
        for wildcard in ["0.0.0.0", "255.255.255.255", "224.0.0.1"] {
            let cfg = Config {
                server_addr: Some(wildcard.parse().expect("ip")),
                dhcp: DhcpConfig {
                    mode: DhcpMode::Off,
                    ..DhcpConfig::default()
                },
                ..Config::default()
            };
            let err = cfg.validate().expect_err("not reachable");
            assert!(err.to_string().contains(wildcard), "{err}");
        }
    }
}
