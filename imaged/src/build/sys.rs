//! Thin wrappers over the few libc calls std lacks (mknod, lchown, lsetxattr, utimensat
//! without following symlinks), each failing with the step and path.
//!
//! No policy here: callers decide what to create and when.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::error::{Error, Result};

pub fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|e| Error::Io {
        step: "path with NUL",
        path: p.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })
}

fn last_err(step: &'static str, p: &Path) -> Error {
    Error::Io {
        step,
        path: p.to_path_buf(),
        source: io::Error::last_os_error(),
    }
}

pub fn mknod(p: &Path, mode: u32, dev: libc::dev_t) -> Result<()> {
    let c = cpath(p)?;
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(last_err("mknod", p));
    }
    Ok(())
}

pub fn lchown(p: &Path, uid: u64, gid: u64) -> Result<()> {
    let c = cpath(p)?;
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(Error::Io {
            step: "lchown (owner out of range)",
            path: p.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        });
    };
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(last_err("lchown", p));
    }
    Ok(())
}

pub fn set_xattr(p: &Path, name: &[u8], value: &[u8]) -> Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|e| Error::Io {
        step: "xattr name with NUL",
        path: p.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: both strings are NUL-terminated, value points to value.len() readable bytes.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(last_err("set xattr", p));
    }
    Ok(())
}

/// Sets atime and mtime of `p` (not following a symlink) to `secs`.
pub fn set_mtime(p: &Path, secs: i64) -> Result<()> {
    let c = cpath(p)?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: c is a valid path and times points to two timespecs, as utimensat requires.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last_err("set mtime", p));
    }
    Ok(())
}
