//! Test 5: editing a policy file while netbootd runs changes the next boot of a machine,
//! and a broken edit is rejected (logged with file and line) while the last good policy
//! stays in force.

use std::time::Duration;

use qemu_tests::BOOT_TIMEOUT;
use qemu_tests::{policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

const MAC: &str = "52:54:00:c0:05:01";

/// Boots a fresh QEMU with the same MAC and tap; returns the printed command line.
fn boot_once(lab: &Lab, round: &str) -> anyhow::Result<String> {
    let mut m = Machine::pxe(lab, &MachineSpec::pxe(round, Firmware::Bios, "tap0", MAC))?;
    let cmdline = m.wait_cmdline(BOOT_TIMEOUT)?;
    eprintln!(
        "{round}: booted in {:.1} s: {cmdline}",
        m.elapsed().as_secs_f64()
    );
    // The initrd powers off; the tap is free for the next round.
    m.wait_exit(Duration::from_secs(30))?;
    Ok(cmdline)
}

#[test]
fn live_edit_changes_the_next_boot_and_a_broken_edit_is_ignored() -> anyhow::Result<()> {
    if !prereq::ready("live_edit_changes_the_next_boot_and_a_broken_edit_is_ignored") {
        return Ok(());
    }
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let mut netbootd = Netbootd::start(
        &lab,
        DhcpMode::Full,
        &[("boot.toml", &policy::boot_everyone("live-a"))],
    )?;

    let first = boot_once(&lab, "live-1")?;
    assert!(first.contains("carte.test=live-a"), "{first}");

    netbootd.write_policy("boot.toml", &policy::boot_everyone("live-b"))?;
    netbootd.wait_log(&["policy reloaded"], 1, Duration::from_secs(10))?;
    let second = boot_once(&lab, "live-2")?;
    assert!(second.contains("carte.test=live-b"), "{second}");
    assert!(!second.contains("carte.test=live-a"), "{second}");

    // Line 3 has an unterminated string.
    netbootd.write_policy(
        "broken.toml",
        "# broken on purpose\n[setup.x]\ncmdline = \"unterminated\n",
    )?;
    let rejected = netbootd.wait_log(&["broken.toml", "rejected"], 1, Duration::from_secs(10))?;
    assert!(
        rejected.iter().any(|l| l.contains("broken.toml:3")),
        "rejection does not name line 3: {rejected:?}"
    );
    let third = boot_once(&lab, "live-3")?;
    assert!(third.contains("carte.test=live-b"), "{third}");
    Ok(())
}
