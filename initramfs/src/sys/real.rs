//! The real `Sys`: thin wrappers over nix and libc. No policy here, no retries, no
//! logging: each method is one system call (or the fixed short sequence one operation
//! needs, like loop attach).

use super::loopdev::{
    LoopConfig, LoopInfo64, LOOP_CLR_FD, LOOP_CONFIGURE, LOOP_CTL_GET_FREE, LOOP_SET_FD,
    LOOP_SET_STATUS64, LO_FLAGS_READ_ONLY,
};
use super::{Errno, FileInfo, MsFlags, SocketId, Sys};
use nix::fcntl::{open, OFlag};
use nix::mount::MntFlags;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::{TimeVal, TimeValLike};
use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `MODULE_INIT_COMPRESSED_FILE` from `<linux/module.h>`.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// `BLKRRPART` and `BLKDISCARD` from `<linux/fs.h>` (`_IO(0x12, 95)`, `_IO(0x12, 119)`).
const BLKRRPART: libc::Ioctl = 0x125F;
const BLKDISCARD: libc::Ioctl = 0x1277;

/// The real system.
#[derive(Debug, Default)]
pub struct RealSys;

/// The sockets `udp_open` handed out, owned here so each is closed exactly once and a
/// stale id is `EBADF`, never someone else's descriptor.
static UDP_SOCKETS: Mutex<BTreeMap<i32, OwnedFd>> = Mutex::new(BTreeMap::new());

/// The socket table; a poisoned lock still holds valid descriptors.
fn udp_sockets() -> std::sync::MutexGuard<'static, BTreeMap<i32, OwnedFd>> {
    UDP_SOCKETS.lock().unwrap_or_else(|p| p.into_inner())
}

fn with_socket<T>(
    socket: SocketId,
    f: impl FnOnce(&OwnedFd) -> Result<T, Errno>,
) -> Result<T, Errno> {
    f(udp_sockets().get(&socket.0).ok_or(Errno::EBADF)?)
}

/// The origin of [`Sys::now`].
static CLOCK_ORIGIN: OnceLock<Instant> = OnceLock::new();

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn cstring(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn opt(s: &str) -> Option<&str> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

fn open_rw(path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
}

impl RealSys {
    fn loop_configure(dev: &OwnedFd, file: &OwnedFd, read_only: bool) -> Result<(), Errno> {
        let flags = if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let fd = u32::try_from(file.as_raw_fd()).map_err(|_| Errno::EBADF)?;
        let config = LoopConfig {
            fd,
            block_size: 0,
            info: LoopInfo64::new(flags),
            reserved: [0; 8],
        };
        // SAFETY: `dev` is an open loop device, `config` is a valid, fully initialised
        // `struct loop_config` that outlives the call; the kernel only reads it.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if r == 0 {
            return Ok(());
        }
        let e = Errno::last();
        if e != Errno::EINVAL && e != Errno::ENOTTY {
            return Err(e);
        }
        // Kernels before 5.8: SET_FD then SET_STATUS64.
        // SAFETY: both fds are open; LOOP_SET_FD takes the backing fd as an integer.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, file.as_raw_fd()) };
        if r != 0 {
            return Err(Errno::last());
        }
        let info = LoopInfo64::new(flags);
        // SAFETY: `info` is a valid `struct loop_info64` that outlives the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info) };
        if r != 0 {
            let e = Errno::last();
            // SAFETY: undo the SET_FD on the same open device; takes no argument.
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
            return Err(e);
        }
        Ok(())
    }
}

