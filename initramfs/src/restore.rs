//! Restoring what the server holds of a machine's writable state onto a disk that has
//! none of it: the machine layer (the plan's `machine_restore`, the newest machine layer
//! the server holds for this machine, into `machine/root/upper`) and the changes of each
//! writable layer (a layer's `restore`, the newest changes synced back for that user or
//! project layer, into `machine/rw/<layer>/upper`). Each is wanted only when its upper
//! does not exist yet (a new or re-initialised disk, or a layer this disk never had).
//!
//! The tar is fetched through the verified pipeline into a temp file next to the upper,
//! unpacked into `upper.restore`, and only then renamed to `upper`: a failed or partial
//! restore never becomes the upper, and the next boot tries again.
//!
//! Entries come back as [`crate::pack`] wrote them: folders, files, symlinks, fifos and
//! device nodes (overlayfs whiteouts are 0/0 character devices) with owners, modes and
//! the `SCHILY.xattr.*` records (overlayfs' opaque markers). A name that would leave the
//! folder (absolute, `..`) refuses the whole tar. An upper already on the disk is never
//! touched: it is newer than anything it synced back.
//!
//! Like sync-back, this works on files of the mounted carte filesystem with std and libc
//! directly, not through `Sys`: it does no mount, loop or exec.

use crate::fetch::{self, FetchError, Source};
use carte_contract::{Format, Layer, Plan};
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// How a restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plan names nothing to restore there.
    NotAsked,
    /// The disk already has that upper; it wins.
    Present,
    /// Unpacked from the server's version.
    Restored { label: String, entries: u64 },
}

/// Restore failures, naming the layer and the path.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("restore {label}: a backup of an upper must be a tar, not {format:?}")]
    NotTar { label: String, format: Format },
    #[error("restore {label}: {source}")]
    Fetch { label: String, source: FetchError },
    #[error("restore {label}: {path}: {source}")]
    Io {
        label: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("restore {label}: entry {name:?} would leave the upper")]
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
    restore_into(agent, layer, &carte_fs.join("machine/root"), progress)
}

/// One writable layer whose changes the plan names for restoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRestore<'a> {
    /// The layer as mounted (its base version).
    pub layer: &'a Layer,
    /// The `tar` of its changes.
    pub changes: &'a Layer,
    /// The folder that holds the layer's `upper` (and `work`), where compose looks.
    pub dir: PathBuf,
}

/// The writable layers of `plan` with changes to restore, and where their uppers live
/// below `carte_fs` (`machine/rw/<layer>/`, as compose mounts them). A `restore` on a
/// layer carte-init does not mount writable (lazy, no mount point) is ignored: nothing
/// would ever read that upper.
pub fn layer_restores<'a>(plan: &'a Plan, carte_fs: &Path) -> Vec<LayerRestore<'a>> {
    plan.layers
        .iter()
        .filter(|l| l.writable())
        .filter_map(|l| {
            l.restore.as_deref().map(|changes| LayerRestore {
                layer: l,
                changes,
                dir: carte_fs
                    .join("machine/rw")
                    .join(carte_contract::file_name(&l.name)),
            })
        })
        .collect()
}

/// Restores one writable layer's changes into `<r.dir>/upper` when that folder does not
/// exist yet.
pub fn restore_layer(
    agent: &ureq::Agent,
    r: &LayerRestore<'_>,
    progress: &mut dyn FnMut(&fetch::Progress),
) -> Result<Outcome, RestoreError> {
    restore_into(agent, r.changes, &r.dir, progress)
}

