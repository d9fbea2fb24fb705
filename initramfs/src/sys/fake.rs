//! The recording fake `Sys`: every call is recorded as one line of text (so tests compare
//! whole sequences), and the Nth call — or the first call starting with a given prefix —
//! can be made to fail. A tiny in-memory tree answers `lstat`/`read_dir`/`unlink`/`rmdir`
//! so the root switch's clean-up can be tested without root.
//!
//! The DHCP client's socket is fake too: sent datagrams are kept, received ones come from
//! a queue, and a clock advances by the waits (`sleep`, a receive that times out), so
//! time bounds are tested without waiting.
//!
//! It does not model mount semantics: a mount does not change what the tree shows.

use super::{Errno, FileInfo, MsFlags, SocketId, Sys};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A recording, failure-injecting fake.
#[derive(Debug, Default)]
pub struct FakeSys {
    /// Every call so far, in order, as text (`mount /dev/loop0 /x erofs ro -`).
    pub calls: Vec<String>,
    /// Fail the call with this 1-based number.
    pub fail_at: Option<usize>,
    /// Fail every call whose text starts with this.
    pub fail_prefix: Option<String>,
    /// The errno failures return (EIO unless set).
    pub fail_errno: Option<Errno>,
    /// Paths the tree knows: `st_dev` and whether a directory.
    pub tree: BTreeMap<PathBuf, FileInfo>,
    /// Errno per module file path for `finit_module` (EEXIST to test "already loaded").
    pub module_errno: BTreeMap<PathBuf, Errno>,
    /// The release `kernel_release` reports.
    pub release: String,
    /// Exit code `run` reports (0 unless set).
    pub run_status: i32,
    /// What each `udp_recv` gets, in order: a datagram (delivered after 1 ms) or `None`,
    /// a timeout. Once empty, every receive times out.
    pub udp_inbox: VecDeque<Option<Vec<u8>>>,
    /// Every datagram `udp_broadcast` sent.
    pub udp_sent: Vec<Vec<u8>>,
    /// The fake clock `now` reads.
    pub clock: Duration,
    /// What `random_u32` returns next (then one more each call).
    pub random: u32,
    next_loop: usize,
    next_socket: i32,
}