impl Sys for RealSys {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), Errno> {
        nix::mount::mount(opt(source), target, opt(fstype), flags, opt(data))
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
    }

    fn umount(&mut self, target: &Path, detach: bool) -> Result<(), Errno> {
        let flags = if detach {
            MntFlags::MNT_DETACH
        } else {
            MntFlags::empty()
        };
        nix::mount::umount2(target, flags)
    }

    fn mkdir_all(&mut self, path: &Path) -> Result<(), Errno> {
        fs::create_dir_all(path).map_err(io_errno)
    }

    fn mknod_char(&mut self, path: &Path, major: u64, minor: u64, mode: u32) -> Result<(), Errno> {
        let dev = nix::sys::stat::makedev(major, minor);
        nix::sys::stat::mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(mode), dev)
    }

    fn chdir(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn chroot(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chroot(path)
    }

    fn finit_module(&mut self, path: &Path, params: &str, compressed: bool) -> Result<(), Errno> {
        let fd = open_rw(path, OFlag::O_RDONLY)?;
        let params = CString::new(params).map_err(|_| Errno::EINVAL)?;
        let flags = if compressed {
            MODULE_INIT_COMPRESSED_FILE
        } else {
            0
        };
        // SAFETY: finit_module(fd, const char *params, int flags): `fd` is open for the
        // duration of the call and `params` is a NUL-terminated string it outlives.
        let r = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                fd.as_raw_fd(),
                params.as_ptr(),
                flags,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    fn loop_attach(&mut self, file: &Path, read_only: bool) -> Result<PathBuf, Errno> {
        let control = open_rw(Path::new("/dev/loop-control"), OFlag::O_RDWR)?;
        let access = if read_only {
            OFlag::O_RDONLY
        } else {
            OFlag::O_RDWR
        };
        let backing = open_rw(file, access)?;
        // A device can be taken by someone else between GET_FREE and CONFIGURE: retry.
        for _ in 0..8 {
            // SAFETY: LOOP_CTL_GET_FREE on an open /dev/loop-control takes no argument.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(Errno::last());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match open_rw(&path, access) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    // No devtmpfs node yet: make it (block major 7).
                    let devno = nix::sys::stat::makedev(7, u64::try_from(n).unwrap_or(0));
                    nix::sys::stat::mknod(
                        &path,
                        SFlag::S_IFBLK,
                        Mode::from_bits_truncate(0o600),
                        devno,
                    )?;
                    open_rw(&path, access)?
                }
                Err(e) => return Err(e),
            };
            match Self::loop_configure(&dev, &backing, read_only) {
                Ok(()) => return Ok(path),
                Err(Errno::EBUSY) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Errno::EBUSY)
    }

    fn loop_detach(&mut self, device: &Path) -> Result<(), Errno> {
        let dev = open_rw(device, OFlag::O_RDONLY)?;
        // SAFETY: LOOP_CLR_FD on an open loop device takes no argument.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    fn exec(&mut self, path: &Path, args: &[String]) -> Result<(), Errno> {
        let prog = cstring(path)?;
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(prog.clone());
        for a in args {
            argv.push(CString::new(a.as_str()).map_err(|_| Errno::EINVAL)?);
        }
        match nix::unistd::execv(&prog, &argv) {
            Err(e) => Err(e),
            Ok(never) => match never {},
        }
    }

    fn reboot(&mut self) -> Result<(), Errno> {
        nix::unistd::sync();
        // SAFETY: reboot(2) takes a plain integer command; we are PID 1 (CAP_SYS_BOOT).
        let r = unsafe { libc::reboot(libc::RB_AUTOBOOT) };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    fn sync(&mut self) {
        nix::unistd::sync();
    }

    fn lstat(&mut self, path: &Path) -> Result<FileInfo, Errno> {
        let m = fs::symlink_metadata(path).map_err(io_errno)?;
        Ok(FileInfo {
            dev: m.dev(),
            is_dir: m.file_type().is_dir(),
        })
    }

    fn read_dir(&mut self, path: &Path) -> Result<Vec<String>, Errno> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(io_errno)? {
            let entry = entry.map_err(io_errno)?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn unlink(&mut self, path: &Path) -> Result<(), Errno> {
        nix::unistd::unlink(path)
    }

    fn rmdir(&mut self, path: &Path) -> Result<(), Errno> {
        fs::remove_dir(path).map_err(io_errno)
    }

    fn copy_file(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        fs::copy(from, to).map_err(io_errno)?;
        fs::set_permissions(to, fs::Permissions::from_mode(0o755)).map_err(io_errno)
    }

    fn write_file(&mut self, path: &Path, contents: &[u8]) -> Result<(), Errno> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io_errno)?;
        f.write_all(contents).map_err(io_errno)?;
        f.sync_all().map_err(io_errno)
    }

    fn kernel_release(&mut self) -> Result<String, Errno> {
        let u = nix::sys::utsname::uname()?;
        Ok(u.release().to_string_lossy().into_owned())
    }

    fn netlink(&mut self, request: &[u8], _what: &str) -> Result<(), Errno> {
        // SAFETY: plain socket(2) call; the returned descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO reads a `timeval` of the given size from a valid pointer.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(Errno::last());
        }
        // SAFETY: an all-zero sockaddr_nl is valid; we set the family (pid 0 = kernel).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `request` and `kernel` are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(Errno::last());
        }
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(Errno::last());
            }
            let n = usize::try_from(n).map_err(|_| Errno::EIO)?;
            if let Some(result) = crate::net::netlink_ack(&buf[..n]) {
                return result;
            }
        }
    }

    fn open_console(&mut self, console: &Path) -> Result<(), Errno> {
        for fd in 0..3 {
            // SAFETY: F_GETFD only queries the descriptor table; no memory is passed.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
                continue;
            }
            let flags = if fd == 0 {
                OFlag::O_RDONLY
            } else {
                OFlag::O_WRONLY
            };
            let f = open(console, flags | OFlag::O_NOCTTY, Mode::empty())?;
            if f.as_raw_fd() != fd {
                // SAFETY: both descriptors are valid; dup2 onto a closed slot.
                if unsafe { libc::dup2(f.as_raw_fd(), fd) } == -1 {
                    return Err(Errno::last());
                }
            } else {
                // It landed on the slot we wanted: keep it open.
                std::mem::forget(f);
            }
        }
        Ok(())
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn run(&mut self, path: &Path, args: &[String]) -> Result<i32, Errno> {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::Command::new(path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(io_errno)?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    fn reread_partitions(&mut self, device: &Path) -> Result<(), Errno> {
        let dev = open_rw(device, OFlag::O_RDONLY)?;
        // SAFETY: BLKRRPART on an open block device takes no argument.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), BLKRRPART, 0) };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }

    fn udp_open(&mut self, interface: &str, port: u16) -> Result<SocketId, Errno> {
        let fd = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
        socket::setsockopt(&fd, sockopt::BindToDevice, &OsString::from(interface))?;
        socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, port))?;
        let id = fd.as_raw_fd();
        udp_sockets().insert(id, fd);
        Ok(SocketId(id))
    }

    fn udp_broadcast(&mut self, socket: SocketId, port: u16, data: &[u8]) -> Result<(), Errno> {
        let to = SockaddrIn::new(255, 255, 255, 255, port);
        with_socket(socket, |fd| {
            socket::sendto(fd.as_raw_fd(), data, &to, MsgFlags::empty()).map(drop)
        })
    }

    fn udp_recv(
        &mut self,
        socket: SocketId,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<Option<usize>, Errno> {
        // A zero SO_RCVTIMEO would mean "wait forever": at least 1 µs.
        let micros = i64::try_from(timeout.as_micros())
            .unwrap_or(i64::MAX)
            .max(1);
        let wait = TimeVal::microseconds(micros);
        with_socket(socket, |fd| {
            socket::setsockopt(fd, sockopt::ReceiveTimeout, &wait)?;
            match socket::recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => Ok(Some(n)),
                Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn udp_close(&mut self, socket: SocketId) {
        // Dropping the descriptor closes it.
        udp_sockets().remove(&socket.0);
    }

    fn now(&mut self) -> Duration {
        CLOCK_ORIGIN.get_or_init(Instant::now).elapsed()
    }

    fn random_u32(&mut self) -> u32 {
        let mut buf = [0u8; 4];
        // SAFETY: getrandom(2) writes at most `buf.len()` bytes into the valid, writable
        // `buf`. GRND_INSECURE (Linux 5.6+) never blocks on an uninitialised pool.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_INSECURE) };
        if n == 4 {
            return u32::from_ne_bytes(buf);
        }
        // An older kernel: the clock's nanoseconds are unpredictable enough for an xid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.subsec_nanos() ^ (t.as_secs() as u32)
    }

    fn discard(&mut self, device: &Path, offset: u64, len: u64) -> Result<(), Errno> {
        let dev = open_rw(device, OFlag::O_WRONLY)?;
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD reads a `uint64_t[2]` (start, length) from a valid pointer
        // that outlives the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), BLKDISCARD, &range) };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }
}
