//! The whole image boot through netbootd, by real clients: SeaBIOS/iPXE boots a kernel
//! image's `vmlinuz` with the real carte initramfs (`scripts/build-initramfs`) and the
//! version's modules cpio; carte-init fetches its plan with the boot token, fetches the
//! kernel's modules layer and a busybox system layer from `/boot/blobs/sha256/`, composes
//! the root and switches to it, and the target's init runs; the events reach netbootd.
//!
//! Skipped (with a message) when the static initramfs has not been built.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use imaged::access::Principal;
use imaged::build::{self, BuildOptions, BuiltLayer, KernelSource};
use imaged::model::{
    Artefact, ArtefactName, ImageKind, LayerFormat, LayerMeta, NewImage, NewVersion,
};
use imaged::store::{self, Store, StoreConfig};
use qemu_tests::{
    assets, busybox, host_kernel, policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec,
    Netbootd,
};

const MAC: &str = "52:54:00:c0:07:01";

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
    let (vmlinuz, release) = host_kernel::vmlinuz()?;

    let work = tempfile::tempdir()?;
    let modules_dir =
        host_kernel::module_subset(&release, work.path(), host_kernel::COMPOSE_MODULES)?;
    let k = build::kernel(
        &KernelSource::Installed {
            vmlinuz,
            modules_dir,
        },
        &BuildOptions::new(work.path().join("kernel")),
    )?;
    let root = work.path().join("root");
    busybox::root(&root)?;
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

    netbootd.write_policy("boot.toml", &policy::busybox_compose_for_everyone())?;
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
