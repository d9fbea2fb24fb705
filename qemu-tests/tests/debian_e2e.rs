//! The product end to end: QEMU machines PXE-boot (real firmware, real iPXE) from netbootd
//! into a real Debian bookworm that carte-init composes from layers built by
//! `scripts/images` and `imaged build`: the Debian kernel's modules layer, two system
//! layers, a user layer, and a persistent machine layer on the machine's own disk.
//!
//! Each boot is judged by what the booted system prints (`carte-report.service`, after
//! `multi-user.target`), by netbootd's transfer totals (bytes sent per blob) and by QEMU's
//! disk write counter.
//!
//! The layers are built once per test process (`qemu_tests::debian::seed`); the trees are
//! cached by recipe hash under `.cache/images`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use qemu_tests::debian::{self, Boot, Seed, CMDLINE};
use qemu_tests::{policy, prereq, DhcpMode, Firmware, Lab, MachineSpec, Netbootd};

/// What a warm boot may write to the disk: the machine layer's own changes (machine-id,
/// the report's boot list, systemd's state), nothing layer-sized.
const WARM_WRITE_LIMIT: u64 = 32 << 20;

fn make_disk(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(4 << 30)?;
    Ok(disk)
}

fn boot(lab: &Lab, spec: &MachineSpec, nb: &Netbootd) -> anyhow::Result<Boot> {
    Ok(debian::boot(lab, spec, nb)?)
}

fn sent(nb: &Netbootd, lab: &Lab, token: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(nb.sent_bytes(lab, token)?)
}

/// Bytes of `digest` sent between two snapshots.
fn moved(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, digest: &str) -> u64 {
    after.get(digest).copied().unwrap_or(0) - before.get(digest).copied().unwrap_or(0)
}