/// Fetches the tar `layer` and unpacks it into `<root>/upper` (staged in
/// `<root>/upper.restore`, renamed when whole) unless that upper exists.
fn restore_into(
    agent: &ureq::Agent,
    layer: &Layer,
    root: &Path,
    progress: &mut dyn FnMut(&fetch::Progress),
) -> Result<Outcome, RestoreError> {
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
    fs::create_dir_all(root).map_err(io_err(root))?;
    let temp = root.join("restore.tar.tmp");
    let staging = root.join("upper.restore");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    let fetched = fetch::fetch(
        agent,
        &Source::from(layer),
        &temp,
        fetch::Options::default(),
        progress,
    );
    if let Err(source) = fetched {
        let _ = fs::remove_file(&temp);
        return Err(RestoreError::Fetch {
            label: label.clone(),
            source,
        });
    }
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
    // The rename is what makes the upper exist: make it durable before anything is
    // composed over it.
    File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(io_err(root))?;
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
    use carte_contract::{Encoding, LayerKind};
    use sha2::Digest as _;

    fn hex(bytes: &[u8]) -> String {
        crate::fetch::hex(sha2::Sha256::digest(bytes))
    }

    fn data_layer(name: &str, version: u64, format: Format, bytes: &[u8], url: &str) -> Layer {
        Layer {
            name: name.into(),
            version,
            kind: LayerKind::User,
            format,
            encoding: Encoding::None,
            size: bytes.len() as u64,
            uncompressed_size: bytes.len() as u64,
            sha256: hex(bytes),
            sha256_written: hex(bytes),
            url: url.into(),
            mount_point: None,
            lazy: false,
            autostart: None,
            restore: None,
        }
    }

    fn plan_with(layers: Vec<Layer>) -> Plan {
        let mut p: Plan = serde_json::from_value(serde_json::json!({
            "machine": {"mac": "52:54:00:00:00:01"},
            "mode": "compose",
            "disk": {"select": "first"},
            "layers": [],
            "machine_layer": "persist",
            "token": "t",
            "events_url": "http://192.0.2.1/e"
        }))
        .expect("plan");
        p.layers = layers;
        p
    }

    /// A plan mounting `notes@1` writable at /srv/notes with `changes` to restore.
    fn notes_restoring(changes: Layer) -> Plan {
        let mut mounted = data_layer("notes", 1, Format::Erofs, b"n", "u");
        mounted.mount_point = Some("/srv/notes".into());
        mounted.restore = Some(Box::new(changes));
        plan_with(vec![mounted])
    }

    #[test]
    fn only_writable_layers_with_changes_are_restored_where_compose_mounts_them() {
        let changes = |name: &str| Some(Box::new(data_layer(name, 2, Format::Tar, b"t", "u")));
        let mut home = data_layer("alice/home", 1, Format::Erofs, b"h", "u");
        home.mount_point = Some("/home/alice".into());
        home.restore = changes("alice/home");
        let mut plain = data_layer("notes", 1, Format::Erofs, b"n", "u");
        plain.mount_point = Some("/srv/notes".into());
        let mut lazy = data_layer("exp", 1, Format::Erofs, b"e", "u");
        lazy.mount_point = Some("/srv/exp".into());
        lazy.lazy = true;
        lazy.restore = changes("exp");
        let mut lower = data_layer("dots", 1, Format::Erofs, b"d", "u");
        lower.restore = changes("dots");
        let plan = plan_with(vec![home, plain, lazy, lower]);
        let got = layer_restores(&plan, Path::new("/c"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].layer.name, "alice/home");
        assert_eq!(got[0].changes.version, 2);
        assert_eq!(got[0].dir, Path::new("/c/machine/rw/alice_home"));
    }

    #[test]
    fn a_layer_without_an_upper_gets_its_changes_and_one_with_an_upper_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("notes")).expect("mkdir");
        fs::write(src.join("notes/boots"), "boot=1\n").expect("write");
        let mut tar = Vec::new();
        crate::pack::pack(&src, &mut tar).expect("pack");
        let body = tar.clone();
        let srv = crate::testhttp::serve(move |_| (200, body.clone()));
        let changes = data_layer("notes", 2, Format::Tar, &tar, &format!("{}/t", srv.base));
        let plan = notes_restoring(changes);
        let carte_fs = dir.path().join("carte");
        let agent = crate::http::agent(crate::http::Timeouts::default());
        let r = &layer_restores(&plan, &carte_fs)[0];

        let out = restore_layer(&agent, r, &mut |_| {}).expect("restore");
        assert_eq!(
            out,
            Outcome::Restored {
                label: "notes@2".into(),
                entries: 2
            }
        );
        let upper = carte_fs.join("machine/rw/notes/upper");
        assert_eq!(
            fs::read_to_string(upper.join("notes/boots")).expect("restored"),
            "boot=1\n"
        );
        let left: Vec<_> = fs::read_dir(carte_fs.join("machine/rw/notes"))
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(left, ["upper"], "no staging or temp file left");

        // The disk has the upper now: it wins, nothing is fetched.
        fs::write(upper.join("notes/boots"), "boot=1\nboot=2\n").expect("write");
        let seen = srv.seen().len();
        let out = restore_layer(&agent, r, &mut |_| {}).expect("present");
        assert_eq!(out, Outcome::Present);
        assert_eq!(srv.seen().len(), seen);
        assert_eq!(
            fs::read_to_string(upper.join("notes/boots")).expect("kept"),
            "boot=1\nboot=2\n"
        );
    }

    #[test]
    fn a_corrupt_download_leaves_no_upper_so_the_next_boot_tries_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let srv = crate::testhttp::serve(|_| (200, b"not the tar it claims".to_vec()));
        let mut changes = data_layer(
            "notes",
            2,
            Format::Tar,
            b"the real tar, same len",
            &format!("{}/t", srv.base),
        );
        changes.size = 21;
        changes.uncompressed_size = 21;
        let plan = notes_restoring(changes);
        let carte_fs = dir.path().join("carte");
        let agent = crate::http::agent(crate::http::Timeouts::default());
        let r = &layer_restores(&plan, &carte_fs)[0];
        let e = restore_layer(&agent, r, &mut |_| {}).expect_err("corrupt");
        assert!(matches!(e, RestoreError::Fetch { .. }), "{e}");
        assert!(e.to_string().starts_with("restore notes@2: "), "{e}");
        let rw = carte_fs.join("machine/rw/notes");
        assert!(!rw.join("upper").exists());
        assert!(!rw.join("upper.restore").exists());
        assert!(!rw.join("restore.tar.tmp").exists());
    }

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