fn flags_text(flags: MsFlags) -> String {
    let mut out = Vec::new();
    for (f, name) in [
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_BIND, "bind"),
        (MsFlags::MS_MOVE, "move"),
        (MsFlags::MS_REC, "rec"),
    ] {
        if flags.contains(f) {
            out.push(name);
        }
    }
    if out.is_empty() {
        "rw".into()
    } else {
        out.join(",")
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

impl FakeSys {
    /// A fake with nothing recorded and no failure.
    pub fn new() -> FakeSys {
        FakeSys {
            release: "6.1.0-test".into(),
            ..FakeSys::default()
        }
    }

    /// A fake that fails its `n`th call (1-based).
    pub fn failing_at(n: usize) -> FakeSys {
        FakeSys {
            fail_at: Some(n),
            ..FakeSys::new()
        }
    }

    /// Add a directory (and its parents) to the tree on device `dev`.
    pub fn add_dir(&mut self, path: &str, dev: u64) {
        self.tree
            .insert(PathBuf::from(path), FileInfo { dev, is_dir: true });
    }

    /// Add a file to the tree on device `dev`.
    pub fn add_file(&mut self, path: &str, dev: u64) {
        self.tree
            .insert(PathBuf::from(path), FileInfo { dev, is_dir: false });
    }

    /// Calls except the read-only queries (`lstat`, `read_dir`), which clutter sequences.
    pub fn mutations(&self) -> Vec<String> {
        self.calls
            .iter()
            .filter(|c| !c.starts_with("lstat ") && !c.starts_with("read_dir "))
            .cloned()
            .collect()
    }

    fn record(&mut self, call: String) -> Result<(), Errno> {
        self.calls.push(call);
        let n = self.calls.len();
        let by_number = self.fail_at == Some(n);
        let by_prefix = self
            .fail_prefix
            .as_deref()
            .is_some_and(|p| self.calls[n - 1].starts_with(p));
        if by_number || by_prefix {
            return Err(self.fail_errno.unwrap_or(Errno::EIO));
        }
        Ok(())
    }
}

impl Sys for FakeSys {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), Errno> {
        self.record(format!(
            "mount {} {} {} {} {}",
            or_dash(source),
            target.display(),
            or_dash(fstype),
            flags_text(flags),
            or_dash(data)
        ))
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        self.record(format!("move {} {}", from.display(), to.display()))
    }

    fn umount(&mut self, target: &Path, detach: bool) -> Result<(), Errno> {
        let d = if detach { " detach" } else { "" };
        self.record(format!("umount {}{d}", target.display()))
    }

    fn mkdir_all(&mut self, path: &Path) -> Result<(), Errno> {
        self.record(format!("mkdir {}", path.display()))
    }

    fn mknod_char(&mut self, path: &Path, major: u64, minor: u64, mode: u32) -> Result<(), Errno> {
        self.record(format!(
            "mknod {} c {major}:{minor} {mode:o}",
            path.display()
        ))
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        self.record(format!("chdir {}", path.display()))
    }

    fn chroot(&mut self, path: &Path) -> Result<(), Errno> {
        self.record(format!("chroot {}", path.display()))
    }

    fn finit_module(&mut self, path: &Path, params: &str, compressed: bool) -> Result<(), Errno> {
        let c = if compressed { " compressed" } else { "" };
        self.record(format!(
            "finit_module {} {}{c}",
            path.display(),
            or_dash(params)
        ))?;
        match self.module_errno.get(path) {
            Some(e) => Err(*e),
            None => Ok(()),
        }
    }

    fn loop_attach(&mut self, file: &Path, read_only: bool) -> Result<PathBuf, Errno> {
        let mode = if read_only { "ro" } else { "rw" };
        self.record(format!("loop_attach {} {mode}", file.display()))?;
        let dev = PathBuf::from(format!("/dev/loop{}", self.next_loop));
        self.next_loop += 1;
        Ok(dev)
    }

    fn loop_detach(&mut self, device: &Path) -> Result<(), Errno> {
        self.record(format!("loop_detach {}", device.display()))
    }

    fn exec(&mut self, path: &Path, args: &[String]) -> Result<(), Errno> {
        let mut line = format!("exec {}", path.display());
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        self.record(line)
    }

    fn reboot(&mut self) -> Result<(), Errno> {
        self.record("reboot".into())
    }

    fn sync(&mut self) {
        // Cannot fail; recorded for sequence checks only.
        self.calls.push("sync".into());
    }

    fn lstat(&mut self, path: &Path) -> Result<FileInfo, Errno> {
        self.record(format!("lstat {}", path.display()))?;
        self.tree.get(path).copied().ok_or(Errno::ENOENT)
    }

    fn read_dir(&mut self, path: &Path) -> Result<Vec<String>, Errno> {
        self.record(format!("read_dir {}", path.display()))?;
        Ok(self
            .tree
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    fn unlink(&mut self, path: &Path) -> Result<(), Errno> {
        self.record(format!("unlink {}", path.display()))?;
        self.tree.remove(path).map(|_| ()).ok_or(Errno::ENOENT)
    }

    fn rmdir(&mut self, path: &Path) -> Result<(), Errno> {
        self.record(format!("rmdir {}", path.display()))?;
        if self.tree.keys().any(|p| p.parent() == Some(path)) {
            return Err(Errno::ENOTEMPTY);
        }
        self.tree.remove(path).map(|_| ()).ok_or(Errno::ENOENT)
    }

    fn copy_file(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        self.record(format!("copy {} {}", from.display(), to.display()))
    }

    fn write_file(&mut self, path: &Path, contents: &[u8]) -> Result<(), Errno> {
        self.record(format!(
            "write {} ({} bytes)",
            path.display(),
            contents.len()
        ))
    }

    fn kernel_release(&mut self) -> Result<String, Errno> {
        self.record("uname".into())?;
        Ok(self.release.clone())
    }

    fn netlink(&mut self, request: &[u8], what: &str) -> Result<(), Errno> {
        self.record(format!("netlink {what} ({} bytes)", request.len()))
    }

    fn open_console(&mut self, console: &Path) -> Result<(), Errno> {
        self.record(format!("open_console {}", console.display()))
    }

    fn sleep(&mut self, duration: Duration) {
        self.calls.push(format!("sleep {}ms", duration.as_millis()));
        self.clock += duration;
    }

    fn run(&mut self, path: &Path, args: &[String]) -> Result<i32, Errno> {
        let mut line = format!("run {}", path.display());
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        self.record(line)?;
        Ok(self.run_status)
    }

    fn reread_partitions(&mut self, device: &Path) -> Result<(), Errno> {
        self.record(format!("rereadpt {}", device.display()))
    }

    fn discard(&mut self, device: &Path, offset: u64, len: u64) -> Result<(), Errno> {
        self.record(format!("discard {} {offset}+{len}", device.display()))
    }

    fn udp_open(&mut self, interface: &str, port: u16) -> Result<SocketId, Errno> {
        self.record(format!("udp_open {interface} port {port}"))?;
        self.next_socket += 1;
        Ok(SocketId(self.next_socket))
    }

    fn udp_broadcast(&mut self, socket: SocketId, port: u16, data: &[u8]) -> Result<(), Errno> {
        self.record(format!(
            "udp_broadcast {} to port {port} ({} bytes)",
            socket.0,
            data.len()
        ))?;
        self.udp_sent.push(data.to_vec());
        Ok(())
    }

    fn udp_recv(
        &mut self,
        socket: SocketId,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<usize>, Errno> {
        let call = format!("udp_recv {} {}ms", socket.0, timeout.as_millis());
        match self.udp_inbox.pop_front().flatten() {
            Some(datagram) => {
                self.record(format!("{call}: {} bytes", datagram.len()))?;
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                self.clock += Duration::from_millis(1).min(timeout);
                Ok(Some(n))
            }
            None => {
                self.record(format!("{call}: timeout"))?;
                self.clock += timeout;
                Ok(None)
            }
        }
    }

    fn udp_close(&mut self, socket: SocketId) {
        self.calls.push(format!("udp_close {}", socket.0));
    }

    fn now(&mut self) -> Duration {
        self.clock
    }

    fn random_u32(&mut self) -> u32 {
        let r = self.random;
        self.random = self.random.wrapping_add(1);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_fails_at_the_nth_call() {
        let mut f = FakeSys::failing_at(2);
        assert!(f.mkdir_all(Path::new("/a")).is_ok());
        assert_eq!(f.chdir(Path::new("/a")), Err(Errno::EIO));
        assert!(f.chroot(Path::new(".")).is_ok());
        assert_eq!(f.calls, ["mkdir /a", "chdir /a", "chroot ."]);
    }

    #[test]
    fn fails_by_prefix_with_the_chosen_errno() {
        let mut f = FakeSys::new();
        f.fail_prefix = Some("mount overlay".into());
        f.fail_errno = Some(Errno::EINVAL);
        let ro = MsFlags::MS_RDONLY;
        assert!(f
            .mount("/dev/loop0", Path::new("/l"), "erofs", ro, "")
            .is_ok());
        let r = f.mount("overlay", Path::new("/r"), "overlay", MsFlags::empty(), "x");
        assert_eq!(r, Err(Errno::EINVAL));
        assert_eq!(f.calls[0], "mount /dev/loop0 /l erofs ro -");
        assert_eq!(f.calls[1], "mount overlay /r overlay rw x");
    }

    #[test]
    fn tree_answers_queries_and_refuses_non_empty_rmdir() {
        let mut f = FakeSys::new();
        f.add_dir("/d", 1);
        f.add_file("/d/x", 1);
        assert_eq!(f.read_dir(Path::new("/d")).expect("list"), ["x"]);
        assert_eq!(f.rmdir(Path::new("/d")), Err(Errno::ENOTEMPTY));
        assert!(f.unlink(Path::new("/d/x")).is_ok());
        assert!(f.rmdir(Path::new("/d")).is_ok());
        assert_eq!(f.lstat(Path::new("/d")), Err(Errno::ENOENT));
    }

    #[test]
    fn loop_devices_are_numbered_in_order() {
        let mut f = FakeSys::new();
        let a = f.loop_attach(Path::new("/c/a"), true).expect("attach");
        let b = f.loop_attach(Path::new("/c/b"), false).expect("attach");
        assert_eq!(
            (a.to_str(), b.to_str()),
            (Some("/dev/loop0"), Some("/dev/loop1"))
        );
        assert_eq!(f.calls, ["loop_attach /c/a ro", "loop_attach /c/b rw"]);
    }
}
