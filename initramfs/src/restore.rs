//! Restoring a machine layer: when the plan carries `machine_restore` (the newest machine
//! layer the server holds for this machine) and the disk has no machine layer yet (a new
//! or re-initialised disk), the tar is fetched through the verified pipeline into a temp
//! file on the carte filesystem, unpacked into `machine/root/upper.restore`, and only then
//! renamed to `machine/root/upper`: a failed or partial restore never becomes the machine
//! layer, and the next boot tries again.
//!
//! Entries come back as [`crate::pack`] wrote them: folders, files, symlinks, fifos and
//! device nodes (overlayfs whiteouts are 0/0 character devices) with owners, modes and
//! the `SCHILY.xattr.*` records (overlayfs' opaque markers). A name that would leave the
//! folder (absolute, `..`) refuses the whole tar. A machine layer already on the disk is
//! never touched: it is newer than anything it synced back.
//!
//! Like sync-back, this works on files of the mounted carte filesystem with std and libc
//! directly, not through `Sys`: it does no mount, loop or exec.

use crate::fetch::{self, FetchError, Source};
use carte_contract::{Format, Plan};
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// How a restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plan names no machine layer to restore.
    NotAsked,
    /// The disk already has a machine layer; it wins.
    Present,
    /// Unpacked from the server's version.
    Restored { label: String, entries: u64 },
}

/// Restore failures, naming the layer and the path.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("restore {label}: a machine layer backup must be a tar, not {format:?}")]
    NotTar { label: String, format: Format },
    #[error("restore {label}: {source}")]
    Fetch { label: String, source: FetchError },
    #[error("restore {label}: {path}: {source}")]
    Io {
        label: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("restore {label}: entry {name:?} would leave the machine layer")]
    Escape { label: String, name: PathBuf },
}

