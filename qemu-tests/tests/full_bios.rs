//! Test 1: full DHCP, SeaBIOS with QEMU's iPXE ROM. The machine gets its address and
//! script from netbootd and boots Debian's kernel with the test initrd; the command line
//! it prints carries the setup's arguments and carte's own.

use qemu_tests::console::ipxe_host_octet;
use qemu_tests::BOOT_TIMEOUT;
use qemu_tests::{policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

const MAC: &str = "52:54:00:c0:01:01";

#[test]
fn full_dhcp_seabios_boots_the_setup() -> anyhow::Result<()> {
    if !prereq::ready("full_dhcp_seabios_boots_the_setup") {
        return Ok(());
    }
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let policy = policy::boot_everyone("full-bios");
    let netbootd = Netbootd::start(&lab, DhcpMode::Full, &[("boot.toml", &policy)])?;
    let mut m = Machine::pxe(
        &lab,
        &MachineSpec::pxe("full-bios", Firmware::Bios, "tap0", MAC),
    )?;

    // The address comes from netbootd's pool.
    let net = m.expect("net0: 192.0.2.", BOOT_TIMEOUT)?;
    let octet = ipxe_host_octet(&net);
    assert!(
        octet.is_some_and(|o| (100..=150).contains(&o)),
        "address outside the pool: {net}"
    );
    let cmdline = m.wait_cmdline(BOOT_TIMEOUT)?;
    eprintln!(
        "full-bios booted in {:.1} s: {cmdline}",
        m.elapsed().as_secs_f64()
    );
    for arg in [
        "console=ttyS0",
        "carte.test=full-bios",
        "carte.server=",
        "BOOTIF=01-52-54-00-c0-01-01",
    ] {
        assert!(
            cmdline.to_lowercase().contains(&arg.to_lowercase()),
            "{arg:?} missing from {cmdline:?}\nnetbootd log:\n{}",
            netbootd.log()
        );
    }
    // The machine was already iPXE (QEMU's ROM): it got the HTTP entry script, no TFTP.
    let decided = netbootd.log_lines_with(&["decision", MAC, "arch=bios", "ipxe=true"]);
    assert!(
        !decided.is_empty(),
        "no decision logged:\n{}",
        netbootd.log()
    );
    Ok(())
}
