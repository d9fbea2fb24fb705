//! The flash benchmark of carte-init: a machine with little RAM fetches one large layer
//! into its disk cache through the real boot path, and measures, in the same VM and the
//! same run, each stage of that pipeline alone (carte-init's `bench` module does the
//! measuring; this side builds the lab and reads the result).
//!
//! The layer is an uncompressed erofs of real files (copied from the host's `/usr/lib`,
//! so it compresses like a system does), sent zstd-encoded. The kernel image is the
//! host's kernel with the virtio, ext4 and compose modules. netbootd (full DHCP) gives
//! every machine a setup with `carte.bench=vdb`; the machine (SeaBIOS, QEMU's iPXE ROM)
//! has a blank cache disk (`vda`, the largest) and a scratch disk (`vdb`) for the
//! baselines. carte-init prints one `CARTE-BENCH key=value ...` line and reboots, which
//! ends QEMU (`-no-reboot`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::{assets, host_kernel, policy, proc, DhcpMode, Firmware, Lab, Machine, MachineSpec};
use crate::{Netbootd, BOOT_TIMEOUT};

/// The marker of carte-init's result line (`carte_init::bench::RESULT_MARKER`).
pub const RESULT_MARKER: &str = "CARTE-BENCH ";

const MAC: &str = "52:54:00:be:0c:01";

/// How big a benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Target size of the decoded layer, MiB.
    pub layer_mib: u64,
    /// RAM of the machine, MiB.
    pub memory_mb: u32,
    /// Virtual CPUs of the machine.
    pub cpus: u32,
}

/// What one run measured: the words of the result line, and the whole console.
#[derive(Debug, Clone)]
pub struct Run {
    pub fields: BTreeMap<String, String>,
    pub console: String,
    /// From QEMU's start to the result line.
    pub machine_secs: f64,
}

impl Run {
    /// A numeric field of the result line.
    pub fn num(&self, key: &str) -> anyhow::Result<f64> {
        self.fields
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("no {key} in the result line"))?
            .parse()
            .with_context(|| format!("field {key} of the result line"))
    }
}

/// The `key=value` words after [`RESULT_MARKER`] on the first console line that has it.
pub fn parse_result(console: &str) -> Option<BTreeMap<String, String>> {
    let line = console.lines().find_map(|l| {
        l.split_once(RESULT_MARKER.trim_end())
            .map(|(_, rest)| rest.to_string())
    })?;
    Some(
        line.split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Copies regular files from `src` (sorted, depth first) into `dst` until about `bytes`
/// are there; returns the bytes copied.
fn fill_tree(src: &Path, dst: &Path, bytes: u64) -> anyhow::Result<u64> {
    fn walk(src: &Path, dst: &Path, left: &mut u64) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(src)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if *left == 0 {
                return Ok(());
            }
            let Ok(t) = e.file_type() else { continue };
            let to = dst.join(e.file_name());
            if t.is_dir() {
                std::fs::create_dir_all(&to)?;
                walk(&e.path(), &to, left)?;
            } else if t.is_file() {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                if len == 0 || len > *left {
                    continue;
                }
                std::fs::copy(e.path(), &to)?;
                *left -= len;
            }
        }
        Ok(())
    }
    std::fs::create_dir_all(dst)?;
    let mut left = bytes;
    walk(src, dst, &mut left)?;
    Ok(bytes - left)
}

/// Builds the layer and the kernel image into netbootd's store (`data`).
fn seed_store(spec: &Spec, work: &Path, data: &Path) -> anyhow::Result<()> {
    let imaged = assets::imaged_bin()?;
    let tree = work.join("tree");
    // erofs metadata adds a little: aim the content 1% below the target.
    let content = (spec.layer_mib << 20) / 100 * 99;
    let copied = fill_tree(Path::new("/usr/lib"), &tree, content)?;
    anyhow::ensure!(
        copied > content / 2,
        "/usr/lib holds only {copied} bytes of files"
    );
    let erofs = work.join("layer.erofs");
    proc::run(
        Command::new("mkfs.erofs")
            .args(["--quiet", "--all-root"])
            .arg(&erofs)
            .arg(&tree),
    )?;
    std::fs::remove_dir_all(&tree)?;
    let wire = work.join("layer.erofs.zst");
    proc::run(
        Command::new("zstd")
            .args(["-q", "-3", "-T0", "-f"])
            .arg(&erofs)
            .arg("-o")
            .arg(&wire),
    )?;
    let decoded = imaged::blob::sha256_reader(&mut std::fs::File::open(&erofs)?)?;
    let (size, written) = (decoded.size, decoded.digest.to_string());
    std::fs::remove_file(&erofs)?;
    proc::run(
        Command::new(&imaged)
            .arg("push")
            .args(["big"])
            .arg(&wire)
            .args([
                "--kind",
                "system",
                "--format",
                "erofs",
                "--encoding",
                "zstd",
            ])
            .arg("--uncompressed-size")
            .arg(size.to_string())
            .arg("--written-sha256")
            .arg(&written)
            .arg("--data")
            .arg(data),
    )?;
    std::fs::remove_file(&wire)?;

    let wanted: Vec<&str> = host_kernel::COMPOSE_MODULES
        .iter()
        .chain(host_kernel::DISK_MODULES)
        .copied()
        .collect();
    host_kernel::push_image(work, data, &wanted)?;
    let initramfs = assets::carte_initramfs()?;
    std::fs::create_dir_all(data.join("carte"))?;
    std::fs::copy(&initramfs, data.join("carte/initramfs.cpio.zst"))?;
    Ok(())
}

