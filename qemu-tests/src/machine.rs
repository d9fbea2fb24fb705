//! A QEMU machine: SeaBIOS (with QEMU's iPXE option ROM) or OVMF, a virtio NIC on a lab
//! tap with a fixed MAC, and its serial console in a file that tests read with
//! [`Machine::expect`].
//!
//! Each machine has its own folder (console log, OVMF variables copy, monitor socket),
//! removed on drop after QEMU is killed by pid. A machine does not decide what it boots:
//! the network (netbootd) does, or a direct `-kernel` boot (plumbing checks, and a boot
//! on the lab network that skips iPXE).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::assets::{self, AssetError};
use crate::console::{Console, ConsoleError};
use crate::lab::Lab;
use crate::proc::{self, ProcError};

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("machine {name}: {source}")]
    Asset { name: String, source: AssetError },
    #[error("machine {name}: preparing {path}: {source}")]
    Prepare {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("machine {name}: {source}")]
    Start { name: String, source: ProcError },
    #[error("machine {name}: {source}")]
    Console {
        name: String,
        source: Box<ConsoleError>,
    },
    #[error("machine {name}: sending {command:?} to the monitor {path}: {source}")]
    Monitor {
        name: String,
        command: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("machine {name}: still running after {secs}s; console tail:\n{tail}")]
    StillRunning {
        name: String,
        secs: u64,
        tail: String,
    },
}

/// What the test initrd prints before the kernel command line.
pub const CMDLINE_MARKER: &str = "CARTE-CMDLINE: ";

/// Which firmware the machine starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS on the `pc` machine.
    Bios,
    /// OVMF (UEFI) on `q35`, via pflash: code read-only, a per-machine copy of the vars.
    Ovmf,
}

/// How a machine is built.
#[derive(Clone, Debug)]
pub struct MachineSpec {
    /// Used in file names and error messages.
    pub name: String,
    pub firmware: Firmware,
    /// Tap in the lab namespace (create it with [`Lab::tap`]).
    pub tap: String,
    /// Fixed MAC, `52:54:00:..`.
    pub mac: String,
    /// Keep QEMU's iPXE option ROM on the NIC. `false` starts the NIC with `romfile=`, so
    /// OVMF's own UEFI PXE boots (DHCP arch 7, TFTP of the first stage).
    pub nic_rom: bool,
    pub memory_mb: u32,
    /// Virtual CPUs (`-smp`).
    pub cpus: u32,
    /// QEMU's `-cpu` model; `None` keeps QEMU's default.
    pub cpu_model: Option<String>,
    /// `None`: the verdict of [`crate::accel::accel`].
    pub accel: Option<String>,
    /// A raw disk image attached as a virtio disk (drive id `d0`), kept by the caller so
    /// it outlives the machine (the next boot of the same machine reuses it).
    pub disk: Option<PathBuf>,
    /// A second raw disk (drive id `d1`, the guest's second virtio disk), for the flash
    /// benchmark's scratch writes.
    pub scratch_disk: Option<PathBuf>,
    /// When the guest powers off, QEMU pauses instead of exiting, so its counters can
    /// still be read ([`Machine::wait_powered_off`]).
    pub pause_on_poweroff: bool,
}

impl MachineSpec {
    /// A network-booting machine with QEMU's iPXE ROM and 512 MiB.
    pub fn pxe(name: &str, firmware: Firmware, tap: &str, mac: &str) -> Self {
        Self {
            name: name.to_string(),
            firmware,
            tap: tap.to_string(),
            mac: mac.to_string(),
            nic_rom: true,
            memory_mb: 512,
            cpus: 1,
            cpu_model: None,
            accel: None,
            disk: None,
            scratch_disk: None,
            pause_on_poweroff: false,
        }
    }
}

/// A running QEMU process and its console.
#[derive(Debug)]
pub struct Machine {
    name: String,
    child: Child,
    console: Console,
    monitor: PathBuf,
    started: Instant,
    dir: tempfile::TempDir,
}

/// The arguments common to every machine (firmware, memory, console, monitor).
fn base_command(
    qemu: &mut Command,
    name: &str,
    firmware: Firmware,
    memory_mb: u32,
    accel: &str,
    dir: &Path,
) -> Result<(), MachineError> {
    qemu.args(["-accel", accel, "-m", &memory_mb.to_string()])
        .args(["-nographic", "-nodefaults", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", dir.join("console.log").display()))
        .arg("-monitor")
        .arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("monitor.sock").display()
        ));
    if firmware == Firmware::Ovmf {
        let (code, vars) = assets::ovmf().map_err(|source| MachineError::Asset {
            name: name.to_string(),
            source,
        })?;
        let copy = dir.join("OVMF_VARS.fd");
        std::fs::copy(&vars, &copy).map_err(|source| MachineError::Prepare {
            name: name.to_string(),
            path: copy.clone(),
            source,
        })?;
        qemu.args(["-machine", "q35", "-drive"])
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                code.display()
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                copy.display()
            ));
    }
    Ok(())
}

