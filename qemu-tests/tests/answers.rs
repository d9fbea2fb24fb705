//! Test 4: the built-in answers, seen from the machine (SeaBIOS, QEMU's iPXE ROM).
//! - `local`: iPXE leaves for the local disk, and the firmware moves on to its next
//!   boot device; no kernel is booted.
//! - `wait`: the machine parks and asks again (the wait message at least twice); a policy
//!   edit then boots the same running machine without a power cycle.
//! - `ignore`: netbootd logs the decision and sends no offer; iPXE's DHCP fails.

use std::time::Duration;

use qemu_tests::machine::CMDLINE_MARKER;
use qemu_tests::BOOT_TIMEOUT;
use qemu_tests::{policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

/// What netbootd's wait script prints each time it asks (netboot/src/ipxe.rs).
const WAIT_MESSAGE: &str = "waiting for a setup";

#[test]
fn local_leaves_ipxe_for_the_disk() -> anyhow::Result<()> {
    if !prereq::ready("local_leaves_ipxe_for_the_disk") {
        return Ok(());
    }
    let mac = "52:54:00:c0:04:01";
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let mut netbootd = Netbootd::start(
        &lab,
        DhcpMode::Full,
        &[("local.toml", &policy::builtin_for_everyone("local"))],
    )?;
    let mut m = Machine::pxe(
        &lab,
        &MachineSpec::pxe("local", Firmware::Bios, "tap0", mac),
    )?;
    // iPXE got an address and the `local` script from netbootd ...
    m.expect("net0: 192.0.2.", BOOT_TIMEOUT)?;
    m.expect("booting the local disk", BOOT_TIMEOUT)?;
    // ... then gives the machine back to the firmware, which tries its disks.
    let (_, line) = m.expect_any(
        &["Booting from Hard Disk", "No bootable device"],
        BOOT_TIMEOUT,
    )?;
    let text = m.console_text();
    assert!(
        !text.contains(CMDLINE_MARKER),
        "a kernel booted for `local` ({line}):\n{text}\nnetbootd log:\n{}",
        netbootd.log()
    );
    netbootd.wait_log(&[mac, "local"], 1, Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn wait_parks_until_the_policy_changes() -> anyhow::Result<()> {
    if !prereq::ready("wait_parks_until_the_policy_changes") {
        return Ok(());
    }
    let mac = "52:54:00:c0:04:02";
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let netbootd = Netbootd::start(
        &lab,
        DhcpMode::Full,
        &[("boot.toml", &policy::builtin_for_everyone("wait"))],
    )?;
    let mut m = Machine::pxe(&lab, &MachineSpec::pxe("wait", Firmware::Bios, "tap0", mac))?;
    m.expect(WAIT_MESSAGE, BOOT_TIMEOUT)?;
    // Asked again and still parked.
    m.expect(WAIT_MESSAGE, Duration::from_secs(60))?;
    assert!(!m.console_text().contains(CMDLINE_MARKER));

    netbootd.write_policy("boot.toml", &policy::boot_everyone("after-wait"))?;
    let cmdline = m.wait_cmdline(BOOT_TIMEOUT)?;
    assert!(
        cmdline.contains("carte.test=after-wait"),
        "{cmdline:?}\nnetbootd log:\n{}",
        netbootd.log()
    );
    Ok(())
}

#[test]
fn ignore_sends_no_offer() -> anyhow::Result<()> {
    if !prereq::ready("ignore_sends_no_offer") {
        return Ok(());
    }
    let mac = "52:54:00:c0:04:03";
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let mut netbootd = Netbootd::start(
        &lab,
        DhcpMode::Full,
        &[("ignore.toml", &policy::builtin_for_everyone("ignore"))],
    )?;
    let mut m = Machine::pxe(
        &lab,
        &MachineSpec::pxe("ignore", Firmware::Bios, "tap0", mac),
    )?;
    // iPXE's DHCP times out: no offer came.
    m.expect("No configuration methods", BOOT_TIMEOUT)?;
    let text = m.console_text();
    assert!(!text.contains("net0: 192.0.2."), "got an address:\n{text}");
    netbootd.wait_log(&[mac, "ignore"], 1, Duration::from_secs(5))?;
    Ok(())
}