/// Runs one benchmark (see the module doc). Needs root (a lab namespace) and QEMU.
pub fn run(spec: &Spec) -> anyhow::Result<Run> {
    let work = tempfile::Builder::new()
        .prefix("carte-flash-bench-")
        .tempdir()?;
    let lab = Lab::new().context("creating the lab namespace")?;
    lab.tap("tap0")?;
    let mut nb = Netbootd::start(
        &lab,
        DhcpMode::Full,
        &[("boot.toml", &policy::builtin_for_everyone("wait"))],
    )?;
    nb.set_log_on_drop(false);
    seed_store(spec, work.path(), &nb.data_dir()).context("building the layers")?;
    nb.write_policy(
        "boot.toml",
        &format!(
            "[setup.bench]\nkernel = \"linux@latest\"\nlayers = [\"big@1\"]\n\
             machine = \"ephemeral\"\ndisk = \"largest\"\n\
             cmdline = \"{} carte.bench=vdb\"\n{}",
            policy::BASE_CMDLINE,
            policy::default_group("bench")
        ),
    )?;
    nb.wait_log(&["policy reloaded"], 1, Duration::from_secs(10))?;

    // The cache disk must hold the layer and its temp file; the scratch disk the layer.
    let cache_disk = work.path().join("cache.img");
    let scratch_disk = work.path().join("scratch.img");
    std::fs::File::create(&cache_disk)?.set_len((spec.layer_mib + 1024) << 20)?;
    std::fs::File::create(&scratch_disk)?.set_len((spec.layer_mib + 256) << 20)?;
    let machine = MachineSpec {
        memory_mb: spec.memory_mb,
        cpus: spec.cpus,
        // The host CPU's features as far as QEMU emulates them (SHA and AVX included), as
        // a lab machine would have.
        cpu_model: Some("max".into()),
        disk: Some(cache_disk),
        scratch_disk: Some(scratch_disk),
        ..MachineSpec::pxe("flash-bench", Firmware::Bios, "tap0", MAC)
    };
    let started = Instant::now();
    let mut m = Machine::pxe(&lab, &machine)?;
    // Under TCG every stage runs at tens of MB/s; six passes over the layer.
    let timeout = BOOT_TIMEOUT + Duration::from_secs(spec.layer_mib);
    let got = m.expect_any(
        &[RESULT_MARKER, "error: bench:", "FAILED:", "Kernel panic"],
        timeout,
    );
    let machine_secs = started.elapsed().as_secs_f64();
    // The line may still be arriving: let carte-init reboot (QEMU exits) first.
    let _ = m.wait_exit(Duration::from_secs(30));
    let console = m.console_text();
    let fail = |why: String| {
        anyhow::anyhow!(
            "{why}\nconsole:\n{}\nnetbootd log:\n{}",
            crate::console::tail(&console, 60),
            nb.log()
        )
    };
    match got {
        Ok((0, _)) => {}
        Ok((_, line)) => return Err(fail(format!("the benchmark failed: {line}"))),
        Err(e) => return Err(fail(e.to_string())),
    }
    let fields =
        parse_result(&console).ok_or_else(|| fail("no result line on the console".into()))?;
    Ok(Run {
        fields,
        console,
        machine_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_line_is_read_from_the_console() {
        let console = "carte-init: Fetch: bench: big@1 fetched\n\
                       carte-init: Fetch: CARTE-BENCH layer=big@1 ratio=0.8 peak_rss_kib=9000\n\
                       reboot: Restarting system\n";
        let f = parse_result(console).expect("line");
        assert_eq!(f.get("layer").map(String::as_str), Some("big@1"));
        assert_eq!(f.get("ratio").map(String::as_str), Some("0.8"));
        assert_eq!(f.len(), 3);
        assert!(parse_result("carte-init: Fetch: bench: nothing yet\n").is_none());
    }

    #[test]
    fn fill_tree_copies_about_what_is_asked() {
        let src = tempfile::tempdir().expect("tempdir");
        for (name, len) in [("a/1", 100), ("a/2", 300), ("b/3", 50), ("c", 1000)] {
            let p = src.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, vec![7u8; len]).expect("write");
        }
        let dst = tempfile::tempdir().expect("tempdir");
        // 100 + 300 + 50 fit in 500; the 1000-byte file is skipped.
        assert_eq!(
            fill_tree(src.path(), &dst.path().join("t"), 500).expect("fill"),
            450
        );
        assert!(dst.path().join("t/b/3").is_file());
        assert!(!dst.path().join("t/c").exists());
    }
}