impl Machine {
    /// Starts a machine that boots from the network on `spec.tap` in `lab`.
    pub fn pxe(lab: &Lab, spec: &MachineSpec) -> Result<Self, MachineError> {
        let rom = if spec.nic_rom { "" } else { ",romfile=" };
        let (mut qemu, dir) = Self::on_lab(lab, spec, &format!(",bootindex=1{rom}"))?;
        if spec.pause_on_poweroff {
            qemu.args(["-action", "shutdown=pause"]);
        }
        // The guest sees them in this order: vda, then vdb.
        for (id, disk) in [("d0", &spec.disk), ("d1", &spec.scratch_disk)] {
            if let Some(disk) = disk {
                qemu.arg("-drive")
                    .arg(format!(
                        "file={},if=none,id={id},format=raw,cache=writeback",
                        disk.display()
                    ))
                    .args(["-device", &format!("virtio-blk-pci,drive={id}")]);
            }
        }
        Self::spawn(&spec.name, qemu, dir)
    }

    /// Starts a machine without network that boots `kernel` and `initrd` directly (the
    /// plumbing check and the KVM probe).
    pub fn direct(
        name: &str,
        firmware: Firmware,
        accel: &str,
        kernel: &Path,
        initrd: &Path,
        append: &str,
    ) -> Result<Self, MachineError> {
        let dir = Self::workdir(name)?;
        let mut qemu = Command::new("qemu-system-x86_64");
        base_command(&mut qemu, name, firmware, 512, accel, dir.path())?;
        qemu.arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", append]);
        Self::spawn(name, qemu, dir)
    }

    /// Starts a machine on `spec.tap` in `lab` that boots `kernel` with `initrd` and
    /// `append` directly: the kernel, not the firmware, is the first to use the network
    /// (its NIC has no option ROM), so nothing hands it a lease. Disks of `spec` are not
    /// attached.
    pub fn direct_on_lab(
        lab: &Lab,
        spec: &MachineSpec,
        kernel: &Path,
        initrd: &Path,
        append: &str,
    ) -> Result<Self, MachineError> {
        let (mut qemu, dir) = Self::on_lab(lab, spec, ",romfile=")?;
        qemu.arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", append]);
        Self::spawn(&spec.name, qemu, dir)
    }

