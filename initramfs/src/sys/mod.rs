//! The `Sys` trait: every system call carte-init makes on the boot path (mounts, loop
//! devices, module loading, root switching, exec, reboot, the few file operations of the
//! switch, the DHCP client's UDP socket and clock), with a real implementation ([`RealSys`]) and a recording fake
//! ([`FakeSys`]) that can be told to fail at the Nth call.
//!
//! Callers receive the implementation explicitly (`&mut dyn Sys`); nothing reaches for
//! the real one behind their back. Reading configuration files (`/proc/cmdline`,
//! `modules.alias`, `/sys` attributes, the cache index) is deliberately not here: those
//! read from an injected root path, so tests use a temporary folder instead.

mod fake;
mod loopdev;
mod real;

pub use fake::FakeSys;
pub use nix::errno::Errno;
pub use nix::mount::MsFlags;
pub use real::RealSys;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `lstat` tells the root switch: which filesystem an entry is on, and whether it is
/// a directory (symlinks are never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// `st_dev`: entries on another device belong to another mount.
    pub dev: u64,
    /// A real directory (not a symlink to one).
    pub is_dir: bool,
}

/// A UDP socket opened by [`Sys::udp_open`], until [`Sys::udp_close`] (the real
/// implementation's descriptor number, the fake's count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketId(pub i32);

/// System calls of the boot path. Each returns the raw `Errno`; callers wrap it in their
/// step's error with the path or device.
pub trait Sys {
    /// `mount(2)`: `source` on `target` as `fstype` with `flags` and `data`.
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), Errno>;
    /// `mount(2)` with `MS_MOVE`: move the mount at `from` (with its submounts) to `to`.
    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno>;
    /// `umount2(2)`, lazily (`MNT_DETACH`) when `detach`.
    fn umount(&mut self, target: &Path, detach: bool) -> Result<(), Errno>;
    /// `mkdir -p` with mode 0755; an existing directory is fine.
    fn mkdir_all(&mut self, path: &Path) -> Result<(), Errno>;
    /// `mknod(2)` of a character device.
    fn mknod_char(&mut self, path: &Path, major: u64, minor: u64, mode: u32) -> Result<(), Errno>;
    /// `chdir(2)`.
    fn chdir(&mut self, path: &Path) -> Result<(), Errno>;
    /// `chroot(2)`.
    fn chroot(&mut self, path: &Path) -> Result<(), Errno>;
    /// `finit_module(2)` on the file at `path`; `compressed` asks the kernel to decompress
    /// (`MODULE_INIT_COMPRESSED_FILE`, Linux 5.17+ with `CONFIG_MODULE_DECOMPRESS`).
    fn finit_module(&mut self, path: &Path, params: &str, compressed: bool) -> Result<(), Errno>;
    /// Attach `file` to a free loop device; returns the device path (`/dev/loop0`).
    fn loop_attach(&mut self, file: &Path, read_only: bool) -> Result<PathBuf, Errno>;
    /// Detach a loop device (`LOOP_CLR_FD`).
    fn loop_detach(&mut self, device: &Path) -> Result<(), Errno>;
    /// `execv(2)`. The real implementation only returns on failure; the fake returns `Ok`
    /// so tests can see what would have run.
    fn exec(&mut self, path: &Path, args: &[String]) -> Result<(), Errno>;
    /// `reboot(2)` with `RB_AUTOBOOT` (after a `sync`). Only returns on failure.
    fn reboot(&mut self) -> Result<(), Errno>;
    /// `sync(2)`.
    fn sync(&mut self);
    /// `lstat(2)`.
    fn lstat(&mut self, path: &Path) -> Result<FileInfo, Errno>;
    /// Names in a directory (without `.` and `..`).
    fn read_dir(&mut self, path: &Path) -> Result<Vec<String>, Errno>;
    /// `unlink(2)`.
    fn unlink(&mut self, path: &Path) -> Result<(), Errno>;
    /// `rmdir(2)`.
    fn rmdir(&mut self, path: &Path) -> Result<(), Errno>;
    /// Copy a file (the shim into the new root's `/run`), keeping it executable.
    fn copy_file(&mut self, from: &Path, to: &Path) -> Result<(), Errno>;
    /// Write a whole small file (the plan for the shim), durably.
    fn write_file(&mut self, path: &Path, contents: &[u8]) -> Result<(), Errno>;
    /// `uname(2)` release, to find `/lib/modules/<release>`.
    fn kernel_release(&mut self) -> Result<String, Errno>;
    /// Send one complete rtnetlink request and wait for the kernel's acknowledgement;
    /// `what` only names it (for the fake's record).
    fn netlink(&mut self, request: &[u8], what: &str) -> Result<(), Errno>;
    /// Make sure stdin/stdout/stderr are open, on `console` if they were closed (the
    /// kernel leaves them closed when the initramfs had no `/dev/console`).
    fn open_console(&mut self, console: &Path) -> Result<(), Errno>;
    /// Sleep between retries (the fake only records it).
    fn sleep(&mut self, duration: Duration);
    /// Run an external program (only `mke2fs` on the boot path) and wait for it; returns
    /// its exit code (128 + signal number when killed).
    fn run(&mut self, path: &Path, args: &[String]) -> Result<i32, Errno>;
    /// `BLKRRPART`: ask the kernel to re-read the partition table of a whole disk.
    fn reread_partitions(&mut self, device: &Path) -> Result<(), Errno>;
    /// `BLKDISCARD` of `len` bytes at `offset` on a block device.
    fn discard(&mut self, device: &Path, offset: u64, len: u64) -> Result<(), Errno>;
    /// A UDP socket on 0.0.0.0:`port`, bound to `interface` (`SO_BINDTODEVICE`), allowed
    /// to broadcast: it sends and hears on that interface even before it has an address.
    fn udp_open(&mut self, interface: &str, port: u16) -> Result<SocketId, Errno>;
    /// Send `data` to 255.255.255.255:`port`.
    fn udp_broadcast(&mut self, socket: SocketId, port: u16, data: &[u8]) -> Result<(), Errno>;
    /// Wait up to `timeout` for one datagram into `buf`: its length, or `None` when the
    /// time ran out or a signal came (the caller checks [`Sys::now`] and asks again).
    fn udp_recv(
        &mut self,
        socket: SocketId,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<usize>, Errno>;
    /// Close a socket of [`Sys::udp_open`].
    fn udp_close(&mut self, socket: SocketId);
    /// A monotonic clock (from an arbitrary origin), for time bounds. The fake's advances
    /// only by what it is asked to wait.
    fn now(&mut self) -> Duration;
    /// 32 unpredictable bits (DHCP transaction ids); never blocks, even before the
    /// kernel's entropy pool is ready.
    fn random_u32(&mut self) -> u32;
}
