//! Which QEMU accelerator to use: TCG unless a short probe proves KVM boots.
//!
//! Nested KVM on the CI hosts enters a reboot loop under iPXE and hangs Linux, so KVM is
//! trusted only after it boots the test kernel and initrd directly within 20 s. The
//! verdict is cached per process and in a file keyed by the host's boot id (so the five
//! test binaries of one run probe once). `CARTE_QEMU_ACCEL` overrides everything.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use crate::assets;
use crate::machine::{Firmware, Machine};

const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// `"kvm"` or `"tcg"` (or whatever `CARTE_QEMU_ACCEL` says).
pub fn accel() -> String {
    static VERDICT: OnceLock<String> = OnceLock::new();
    VERDICT.get_or_init(decide).clone()
}

fn decide() -> String {
    if let Ok(a) = std::env::var("CARTE_QEMU_ACCEL") {
        if !a.is_empty() {
            return a;
        }
    }
    if !Path::new("/dev/kvm").exists() {
        return "tcg".to_string();
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = assets::cache_dir().join(format!("accel-{}", boot_id.trim()));
    if let Ok(v) = std::fs::read_to_string(&cache) {
        let v = v.trim();
        if v == "kvm" || v == "tcg" {
            return v.to_string();
        }
    }
    let verdict = if kvm_boots() { "kvm" } else { "tcg" };
    eprintln!("qemu-tests: KVM probe says {verdict}");
    if let Some(parent) = cache.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let _ = std::fs::write(&cache, verdict);
    verdict.to_string()
}

/// Boots the test kernel and initrd under KVM and looks for the initrd's marker.
fn kvm_boots() -> bool {
    let (Ok(kernel), Ok(initrd)) = (assets::kernel(), assets::initrd()) else {
        return false;
    };
    let append = "console=ttyS0 quiet panic=-1 carte.probe=kvm";
    match Machine::direct("kvm-probe", Firmware::Bios, "kvm", &kernel, &initrd, append) {
        Ok(mut m) => m
            .expect("CARTE-CMDLINE: ", PROBE_TIMEOUT)
            .is_ok_and(|line| line.contains("carte.probe=kvm")),
        Err(_) => false,
    }
}