    /// QEMU in `lab` with the firmware, memory, CPUs and console of `spec`, and its NIC on
    /// `spec.tap` (`nic_options` appended to the NIC device), plus the machine's folder.
    fn on_lab(
        lab: &Lab,
        spec: &MachineSpec,
        nic_options: &str,
    ) -> Result<(Command, tempfile::TempDir), MachineError> {
        let accel = spec.accel.clone().unwrap_or_else(crate::accel::accel);
        let dir = Self::workdir(&spec.name)?;
        let mut qemu = lab.command("qemu-system-x86_64");
        base_command(
            &mut qemu,
            &spec.name,
            spec.firmware,
            spec.memory_mb,
            &accel,
            dir.path(),
        )?;
        qemu.args(["-smp", &spec.cpus.to_string()]);
        if let Some(model) = &spec.cpu_model {
            qemu.args(["-cpu", model]);
        }
        qemu.arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                spec.tap
            ))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac={}{nic_options}",
                spec.mac
            ));
        Ok((qemu, dir))
    }

    fn workdir(name: &str) -> Result<tempfile::TempDir, MachineError> {
        tempfile::Builder::new()
            .prefix(&format!("carte-machine-{name}-"))
            .tempdir()
            .map_err(|source| MachineError::Prepare {
                name: name.to_string(),
                path: std::env::temp_dir(),
                source,
            })
    }

    fn spawn(name: &str, mut qemu: Command, dir: tempfile::TempDir) -> Result<Self, MachineError> {
        let out_path = dir.path().join("qemu.out");
        let out = std::fs::File::create(&out_path).map_err(|source| MachineError::Prepare {
            name: name.to_string(),
            path: out_path.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| MachineError::Prepare {
            name: name.to_string(),
            path: out_path,
            source,
        })?;
        qemu.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = proc::spawn(&mut qemu).map_err(|source| MachineError::Start {
            name: name.to_string(),
            source,
        })?;
        Ok(Self {
            name: name.to_string(),
            child,
            console: Console::new(&dir.path().join("console.log")),
            monitor: dir.path().join("monitor.sock"),
            started: Instant::now(),
            dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// QEMU's own messages (stdout and stderr).
    pub fn qemu_output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.out")).unwrap_or_default()
    }

    /// Waits for `pattern` on the console after the previous match; returns its line.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, MachineError> {
        self.expect_any(&[pattern], timeout).map(|(_, line)| line)
    }

    /// Waits for the test initrd's `CARTE-CMDLINE: ...` line and returns the command line
    /// it reports (the text after the marker; firmware noise before it is dropped).
    pub fn wait_cmdline(&mut self, timeout: Duration) -> Result<String, MachineError> {
        let line = self.expect(CMDLINE_MARKER, timeout)?;
        Ok(line
            .split_once(CMDLINE_MARKER)
            .map_or(line.as_str(), |(_, rest)| rest)
            .trim()
            .to_string())
    }

    /// Waits for the first of `patterns`; returns which one and its line.
    pub fn expect_any(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<(usize, String), MachineError> {
        let Machine {
            child,
            console,
            name,
            dir,
            ..
        } = self;
        let out = dir.path().join("qemu.out");
        console
            .expect_any(patterns, timeout, || match child.try_wait() {
                Ok(Some(status)) => Some(format!(
                    "qemu exited ({status}; qemu said: {})",
                    std::fs::read_to_string(&out).unwrap_or_default().trim()
                )),
                _ => None,
            })
            .map_err(|source| MachineError::Console {
                name: name.clone(),
                source: Box::new(source),
            })
    }

    /// Everything the console printed so far, cleaned of terminal escapes.
    pub fn console_text(&mut self) -> String {
        self.console.text()
    }

    /// The end of the console, for messages.
    pub fn console_tail(&mut self) -> String {
        self.console.tail()
    }

    /// Presses the reset button (QEMU monitor `system_reset`): the same machine reboots.
    pub fn reset(&mut self) -> Result<(), MachineError> {
        self.monitor_command("system_reset")
    }

    /// Bytes the guest has written to its disk (`d0`) since QEMU started, from the
    /// monitor's `info blockstats`.
    pub fn disk_write_bytes(&mut self) -> Result<u64, MachineError> {
        let command = "info blockstats";
        let out = self.monitor_query(command)?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("d0:"))
            .and_then(|stats| {
                stats
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("wr_bytes="))
                    .and_then(|v| v.parse().ok())
            })
            .ok_or_else(|| MachineError::Monitor {
                name: self.name.clone(),
                command: command.to_string(),
                path: self.monitor.clone(),
                source: std::io::Error::other(format!("no d0 wr_bytes in {out:?}")),
            })
    }

    /// Waits until the guest has powered off (QEMU paused by `pause_on_poweroff`).
    pub fn wait_powered_off(&mut self, timeout: Duration) -> Result<(), MachineError> {
        self.poll_until(timeout, Duration::from_millis(500), |m| {
            Ok(m.monitor_query("info status")?
                .contains("shutdown")
                .then_some(()))
        })
    }

    /// Calls `check` every `every` until it gives a value; after `timeout`, the error
    /// says the machine is still running, with the console's tail.
    fn poll_until<T>(
        &mut self,
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut(&mut Self) -> Result<Option<T>, MachineError>,
    ) -> Result<T, MachineError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check(self)? {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(MachineError::StillRunning {
                    name: self.name.clone(),
                    secs: timeout.as_secs(),
                    tail: self.console.tail(),
                });
            }
            std::thread::sleep(every);
        }
    }

    /// Sends one monitor command and returns what the monitor printed up to its next
    /// prompt.
    fn monitor_query(&mut self, command: &str) -> Result<String, MachineError> {
        use std::io::Read;
        let err = |source| MachineError::Monitor {
            name: self.name.clone(),
            command: command.to_string(),
            path: self.monitor.clone(),
            source,
        };
        let mut s = UnixStream::connect(&self.monitor).map_err(err)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        let read_to_prompt = |s: &mut UnixStream| -> std::io::Result<String> {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"(qemu) ") {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok(String::from_utf8_lossy(&got).into_owned())
        };
        read_to_prompt(&mut s).map_err(err)?;
        s.write_all(format!("{command}\n").as_bytes())
            .map_err(err)?;
        read_to_prompt(&mut s).map_err(err)
    }

    fn monitor_command(&mut self, command: &str) -> Result<(), MachineError> {
        self.monitor_query(command).map(drop)
    }

    /// Waits for QEMU to exit by itself (the test initrd powers off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, MachineError> {
        self.poll_until(timeout, Duration::from_millis(100), |m| {
            Ok(m.child.try_wait().ok().flatten())
        })
    }

    /// True while QEMU runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        proc::stop(&mut self.child, Duration::from_secs(1));
    }
}
