//! An image setup booted by a real client (SeaBIOS with QEMU's iPXE ROM): a kernel version
//! pushed into the running netbootd's store, a live policy edit naming it `linux@latest`,
//! and the machine boots that version's `vmlinuz` from `/boot/blobs/sha256/` with the
//! "carte initramfs" (here the test initrd) and the modules cpio as initrds. The command
//! line it prints carries the boot token and the resolved version.

use std::fs::File;
use std::time::Duration;

use imaged::access::Principal;
use imaged::model::{ArtefactName, ImageKind, LayerFormat, LayerMeta, NewImage, NewVersion};
use imaged::store::{self, Store, StoreConfig};
use qemu_tests::BOOT_TIMEOUT;
use qemu_tests::{assets, policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

const MAC: &str = "52:54:00:c0:06:01";

#[test]
fn image_setup_boots_the_kernel_version_from_the_store() -> anyhow::Result<()> {
    if !prereq::ready("image_setup_boots_the_kernel_version_from_the_store") {
        return Ok(());
    }
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let mut netbootd = Netbootd::start(
        &lab,
        DhcpMode::Full,
        &[("boot.toml", &policy::builtin_for_everyone("wait"))],
    )?;
    let data = netbootd.data_dir();

    // Push the test kernel as linux@1 into the daemon's store (SQLite in WAL, shared).
    let store = Store::open(&data, store::no_references(), StoreConfig::default())?;
    let admin = Principal::local_admin();
    store.create_image(
        &admin,
        NewImage {
            name: "linux".into(),
            kind: ImageKind::Kernel,
            project: None,
            expires_at: None,
        },
    )?;
    let initrd = assets::initrd()?;
    let mut artefacts = std::collections::BTreeMap::new();
    for (name, path) in [
        (ArtefactName::Layer, initrd.clone()),
        (ArtefactName::Vmlinuz, assets::kernel()?),
        // Any newc cpio does for the modules initrd: the kernel unpacks both.
        (ArtefactName::Modules, initrd.clone()),
    ] {
        let a = store.upload_blob(&admin, "linux", &mut File::open(&path)?, None)?;
        artefacts.insert(name, a);
    }
    let mut layer = LayerMeta::plain(LayerFormat::Erofs);
    layer.kernel_release = Some("test".into());
    store.add_version(&admin, "linux", NewVersion { layer, artefacts })?;
    // The "carte initramfs" is whatever the data folder holds at its configured path.
    std::fs::create_dir_all(data.join("carte"))?;
    std::fs::copy(&initrd, data.join("carte/initramfs.cpio.zst"))?;

    netbootd.write_policy(
        "boot.toml",
        &format!(
            "[setup.lab]\nkernel = \"linux@latest\"\ncmdline = \"{} carte.test=image\"\n{}",
            policy::BASE_CMDLINE,
            policy::default_group("lab")
        ),
    )?;
    netbootd.wait_log(&["policy reloaded"], 1, Duration::from_secs(10))?;

    let mut m = Machine::pxe(
        &lab,
        &MachineSpec::pxe("image", Firmware::Bios, "tap0", MAC),
    )?;
    let cmdline = m.wait_cmdline(BOOT_TIMEOUT)?;
    for want in [
        "carte.test=image",
        "carte.kernel=linux@1",
        "carte.setup=lab",
        "carte.token=carte_",
        &format!("carte.mac={MAC}"),
    ] {
        assert!(
            cmdline.contains(want),
            "{want:?} missing from {cmdline:?}\nnetbootd log:\n{}",
            netbootd.log()
        );
    }
    netbootd.wait_log(&[MAC, "compose"], 1, Duration::from_secs(5))?;
    Ok(())
}