fn moved_total(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> u64 {
    after.keys().map(|d| moved(before, after, d)).sum()
}

/// The checks every composed boot passes: what it runs and that each layer is there.
fn assert_composed(b: &Boot, release: &str) {
    let ctx = || {
        format!(
            "report:\n{}\nconsole tail:\n{}",
            b.report.join("\n"),
            tail(&b.console)
        )
    };
    assert_eq!(b.value("kernel="), Some(release), "{}", ctx());
    assert_eq!(
        b.value("pretty_name="),
        Some("Debian GNU/Linux 12 (bookworm)"),
        "{}",
        ctx()
    );
    let root = b.value("root=").unwrap_or_default();
    assert!(
        root.starts_with("overlay "),
        "/ is not an overlay: {}",
        ctx()
    );
    // Four read-only lowers: the kernel's modules on top, then user, extras, base.
    let lowers = root
        .split(',')
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap_or_default();
    assert_eq!(lowers.split(':').count(), 4, "lowers {lowers}: {}", ctx());
    assert!(
        root.contains("upperdir=/carte/cache/machine/"),
        "the upper is not the persistent machine layer: {}",
        ctx()
    );
    for line in [
        format!("modules /lib/modules/{release} present"),
        "layer-file /etc/carte/layer-base carte layer debian-base".to_string(),
        "layer-file /etc/carte/layer-extras carte layer carte-extras".to_string(),
        "layer-file /.carte-layer-user carte layer user-home mounted at /".to_string(),
        "layer-file /home/alice/hello.txt hello from alice's carte user layer".to_string(),
    ] {
        assert!(b.report.contains(&line), "missing {line:?}: {}", ctx());
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn layer(seed: &Seed, image: &str) -> anyhow::Result<debian::Blob> {
    seed.versions
        .get(image)
        .and_then(|m| m.get("layer"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the seed store has no layer for {image}"))
}

/// The seed store, a lab with `tap0`, and netbootd giving every machine the Debian setup
/// with `linux@1`.
fn debian_lab() -> anyhow::Result<(&'static Seed, Lab, Netbootd)> {
    let seed = debian::seed().map_err(anyhow::Error::msg)?;
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let nb = start(&lab, seed, "linux@1")?;
    Ok((seed, lab, nb))
}

/// A SeaBIOS machine on `tap0` with 1 GiB and a blank disk in `dir`, paused when it
/// powers off.
fn debian_machine(name: &str, mac: &str, dir: &Path) -> anyhow::Result<MachineSpec> {
    Ok(MachineSpec {
        memory_mb: 1024,
        disk: Some(make_disk(dir)?),
        pause_on_poweroff: true,
        ..MachineSpec::pxe(name, Firmware::Bios, "tap0", mac)
    })
}

fn start(lab: &Lab, seed: &Seed, kernel: &str) -> anyhow::Result<Netbootd> {
    let policy = format!(
        "{}\n{}",
        debian::setup("debian", kernel, CMDLINE),
        policy::default_group("debian")
    );
    Ok(Netbootd::start_seeded(
        lab,
        DhcpMode::Full,
        &[("boot.toml", &policy)],
        Some(&seed.dir),
    )?)
}

/// Issue 5, tests 1, 3, 4, 5 and 7 on one SeaBIOS machine: a cold boot reaches
/// multi-user with every layer and writes a file under /var; the same setup again moves no
/// layer byte and rewrites no layer, the file is still there, and the first boot's machine
/// layer was synced back as a version of the machine image; a policy edit that changes
/// only the kernel moves only that kernel; a lazy project layer is mounted after init
/// starts and its autostart's output reaches netbootd; on a new blank disk the machine
/// layer comes back from the server. Along the way a writable user layer (alice-notes at
/// /srv/notes, written by the report at every boot) is synced back at each next boot as
/// a version of changes on top of the version mounted, and comes back on the new disk.
#[test]
fn debian_cold_warm_kernel_change_and_lazy_project() -> anyhow::Result<()> {
    if !prereq::ready("debian_cold_warm_kernel_change_and_lazy_project") {
        return Ok(());
    }
    let (seed, lab, mut nb) = debian_lab()?;
    let token = nb.admin_token()?;
    let dir = tempfile::tempdir()?;
    let spec = debian_machine("debian-bios", "52:54:00:de:b1:01", dir.path())?;
    let system = [
        layer(seed, "debian@1")?,
        layer(seed, "extras@1")?,
        layer(seed, "alice-home@1")?,
    ];
    let modules1 = layer(seed, "linux@1")?;

    // 1. Cold boot: a blank disk, every layer fetched, composed, systemd reaches
    //    multi-user, and the report's boot id is written under /var.
    let s0 = sent(&nb, &lab, &token)?;
    let cold = boot(&lab, &spec, &nb)?;
    assert_composed(&cold, &seed.release1);
    assert!(
        cold.console
            .contains("carte filesystem /dev/vda1 created (the disk held nothing (blank))"),
        "the blank disk was not initialised:\n{}",
        tail(&cold.console)
    );
    assert_eq!(cold.persisted_boots().len(), 1, "{:?}", cold.report);
    assert_eq!(
        cold.noted_boots(),
        cold.persisted_boots(),
        "the writable user layer was not written: {:?}",
        cold.report
    );
    let s1 = sent(&nb, &lab, &token)?;
    for l in system.iter().chain([&modules1]) {
        assert!(
            moved(&s0, &s1, &l.sha256) >= l.size,
            "layer {} ({} bytes) was not fetched on the cold boot",
            l.sha256,
            l.size
        );
    }
    let machines = nb.machines_table(&lab, &token)?;
    assert!(machines.contains("booted"), "{machines}");
    eprintln!(
        "cold boot: {:.0} s, {} bytes of blobs sent, {} bytes written to disk\n{machines}",
        cold.secs(),
        moved_total(&s0, &s1),
        cold.disk_writes
    );

    // 3. Warm boot, same setup: nothing layer-sized moves or is written; the file from
    //    the first boot is still there.
    let warm = boot(&lab, &spec, &nb)?;
    assert_composed(&warm, &seed.release1);
    let boots = warm.persisted_boots();
    assert_eq!(boots.len(), 2, "{:?}", warm.report);
    assert_eq!(
        boots[0],
        cold.persisted_boots()[0],
        "the machine layer was not kept"
    );
    let s2 = sent(&nb, &lab, &token)?;
    for l in system.iter().chain([&modules1]) {
        assert_eq!(
            moved(&s1, &s2, &l.sha256),
            0,
            "layer {} moved again",
            l.sha256
        );
    }
    assert!(
        warm.disk_writes < WARM_WRITE_LIMIT,
        "the warm boot wrote {} bytes to disk (limit {WARM_WRITE_LIMIT})",
        warm.disk_writes
    );
    // 5. Sync-back: before composing, the warm boot uploaded the first boot's machine
    //    layer as version 1 of the machine's image; its tar holds the first boot's id.
    let synced = machine_version_tar(&nb, "52-54-00-de-b1-01", 1)?;
    let boots = tar_file(&synced, "var/lib/carte-test/boots")?;
    assert!(
        boots.contains(cold.persisted_boots()[0]),
        "the synced machine layer lacks the first boot's file: {boots:?}"
    );
    // The writable user layer went back too: version 2 of alice-notes is a tar of its
    // upper, on top of version 1 (the one mounted), holding what the cold boot wrote.
    let (v2, notes_tar) = image_version(&nb, debian::NOTES, 2)?;
    assert_eq!(v2["layer"]["format"], "tar", "{v2}");
    assert_eq!(v2["layer"]["base"], 1, "{v2}");
    let noted = tar_file(&notes_tar, "boots")?;
    assert!(
        noted.contains(cold.persisted_boots()[0]),
        "the synced notes lack the cold boot's line: {noted:?}"
    );
    assert_eq!(
        warm.noted_boots(),
        warm.persisted_boots(),
        "the notes layer's upper was not kept on the disk: {:?}",
        warm.report
    );
    eprintln!("{}", nb.machines_table(&lab, &token)?);
    eprintln!(
        "warm boot: {:.0} s, {} bytes of blobs sent (vmlinuz and modules cpio for iPXE), \
         {} bytes written to disk",
        warm.secs(),
        moved_total(&s1, &s2),
        warm.disk_writes
    );

    // 4. Only the kernel changes (linux@1 -> linux@2, another release): only its
    //    artefacts move, at most 1.05 x their size, and no system layer is rewritten.
    nb.write_policy(
        "boot.toml",
        &format!(
            "{}\n{}",
            debian::setup("debian", "linux@2", CMDLINE),
            policy::default_group("debian")
        ),
    )?;
    nb.wait_log(&["policy reloaded"], 1, Duration::from_secs(20))?;
    let changed = boot(&lab, &spec, &nb)?;
    assert_composed(&changed, &seed.release2);
    assert_eq!(changed.persisted_boots().len(), 3, "{:?}", changed.report);
    // alice-notes@latest is now changes (version 2): the plan mounts version 1 and this
    // disk's own upper for the layer wins over the server's copy.
    assert_eq!(
        changed.noted_boots(),
        changed.persisted_boots(),
        "{:?}",
        changed.report
    );
    let s3 = sent(&nb, &lab, &token)?;
    let kernel2: u64 = seed.blobs("linux@2").iter().map(|b| b.size).sum();
    let total = moved_total(&s2, &s3);
    assert!(
        total as f64 <= 1.05 * kernel2 as f64,
        "the kernel change moved {total} bytes; linux@2's artefacts are {kernel2}"
    );
    for b in seed.blobs("linux@2") {
        assert!(
            moved(&s2, &s3, &b.sha256) >= b.size,
            "{} not sent",
            b.sha256
        );
    }
    for l in &system {
        assert_eq!(moved(&s2, &s3, &l.sha256), 0, "layer {} moved", l.sha256);
    }
    let modules2 = layer(seed, "linux@2")?;
    assert!(
        changed.disk_writes < modules2.size + WARM_WRITE_LIMIT,
        "the kernel change wrote {} bytes; its modules layer is {}",
        changed.disk_writes,
        modules2.size
    );
    eprintln!(
        "kernel change: {:.0} s, {total} bytes of blobs sent (linux@2 is {kernel2}), {} bytes \
         written to disk",
        changed.secs(),
        changed.disk_writes
    );

    // 7. A lazy project layer: carte-shim fetches and mounts it after the real init has
    //    started, then runs its autostart, whose output reaches netbootd.
    nb.write_policy(
        "boot.toml",
        &format!(
            "{}\n{}",
            debian::setup_with_project("debian", "linux@2", CMDLINE),
            policy::default_group("debian")
        ),
    )?;
    nb.wait_log(&["policy reloaded"], 2, Duration::from_secs(20))?;
    let lazy = boot(&lab, &spec, &nb)?;
    assert_composed(&lazy, &seed.release2);
    let said = format!(
        "autostart says: {} on {}",
        debian::PROJECT_FILE_TEXT,
        seed.release2
    );
    let lines = nb.wait_log(&["stage=Autostart", &said], 1, Duration::from_secs(30))?;
    let booted = nb.wait_log(&["stage=Booted"], 1, Duration::from_secs(5))?;
    assert!(
        booted.last() > lines.first(),
        "booted was posted before the autostart ran"
    );
    // The lazy layer came after the plan's boot layers: carte-init did not fetch it.
    assert!(
        !lazy.console.contains("carte-init: Fetch: exp@1"),
        "carte-init fetched the lazy layer itself:\n{}",
        tail(&lazy.console)
    );
    let project = layer(seed, "exp@1")?;
    let s4 = sent(&nb, &lab, &token)?;
    assert!(moved(&s3, &s4, &project.sha256) >= project.size);
    eprintln!(
        "lazy project layer: {:.0} s, autostart: {}",
        lazy.secs(),
        lines[0]
    );

    // 5, second half: the same machine on a new, blank disk gets its machine layer back
    //    from the server (the version the last boot synced), so the first boot's file is
    //    there again.
    let fresh = tempfile::tempdir()?;
    let moved_disk = MachineSpec {
        disk: Some(make_disk(fresh.path())?),
        ..spec.clone()
    };
    let restored = boot(&lab, &moved_disk, &nb)?;
    assert_composed(&restored, &seed.release2);
    assert!(
        restored
            .console
            .contains("machine layer restored from machine-52-54-00-de-b1-01@"),
        "{}",
        tail(&restored.console)
    );
    let boots = restored.persisted_boots();
    assert_eq!(
        boots.first(),
        cold.persisted_boots().first(),
        "the first boot's file did not come back: {:?}",
        restored.report
    );
    // Boots 1-3 were synced back (each by the boot after it); boot 4's changes stay on
    // the old disk, which no boot read again. Plus this boot.
    assert_eq!(boots.len(), 4, "{boots:?}");
    // The notes layer too: alice-notes@latest (version 4, the lazy boot's sync of boots
    // 1-3) was unpacked into the new disk's upper for that layer, under version 1.
    assert!(
        restored
            .console
            .contains("layer alice-notes restored from alice-notes@4"),
        "{}",
        tail(&restored.console)
    );
    let noted = restored.noted_boots();
    assert_eq!(
        noted.first(),
        cold.persisted_boots().first(),
        "the cold boot's line did not come back at {}: {:?}",
        debian::NOTES_MOUNT,
        restored.report
    );
    assert_eq!(noted, boots, "{:?}", restored.report);
    Ok(())
}

/// Issue 5, test 2: the same setup through OVMF's own UEFI PXE (DHCP arch 7, TFTP of
/// ipxe.efi, then iPXE over HTTP), cold, onto a blank disk.
#[test]
fn debian_cold_boot_under_ovmf() -> anyhow::Result<()> {
    if !prereq::ready("debian_cold_boot_under_ovmf") {
        return Ok(());
    }
    let (seed, lab, nb) = debian_lab()?;
    let dir = tempfile::tempdir()?;
    let spec = MachineSpec {
        nic_rom: false,
        firmware: Firmware::Ovmf,
        ..debian_machine("debian-ovmf", "52:54:00:de:e1:01", dir.path())?
    };
    let cold = boot(&lab, &spec, &nb)?;
    assert_composed(&cold, &seed.release1);
    assert_eq!(cold.persisted_boots().len(), 1, "{:?}", cold.report);
    eprintln!("OVMF cold boot: {:.0} s", cold.secs());
    Ok(())
}

/// Issue 5, test 6: disk mode. A setup with `flash` makes carte-init write a small
/// bootable whole-disk image (syslinux, a kernel and the test initrd, made by
/// `scripts/make-boot-disk`) onto the machine's blank disk and reboot; netbootd then
/// answers `local` for that machine, and SeaBIOS boots the flashed disk.
#[test]
fn disk_mode_flashes_an_image_then_the_machine_boots_it_locally() -> anyhow::Result<()> {
    if !prereq::ready("disk_mode_flashes_an_image_then_the_machine_boots_it_locally") {
        return Ok(());
    }
    let seed = debian::seed().map_err(anyhow::Error::msg)?;
    let work = tempfile::tempdir()?;
    let image = work.path().join("appliance.img");
    let mut make = std::process::Command::new(
        qemu_tests::assets::workspace_root().join("scripts/make-boot-disk"),
    );
    make.arg(&image)
        .arg(qemu_tests::assets::kernel()?)
        .arg(qemu_tests::assets::initrd()?);
    let out = make.output()?;
    anyhow::ensure!(
        out.status.success(),
        "make-boot-disk: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let mut nb = Netbootd::start_seeded(
        &lab,
        DhcpMode::Full,
        &[("boot.toml", &policy::builtin_for_everyone("wait"))],
        Some(&seed.dir),
    )?;
    let mut push = std::process::Command::new(qemu_tests::assets::imaged_bin()?);
    push.args(["build", "raw"])
        .arg(&image)
        .arg("--out")
        .arg(work.path().join("built"))
        .args(["--push", "appliance", "--kind", "system", "--data"])
        .arg(nb.data_dir());
    let out = push.output()?;
    anyhow::ensure!(
        out.status.success(),
        "imaged build raw: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    nb.write_policy(
        "boot.toml",
        &format!(
            "[setup.appliance]\nkernel = \"linux@1\"\nflash = \"appliance@1\"\n\
             cmdline = \"console=ttyS0 quiet\"\ndisk = \"largest\"\n\n{}",
            policy::default_group("appliance")
        ),
    )?;
    nb.wait_log(&["policy reloaded"], 1, Duration::from_secs(20))?;

    let spec = MachineSpec {
        disk: Some(make_disk(work.path())?),
        ..MachineSpec::pxe("flash", Firmware::Bios, "tap0", "52:54:00:de:f1:01")
    };
    // Boot 1: carte-init flashes the image and reboots (-no-reboot: QEMU exits).
    let mut m = qemu_tests::Machine::pxe(&lab, &spec)?;
    let flashed = m.expect("Flashed: appliance@1", debian::BOOT_TIMEOUT);
    let console = m.console_text();
    let line = flashed.map_err(|e| anyhow::anyhow!("{e}\n{console}\n{}", nb.log()))?;
    assert!(line.contains("rebooting"), "{line}");
    m.wait_exit(Duration::from_secs(120))?;
    drop(m);
    nb.wait_log(&["stage=Flashed"], 1, Duration::from_secs(5))?;

    // Boot 2: the same machine is told to boot its disk, which is the flashed image.
    let mut m = qemu_tests::Machine::pxe(&lab, &spec)?;
    let got = m.wait_cmdline(debian::BOOT_TIMEOUT);
    let console = m.console_text();
    let cmdline = got.map_err(|e| anyhow::anyhow!("{e}\n{console}\n{}", nb.log()))?;
    assert!(
        cmdline.contains("carte.test=flashed-disk"),
        "not the flashed disk's command line: {cmdline}"
    );
    nb.wait_log(
        &[
            "52:54:00:de:f1:01",
            "image already flashed: answering local",
        ],
        1,
        Duration::from_secs(5),
    )?;
    Ok(())
}

/// Issue 4: a machine killed in the middle of a layer download (power cut) and booted
/// again fetches that layer again and never mounts a partial one: the second boot reaches
/// multi-user with every layer whole.
#[test]
fn a_machine_killed_mid_download_fetches_again_and_boots() -> anyhow::Result<()> {
    if !prereq::ready("a_machine_killed_mid_download_fetches_again_and_boots") {
        return Ok(());
    }
    let (seed, lab, nb) = debian_lab()?;
    let dir = tempfile::tempdir()?;
    let spec = debian_machine("debian-cut", "52:54:00:de:c7:01", dir.path())?;
    let mut m = qemu_tests::Machine::pxe(&lab, &spec)?;
    // Cut the power at the first progress line of a layer that is not complete yet.
    let cut = loop {
        let got = m.expect("carte-init: Fetch: ", debian::BOOT_TIMEOUT);
        let line = got.map_err(|e| anyhow::anyhow!("{e}\n{}", nb.log()))?;
        if let Some((layer, done, total)) = progress(&line) {
            if done < total {
                break layer;
            }
        }
    };
    drop(m); // SIGKILL, mid-download.

    let again = boot(&lab, &spec, &nb)?;
    assert_composed(&again, &seed.release1);
    assert!(
        again
            .console
            .contains(&format!("carte-init: Fetch: {cut}: ")),
        "{cut}, cut mid-download, was not fetched again:\n{}",
        tail(&again.console)
    );
    assert_eq!(again.persisted_boots().len(), 1, "{:?}", again.report);
    Ok(())
}

/// `(layer, done MB, total MB)` of a carte-init progress line such as
/// `carte-init: Fetch: linux@1: 59.0/159.7 MB, 19.4 MB/s, ETA 5s`.
fn progress(line: &str) -> Option<(String, f64, f64)> {
    let rest = line.split_once("carte-init: Fetch: ")?.1;
    let (layer, rest) = rest.split_once(": ")?;
    let (done, rest) = rest.split_once('/')?;
    let total = rest.split_whitespace().next()?;
    Some((layer.to_string(), done.parse().ok()?, total.parse().ok()?))
}

#[test]
fn progress_lines_are_read() {
    assert_eq!(
        progress("carte-init: Fetch: linux@1: 59.0/159.7 MB, 19.4 MB/s, ETA 5s"),
        Some(("linux@1".to_string(), 59.0, 159.7))
    );
    assert_eq!(progress("carte-init: Fetch: linux@1: starting"), None);
}

/// Issue 4: a layer corrupted on the server (same size, other bytes) is refused by
/// carte-init with a clear console message and an error event, never mounted; once the
/// blob is whole again the machine fetches it and boots.
#[test]
fn a_corrupt_layer_on_the_server_is_refused_then_fetched_whole() -> anyhow::Result<()> {
    if !prereq::ready("a_corrupt_layer_on_the_server_is_refused_then_fetched_whole") {
        return Ok(());
    }
    let (seed, lab, mut nb) = debian_lab()?;
    let base = layer(seed, "debian@1")?;
    let blob = nb
        .data_dir()
        .join("blobs/sha256")
        .join(&base.sha256[..2])
        .join(&base.sha256);
    let good = std::fs::read(&blob)?;
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle..middle + 16].copy_from_slice(b"carte: corrupted");
    std::fs::write(&blob, &bad)?;

    let dir = tempfile::tempdir()?;
    let spec = debian_machine("debian-corrupt", "52:54:00:de:c0:01", dir.path())?;
    let mut m = qemu_tests::Machine::pxe(&lab, &spec)?;
    const REFUSAL: &str = "sha256 of the bytes received is";
    let got = m.expect(REFUSAL, debian::BOOT_TIMEOUT);
    let console = m.console_text();
    let refused = got.map_err(|e| anyhow::anyhow!("{e}\n{console}\n{}", nb.log()))?;
    assert!(
        refused.contains("error") && refused.contains("debian@1"),
        "{refused}"
    );
    std::fs::write(&blob, &good)?;
    nb.wait_log(
        &["stage=Fetch", "debian@1", REFUSAL],
        1,
        Duration::from_secs(10),
    )?;

    let got = m.expect_any(
        &["CARTE-REPORT multi-user reached", "Kernel panic"],
        debian::BOOT_TIMEOUT,
    );
    let console = m.console_text();
    let (which, _) = got.map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&console)))?;
    assert_eq!(which, 0, "{}", tail(&console));
    let before_refusal = console.split(REFUSAL).next().unwrap_or_default();
    assert!(
        !before_refusal.contains("carte-init: Compose"),
        "composed before the corrupt layer was refused"
    );
    let report = debian::report(&console);
    assert!(
        report
            .iter()
            .any(|l| l == "layer-file /etc/carte/layer-base carte layer debian-base"),
        "{report:?}"
    );
    Ok(())
}

/// Issue 4: a disk that holds a foreign partition table is never written when the policy
/// does not say `wipe = true`: carte-init says so on the console and the disk's bytes stay
/// the same. Once the policy says `wipe = true`, the same disk is re-partitioned and the
/// machine boots from it.
#[test]
fn a_disk_with_foreign_data_is_left_alone() -> anyhow::Result<()> {
    if !prereq::ready("a_disk_with_foreign_data_is_left_alone") {
        return Ok(());
    }
    let (seed, lab, mut nb) = debian_lab()?;
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path())?;
    let mut sfdisk = std::process::Command::new("sfdisk");
    sfdisk
        .args(["-q"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped());
    let mut child = sfdisk.spawn()?;
    {
        use std::io::Write;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("sfdisk stdin"))?;
        stdin.write_all(b"label: dos\nstart=2048, type=83\n")?;
    }
    anyhow::ensure!(child.wait()?.success(), "sfdisk failed");
    let ends_before = ends(&disk)?;

    let spec = MachineSpec {
        memory_mb: 1024,
        disk: Some(disk.clone()),
        ..MachineSpec::pxe(
            "debian-foreign",
            Firmware::Bios,
            "tap0",
            "52:54:00:de:f0:01",
        )
    };
    let mut m = qemu_tests::Machine::pxe(&lab, &spec)?;
    let got = m.expect("it is left untouched", debian::BOOT_TIMEOUT);
    let console = m.console_text();
    got.map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", tail(&console), nb.log()))?;
    drop(m);
    assert!(
        ends(&disk)? == ends_before,
        "the foreign disk's first or last MiB changed"
    );

    // The same disk once the policy says `wipe = true`: carte-init re-partitions it, and
    // the machine boots the composed Debian from it.
    nb.write_policy(
        "boot.toml",
        &format!(
            "{}wipe    = true\n{}",
            debian::setup("debian", "linux@1", CMDLINE),
            policy::default_group("debian")
        ),
    )?;
    nb.wait_log(&["policy reloaded"], 1, std::time::Duration::from_secs(10))?;
    let spec = MachineSpec {
        pause_on_poweroff: true,
        ..spec
    };
    let b = boot(&lab, &spec, &nb)?;
    assert!(
        b.console
            .contains("carte filesystem /dev/vda1 created (the disk held an MBR"),
        "the foreign disk was not re-initialised:\n{}",
        tail(&b.console)
    );
    assert_composed(&b, &seed.release1);
    let (first, _, _) = ends(&disk)?;
    assert_eq!(
        &first[510..512],
        &[0x55, 0xaa],
        "no protective MBR after the wipe"
    );
    assert_eq!(
        &first[512..520],
        b"EFI PART",
        "no GPT header after the wipe"
    );
    Ok(())
}

