//! The staging tree: tar streams unpacked safely into a directory that mkfs then reads.
//!
//! Two modes. `Root`: entries are created for real (lchown, chmod, mknod, every xattr), so the
//! tree is exactly what the image will hold. `Fakeroot` (no root): files are created owned by
//! the builder with at least owner read/write, device nodes become empty placeholder files, and
//! the wanted owner/mode/device of every inode is recorded; `finish` writes those records as a
//! fakeroot state file (`dev=..,ino=..,mode=..,uid=..,gid=..,nlink=..,rdev=..`) so that
//! `fakeroot -i STATE mkfs...` sees the archive's metadata. fakeroot 1.31 hides the real
//! xattrs of files from the programs it runs (and its state file does not carry xattrs), so in
//! `Fakeroot` mode archive xattrs are not put on the staged files but handed back in
//! `StagedTree::pending_xattrs` for the image builder to apply (ext4) or refuse (erofs).
//!
//! Safety: entry paths with `..` or a leading `/` are refused, a path is never written through
//! a symlink (a parent that is a symlink is refused, an existing final symlink is replaced), and
//! hard-link targets are resolved the same way, inside the tree.
//!
//! It does not decompress (see `archive.rs`) and does not know OCI manifests (see `oci.rs`);
//! it only applies OCI whiteouts when asked to.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::error::{Error, IoContext, Result};
use super::sys::{lchown, mknod, set_mtime, set_xattr};

/// How staged entries get their owners, modes and device nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create everything for real (needs root).
    Root,
    /// Record metadata for `fakeroot -i` (no root).
    Fakeroot,
}

/// Wanted metadata of one staged inode (fakeroot mode).
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Full `st_mode`, file type included.
    mode: u32,
    uid: u64,
    gid: u64,
    rdev: u64,
}

/// A tree being filled from one or more tar streams.
pub struct Staging {
    root: PathBuf,
    mode: Mode,
    /// Fakeroot records keyed by (st_dev, st_ino); written for every inode at creation, so a
    /// reused inode number always gets its own record.
    fake: HashMap<(u64, u64), Meta>,
    /// Fakeroot mode: the archive's xattrs per inode, kept out of the staged files.
    fake_xattrs: HashMap<(u64, u64), Xattrs>,
    /// Directory mtimes, applied last (creating children changes them).
    dir_times: HashMap<PathBuf, i64>,
}

/// Extended attributes of one inode: (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The result of staging: the tree, and the fakeroot state to run mkfs under, if any.
pub struct StagedTree {
    pub root: PathBuf,
    pub fakeroot_state: Option<PathBuf>,
    /// Fakeroot mode only: xattrs mkfs will not see, by path relative to the root (one path per
    /// inode); the ext4 builder writes them into the image with debugfs.
    pub pending_xattrs: Vec<(PathBuf, Xattrs)>,
}

impl Staging {
    /// Starts staging into `root`, an existing empty directory.
    pub fn new(root: &Path, mode: Mode) -> Result<Self> {
        let mut s = Staging {
            root: root.to_path_buf(),
            mode,
            fake: HashMap::new(),
            fake_xattrs: HashMap::new(),
            dir_times: HashMap::new(),
        };
        if mode == Mode::Fakeroot {
            s.record(root, libc::S_IFDIR | 0o755, 0, 0, 0)?;
        } else {
            fs::set_permissions(root, fs::Permissions::from_mode(0o755))
                .ctx("chmod staging root", root)?;
        }
        Ok(s)
    }

