//! `carte-lab`: the harness from the command line, for `scripts/demo` and for poking at a
//! lab by hand. It reuses exactly what the QEMU tests use; it asserts nothing itself
//! beyond "the machine printed its command line".
//!
//! - `carte-lab demo`: netbootd (full DHCP) + one SeaBIOS machine; prints the console
//!   line the machine printed and the timing, then cleans up.
//! - `carte-lab direct`: boots the test kernel and initrd with `-kernel` (no network), to
//!   check QEMU, the kernel and the initrd alone.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use qemu_tests::machine::CMDLINE_MARKER;
use qemu_tests::{accel, assets, policy, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn main() -> anyhow::Result<()> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    match cmd.as_str() {
        "demo" => demo(),
        "direct" => direct(),
        _ => bail!("usage: carte-lab demo | direct"),
    }
}

fn demo() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let accel = accel::accel();
    println!("carte-lab: accelerator {accel}");
    let lab = Lab::new().context("creating the lab namespace")?;
    lab.tap("tap0")?;
    let policy = policy::boot_everyone("demo");
    let mut netbootd = Netbootd::start(&lab, DhcpMode::Full, &[("demo.toml", &policy)])
        .context("starting netbootd")?;
    netbootd.set_log_on_drop(false);
    println!(
        "carte-lab: namespace {}, netbootd on 192.0.2.1 (full DHCP), policy:\n{}",
        lab.name(),
        indent(&policy)
    );
    let spec = MachineSpec::pxe("demo", Firmware::Bios, "tap0", "52:54:00:c0:ff:01");
    let mut m = Machine::pxe(&lab, &spec)?;
    println!("carte-lab: QEMU (SeaBIOS, iPXE ROM) is PXE-booting; this takes about 30 s under TCG");
    let cmdline = m
        .wait_cmdline(BOOT_TIMEOUT)
        .with_context(|| format!("netbootd log:\n{}", netbootd.log()))?;
    let line = format!("{CMDLINE_MARKER}{cmdline}");
    let boot = m.elapsed();
    println!("\nthe machine printed:\n  {line}\n");
    println!(
        "carte-lab: PXE boot to the initrd took {:.1} s (all steps {:.1} s); cleaning up",
        boot.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn direct() -> anyhow::Result<()> {
    let kernel = assets::kernel()?;
    let initrd = assets::initrd()?;
    let accel = accel::accel();
    let mut m = Machine::direct(
        "direct",
        Firmware::Bios,
        &accel,
        &kernel,
        &initrd,
        "console=ttyS0 quiet panic=-1 carte.test=direct",
    )?;
    let cmdline = m.wait_cmdline(Duration::from_secs(60))?;
    println!("{CMDLINE_MARKER}{cmdline}");
    println!("({accel}, {:.1} s)", m.elapsed().as_secs_f64());
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}
