//! The boot part of a reply: which first stage (or URL) a client is sent.
//!
//! iPXE gets the entry script URL (so iPXE never chainloads itself), UEFI HTTP boot gets
//! the http:// URL of its iPXE binary, firmware PXE gets a TFTP file from the
//! [`BootFileTable`]. It deliberately does not ask the policy (the caller does, and sends
//! nothing for `ignore`) and never guesses an arch: unknown means no boot answer.

use std::net::Ipv4Addr;

use super::packet::{Facts, VendorKind};
use super::reply::Reply;
use crate::arch::{BootFileTable, ClientArch};

/// Where boot answers point; taken from the service.
#[derive(Clone, Debug)]
pub struct BootEnv {
    pub server_ip: Ipv4Addr,
    /// `http://IP:PORT`.
    pub http_base: String,
    pub boot_files: BootFileTable,
}

/// The boot information for one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootInfo {
    /// Already iPXE: the entry script.
    Ipxe { url: String },
    /// UEFI HTTP boot: the iPXE binary over HTTP.
    Http { url: String },
    /// Firmware PXE: a TFTP file on the server.
    Tftp { file: String },
}

/// Why a client gets no boot information.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoBoot {
    /// Not a PXE, HTTP-boot or iPXE client (an OS asking for an address).
    NotABootClient,
    /// A boot client that says neither option 93 nor a readable option 60 arch.
    UnknownArch,
    /// The boot-file table has no entry for this arch.
    NoFileFor(ClientArch),
}

impl std::fmt::Display for NoBoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotABootClient => f.write_str("not a boot client"),
            Self::UnknownArch => f.write_str("unknown client arch"),
            Self::NoFileFor(a) => write!(f, "no boot file for arch {a}"),
        }
    }
}

impl BootEnv {
    /// Chooses the boot information for `facts`.
    pub fn boot_info(&self, facts: &Facts) -> Result<BootInfo, NoBoot> {
        if facts.is_ipxe {
            return Ok(BootInfo::Ipxe {
                url: format!("{}/boot.ipxe", self.http_base),
            });
        }
        if !facts.is_boot_client() {
            return Err(NoBoot::NotABootClient);
        }
        let arch = facts.arch.ok_or(NoBoot::UnknownArch)?;
        let file = self
            .boot_files
            .file_for(arch)
            .ok_or(NoBoot::NoFileFor(arch))?;
        if facts.vendor_kind == VendorKind::Http || arch.is_http_boot() {
            Ok(BootInfo::Http {
                url: format!("{}/ipxe-bin/{file}", self.http_base),
            })
        } else {
            Ok(BootInfo::Tftp {
                file: file.to_string(),
            })
        }
    }

    /// Writes `info` into `reply`: next-server (siaddr), boot file (option 67 and
    /// `file`), and for TFTP option 66 and sname; for HTTP boot, vendor class HTTPClient
    /// (UEFI HTTP boot ignores offers without it).
    ///
    /// TFTP answers deliberately carry no vendor class: UEFI PXE (EDK2) takes an offer
    /// with an address *and* "PXEClient" for a BINL offer and asks siaddr:4011 again for
    /// the file instead of loading it (seen with OVMF). Proxy mode adds "PXEClient",
    /// which proxy offers need, and answers 4011.
    pub fn apply(&self, reply: &mut Reply, info: &BootInfo) {
        // Always name the next server: iPXE accepts a proxy offer or proxy ACK only when
        // it has siaddr *and* a boot file (dhcp_has_pxeopts), whatever the file's scheme.
        reply.siaddr = self.server_ip;
        match info {
            BootInfo::Ipxe { url } => {
                reply.boot_file = Some(url.clone());
            }
            BootInfo::Http { url } => {
                reply.boot_file = Some(url.clone());
                reply.set(60, "HTTPClient");
            }
            BootInfo::Tftp { file } => {
                let server = self.server_ip.to_string();
                reply.sname = Some(server.clone());
                reply.set(66, server);
                reply.boot_file = Some(file.clone());
            }
        }
    }
}

impl BootInfo {
    /// What was sent, for the decision log line.
    pub fn describe(&self) -> String {
        match self {
            Self::Ipxe { url } => format!("ipxe script {url}"),
            Self::Http { url } => format!("http boot {url}"),
            Self::Tftp { file } => format!("tftp {file}"),
        }
    }
}