    /// Unpacks a tar stream on top of the tree. With `whiteouts`, OCI `.wh.NAME` entries delete
    /// NAME and `.wh..wh..opq` empties its directory of what earlier streams put there.
    pub fn apply_tar<R: Read>(&mut self, archive: &Path, reader: R, whiteouts: bool) -> Result<()> {
        let bad = |what: String| Error::BadArchive {
            archive: archive.to_path_buf(),
            what,
        };
        let mut ar = tar::Archive::new(reader);
        let mut this_layer: HashSet<PathBuf> = HashSet::new();
        let entries = ar
            .entries()
            .map_err(|e| bad(format!("read entries: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| bad(format!("read entry: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| bad(format!("entry path: {e}")))?
                .into_owned();
            let rel = clean(&raw).map_err(|why| Error::Traversal {
                archive: archive.to_path_buf(),
                entry: raw.clone(),
                why,
            })?;
            if whiteouts {
                if let Some(name) = rel.file_name().and_then(|n| n.to_str()) {
                    if name == ".wh..wh..opq" {
                        let dir = rel.parent().unwrap_or(Path::new(""));
                        self.opaque(archive, dir, &this_layer)?;
                        continue;
                    }
                    if let Some(hidden) = name.strip_prefix(".wh.") {
                        if let Some(parent) = self.walk_parents(archive, &rel, false)? {
                            remove_any(&parent.join(hidden))?;
                        }
                        continue;
                    }
                }
            }
            self.entry(archive, &mut entry, &rel)?;
            this_layer.insert(rel);
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        archive: &Path,
        entry: &mut tar::Entry<R>,
        rel: &Path,
    ) -> Result<()> {
        let bad = |what: String| Error::BadArchive {
            archive: archive.to_path_buf(),
            what: format!("{}: {what}", rel.display()),
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let h = entry.header();
        let perm = h.mode().map_err(|e| bad(format!("mode: {e}")))? & 0o7777;
        let mut uid = h.uid().map_err(|e| bad(format!("uid: {e}")))?;
        let mut gid = h.gid().map_err(|e| bad(format!("gid: {e}")))?;
        let mut mtime = h.mtime().map_err(|e| bad(format!("mtime: {e}")))? as i64;
        let major = h.device_major().ok().flatten().unwrap_or(0);
        let minor = h.device_minor().ok().flatten().unwrap_or(0);
        let link = entry
            .link_name()
            .map_err(|e| bad(format!("link name: {e}")))?
            .map(|l| l.into_owned());
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| bad(format!("pax header: {e}")))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| bad(format!("pax record: {e}")))?;
                let key = ext.key_bytes();
                let num = || {
                    ext.value()
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
                };
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"uid" {
                    uid = num().unwrap_or(uid);
                } else if key == b"gid" {
                    gid = num().unwrap_or(gid);
                } else if key == b"mtime" {
                    mtime = num().map(|v| v as i64).unwrap_or(mtime);
                }
            }
        }
        if rel.as_os_str().is_empty() {
            // The archive's "./": metadata for the root itself.
            if kind == EntryType::Directory {
                let root = self.root.clone();
                self.set_meta(&root, libc::S_IFDIR, perm, uid, gid, 0, &xattrs)?;
                self.dir_times.insert(root, mtime);
            }
            return Ok(());
        }
        let Some(parent) = self.walk_parents(archive, rel, true)? else {
            return Ok(());
        };
        let Some(name) = rel.file_name() else {
            return Ok(());
        };
        let dest = parent.join(name);
        let existing = fs::symlink_metadata(&dest).ok();
        let keep_dir =
            kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            remove_any(&dest)?;
        }
        let fake = self.mode == Mode::Fakeroot;
        let ftype = match kind {
            EntryType::Directory => {
                if !keep_dir {
                    fs::create_dir(&dest).ctx("create directory", &dest)?;
                }
                self.dir_times.insert(dest.clone(), mtime);
                libc::S_IFDIR
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .ctx("create file", &dest)?;
                io::copy(entry, &mut f).ctx("write file", &dest)?;
                f.flush().ctx("write file", &dest)?;
                libc::S_IFREG
            }
            EntryType::Symlink => {
                let target = link.ok_or_else(|| bad("symlink without target".into()))?;
                std::os::unix::fs::symlink(&target, &dest).ctx("create symlink", &dest)?;
                libc::S_IFLNK
            }
            EntryType::Link => {
                let target = link.ok_or_else(|| bad("hard link without target".into()))?;
                let trel = clean(&target).map_err(|why| Error::Traversal {
                    archive: archive.to_path_buf(),
                    entry: target.clone(),
                    why,
                })?;
                let tparent = self
                    .walk_parents(archive, &trel, false)?
                    .ok_or_else(|| bad(format!("hard link to missing {}", target.display())))?;
                let tpath = tparent.join(trel.file_name().unwrap_or_default());
                match fs::symlink_metadata(&tpath) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(bad(format!(
                            "hard link to missing or directory {}",
                            target.display()
                        )))
                    }
                }
                fs::hard_link(&tpath, &dest).ctx("create hard link", &dest)?;
                // A hard link shares its target's inode and therefore its metadata.
                return Ok(());
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let t = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if fake && t != libc::S_IFIFO {
                    File::create(&dest).ctx("create device placeholder", &dest)?;
                } else {
                    mknod(&dest, t | 0o600, libc::makedev(major, minor))?;
                }
                t
            }
            other => return Err(bad(format!("unsupported entry type {other:?}"))),
        };
        let rdev = if matches!(ftype, libc::S_IFCHR | libc::S_IFBLK) {
            libc::makedev(major, minor)
        } else {
            0
        };
        self.set_meta(&dest, ftype, perm, uid, gid, rdev, &xattrs)?;
        if ftype != libc::S_IFDIR {
            set_mtime(&dest, mtime)?;
        }
        Ok(())
    }

    /// Applies owner, mode and xattrs to a freshly staged inode (or records them).
    #[allow(clippy::too_many_arguments)]
    fn set_meta(
        &mut self,
        path: &Path,
        ftype: u32,
        perm: u32,
        uid: u64,
        gid: u64,
        rdev: u64,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        match self.mode {
            Mode::Fakeroot => {
                // Keep the staged copy readable and writable by the builder; the state file
                // carries the archive's mode.
                if ftype != libc::S_IFLNK {
                    let real = if ftype == libc::S_IFDIR {
                        (perm & 0o777) | 0o700
                    } else {
                        (perm & 0o777) | 0o600
                    };
                    fs::set_permissions(path, fs::Permissions::from_mode(real))
                        .ctx("chmod", path)?;
                }
                self.record(path, ftype | perm, uid, gid, rdev)?;
                if !xattrs.is_empty() {
                    let m = fs::symlink_metadata(path).ctx("stat staged entry", path)?;
                    self.fake_xattrs.insert((m.dev(), m.ino()), xattrs.to_vec());
                }
                Ok(())
            }
            Mode::Root => {
                lchown(path, uid, gid)?;
                // chown clears setuid bits, so the mode comes after it.
                if ftype != libc::S_IFLNK {
                    fs::set_permissions(path, fs::Permissions::from_mode(perm))
                        .ctx("chmod", path)?;
                }
                for (name, value) in xattrs {
                    set_xattr(path, name, value)?;
                }
                Ok(())
            }
        }
    }

    fn record(&mut self, path: &Path, mode: u32, uid: u64, gid: u64, rdev: u64) -> Result<()> {
        let m = fs::symlink_metadata(path).ctx("stat staged entry", path)?;
        // A new entry (maybe on a reused inode number) starts without xattrs.
        self.fake_xattrs.remove(&(m.dev(), m.ino()));
        self.fake.insert(
            (m.dev(), m.ino()),
            Meta {
                mode,
                uid,
                gid,
                rdev,
            },
        );
        Ok(())
    }

    /// Checks (and with `create`, makes) the parent directories of `rel`; returns the parent's
    /// absolute path, or `None` if a parent is missing and `create` is false.
    fn walk_parents(
        &mut self,
        archive: &Path,
        rel: &Path,
        create: bool,
    ) -> Result<Option<PathBuf>> {
        let mut cur = self.root.clone();
        let parent = rel.parent().unwrap_or(Path::new(""));
        for comp in parent.components() {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::Traversal {
                        archive: archive.to_path_buf(),
                        entry: rel.to_path_buf(),
                        why: "a parent directory is a symlink",
                    })
                }
                Ok(_) => {
                    return Err(Error::BadArchive {
                        archive: archive.to_path_buf(),
                        what: format!("{}: a parent is not a directory", rel.display()),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    fs::create_dir(&cur).ctx("create parent directory", &cur)?;
                    if self.mode == Mode::Fakeroot {
                        self.record(&cur, libc::S_IFDIR | 0o755, 0, 0, 0)?;
                    }
                }
                Err(e) => return Err(e).ctx("stat parent directory", &cur),
            }
        }
        Ok(Some(cur))
    }

    /// Opaque whiteout: removes what is in `dir` except entries of the current layer.
    fn opaque(&mut self, archive: &Path, dir: &Path, this_layer: &HashSet<PathBuf>) -> Result<()> {
        let probe = dir.join("x");
        let Some(abs) = self.walk_parents(archive, &probe, false)? else {
            return Ok(());
        };
        let rd = match fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).ctx("read directory", &abs),
        };
        for child in rd {
            let child = child.ctx("read directory", &abs)?;
            if !this_layer.contains(&dir.join(child.file_name())) {
                remove_any(&child.path())?;
            }
        }
        Ok(())
    }

    /// Applies directory mtimes and writes the fakeroot state (if any) to `state_path`.
    pub fn finish(self, state_path: &Path) -> Result<StagedTree> {
        // Deepest first, so setting a child's time does not disturb its parent afterwards.
        let mut dirs: Vec<_> = self.dir_times.iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (p, t) in dirs {
            if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                set_mtime(p, *t)?;
            }
        }
        if self.mode == Mode::Root {
            return Ok(StagedTree {
                root: self.root,
                fakeroot_state: None,
                pending_xattrs: Vec::new(),
            });
        }
        let mut out =
            io::BufWriter::new(File::create(state_path).ctx("create fakeroot state", state_path)?);
        let pending_xattrs = write_state(&self.root, &self.fake, &self.fake_xattrs, &mut out)?;
        out.flush().ctx("write fakeroot state", state_path)?;
        Ok(StagedTree {
            root: self.root,
            fakeroot_state: Some(state_path.to_path_buf()),
            pending_xattrs,
        })
    }
}

