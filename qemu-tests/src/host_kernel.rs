//! The host's Debian kernel as the input of a small kernel image: its `vmlinuz` and a
//! copy of a few of its modules (with their dependencies, `modules.dep` cut down to them,
//! and `modules.alias`), because the whole tree would be a 400 MB layer. The tests that
//! boot a composed busybox system and the flash benchmark build their kernel image from it.
//!
//! [`push_image`] builds and pushes that kernel image with the real `imaged` CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use imaged::build::modset;

use crate::{assets, proc};

/// What a virtio VM needs to reach the network and compose: the NIC, the PCI transport,
/// loop devices, overlayfs and erofs. erofs needs libcrc32c, which needs a crc32c (a soft
/// dependency, not in modules.dep). Globs as in `imaged`'s boot module table.
pub const COMPOSE_MODULES: &[&str] = &[
    "kernel/drivers/net/virtio_net.ko*",
    "kernel/drivers/net/net_failover.ko*",
    "kernel/net/core/failover.ko*",
    "kernel/drivers/virtio/virtio_pci.ko*",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko*",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko*",
    "kernel/drivers/block/loop.ko*",
    "kernel/fs/overlayfs/overlay.ko*",
    "kernel/fs/erofs/erofs.ko*",
    "kernel/lib/libcrc32c.ko*",
    "kernel/crypto/crc32c_generic.ko*",
    "kernel/arch/x86/crypto/crc32c-intel.ko*",
];

/// What a machine with a local disk needs on top: virtio disks and the ext4 of the
/// carte partition.
pub const DISK_MODULES: &[&str] = &[
    "kernel/drivers/block/virtio_blk.ko*",
    "kernel/fs/ext4/ext4.ko*",
];

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

/// Builds the kernel image `linux` from the host kernel and the modules matching
/// `wanted` with `imaged build kernel --push` into the store in `data` (work files go
/// below `work`).
pub fn push_image(work: &Path, data: &Path, wanted: &[&str]) -> anyhow::Result<()> {
    let (vmlinuz, release) = vmlinuz()?;
    let modules = module_subset(&release, &work.join("modules"), wanted)?;
    proc::run(
        Command::new(assets::imaged_bin()?)
            .args(["build", "kernel", "--vmlinuz"])
            .arg(&vmlinuz)
            .arg("--modules")
            .arg(&modules)
            .arg("--data")
            .arg(data)
            .arg("--out")
            .arg(work.join("kernel"))
            .args(["--push", "linux", "--kind", "kernel"]),
    )?;
    Ok(())
}

/// Copies the modules matching `wanted` (globs over `modules.dep` paths, see
/// [`modset`]) and their dependencies from `/lib/modules/<release>` into
/// `<out>/lib/modules/<release>`, which it returns.
pub fn module_subset(release: &str, out: &Path, wanted: &[&str]) -> anyhow::Result<PathBuf> {
    let src = Path::new("/lib/modules").join(release);
    let dst = out.join("lib/modules").join(release);
    std::fs::create_dir_all(&dst)?;
    std::fs::copy(src.join("modules.alias"), dst.join("modules.alias"))?;
    let dep = std::fs::read_to_string(src.join("modules.dep"))?;
    let kept = modset::select(&modset::parse_dep(&dep), wanted);
    for f in &kept {
        let to = dst.join(f);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(src.join(f), to)?;
    }
    // modules.dep lists only what is copied, so the builder picks from the subset.
    let subset: String = dep
        .lines()
        .filter(|l| l.split_once(':').is_some_and(|(m, _)| kept.contains(m)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dst.join("modules.dep"), subset)?;
    Ok(dst)
}
