//! The whole image boot through netbootd, by real clients: SeaBIOS/iPXE boots a kernel
//! image's `vmlinuz` with the real carte initramfs (`scripts/build-initramfs`) and the
//! version's modules cpio; carte-init fetches its plan with the boot token, fetches the
//! kernel's modules layer and a busybox system layer from `/boot/blobs/sha256/`, composes
//! the root and switches to it, and the target's init runs; the events reach netbootd.
//!
//! Skipped (with a message) when the static initramfs has not been built.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imaged::access::Principal;
use imaged::build::{self, BuildOptions, BuiltLayer, KernelSource};
use imaged::model::{
    Artefact, ArtefactName, ImageKind, LayerFormat, LayerMeta, NewImage, NewVersion,
};
use imaged::store::{self, Store, StoreConfig};
use qemu_tests::{assets, policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

const MAC: &str = "52:54:00:c0:07:01";

/// The few modules a virtio VM needs to compose, copied with modules.dep and
/// modules.alias from the host's tree (the whole tree would be a 400 MB layer).
const MODULES: &[&str] = &[
    "drivers/net/virtio_net",
    "drivers/net/net_failover",
    "net/core/failover",
    "drivers/virtio/virtio_pci",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/block/loop",
    "fs/overlayfs/overlay",
    "fs/erofs/erofs",
    // erofs needs libcrc32c, which needs a crc32c (a soft dependency, not in modules.dep).
    "lib/libcrc32c",
    "crypto/crc32c_generic",
    "arch/x86/crypto/crc32c-intel",
];

fn module_subset(release: &str, out: &Path) -> anyhow::Result<PathBuf> {
    let src = Path::new("/lib/modules").join(release);
    let dst = out.join("lib/modules").join(release);
    std::fs::create_dir_all(&dst)?;
    std::fs::copy(src.join("modules.alias"), dst.join("modules.alias"))?;
    let dep = std::fs::read_to_string(src.join("modules.dep"))?;
    // modules.dep lists only what is copied, so the builder picks from the subset.
    let mut kept = std::collections::BTreeSet::new();
    for line in dep.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        let wanted = MODULES.iter().any(|m| {
            module
                .strip_prefix("kernel/")
                .and_then(|p| p.strip_prefix(*m))
                .is_some_and(|rest| rest.starts_with(".ko"))
        });
        if !wanted {
            continue;
        }
        for f in std::iter::once(module).chain(deps.split_whitespace()) {
            let to = dst.join(f);
            std::fs::create_dir_all(to.parent().expect("module dir"))?;
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

/// A root with busybox and an init that says it runs, then powers off.
fn busybox_root(root: &Path) -> anyhow::Result<()> {
    for d in ["bin", "sbin", "proc", "sys", "dev", "run", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    let init = root.join("sbin/init");
    std::fs::write(
        &init,
        "#!/bin/sh\n/bin/busybox echo \"TARGET INIT RUNNING as pid $$\"\n\
         /bin/busybox sleep 5\n/bin/busybox poweroff -f\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn upload(store: &Store, image: &str, l: &BuiltLayer) -> anyhow::Result<Artefact> {
    let admin = Principal::local_admin();
    Ok(store.upload_blob(&admin, image, &mut File::open(&l.path)?, None)?)
}

fn create(store: &Store, name: &str, kind: ImageKind) -> anyhow::Result<()> {
    store.create_image(
        &Principal::local_admin(),
        NewImage {
            name: name.into(),
            kind,
            project: None,
            expires_at: None,
        },
    )?;
    Ok(())
}

#[test]
fn an_image_setup_composes_and_runs_the_target_init() -> anyhow::Result<()> {
    if !prereq::ready("an_image_setup_composes_and_runs_the_target_init") {
        return Ok(());
    }
    let initramfs = assets::workspace_root().join("target-static/carte-initramfs.cpio.zst");
    if !initramfs.is_file() || !Path::new("/bin/busybox").is_file() {
        eprintln!(
            "skip an_image_setup_composes_and_runs_the_target_init: needs {} \
             (scripts/build-initramfs) and /bin/busybox",
            initramfs.display()
        );
        return Ok(());
    }
    let vmlinuz = assets::kernel()?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or_else(|| anyhow::anyhow!("kernel {} is not vmlinuz-<release>", vmlinuz.display()))?
        .to_string();

    let work = tempfile::tempdir()?;
    let modules_dir = module_subset(&release, work.path())?;
    let k = build::kernel(
        &KernelSource::Installed {
            vmlinuz,
            modules_dir,
        },
        &BuildOptions::new(work.path().join("kernel")),
    )?;
    let root = work.path().join("root");
    busybox_root(&root)?;
    let sys = build::from_dir(&root, &BuildOptions::new(work.path().join("sys")))?;

    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let mut netbootd = Netbootd::start(
        &lab,
        DhcpMode::Full,
        &[("boot.toml", &policy::builtin_for_everyone("wait"))],
    )?;
    let data = netbootd.data_dir();
    let store = Store::open(&data, store::no_references(), StoreConfig::default())?;
    let admin = Principal::local_admin();
    create(&store, "linux", ImageKind::Kernel)?;
    let artefacts = [
        (
            ArtefactName::Layer,
            upload(&store, "linux", &k.modules_layer)?,
        ),
        (ArtefactName::Vmlinuz, upload(&store, "linux", &k.vmlinuz)?),
        (
            ArtefactName::Modules,
            upload(&store, "linux", &k.modules_cpio)?,
        ),
    ]
    .into();
    let mut layer = LayerMeta::plain(LayerFormat::Erofs);
    layer.kernel_release = Some(k.release.clone());
    store.add_version(&admin, "linux", NewVersion { layer, artefacts })?;
    create(&store, "bb", ImageKind::System)?;
    let artefacts = [(ArtefactName::Layer, upload(&store, "bb", &sys)?)].into();
    store.add_version(
        &admin,
        "bb",
        NewVersion {
            layer: LayerMeta::plain(LayerFormat::Erofs),
            artefacts,
        },
    )?;
    std::fs::create_dir_all(data.join("carte"))?;
    std::fs::copy(&initramfs, data.join("carte/initramfs.cpio.zst"))?;

    netbootd.write_policy(
        "boot.toml",
        &format!(
            "[setup.lab]\nkernel = \"linux@latest\"\nlayers = [\"bb@1\"]\n\
             machine = \"ephemeral\"\ndisk = \"none\"\ncmdline = \"{}\"\n{}",
            policy::BASE_CMDLINE,
            policy::default_group("lab")
        ),
    )?;
    netbootd.wait_log(&["policy reloaded"], 1, Duration::from_secs(10))?;

    let mut m = Machine::pxe(
        &lab,
        &MachineSpec::pxe("compose", Firmware::Bios, "tap0", MAC),
    )?;
    let got = m.expect_any(
        &["TARGET INIT RUNNING as pid 1", "Kernel panic"],
        Duration::from_secs(300),
    );
    let console = m.console_text();
    let (which, _) = got.map_err(|e| {
        anyhow::anyhow!(
            "{e}\nconsole:\n{console}\nnetbootd log:\n{}",
            netbootd.log()
        )
    })?;
    assert_eq!(
        which,
        0,
        "the target init did not run:\n{console}\nnetbootd log:\n{}",
        netbootd.log()
    );
    netbootd.wait_log(&[MAC, "plan served"], 1, Duration::from_secs(5))?;
    netbootd.wait_log(&[MAC, "machine event"], 1, Duration::from_secs(5))?;
    Ok(())
}