/// Writes one fakeroot state line per inode under `root` (unrecorded inodes become
/// root-owned); returns the recorded xattrs by relative path, one path per inode.
fn write_state(
    root: &Path,
    fake: &HashMap<(u64, u64), Meta>,
    fake_xattrs: &HashMap<(u64, u64), Xattrs>,
    out: &mut impl Write,
) -> Result<Vec<(PathBuf, Xattrs)>> {
    let mut stack = vec![root.to_path_buf()];
    let mut seen = HashSet::new();
    let mut pending = Vec::new();
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).ctx("stat staged entry", &p)?;
        if m.is_dir() {
            for child in fs::read_dir(&p).ctx("read directory", &p)? {
                stack.push(child.ctx("read directory", &p)?.path());
            }
        }
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        if let Some(x) = fake_xattrs.get(&(m.dev(), m.ino())) {
            let rel = p.strip_prefix(root).unwrap_or(Path::new("")).to_path_buf();
            pending.push((rel, x.clone()));
        }
        let meta = fake.get(&(m.dev(), m.ino())).copied().unwrap_or(Meta {
            mode: m.mode(),
            uid: 0,
            gid: 0,
            rdev: 0,
        });
        writeln!(
            out,
            "dev={:x},ino={},mode={:o},uid={},gid={},nlink={},rdev={}",
            m.dev(),
            m.ino(),
            meta.mode,
            meta.uid,
            meta.gid,
            m.nlink(),
            meta.rdev
        )
        .ctx("write fakeroot state", root)?;
    }
    Ok(pending)
}

/// Normalises an archive path: drops `.`, refuses `..` and absolute paths.
pub fn clean(p: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(s) => out.push(s),
            Component::ParentDir => return Err("'..' component"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// Removes a file, symlink or directory tree; a missing path is fine.
fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).ctx("remove directory", p),
        Ok(_) => fs::remove_file(p).ctx("remove", p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("stat", p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: std::result::Result<&str, &str>) {
        assert_eq!(
            clean(Path::new(input))
                .as_ref()
                .map(|p| p.to_str().unwrap_or("?"))
                .map_err(|e| *e),
            expected,
            "{input}"
        );
    }

    #[test]
    fn archive_paths_are_cleaned_or_refused() {
        check("./a/b", Ok("a/b"));
        check("a/./b/", Ok("a/b"));
        check("./", Ok(""));
        check("../etc/passwd", Err("'..' component"));
        check("a/../../b", Err("'..' component"));
        check("/etc/passwd", Err("absolute path"));
    }
}