/// Restores `plan.machine_restore` into `<carte_fs>/machine/root/upper` when that folder
/// does not exist yet.
pub fn restore(
    agent: &ureq::Agent,
    plan: &Plan,
    carte_fs: &Path,
    progress: &mut dyn FnMut(&fetch::Progress),
) -> Result<Outcome, RestoreError> {
    let Some(layer) = &plan.machine_restore else {
        return Ok(Outcome::NotAsked);
    };
    let root = carte_fs.join("machine/root");
    let upper = root.join("upper");
    if upper.exists() {
        return Ok(Outcome::Present);
    }
    let label = format!("{}@{}", layer.name, layer.version);
    if layer.format != Format::Tar {
        return Err(RestoreError::NotTar {
            label,
            format: layer.format,
        });
    }
    let io_err = |path: &Path| io_error(&label, path);
    fs::create_dir_all(&root).map_err(io_err(&root))?;
    let temp = root.join("restore.tar.tmp");
    let staging = root.join("upper.restore");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    fetch::fetch(
        agent,
        &Source::from(layer),
        &temp,
        fetch::Options::default(),
        progress,
    )
    .map_err(|source| RestoreError::Fetch {
        label: label.clone(),
        source,
    })?;
    let unpacked = unpack(&temp, &staging, &label);
    let _ = fs::remove_file(&temp);
    let entries = match unpacked {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    fs::rename(&staging, &upper).map_err(io_err(&upper))?;
    Ok(Outcome::Restored { label, entries })
}

/// At most this much PAX or GNU long-name data per entry (a machine layer's names and
/// xattrs are far smaller).
const MAX_META: u64 = 1 << 20;

/// Unpacks the tar at `tar` into `dst` (created); returns how many entries it made.
///
/// The archive is read raw: PAX records are parsed here by their lengths, because an
/// xattr value (overlayfs' binary `trusted.overlay.origin`) may hold a newline, which the
/// `tar` crate's own PAX parser splits on.
pub fn unpack(tar: &Path, dst: &Path, label: &str) -> Result<u64, RestoreError> {
    use ::tar::EntryType;
    use std::io::Read;
    let io_err = |path: &Path| io_error(label, path);
    fs::create_dir_all(dst).map_err(io_err(dst))?;
    let file = File::open(tar).map_err(io_err(tar))?;
    let mut archive = ::tar::Archive::new(file);
    let mut made = 0;
    let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let (mut long_name, mut long_link) = (None, None);
    for entry in archive.entries().map_err(io_err(tar))?.raw(true) {
        let mut entry = entry.map_err(io_err(tar))?;
        let kind = entry.header().entry_type();
        let meta = |entry: &mut ::tar::Entry<'_, File>| -> io::Result<Vec<u8>> {
            if entry.size() > MAX_META {
                return Err(io::Error::other("oversized tar metadata entry"));
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            Ok(data)
        };
        match kind {
            EntryType::XHeader => {
                let data = meta(&mut entry).map_err(io_err(tar))?;
                pax.extend(parse_pax(&data).map_err(io_err(tar))?);
                continue;
            }
            EntryType::XGlobalHeader => {
                meta(&mut entry).map_err(io_err(tar))?;
                continue;
            }
            EntryType::GNULongName => {
                long_name = Some(trim_nul(meta(&mut entry).map_err(io_err(tar))?));
                continue;
            }
            EntryType::GNULongLink => {
                long_link = Some(trim_nul(meta(&mut entry).map_err(io_err(tar))?));
                continue;
            }
            _ => {}
        }
        let record = |key: &[u8]| pax.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let name = record(b"path")
            .or(long_name.take())
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let link = record(b"linkpath")
            .or(long_link.take())
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = pax
            .drain(..)
            .filter_map(|(k, v)| {
                k.strip_prefix(b"SCHILY.xattr.".as_slice())
                    .map(|n| (n.to_vec(), v))
            })
            .collect();
        let name = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
        let rel = inside(&name).ok_or_else(|| RestoreError::Escape {
            label: label.to_string(),
            name: name.clone(),
        })?;
        if rel.as_os_str().is_empty() {
            continue; // the folder itself ("./")
        }
        let path = dst.join(&rel);
        let link = link.map(|l| PathBuf::from(std::ffi::OsStr::from_bytes(&l)));
        make(&mut entry, &path, link).map_err(io_err(&path))?;
        for (key, value) in xattrs {
            set_xattr(&path, &key, &value).map_err(io_err(&path))?;
        }
        made += 1;
    }
    Ok(made)
}

/// PAX records (`<len> <key>=<value>\n`), each cut by its length, so values may hold
/// any byte.
fn parse_pax(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let bad = || io::Error::other("malformed pax record");
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let body = &data[space + 1..len - 1];
        let eq = body.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        out.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Maps an IO error at `path` to the restore's error.
fn io_error(label: &str, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let (label, path) = (label.to_string(), path.to_path_buf());
    move |source| RestoreError::Io {
        label,
        path,
        source,
    }
}

/// `name` as a relative path of normal components, or `None` when it would leave.
fn inside(name: &Path) -> Option<PathBuf> {
    let mut rel = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(rel)
}

/// Makes one entry at `path` (a symlink points at `link`), with its owner and mode.
fn make<R: io::Read>(
    entry: &mut ::tar::Entry<'_, R>,
    path: &Path,
    link: Option<PathBuf>,
) -> io::Result<()> {
    use ::tar::EntryType;
    let header = entry.header();
    let kind = header.entry_type();
    let mode = header.mode()? & 0o7777;
    let uid = u32::try_from(header.uid()?).map_err(io::Error::other)?;
    let gid = u32::try_from(header.gid()?).map_err(io::Error::other)?;
    // Only device entries carry device numbers (the field is blank elsewhere).
    let device = match kind {
        EntryType::Char | EntryType::Block => (
            header.device_major()?.unwrap_or(0),
            header.device_minor()?.unwrap_or(0),
        ),
        _ => (0, 0),
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match kind {
        EntryType::Directory => fs::create_dir_all(path)?,
        EntryType::Regular | EntryType::Continuous => {
            let mut f = File::create(path)?;
            io::copy(entry, &mut f)?;
        }
        EntryType::Symlink => {
            let target = link.ok_or_else(|| io::Error::other("symlink without a target"))?;
            std::os::unix::fs::symlink(target, path)?;
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            let file_type = match kind {
                EntryType::Char => libc::S_IFCHR,
                EntryType::Block => libc::S_IFBLK,
                _ => libc::S_IFIFO,
            };
            let (major, minor) = device;
            let dev = libc::makedev(major, minor);
            let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
            // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
            if unsafe { libc::mknod(c.as_ptr(), file_type | mode, dev) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        other => {
            return Err(io::Error::other(format!(
                "unsupported tar entry type {other:?}"
            )))
        }
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if kind != EntryType::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn set_xattr(path: &Path, key: &[u8], value: &[u8]) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let k = CString::new(key).map_err(io::Error::other)?;
    // SAFETY: both strings are valid and NUL-terminated, `value` is a live slice of
    // `value.len()` bytes, and all outlive the call.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_are_cut_by_length_so_values_may_hold_newlines() {
        let value = b"\x00\nbinary\n";
        let key = b"SCHILY.xattr.trusted.overlay.origin";
        let body_len = key.len() + 1 + value.len() + 1;
        // The length counts itself, its space, the record and the newline.
        let mut len = body_len + 3;
        if len.to_string().len() != 2 {
            len = body_len + 1 + len.to_string().len();
        }
        let mut data = format!("{len} ").into_bytes();
        data.extend_from_slice(key);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
        data.extend_from_slice(b"12 path=a/b\n");
        let got = parse_pax(&data).expect("parsed");
        assert_eq!(got[0], (key.to_vec(), value.to_vec()));
        assert_eq!(got[1], (b"path".to_vec(), b"a/b".to_vec()));
        assert!(parse_pax(b"99 path=a\n").is_err());
        assert!(parse_pax(b"x path=a\n").is_err());
    }

    #[test]
    fn names_that_leave_are_refused() {
        assert_eq!(inside(Path::new("./etc/x")), Some(PathBuf::from("etc/x")));
        assert_eq!(inside(Path::new("var/lib")), Some(PathBuf::from("var/lib")));
        assert_eq!(inside(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(inside(Path::new("../x")), None);
        assert_eq!(inside(Path::new("a/../../x")), None);
        assert_eq!(inside(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn a_packed_tree_unpacks_to_the_same_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("upper");
        fs::create_dir_all(src.join("var/lib/carte-test")).expect("mkdir");
        fs::write(src.join("var/lib/carte-test/boots"), "boot=1\n").expect("write");
        fs::set_permissions(
            src.join("var/lib/carte-test/boots"),
            fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("boots", src.join("var/lib/carte-test/link")).expect("ln");
        // A name longer than ustar's 100 bytes travels as a GNU long name or PAX path.
        let long = format!("var/{}/{}", "d".repeat(90), "f".repeat(90));
        fs::create_dir_all(src.join(&long).parent().expect("parent")).expect("mkdir");
        fs::write(src.join(&long), "long\n").expect("write");
        let tar = dir.path().join("upper.tar");
        let out = File::create(&tar).expect("create");
        crate::pack::pack(&src, out).expect("pack");

        let dst = dir.path().join("restored");
        let n = unpack(&tar, &dst, "machine@1").expect("unpack");
        assert!(n >= 4, "{n} entries");
        let f = dst.join("var/lib/carte-test/boots");
        assert_eq!(fs::read_to_string(&f).expect("read"), "boot=1\n");
        let mode = fs::metadata(&f).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            fs::read_link(dst.join("var/lib/carte-test/link")).expect("readlink"),
            PathBuf::from("boots")
        );
        assert_eq!(fs::read_to_string(dst.join(&long)).expect("read"), "long\n");
    }

    #[test]
    fn a_tar_with_an_escaping_name_is_refused_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = dir.path().join("evil.tar");
        let mut b = ::tar::Builder::new(File::create(&tar).expect("create"));
        let mut h = ::tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(::tar::EntryType::Regular);
        // Written raw: the builder itself refuses "..", as it should.
        let name = b"../outside";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"bad"[..]).expect("append");
        b.into_inner().expect("finish");
        let dst = dir.path().join("restored");
        let e = unpack(&tar, &dst, "machine@1").expect_err("refused");
        assert!(matches!(e, RestoreError::Escape { .. }), "{e}");
        assert!(!dir.path().join("outside").exists());
    }
}
