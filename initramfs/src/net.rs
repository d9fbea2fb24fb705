//! Finding the boot NIC by its MAC in sysfs (path injected) and checking it is up.
//!
//! Bringing the link up and configuring the address (the iPXE lease from `ip=`, or DHCP)
//! via netlink is not implemented yet: an interface that is not already up stops the boot
//! with [`NetError::NotImplemented`], naming it. It sends nothing on the network.

use crate::cmdline::{IpConfig, Mac};
use std::fs;
use std::path::Path;

/// Network step failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetError {
    #[error("network: no interface has MAC {mac} (is its driver loaded?)")]
    NoInterface { mac: String },
    #[error(
        "network: {interface} is {state}; bringing it up with {config} via netlink is not \
         implemented yet"
    )]
    NotImplemented {
        interface: String,
        state: String,
        config: String,
    },
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

/// The boot NIC's name, once it is up.
pub fn check(sys_root: &Path, mac: Mac, ip: &IpConfig) -> Result<String, NetError> {
    let interface = find_interface(sys_root, mac).ok_or(NetError::NoInterface {
        mac: mac.to_string(),
    })?;
    let state = fs::read_to_string(
        sys_root
            .join("class/net")
            .join(&interface)
            .join("operstate"),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    if state == "up" {
        return Ok(interface);
    }
    let config = match ip {
        IpConfig::Static(l) => format!("{}/{}", l.address, l.prefix_len),
        IpConfig::Dhcp => "DHCP".to_string(),
    };
    Err(NetError::NotImplemented {
        interface,
        state,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(root: &Path, name: &str, mac: &str, state: &str) {
        let d = root.join("class/net").join(name);
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("address"), format!("{mac}\n")).expect("w");
        fs::write(d.join("operstate"), format!("{state}\n")).expect("w");
    }

    #[test]
    fn finds_the_nic_by_mac_and_reports_its_state() {
        let t = tempfile::tempdir().expect("tempdir");
        nic(t.path(), "lo", "00:00:00:00:00:00", "unknown");
        nic(t.path(), "eth0", "52:54:00:00:00:01", "down");
        nic(t.path(), "eth1", "52:54:00:00:00:02", "up");
        let mac = |s| Mac::parse(s).expect("mac");
        assert_eq!(
            check(t.path(), mac("52:54:00:00:00:02"), &IpConfig::Dhcp),
            Ok("eth1".into())
        );
        assert_eq!(
            check(t.path(), mac("52:54:00:00:00:01"), &IpConfig::Dhcp),
            Err(NetError::NotImplemented {
                interface: "eth0".into(),
                state: "down".into(),
                config: "DHCP".into()
            })
        );
        assert_eq!(
            check(t.path(), mac("52:54:00:00:00:09"), &IpConfig::Dhcp),
            Err(NetError::NoInterface {
                mac: "52:54:00:00:00:09".into()
            })
        );
    }
}
