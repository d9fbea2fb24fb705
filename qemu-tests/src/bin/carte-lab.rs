//! `carte-lab`: the harness from the command line, for `scripts/demo` and for poking at a
//! lab by hand. It reuses exactly what the QEMU tests use.
//!
//! - `carte-lab demo`: builds the Debian layers (cached recipes, `imaged build --push`),
//!   starts netbootd (full DHCP) in a private namespace with a policy that composes them,
//!   PXE-boots one SeaBIOS machine with a blank disk into that Debian, prints what the
//!   booted system reported, the machine's stage history, where the time went and how
//!   many bytes moved, then cleans up.
//! - `carte-lab bench-flash [--layer-mib 1024] [--memory-mb 512]`: carte-init's flash
//!   benchmark ([`qemu_tests::flash_bench`]): one large layer fetched into the disk cache
//!   of a small machine, against each stage of the pipeline alone in the same VM.
//! - `carte-lab direct`: boots the test kernel and initrd with `-kernel` (no network), to
//!   check QEMU, the kernel and the initrd alone.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use qemu_tests::debian::{self, CMDLINE};
use qemu_tests::machine::CMDLINE_MARKER;
use qemu_tests::timeline::{self, Marks};
use qemu_tests::{
    accel, assets, flash_bench, policy, DhcpMode, Firmware, Lab, Machine, MachineSpec, Netbootd,
};

const MAC: &str = "52:54:00:c0:ff:01";

fn main() -> anyhow::Result<()> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    match cmd.as_str() {
        "demo" => demo(),
        "direct" => direct(),
        "bench-flash" => bench_flash(),
        _ => bail!("usage: carte-lab demo | direct | bench-flash [--layer-mib N] [--memory-mb M] [--cpus N]"),
    }
}

fn demo() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let accel = accel::accel();
    println!("carte-lab: accelerator {accel}");
    println!(
        "== layers: Debian bookworm (debootstrap), a second system layer, a user layer, \
         Debian's kernel (cached by recipe under .cache/images; a few minutes when cold)"
    );
    let seed = debian::seed().map_err(anyhow::Error::msg)?;
    for (version, blobs) in &seed.versions {
        let parts: Vec<String> = blobs
            .iter()
            .map(|(name, b)| format!("{name} {}", mib(b.size)))
            .collect();
        println!("  {version:<16} {}", parts.join(", "));
    }
    println!("  (built in {:.0} s)", t0.elapsed().as_secs_f64());

    let lab = Lab::new().context("creating the lab namespace")?;
    lab.tap("tap0")?;
    let policy = format!(
        "{}\n{}",
        debian::setup("demo", "linux@1", CMDLINE),
        policy::default_group("demo")
    );
    let mut nb = Netbootd::start_seeded(
        &lab,
        DhcpMode::Full,
        &[("demo.toml", &policy)],
        Some(&seed.dir),
    )
    .context("starting netbootd")?;
    nb.set_log_on_drop(false);
    let token = nb.admin_token()?;
    println!(
        "== netbootd on 192.0.2.1 (full DHCP) in namespace {}, policy {}/demo.toml:\n{}",
        lab.name(),
        nb.policy_dir().display(),
        indent(&policy)
    );
    let disk_dir = tempfile::tempdir()?;
    let disk = disk_dir.path().join("disk.img");
    std::fs::File::create(&disk)?.set_len(4 << 30)?;
    let spec = MachineSpec {
        memory_mb: 1024,
        disk: Some(disk),
        pause_on_poweroff: true,
        ..MachineSpec::pxe("demo", Firmware::Bios, "tap0", MAC)
    };
    let before = nb.sent_bytes(&lab, &token)?;
    println!(
        "== QEMU (SeaBIOS, QEMU's iPXE ROM, {accel}, 1 GiB, a blank 4 GiB disk) is PXE-booting; \
         about a minute under TCG"
    );
    let boot = debian::boot(&lab, &spec, &nb)?;
    let after = nb.sent_bytes(&lab, &token)?;

    println!("\n== what the booted system printed on its serial console:");
    for line in &boot.report {
        println!("  {line}");
    }
    println!("\n== netbootd machines:");
    print!("{}", indent(&nb.machines_table(&lab, &token)?));

    println!(
        "\n== where the time went (no TFTP step: QEMU's NIC ROM is iPXE already; the \
         OVMF tests fetch ipxe.efi over TFTP):"
    );
    print!("{}", timeline::render(&phases(&nb, &lab, &token, &boot)?));

    println!("\n== bytes netbootd sent (/boot/blobs; the carte initramfs comes from /files):");
    let mut sent = Vec::new();
    for (version, blobs) in &seed.versions {
        for (name, b) in blobs {
            let n = after.get(&b.sha256).copied().unwrap_or(0)
                - before.get(&b.sha256).copied().unwrap_or(0);
            if n > 0 {
                sent.push((format!("{version} {name}"), n));
            }
        }
    }
    let total: u64 = sent.iter().map(|(_, n)| n).sum();
    // As wide as the longest "version layer" label, so the byte counts line up.
    let width = sent.iter().map(|(l, _)| l.len()).max().unwrap_or(0).max(5);
    for (label, n) in &sent {
        println!("  {label:<width$} {n:>12} bytes");
    }
    println!("  {:<width$} {total:>12} bytes", "total");
    println!(
        "  written to the machine's disk: {} bytes",
        boot.disk_writes
    );
    println!(
        "\ncarte-lab: done in {:.0} s; cleaning up (namespace, netbootd, QEMU, disk)",
        t0.elapsed().as_secs_f64()
    );
    // The seed store is this process's copy; the layer trees stay cached.
    if let Some(seed_dir) = seed.dir.parent() {
        let _ = std::fs::remove_dir_all(seed_dir);
    }
    Ok(())
}

