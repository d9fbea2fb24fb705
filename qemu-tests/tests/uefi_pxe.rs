//! Test 2: OVMF through the firmware's own UEFI PXE (the NIC starts with `romfile=`, so
//! QEMU's iPXE ROM stays out): DHCP with arch 7, TFTP of ipxe.efi (with the size probe),
//! then iPXE, HTTP and the kernel.

use qemu_tests::BOOT_TIMEOUT;
use qemu_tests::{policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

const MAC: &str = "52:54:00:c0:02:01";

#[test]
fn ovmf_uefi_pxe_boots_the_setup() -> anyhow::Result<()> {
    if !prereq::ready("ovmf_uefi_pxe_boots_the_setup") {
        return Ok(());
    }
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let policy = policy::boot_everyone("uefi-pxe");
    let netbootd = Netbootd::start(&lab, DhcpMode::Full, &[("boot.toml", &policy)])?;
    let mut spec = MachineSpec::pxe("uefi-pxe", Firmware::Ovmf, "tap0", MAC);
    spec.nic_rom = false;
    let mut m = Machine::pxe(&lab, &spec)?;

    // The firmware's own PXE client, not iPXE, fetches the first stage.
    m.expect("Start PXE over IPv4", BOOT_TIMEOUT)?;
    let nbp = m.expect("NBP filename is", BOOT_TIMEOUT)?;
    assert!(nbp.ends_with("ipxe.efi"), "first stage: {nbp}");
    // A PXE-Exx line is the firmware giving up (PXE-E23: TFTP error from the server).
    let (outcome, line) =
        m.expect_any(&["NBP file downloaded successfully", "PXE-E"], BOOT_TIMEOUT)?;
    anyhow::ensure!(
        outcome == 0,
        "UEFI PXE failed: {line}\nconsole:\n{}\nnetbootd log:\n{}",
        m.console_tail(),
        netbootd.log()
    );
    // Then iPXE (from ipxe.efi) runs and fetches the rest.
    m.expect("iPXE initialising devices", BOOT_TIMEOUT)?;
    let cmdline = m.wait_cmdline(BOOT_TIMEOUT)?;
    eprintln!(
        "uefi-pxe booted in {:.1} s: {cmdline}",
        m.elapsed().as_secs_f64()
    );
    assert!(
        cmdline.contains("carte.test=uefi-pxe") && cmdline.contains("carte.server="),
        "{cmdline:?}\nnetbootd log:\n{}",
        netbootd.log()
    );
    // netbootd saw the firmware's arch (7: x64 UEFI), not iPXE, and sent ipxe.efi by TFTP.
    let decided = netbootd.log_lines_with(&["decision", MAC, "arch=efi-x64", "ipxe=false"]);
    assert!(
        !decided.is_empty(),
        "no UEFI PXE decision:\n{}",
        netbootd.log()
    );
    let sent = netbootd.log_lines_with(&["tftp", "file=ipxe.efi", "sent"]);
    assert!(!sent.is_empty(), "no TFTP of ipxe.efi:\n{}", netbootd.log());
    Ok(())
}
