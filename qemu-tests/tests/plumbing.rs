//! The harness itself, without netbootd: a lab namespace appears with its bridge and tap
//! and disappears on drop; QEMU boots the test kernel and initrd directly and the initrd
//! prints the command line it was given.

use std::time::Duration;

use qemu_tests::{accel, assets, prereq, Firmware, Lab, Machine};

fn namespaces() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lab_has_bridge_and_tap_and_is_removed_on_drop() -> anyhow::Result<()> {
    if !prereq::ready("lab_has_bridge_and_tap_and_is_removed_on_drop") {
        return Ok(());
    }
    let lab = Lab::new()?;
    lab.tap("tap0")?;
    let name = lab.name().to_string();
    let addr = lab
        .command("ip")
        .args(["-o", "addr", "show", "br0"])
        .output()?;
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains("192.0.2.1/24"), "br0: {addr}");
    let tap = lab
        .command("ip")
        .args(["-o", "link", "show", "tap0"])
        .output()?;
    let tap = String::from_utf8_lossy(&tap.stdout);
    assert!(tap.contains("master br0"), "tap0: {tap}");
    // No route out: the only routes are the bridge's own subnet.
    let routes = lab.command("ip").args(["route", "show"]).output()?;
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(!routes.contains("default"), "routes: {routes}");
    assert!(namespaces().contains(&name));
    // A process left running in the lab is killed with it.
    let mut sleeper = lab.command("sleep").arg("600").spawn()?;
    drop(lab);
    assert!(!namespaces().contains(&name), "{name} still exists");
    let status = sleeper.wait()?;
    assert!(!status.success(), "sleep was not killed: {status}");
    Ok(())
}

#[test]
fn direct_boot_prints_the_command_line() -> anyhow::Result<()> {
    if !prereq::ready("direct_boot_prints_the_command_line") {
        return Ok(());
    }
    let mut m = Machine::direct(
        "plumbing",
        Firmware::Bios,
        &accel::accel(),
        &assets::kernel()?,
        &assets::initrd()?,
        "console=ttyS0 quiet panic=-1 carte.test=plumbing",
    )?;
    let cmdline = m.wait_cmdline(Duration::from_secs(90))?;
    assert!(cmdline.ends_with("carte.test=plumbing"), "{cmdline}");
    // The initrd powers the machine off, and QEMU exits cleanly.
    let status = m.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "qemu: {status}");
    Ok(())
}