/// The boot's phases from QEMU's start to the report: firmware, DHCP (netbootd's log),
/// then the machine's stage history as netbootd recorded it.
fn phases(
    nb: &Netbootd,
    lab: &Lab,
    token: &str,
    boot: &debian::Boot,
) -> anyhow::Result<Vec<timeline::Phase>> {
    let log = nb.log();
    let states: Vec<serde_json::Value> =
        serde_json::from_str(&nb.api_get(lab, "/api/v1/machines", token)?)?;
    let me = states
        .iter()
        .find(|s| s["mac"] == MAC)
        .context("netbootd has no state for the demo machine")?;
    let mut marks = Marks::default();
    marks.add("firmware and iPXE start", Some(boot.started_ms));
    marks.add(
        "DHCP (DISCOVER to ACK)",
        timeline::first_log_time(&log, &[MAC, "Discover"]),
    );
    marks.add(
        "iPXE: NIC setup wait, entry and machine scripts",
        timeline::first_log_time(&log, &[MAC, "reply=Ack"]),
    );
    marks.add(
        "kernel + initrds download, kernel start, modules, NIC",
        me["issued_unix_ms"].as_u64(),
    );
    let history = me["history"].as_array().cloned().unwrap_or_default();
    for h in &history {
        let stage = h["stage"].as_str().unwrap_or("?");
        let name = match stage {
            "plan" => "plan",
            "disk" => "disk (blank: GPT + mke2fs)",
            "cache" => "layer cache",
            "fetch" => "layer fetch (stream, sha256, write, fsync)",
            "compose" => "compose (loop devices, overlayfs)",
            "switch_root" => "switch root, carte-shim",
            "booted" => "systemd: init to multi-user.target",
            other => other,
        };
        marks.add(name, h["unix_ms"].as_u64());
    }
    marks.add("report", Some(boot.reported_ms));
    Ok(marks.phases())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
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

fn bench_flash() -> anyhow::Result<()> {
    let mut spec = flash_bench::Spec {
        layer_mib: 1024,
        memory_mb: 512,
        cpus: 2,
    };
    const USAGE: &str = "usage: carte-lab bench-flash [--layer-mib N (1024)] \
                         [--memory-mb M (512)] [--cpus N (2)]";
    let mut args = std::env::args().skip(2);
    while let Some(a) = args.next() {
        if !["--layer-mib", "--memory-mb", "--cpus"].contains(&a.as_str()) {
            if a == "-h" || a == "--help" {
                println!("{USAGE}");
                return Ok(());
            }
            bail!("unknown argument {a:?}\n{USAGE}");
        }
        let value = args
            .next()
            .with_context(|| format!("{a} needs a value\n{USAGE}"))?;
        let n: u32 = match value.parse() {
            Ok(n) if n > 0 => n,
            _ => bail!("{a} {value:?}: expected a positive whole number\n{USAGE}"),
        };
        match a.as_str() {
            "--layer-mib" => spec.layer_mib = u64::from(n),
            "--memory-mb" => spec.memory_mb = n,
            _ => spec.cpus = n,
        }
    }
    println!(
        "carte-lab: flash benchmark, a {} MiB layer (erofs of /usr/lib files, zstd on the \
         wire) into the disk cache of a {} MiB, {}-CPU machine ({}, -cpu max); building the \
         layer...",
        spec.layer_mib,
        spec.memory_mb,
        spec.cpus,
        accel::accel()
    );
    let run = flash_bench::run(&spec)?;
    let f = |k: &str| run.fields.get(k).cloned().unwrap_or_else(|| "?".into());
    let n = |k: &str| run.num(k).unwrap_or(f64::NAN);
    println!(
        "\n== {} in the cache of a {} MiB machine: {} bytes decoded, {} on the wire",
        f("layer"),
        spec.memory_mb,
        f("layer_bytes"),
        f("wire_bytes")
    );
    println!(
        "  {:<58} {:>9}",
        "stage (each alone, over the whole layer)", "MiB/s"
    );
    for (key, what) in [
        ("http", "raw HTTP download of the wire bytes to /dev/null"),
        (
            "dd",
            "raw sequential write of the scratch disk (dd bs=1M, fsync)",
        ),
        ("zstd", "zstd decode of the staged wire bytes (from disk)"),
        ("sha256", "sha256 of the decoded bytes (from memory)"),
        (
            "read",
            "(reading the staged wire bytes back, inside zstd's time)",
        ),
    ] {
        println!("  {what:<58} {:>9.1}", n(&format!("{key}_mibps")));
    }
    println!(
        "  {:<58} {:>9.1}",
        "carte-init fill (fetch, decode, 2 x sha256, write, fsync)",
        n("flash_mibps")
    );
    println!(
        "\nratio {:.2}: the fill against the slowest stage alone ({}, {:.1} MiB/s); \
         the fill took {:.1} s",
        n("ratio"),
        f("bound"),
        n("bound_mibps"),
        n("flash_s")
    );
    println!(
        "(the same stages one after the other, no overlap: {:.1} MiB/s)",
        n("serial_mibps")
    );
    println!(
        "carte-init peak RSS: {:.1} MiB during the fill, {:.1} MiB over its whole run \
         (goal: at most 64 MiB)",
        n("fill_peak_rss_kib") / 1024.0,
        n("peak_rss_kib") / 1024.0
    );
    println!("(machine time {:.0} s)", run.machine_secs);
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}
