//! The host's Debian kernel as the input of a small kernel image: its `vmlinuz` and a
//! copy of a few of its modules (with their dependencies, `modules.dep` cut down to them,
//! and `modules.alias`), because the whole tree would be a 400 MB layer. The tests that
//! boot a composed busybox system and the flash benchmark build their kernel image from it.
//!
//! It only copies files; building and pushing the image is the caller's business.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::assets;

/// What a virtio VM needs to reach the network and compose: the NIC, the PCI transport,
/// loop devices, overlayfs and erofs. erofs needs libcrc32c, which needs a crc32c (a soft
/// dependency, not in modules.dep).
pub const COMPOSE_MODULES: &[&str] = &[
    "drivers/net/virtio_net",
    "drivers/net/net_failover",
    "net/core/failover",
    "drivers/virtio/virtio_pci",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/block/loop",
    "fs/overlayfs/overlay",
    "fs/erofs/erofs",
    "lib/libcrc32c",
    "crypto/crc32c_generic",
    "arch/x86/crypto/crc32c-intel",
];

/// What a machine with a local disk needs on top: virtio disks and the ext4 of the
/// carte partition.
pub const DISK_MODULES: &[&str] = &["drivers/block/virtio_blk", "fs/ext4/ext4"];

/// The host kernel (`assets::kernel`) and its release, from the file name.
pub fn vmlinuz() -> anyhow::Result<(PathBuf, String)> {
    let vmlinuz = assets::kernel()?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or_else(|| anyhow::anyhow!("kernel {} is not vmlinuz-<release>", vmlinuz.display()))?
        .to_string();
    Ok((vmlinuz, release))
}

/// Copies the modules named by `wanted` (paths below `kernel/`, without `.ko*`) and
/// their dependencies from `/lib/modules/<release>` into `<out>/lib/modules/<release>`,
/// which it returns.
pub fn module_subset(release: &str, out: &Path, wanted: &[&str]) -> anyhow::Result<PathBuf> {
    let src = Path::new("/lib/modules").join(release);
    let dst = out.join("lib/modules").join(release);
    std::fs::create_dir_all(&dst)?;
    std::fs::copy(src.join("modules.alias"), dst.join("modules.alias"))?;
    let dep = std::fs::read_to_string(src.join("modules.dep"))?;
    // modules.dep lists only what is copied, so the builder picks from the subset.
    let mut kept = BTreeSet::new();
    for line in dep.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        let is_wanted = wanted.iter().any(|m| {
            module
                .strip_prefix("kernel/")
                .and_then(|p| p.strip_prefix(*m))
                .is_some_and(|rest| rest.starts_with(".ko"))
        });
        if !is_wanted {
            continue;
        }
        for f in std::iter::once(module).chain(deps.split_whitespace()) {
            let to = dst.join(f);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(src.join(f), to)?;
            kept.insert(f.to_string());
        }
    }
    let subset: String = dep
        .lines()
        .filter(|l| l.split_once(':').is_some_and(|(m, _)| kept.contains(m)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dst.join("modules.dep"), subset)?;
    Ok(dst)
}
