//! Client architectures (DHCP option 93, RFC 4578 and the IANA registry) and the table
//! that maps each to the first-stage boot file it needs.

use std::collections::BTreeMap;
use std::fmt;

/// What kind of firmware is asking to boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientArch {
    /// Code 0: x86 BIOS (legacy PXE).
    Bios,
    /// Code 6: x86 (ia32) UEFI.
    EfiIa32,
    /// Codes 7 and 9: x86-64 UEFI (9 was the old EFI BC code; firmware still sends it).
    EfiX64,
    /// Code 10: 32-bit ARM UEFI.
    EfiArm32,
    /// Code 11: 64-bit ARM UEFI.
    EfiArm64,
    /// Code 16: x86-64 UEFI HTTP boot.
    EfiX64Http,
    /// Code 19: arm64 UEFI HTTP boot.
    EfiArm64Http,
    /// Any other registered or unregistered code; kept so it can be logged and refused.
    Other(u16),
}

impl ClientArch {
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => Self::Bios,
            6 => Self::EfiIa32,
            7 | 9 => Self::EfiX64,
            10 => Self::EfiArm32,
            11 => Self::EfiArm64,
            16 => Self::EfiX64Http,
            19 => Self::EfiArm64Http,
            other => Self::Other(other),
        }
    }

    /// Reads the arch out of an option 60 vendor class such as
    /// `PXEClient:Arch:00007:UNDI:003016` or `HTTPClient:Arch:00016:...`.
    pub fn from_vendor_class(class: &str) -> Option<Self> {
        let mut parts = class.split(':');
        let kind = parts.next()?;
        if kind != "PXEClient" && kind != "HTTPClient" {
            return None;
        }
        if parts.next()? != "Arch" {
            return None;
        }
        let digits = parts.next()?;
        if digits.is_empty() || digits.len() > 5 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u16>().ok().map(Self::from_code)
    }

    /// True for every UEFI flavour (they leave iPXE with `exit`, not `sanboot`).
    pub fn is_uefi(self) -> bool {
        !matches!(self, Self::Bios | Self::Other(_))
    }

    /// True for UEFI HTTP boot clients, which get an http:// URL instead of a TFTP file.
    pub fn is_http_boot(self) -> bool {
        matches!(self, Self::EfiX64Http | Self::EfiArm64Http)
    }

    /// The name used in policy files (`arch = ["bios", "efi-x64"]`) and in boot-file keys.
    pub fn name(self) -> String {
        match self {
            Self::Bios => "bios".into(),
            Self::EfiIa32 => "efi-ia32".into(),
            Self::EfiX64 => "efi-x64".into(),
            Self::EfiArm32 => "efi-arm32".into(),
            Self::EfiArm64 => "efi-arm64".into(),
            Self::EfiX64Http => "efi-x64-http".into(),
            Self::EfiArm64Http => "efi-arm64-http".into(),
            Self::Other(code) => format!("arch-{code}"),
        }
    }

    /// Parses a policy-file name back (the inverse of [`ClientArch::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        let known = [
            Self::Bios,
            Self::EfiIa32,
            Self::EfiX64,
            Self::EfiArm32,
            Self::EfiArm64,
            Self::EfiX64Http,
            Self::EfiArm64Http,
        ];
        known.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for ClientArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Which first-stage file each architecture is sent. Keys are arch names
/// ([`ClientArch::name`]); values are paths relative to the TFTP root (or, for HTTP-boot
/// arches, to the HTTP `/ipxe-bin/` route).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(transparent)]
pub struct BootFileTable(pub BTreeMap<String, String>);

impl Default for BootFileTable {
    fn default() -> Self {
        let map = [
            ("bios", "undionly.kpxe"),
            ("efi-x64", "ipxe.efi"),
            ("efi-x64-http", "ipxe.efi"),
            ("efi-ia32", "ipxe-ia32.efi"),
            ("efi-arm64", "ipxe-arm64.efi"),
            ("efi-arm64-http", "ipxe-arm64.efi"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self(map)
    }
}

impl BootFileTable {
    /// The file for `arch`, or `None` when the table has no entry (the client is then
    /// not answered, and the daemon logs why).
    pub fn file_for(&self, arch: ClientArch) -> Option<&str> {
        self.0.get(&arch.name()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_arches() {
        let table = [
            (0, ClientArch::Bios),
            (6, ClientArch::EfiIa32),
            (7, ClientArch::EfiX64),
            (9, ClientArch::EfiX64),
            (10, ClientArch::EfiArm32),
            (11, ClientArch::EfiArm64),
            (16, ClientArch::EfiX64Http),
            (19, ClientArch::EfiArm64Http),
            (42, ClientArch::Other(42)),
        ];
        for (code, arch) in table {
            assert_eq!(ClientArch::from_code(code), arch, "code {code}");
        }
    }

    #[test]
    fn vendor_class_fallback() {
        let check = |s: &str, want: Option<ClientArch>| {
            assert_eq!(ClientArch::from_vendor_class(s), want, "{s}")
        };
        check("PXEClient:Arch:00007:UNDI:003016", Some(ClientArch::EfiX64));
        check("PXEClient:Arch:00000:UNDI:002001", Some(ClientArch::Bios));
        check(
            "HTTPClient:Arch:00016:UNDI:003001",
            Some(ClientArch::EfiX64Http),
        );
        check("PXEClient", None);
        check("PXEClient:Arch:", None);
        check("PXEClient:Arch:9999999", None);
        check("MSFT 5.0", None);
    }

    #[test]
    fn names_round_trip() {
        for code in [0, 6, 7, 10, 11, 16, 19] {
            let arch = ClientArch::from_code(code);
            assert_eq!(ClientArch::from_name(&arch.name()), Some(arch));
        }
        assert_eq!(
            BootFileTable::default().file_for(ClientArch::Bios),
            Some("undionly.kpxe")
        );
        assert_eq!(
            BootFileTable::default().file_for(ClientArch::EfiX64),
            Some("ipxe.efi")
        );
        assert_eq!(
            BootFileTable::default().file_for(ClientArch::Other(99)),
            None
        );
    }
}