/// The first and the last MiB of a disk image (where a partition table, its GPT backup
/// and a filesystem's superblock would go), and its size.
fn ends(path: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>, u64)> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let (mut first, mut last) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    f.read_exact_at(&mut first, 0)?;
    f.read_exact_at(&mut last, size - (1 << 20))?;
    Ok((first, last, size))
}

/// The blob of version `n` of the machine image of `mac` (dash-separated).
fn machine_version_tar(nb: &Netbootd, mac: &str, n: u64) -> anyhow::Result<std::path::PathBuf> {
    let (version, blob) = image_version(nb, &format!("machine-{mac}"), n)?;
    assert_eq!(version["layer"]["format"], "tar", "{version}");
    Ok(blob)
}

/// Version `n` of `image` (its JSON) and the path of its layer blob, found through
/// `imaged show` on netbootd's data folder.
fn image_version(
    nb: &Netbootd,
    image: &str,
    n: u64,
) -> anyhow::Result<(serde_json::Value, std::path::PathBuf)> {
    let mut show = std::process::Command::new(qemu_tests::assets::imaged_bin()?);
    show.args(["show", image, "--data"]).arg(nb.data_dir());
    let out = show.output()?;
    anyhow::ensure!(
        out.status.success(),
        "imaged show {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let version = v["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|x| x["number"].as_u64() == Some(n)))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{image} has no version {n}: {v}"))?;
    let sha = version["artefacts"]["layer"]["sha256"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no layer artefact: {version}"))?
        .to_string();
    let blob = nb
        .data_dir()
        .join("blobs/sha256")
        .join(&sha[..2])
        .join(&sha);
    Ok((version, blob))
}

/// One file's text out of a tar.
fn tar_file(tar: &Path, member: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg(member)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "tar -xOf {} {member}: {}",
        tar.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
