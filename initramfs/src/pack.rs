//! Packing an overlay upper folder as a tar stream, exactly as it is: regular files,
//! folders, symlinks, fifos and device nodes — so overlayfs whiteouts (character devices
//! 0/0) survive — with owners, modes, mtimes and every extended attribute (the
//! `trusted.overlay.*` opaque/redirect markers included) as PAX `SCHILY.xattr.*` records.
//! Entries are written in sorted order so the same tree always gives the same bytes (the
//! sync-back compares hashes to see whether anything changed).
//!
//! It never follows symlinks or crosses into another mount, skips sockets, and stores hard
//! links as separate copies.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use tar::{Builder, EntryType, Header};

/// What a pack wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packed {
    /// Entries in the archive.
    pub entries: u64,
}

fn errno_io() -> io::Error {
    io::Error::last_os_error()
}

/// Every extended attribute of `path` (not following symlinks), sorted by name.
pub fn xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NULL buffer of size 0 asks only for the size of the name list.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = errno_io();
        // Filesystems without xattrs (or a tmpfs without user xattrs) have none.
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    let mut names = vec![0u8; usize::try_from(n).unwrap_or(0)];
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // SAFETY: `names` is writable for its whole length, which we pass.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(errno_io());
    }
    names.truncate(usize::try_from(n).unwrap_or(0));
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: size query with a NULL buffer.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(errno_io());
        }
        let mut value = vec![0u8; usize::try_from(len).unwrap_or(0)];
        // SAFETY: `value` is writable for its whole length, which we pass.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            return Err(errno_io());
        }
        value.truncate(usize::try_from(len).unwrap_or(0));
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    Ok(out)
}

/// Write `dir`'s contents as a tar stream into `out` (names relative to `dir`).
pub fn pack<W: Write>(dir: &Path, out: W) -> io::Result<(Packed, W)> {
    let root_dev = fs::symlink_metadata(dir)?.dev();
    let mut b = Builder::new(out);
    b.follow_symlinks(false);
    let mut packed = Packed::default();
    walk(&mut b, dir, Path::new(""), root_dev, &mut packed)?;
    let out = b.into_inner()?;
    Ok((packed, out))
}

fn walk<W: Write>(
    b: &mut Builder<W>,
    dir: &Path,
    rel: &Path,
    root_dev: u64,
    packed: &mut Packed,
) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = dir.join(&rel);
        let m = fs::symlink_metadata(&path)?;
        let ft = m.file_type();
        if ft.is_socket() {
            continue;
        }
        let attrs = xattrs(&path)?;
        if !attrs.is_empty() {
            let keys: Vec<(String, &[u8])> = attrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            b.append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut h = Header::new_ustar();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(u64::from(m.uid()));
        h.set_gid(u64::from(m.gid()));
        h.set_mtime(u64::try_from(m.mtime()).unwrap_or(0));
        h.set_size(0);
        packed.entries += 1;
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            b.append_data(&mut h, &rel, io::empty())?;
            if m.dev() == root_dev {
                walk(b, dir, &rel, root_dev, packed)?;
            }
        } else if ft.is_file() {
            h.set_entry_type(EntryType::Regular);
            h.set_size(m.len());
            b.append_data(&mut h, &rel, File::open(&path)?)?;
        } else if ft.is_symlink() {
            h.set_entry_type(EntryType::Symlink);
            b.append_link(&mut h, &rel, fs::read_link(&path)?)?;
        } else {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            h.set_entry_type(kind);
            let rdev = m.rdev();
            h.set_device_major(libc::major(rdev))?;
            h.set_device_minor(libc::minor(rdev))?;
            b.append_data(&mut h, &rel, io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("etc/app")).expect("mkdir");
        fs::write(root.join("etc/hostname"), "node1\n").expect("w");
        fs::write(root.join("etc/app/conf"), "x=1\n").expect("w");
        std::os::unix::fs::symlink("hostname", root.join("etc/name")).expect("symlink");
    }

    #[test]
    fn packs_files_dirs_links_in_sorted_order_deterministically() {
        let d = tempfile::tempdir().expect("tempdir");
        tree(d.path());
        let (p, bytes) = pack(d.path(), Vec::new()).expect("pack");
        assert_eq!(p.entries, 5);
        let mut a = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            let kind = e.header().entry_type();
            let mut body = String::new();
            e.read_to_string(&mut body).expect("read");
            let link = e
                .link_name()
                .expect("link")
                .map(|l| l.display().to_string());
            seen.push((path, kind, body, link));
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            ["etc", "etc/app", "etc/app/conf", "etc/hostname", "etc/name"]
        );
        assert_eq!(seen[3].2, "node1\n");
        assert_eq!(seen[4].1, EntryType::Symlink);
        assert_eq!(seen[4].3.as_deref(), Some("hostname"));
        let (_, again) = pack(d.path(), Vec::new()).expect("pack");
        assert!(again == bytes, "same tree, same bytes");
        fs::write(d.path().join("etc/hostname"), "node2\n").expect("w");
        let (_, changed) = pack(d.path(), Vec::new()).expect("pack");
        assert!(changed != bytes);
    }

    #[test]
    fn whiteouts_and_xattrs_are_kept_when_we_may_make_them() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir(d.path().join("opaque")).expect("mkdir");
        // A whiteout is a 0/0 character device; making one needs CAP_MKNOD.
        let wh = d.path().join("gone");
        let made = nix::sys::stat::mknod(
            &wh,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .is_ok();
        // user.* stands in for trusted.* (which needs CAP_SYS_ADMIN): same code path.
        let c = CString::new(d.path().join("opaque").as_os_str().as_bytes()).expect("c");
        // SAFETY: valid NUL-terminated strings and a 1-byte value buffer.
        let set = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        } == 0;
        let (_, bytes) = pack(d.path(), Vec::new()).expect("pack");
        let mut a = tar::Archive::new(&bytes[..]);
        let mut found_dev = false;
        let mut found_attr = false;
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let path = e.path().expect("path").display().to_string();
            if path == "gone" {
                assert_eq!(e.header().entry_type(), EntryType::Char);
                assert_eq!(e.header().device_major().expect("major"), Some(0));
                assert_eq!(e.header().device_minor().expect("minor"), Some(0));
                found_dev = true;
            }
            if path == "opaque" {
                if let Some(ext) = e.pax_extensions().expect("pax") {
                    for x in ext {
                        let x = x.expect("ext");
                        if x.key() == Ok("SCHILY.xattr.user.overlay.opaque") {
                            assert_eq!(x.value_bytes(), b"y");
                            found_attr = true;
                        }
                    }
                }
            }
        }
        assert_eq!(found_dev, made, "whiteout packed iff it could be made");
        assert_eq!(found_attr, set, "xattr packed iff it could be set");
    }
}
