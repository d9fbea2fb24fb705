//! Test 3: proxy mode beside an existing DHCP server. dnsmasq, in a second namespace on
//! the bridge at 192.0.2.2, hands out addresses 192.0.2.50-99 and no boot options;
//! netbootd in proxy mode adds only boot information. The machine still boots.

use qemu_tests::console::ipxe_host_octet;
use qemu_tests::dnsmasq::Dnsmasq;
use qemu_tests::BOOT_TIMEOUT;
use qemu_tests::{policy, prereq, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

const MAC: &str = "52:54:00:c0:03:01";

#[test]
fn proxy_beside_dnsmasq_boots() -> anyhow::Result<()> {
    if !prereq::ready("proxy_beside_dnsmasq_boots") {
        return Ok(());
    }
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let peer = lab.peer("192.0.2.2/24")?;
    let dnsmasq = Dnsmasq::address_only(&peer)?;
    let policy = policy::boot_everyone("proxy");
    let netbootd = Netbootd::start(&lab, DhcpMode::Proxy, &[("boot.toml", &policy)])?;
    let mut m = Machine::pxe(
        &lab,
        &MachineSpec::pxe("proxy", Firmware::Bios, "tap0", MAC),
    )?;

    // The address is dnsmasq's, not from netbootd's pool.
    let net = m.expect("net0: 192.0.2.", BOOT_TIMEOUT)?;
    let octet = ipxe_host_octet(&net);
    assert!(
        octet.is_some_and(|o| (50..=99).contains(&o)),
        "address not from dnsmasq: {net}\ndnsmasq log:\n{}",
        dnsmasq.log()
    );
    let cmdline = m.wait_cmdline(BOOT_TIMEOUT)?;
    eprintln!(
        "proxy booted in {:.1} s: {cmdline}",
        m.elapsed().as_secs_f64()
    );
    assert!(
        cmdline.contains("carte.test=proxy"),
        "{cmdline:?}\nnetbootd log:\n{}",
        netbootd.log()
    );
    assert!(
        dnsmasq.log().contains("DHCPACK"),
        "dnsmasq:\n{}",
        dnsmasq.log()
    );
    Ok(())
}
