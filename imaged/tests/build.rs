//! Layer builders end to end: real mkfs.erofs / mkfs.ext4 runs, images checked by mounting them
//! (root) or extracting with `fsck.erofs --extract` (no root).
//!
//! Tests that need root (mknod, chown, loop mounts) skip loudly when not root, and fail when
//! `CI=true` and not root.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use imaged::build::{
    self, BuildOptions, Encoding, Error, Format, FsFormat, KernelSource, Privilege,
};
use sha2::{Digest, Sha256};

// ---------- helpers ----------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True if the test may go on with root; skips loudly or fails in CI otherwise.
fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root (mknod, chown, loop mount) and CI=true"
    );
    skip(test, "needs root (mknod, chown, loop mount)");
    false
}

/// Says so on the real stderr: the test harness captures `eprintln!` of passing tests.
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let n = CString::new(name).expect("name");
    // SAFETY: valid NUL-terminated strings and a buffer of value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            cstr(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cstr(p);
    let mut names = vec![0u8; 4096];
    // SAFETY: names has names.len() writable bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let s = String::from_utf8_lossy(name).into_owned();
        if s.starts_with("security.") || s.starts_with("system.") {
            continue;
        }
        let cn = CString::new(name).expect("name");
        let mut val = vec![0u8; 4096];
        // SAFETY: val has val.len() writable bytes.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        assert!(len >= 0, "getxattr {s} on {}", p.display());
        val.truncate(len as usize);
        out.insert(s, val);
    }
    out
}

fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::mknod(cstr(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::lchown(cstr(p).as_ptr(), uid, gid) };
    assert_eq!(
        r,
        0,
        "lchown {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// What a tree entry is, as far as layers must preserve it.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    perm: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    content: Option<String>,
    link: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Hard-link count, for non-directories.
    nlink: Option<u64>,
}

/// Every entry under `root` by relative path ("" is the root); `skip` names top-level entries
/// to leave out (ext4's lost+found).
fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        if skip.contains(&rel.as_str()) {
            continue;
        }
        let m = fs::symlink_metadata(&p).expect("stat");
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        if ft.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
        let content = ft.is_file().then(|| {
            let data = fs::read(&p).expect("read");
            format!("{:x}", Sha256::digest(&data))
        });
        out.insert(
            rel,
            Node {
                kind,
                perm: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                rdev: m.rdev(),
                content,
                link: ft
                    .is_symlink()
                    .then(|| fs::read_link(&p).expect("readlink")),
                xattrs: xattrs(&p),
                nlink: (!ft.is_dir()).then(|| m.nlink()),
            },
        );
    }
    out
}

fn assert_same(want: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>) {
    let wk: Vec<_> = want.keys().collect();
    let gk: Vec<_> = got.keys().collect();
    assert_eq!(wk, gk, "paths differ");
    for (k, w) in want {
        assert_eq!(Some(w), got.get(k), "entry {k:?} differs");
    }
}

/// A read-only loop mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(image: &Path, at: &Path) -> Mount {
        fs::create_dir_all(at).expect("mkdir mountpoint");
        let st = Command::new("mount")
            .args(["-o", "loop,ro"])
            .arg(image)
            .arg(at)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount {}", image.display());
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn long_rel() -> PathBuf {
    PathBuf::from(format!(
        "long/{}/{}/{}",
        "d".repeat(120),
        "e".repeat(120),
        "f".repeat(100)
    ))
}

/// A tree with everything a layer must keep: owners, odd modes, a device node, a fifo, a hard
/// link, a symlink, xattrs and a path longer than 255 bytes.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("etc")).expect("mkdir");
    fs::write(root.join("etc/hostname"), "carte\n").expect("write");
    fs::set_permissions(root.join("etc/hostname"), fs::Permissions::from_mode(0o640))
        .expect("chmod");
    lchown(&root.join("etc/hostname"), 1234, 567);
    fs::write(root.join("suid"), "#!/bin/sh\n").expect("write");
    lchown(&root.join("suid"), 0, 0);
    fs::set_permissions(root.join("suid"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::hard_link(root.join("etc/hostname"), root.join("hostname.hard")).expect("hard link");
    symlink("etc/hostname", root.join("hostname.link")).expect("symlink");
    lchown(&root.join("hostname.link"), 7, 8);
    set_xattr(&root.join("etc/hostname"), "user.carte", b"layer");
    set_xattr(&root.join("etc"), "trusted.carte", b"dir-xattr");
    fs::create_dir(root.join("dev")).expect("mkdir");
    mknod(&root.join("dev/null"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&root.join("dev/sda"), libc::S_IFBLK | 0o660, 8, 0);
    mknod(&root.join("dev/fifo"), libc::S_IFIFO | 0o600, 0, 0);
    fs::create_dir(root.join("private")).expect("mkdir");
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    lchown(&root.join("private"), 42, 43);
    let long = root.join(long_rel());
    fs::create_dir_all(long.parent().expect("parent")).expect("mkdir long");
    fs::write(&long, vec![7u8; 100_000]).expect("write long");
    assert!(long_rel().as_os_str().len() > 255);
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod root");
}

fn opts(out: &Path) -> BuildOptions {
    let mut o = BuildOptions::new(out);
    o.work_dir = Some(out.join("work"));
    o
}

fn fsck_extract(image: &Path, to: &Path) {
    let st = Command::new("fsck.erofs")
        .arg(format!("--extract={}", to.display()))
        .arg(image)
        .status()
        .expect("run fsck.erofs");
    assert!(st.success(), "fsck.erofs --extract {}", image.display());
}

// ---------- directory ----------

#[test]
fn directory_round_trips_through_erofs() {
    if !require_root("directory_round_trips_through_erofs") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let src = t.path().join("src");
    rich_tree(&src);
    let layer = build::from_dir(&src, &opts(&t.path().join("out"))).expect("build erofs");
    assert_eq!(layer.format, Format::Erofs);
    assert_eq!(layer.encoding, Encoding::None);
    assert_eq!(layer.size, fs::metadata(&layer.path).expect("stat").len());
    let (digest, _) = build::sha256_file(&layer.path).expect("hash");
    assert_eq!(layer.sha256, digest);
    // Compressed: 100 kB of one byte value shrinks well below its size.
    assert!(layer.size < 100_000, "erofs is {} bytes", layer.size);

    fsck_extract(&layer.path, &t.path().join("extract"));
    let mnt = Mount::new(&layer.path, &t.path().join("mnt"));
    assert_same(&snapshot(&src, &[]), &snapshot(&mnt.0, &[]));
    let null = fs::symlink_metadata(mnt.0.join("dev/null")).expect("stat");
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(
        fs::symlink_metadata(mnt.0.join("hostname.hard"))
            .expect("stat")
            .nlink(),
        2
    );
}

#[test]
fn directory_round_trips_through_ext4_sized_to_content() {
    if !require_root("directory_round_trips_through_ext4_sized_to_content") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let src = t.path().join("src");
    rich_tree(&src);
    // Some bulk, so sizing is visible: 20 MiB of varied data.
    let mut bulk = File::create(src.join("bulk")).expect("create");
    for i in 0..(20u32 << 8) {
        let block: Vec<u8> = (0..4096u32)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        bulk.write_all(&block).expect("write");
    }
    drop(bulk);
    let mut o = opts(&t.path().join("out"));
    o.format = FsFormat::Ext4;
    o.ext4_headroom = 8 << 20;
    let layer = build::from_dir(&src, &o).expect("build ext4");
    assert_eq!(layer.format, Format::Ext4);
    let content = 20u64 << 20;
    assert!(
        layer.size >= content + (8 << 20),
        "too small: {}",
        layer.size
    );
    assert!(
        layer.size < content + (8 << 20) + (24 << 20),
        "not sized to content: {}",
        layer.size
    );

    let mnt = Mount::new(&layer.path, &t.path().join("mnt"));
    assert_same(&snapshot(&src, &[]), &snapshot(&mnt.0, &["lost+found"]));
    // The headroom is really free.
    // SAFETY: statvfs is plain data, filled by the call.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and a pointer to a statvfs.
    assert_eq!(unsafe { libc::statvfs(cstr(&mnt.0).as_ptr(), &mut vfs) }, 0);
    let free = vfs.f_bavail * vfs.f_frsize;
    assert!(free >= 7 << 20, "only {free} bytes free");
}

// ---------- tar ----------

/// Appends an entry with explicit metadata.
fn add(
    b: &mut tar::Builder<impl Write>,
    path: &str,
    kind: tar::EntryType,
    perm: u32,
    owner: (u64, u64),
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(perm);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        h.set_link_name(l).expect("link name");
    }
    b.append_data(&mut h, path, data).expect("append");
}

fn device(
    b: &mut tar::Builder<impl Write>,
    path: &str,
    kind: tar::EntryType,
    major: u32,
    minor: u32,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o660);
    h.set_uid(0);
    h.set_gid(6);
    h.set_size(0);
    h.set_device_major(major).expect("major");
    h.set_device_minor(minor).expect("minor");
    b.append_data(&mut h, path, &[][..]).expect("append device");
}

/// A tar with owners, a device, a hard link, a symlink and a long path.
fn rich_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    use tar::EntryType as E;
    add(&mut b, "./", E::Directory, 0o755, (0, 0), b"", None);
    add(&mut b, "etc/", E::Directory, 0o755, (0, 0), b"", None);
    add(
        &mut b,
        "etc/shadow",
        E::Regular,
        0o640,
        (0, 42),
        b"root:*:1::::::\n",
        None,
    );
    add(
        &mut b,
        "home/alice/",
        E::Directory,
        0o700,
        (1000, 1000),
        b"",
        None,
    );
    add(
        &mut b,
        "home/alice/notes",
        E::Regular,
        0o600,
        (1000, 1000),
        b"hello",
        None,
    );
    add(
        &mut b,
        "bin/ping",
        E::Regular,
        0o4755,
        (0, 0),
        b"\x7fELF",
        None,
    );
    add(
        &mut b,
        "bin/ping6",
        E::Link,
        0o4755,
        (0, 0),
        b"",
        Some("bin/ping"),
    );
    add(
        &mut b,
        "bin/sh",
        E::Symlink,
        0o777,
        (0, 0),
        b"",
        Some("dash"),
    );
    device(&mut b, "dev/null", E::Char, 1, 3);
    device(&mut b, "dev/vda", E::Block, 254, 0);
    let long = long_rel();
    add(
        &mut b,
        long.to_str().expect("utf8"),
        E::Regular,
        0o644,
        (5, 5),
        b"deep",
        None,
    );
    b.into_inner().expect("finish tar")
}

fn check_rich_tar_tree(root: &Path) {
    let s = snapshot(root, &[]);
    let get = |p: &str| {
        s.get(p)
            .unwrap_or_else(|| panic!("{p} missing; have {:?}", s.keys().collect::<Vec<_>>()))
    };
    let shadow = get("etc/shadow");
    assert_eq!((shadow.perm, shadow.uid, shadow.gid), (0o640, 0, 42));
    let alice = get("home/alice");
    assert_eq!(
        (alice.kind, alice.perm, alice.uid, alice.gid),
        ("dir", 0o700, 1000, 1000)
    );
    let ping = get("bin/ping");
    assert_eq!((ping.perm, ping.nlink), (0o4755, Some(2)));
    assert_eq!(get("bin/ping6").content, ping.content);
    assert_eq!(get("bin/sh").link.as_deref(), Some(Path::new("dash")));
    let null = get("dev/null");
    assert_eq!(
        (null.kind, null.rdev, null.gid),
        ("char", libc::makedev(1, 3), 6)
    );
    let vda = get("dev/vda");
    assert_eq!((vda.kind, vda.rdev), ("block", libc::makedev(254, 0)));
    let deep = get(long_rel().to_str().expect("utf8"));
    assert_eq!((deep.uid, deep.gid), (5, 5));
    assert_eq!(fs::read(root.join(long_rel())).expect("read deep"), b"deep");
    let r = get("");
    assert_eq!((r.uid, r.gid, r.perm), (0, 0, 0o755));
}

#[test]
fn tar_zst_round_trips_as_root_and_under_fakeroot() {
    if !require_root("tar_zst_round_trips_as_root_and_under_fakeroot") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let archive = t.path().join("rootfs.tar.zst");
    fs::write(
        &archive,
        zstd::encode_all(&rich_tar()[..], 3).expect("zstd"),
    )
    .expect("write");
    for (i, privilege) in [Privilege::Root, Privilege::Fakeroot]
        .into_iter()
        .enumerate()
    {
        for format in [FsFormat::Erofs, FsFormat::Ext4] {
            let out = t.path().join(format!("out-{i}-{format:?}"));
            let mut o = opts(&out);
            o.privilege = privilege;
            o.format = format;
            o.ext4_headroom = 1 << 20;
            let layer = build::from_tar(&archive, &o)
                .unwrap_or_else(|e| panic!("{privilege:?} {format:?}: {e}"));
            let mnt = Mount::new(&layer.path, &out.join("mnt"));
            if format == FsFormat::Ext4 {
                assert!(mnt.0.join("lost+found").is_dir(), "an ext4 image");
            }
            check_rich_tar_tree(&mnt.0);
            // Staging trees are cleaned up.
            let left: Vec<_> = fs::read_dir(out.join("work")).expect("work dir").collect();
            assert!(left.is_empty(), "{privilege:?}: staging left behind");
        }
    }
}

#[test]
fn plain_tar_without_root_keeps_owners_via_fakeroot() {
    // Runs as anyone: the fakeroot route never needs root, and fsck.erofs --extract as root
    // restores owners, so the check is real when run as root and limited otherwise.
    let t = tempfile::tempdir().expect("tempdir");
    let archive = t.path().join("rootfs.tar");
    fs::write(&archive, rich_tar()).expect("write");
    let mut o = opts(&t.path().join("out"));
    o.privilege = Privilege::Fakeroot;
    let layer = build::from_tar(&archive, &o).expect("build");
    let x = t.path().join("x");
    fsck_extract(&layer.path, &x);
    assert_eq!(
        fs::read(x.join("etc/shadow")).expect("read"),
        b"root:*:1::::::\n"
    );
    assert_eq!(
        fs::read_link(x.join("bin/sh")).expect("readlink"),
        PathBuf::from("dash")
    );
    if is_root() {
        let m = fs::symlink_metadata(x.join("home/alice/notes")).expect("stat");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o600));
        let d = fs::symlink_metadata(x.join("dev/null")).expect("stat");
        assert_eq!(d.rdev(), libc::makedev(1, 3));
    }
}

/// A tar whose `bin/ping` carries a file capability and a user xattr, and whose `a b/c` (a
/// path with a space) carries another.
fn xattr_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.security.capability", &CAP[..]),
        ("SCHILY.xattr.user.carte", &b"ping"[..]),
    ])
    .expect("pax");
    add(
        &mut b,
        "bin/ping",
        tar::EntryType::Regular,
        0o755,
        (0, 0),
        b"x",
        None,
    );
    b.append_pax_extensions([("SCHILY.xattr.user.spaced", &b"yes"[..])])
        .expect("pax");
    add(
        &mut b,
        "a b/c",
        tar::EntryType::Regular,
        0o644,
        (0, 0),
        b"y",
        None,
    );
    // A later entry without xattrs must not inherit any.
    add(
        &mut b,
        "plain",
        tar::EntryType::Regular,
        0o644,
        (0, 0),
        b"z",
        None,
    );
    b.into_inner().expect("tar")
}

/// cap_net_raw+ep, as `setcap` writes it (VFS_CAP_REVISION_2).
const CAP: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// `debugfs -R "ea_list PATH"` output for a path inside an ext4 image (needs no root).
fn ext4_xattrs(image: &Path, path: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("ea_list \"{path}\""))
        .arg(image)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `debugfs -R "stat PATH"` output for a path inside an ext4 image (needs no root).
fn ext4_stat(image: &Path, path: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat \"{path}\""))
        .arg(image)
        .output()
        .expect("run debugfs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ext4_from_tar_under_fakeroot_has_the_archive_owners_checked_without_root() {
    // debugfs reads the image directly, so this checks the fakeroot route as any user.
    let t = tempfile::tempdir().expect("tempdir");
    let archive = t.path().join("rootfs.tar");
    fs::write(&archive, rich_tar()).expect("write");
    let mut o = opts(&t.path().join("out"));
    o.privilege = Privilege::Fakeroot;
    o.format = FsFormat::Ext4;
    o.ext4_headroom = 1 << 20;
    let layer = build::from_tar(&archive, &o).expect("build");
    let check = |path: &str, want: &[&str]| {
        let st = ext4_stat(&layer.path, path);
        for w in want {
            assert!(st.contains(w), "{path}: want {w:?} in {st}");
        }
    };
    check(
        "/etc/shadow",
        &["Type: regular Mode: 0640", "User: 0 Group: 42"],
    );
    check(
        "/home/alice",
        &["Type: directory Mode: 0700", "User: 1000 Group: 1000"],
    );
    check("/bin/ping", &["Mode: 04755", "Links: 2"]);
    check(
        "/dev/null",
        &[
            "Type: character special Mode: 0660",
            "Group: 6",
            "Device major/minor number: 01:03",
        ],
    );
    check(
        "/dev/vda",
        &["Type: block special", "Device major/minor number: 254:00"],
    );
    check("/bin/sh", &["Type: symlink", "Fast link dest: \"dash\""]);
}

#[test]
fn fakeroot_writes_archive_xattrs_into_ext4_and_refuses_erofs() {
    let t = tempfile::tempdir().expect("tempdir");
    let archive = t.path().join("caps.tar");
    fs::write(&archive, xattr_tar()).expect("write");
    let mut o = opts(&t.path().join("out"));
    o.privilege = Privilege::Fakeroot;
    match build::from_tar(&archive, &o) {
        Err(Error::NeedsRoot { path, .. }) => assert_eq!(path, PathBuf::from("bin/ping")),
        other => panic!("erofs: expected NeedsRoot, got {other:?}"),
    }
    assert!(!o.out_dir.join("layer.erofs").exists());

    o.format = FsFormat::Ext4;
    o.ext4_headroom = 1 << 20;
    let layer = build::from_tar(&archive, &o).expect("ext4 under fakeroot");
    assert_eq!(
        layer.sha256,
        build::sha256_file(&layer.path).expect("hash").0,
        "digest after debugfs edits"
    );
    let ping = ext4_xattrs(&layer.path, "/bin/ping");
    assert!(ping.contains("security.capability (20)"), "{ping}");
    assert!(ping.contains("user.carte (4) = \"ping\""), "{ping}");
    let spaced = ext4_xattrs(&layer.path, "/a b/c");
    assert!(spaced.contains("user.spaced (3) = \"yes\""), "{spaced}");
    assert!(
        !ext4_xattrs(&layer.path, "/plain").contains("user."),
        "plain has no xattrs"
    );
    if is_root() {
        let mnt = Mount::new(&layer.path, &t.path().join("mnt"));
        let m = fs::symlink_metadata(mnt.0.join("bin/ping")).expect("stat");
        assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
        assert_eq!(
            xattrs(&mnt.0.join("bin/ping"))
                .get("user.carte")
                .map(Vec::as_slice),
            Some(&b"ping"[..])
        );
    }
}

#[test]
fn tar_xattrs_are_kept_as_root() {
    if !require_root("tar_xattrs_are_kept_as_root") {
        return;
    }
    let t = tempfile::tempdir().expect("tempdir");
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.carte", &b"from-tar"[..])])
        .expect("pax");
    add(
        &mut b,
        "f",
        tar::EntryType::Regular,
        0o644,
        (0, 0),
        b"x",
        None,
    );
    let archive = t.path().join("x.tar");
    fs::write(&archive, b.into_inner().expect("tar")).expect("write");
    let layer = build::from_tar(&archive, &opts(&t.path().join("out"))).expect("build");
    let mnt = Mount::new(&layer.path, &t.path().join("mnt"));
    assert_eq!(
        xattrs(&mnt.0.join("f"))
            .get("user.carte")
            .map(Vec::as_slice),
        Some(&b"from-tar"[..])
    );
}

/// A raw tar entry whose name bytes are written as given (the tar crate refuses `..`).
fn raw_entry(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

#[test]
fn traversal_entries_are_refused() {
    use tar::EntryType as E;
    let t = tempfile::tempdir().expect("tempdir");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "dotdot",
            vec![raw_entry("../outside/evil", E::Regular, None, b"x")],
        ),
        (
            "nested dotdot",
            vec![raw_entry("a/../../outside/evil", E::Regular, None, b"x")],
        ),
        (
            "absolute",
            vec![raw_entry("/tmp/carte-evil", E::Regular, None, b"x")],
        ),
        (
            "through symlink",
            vec![
                raw_entry("l", E::Symlink, Some(outside.to_str().expect("utf8")), b""),
                raw_entry("l/evil", E::Regular, None, b"x"),
            ],
        ),
        (
            "hard link out",
            vec![raw_entry("h", E::Link, Some("../outside/target"), b"")],
        ),
    ];
    fs::write(outside.join("target"), "secret").expect("write");
    for (what, entries) in cases {
        let mut bytes: Vec<u8> = entries.concat();
        bytes.extend(vec![0u8; 1024]);
        let archive = t.path().join("evil.tar");
        fs::write(&archive, &bytes).expect("write");
        let out = t.path().join(format!("out-{}", what.replace(' ', "-")));
        let got = build::from_tar(&archive, &opts(&out));
        assert!(
            matches!(got, Err(Error::Traversal { .. })),
            "{what}: {got:?}"
        );
        assert!(!outside.join("evil").exists(), "{what}: wrote outside");
        assert!(
            !Path::new("/tmp/carte-evil").exists(),
            "{what}: wrote to /tmp"
        );
        assert!(
            !out.join("layer.erofs").exists(),
            "{what}: a layer was made"
        );
    }
}

// ---------- OCI ----------

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn layer1() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    use tar::EntryType as E;
    add(&mut b, "a/", E::Directory, 0o755, (0, 0), b"", None);
    add(&mut b, "a/x", E::Regular, 0o644, (0, 0), b"x1", None);
    add(&mut b, "a/y", E::Regular, 0o644, (0, 0), b"y1", None);
    add(&mut b, "o/", E::Directory, 0o755, (0, 0), b"", None);
    add(&mut b, "o/old", E::Regular, 0o644, (0, 0), b"old", None);
    add(
        &mut b,
        "o/sub/deep",
        E::Regular,
        0o644,
        (0, 0),
        b"deep",
        None,
    );
    add(&mut b, "gone", E::Regular, 0o644, (0, 0), b"gone", None);
    add(&mut b, "gonedir/f", E::Regular, 0o644, (0, 0), b"f", None);
    add(&mut b, "keep", E::Regular, 0o644, (0, 0), b"keep1", None);
    b.into_inner().expect("tar")
}

fn layer2() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    use tar::EntryType as E;
    add(&mut b, "o/", E::Directory, 0o750, (0, 0), b"", None);
    add(&mut b, "o/new", E::Regular, 0o644, (0, 0), b"new", None);
    add(
        &mut b,
        "o/.wh..wh..opq",
        E::Regular,
        0o644,
        (0, 0),
        b"",
        None,
    );
    add(&mut b, ".wh.gone", E::Regular, 0o644, (0, 0), b"", None);
    add(&mut b, ".wh.gonedir", E::Regular, 0o644, (0, 0), b"", None);
    add(&mut b, "a/.wh.y", E::Regular, 0o644, (0, 0), b"", None);
    add(&mut b, "a/z", E::Regular, 0o644, (0, 0), b"z2", None);
    b.into_inner().expect("tar")
}

fn layer3() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add(
        &mut b,
        "keep",
        tar::EntryType::Regular,
        0o600,
        (0, 0),
        b"keep3",
        None,
    );
    b.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// An OCI layout archive: plain, gzip and zstd layers, index -> manifest -> layers.
fn oci_archive(tamper: bool) -> Vec<u8> {
    let blobs = [
        ("application/vnd.oci.image.layer.v1.tar", layer1()),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            gzip(&layer2()),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+zstd",
            zstd::encode_all(&layer3()[..], 3).expect("zstd"),
        ),
    ];
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let layers: Vec<String> = blobs
        .iter()
        .map(|(mt, d)| {
            format!(
                r#"{{"mediaType":"{mt}","digest":"sha256:{}","size":{}}}"#,
                sha(d),
                d.len()
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{}]}}"#,
        sha(&config),
        config.len(),
        layers.join(",")
    );
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{}}}]}}"#,
        sha(manifest.as_bytes()),
        manifest.len()
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut file = |name: &str, data: &[u8]| {
        add(
            &mut b,
            name,
            tar::EntryType::Regular,
            0o644,
            (0, 0),
            data,
            None,
        );
    };
    file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    file("index.json", index.as_bytes());
    file(
        &format!("blobs/sha256/{}", sha(manifest.as_bytes())),
        manifest.as_bytes(),
    );
    file(&format!("blobs/sha256/{}", sha(&config)), &config);
    for (i, (_, d)) in blobs.iter().enumerate() {
        let mut d = d.clone();
        if tamper && i == 1 {
            d.push(0);
        }
        file(&format!("blobs/sha256/{}", sha(&blobs[i].1)), &d);
    }
    b.into_inner().expect("tar")
}

/// Files (path -> content) under `root`, directories as "<dir>".
fn listing(root: &Path) -> BTreeMap<String, String> {
    snapshot(root, &[])
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, n)| {
            let v = if n.kind == "dir" {
                "<dir>".to_string()
            } else {
                String::from_utf8_lossy(&fs::read(root.join(&k)).expect("read")).into_owned()
            };
            (k, v)
        })
        .collect()
}

fn expected_oci_tree() -> BTreeMap<String, String> {
    [
        ("a", "<dir>"),
        ("a/x", "x1"),
        ("a/z", "z2"),
        ("o", "<dir>"),
        ("o/new", "new"),
        ("keep", "keep3"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

#[test]
fn oci_archive_applies_layers_whiteouts_and_opaque_dirs() {
    let t = tempfile::tempdir().expect("tempdir");
    let archive = t.path().join("image.oci.tar");
    fs::write(&archive, oci_archive(false)).expect("write");
    let layer = build::from_oci_archive(&archive, &opts(&t.path().join("out"))).expect("build");
    assert_eq!(layer.format, Format::Erofs);
    let x = t.path().join("x");
    fsck_extract(&layer.path, &x);
    assert_eq!(listing(&x), expected_oci_tree());
    if is_root() {
        // The upper layer's mode wins for o/ and keep.
        let o = fs::symlink_metadata(x.join("o")).expect("stat");
        assert_eq!(o.mode() & 0o7777, 0o750);
        assert_eq!(
            fs::symlink_metadata(x.join("keep")).expect("stat").mode() & 0o7777,
            0o600
        );
    }
}

#[test]
fn oci_archive_with_a_tampered_blob_is_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let archive = t.path().join("image.oci.tar");
    fs::write(&archive, oci_archive(true)).expect("write");
    let got = build::from_oci_archive(&archive, &opts(&t.path().join("out")));
    assert!(matches!(got, Err(Error::DigestMismatch { .. })), "{got:?}");
}

#[test]
fn docker_save_archive_is_read_from_manifest_json() {
    let t = tempfile::tempdir().expect("tempdir");
    let mut b = tar::Builder::new(Vec::new());
    let mut file = |name: &str, data: &[u8]| {
        add(
            &mut b,
            name,
            tar::EntryType::Regular,
            0o644,
            (0, 0),
            data,
            None,
        );
    };
    file("l1/layer.tar", &layer1());
    let (l2, l3) = (layer2(), layer3());
    file(&format!("blobs/sha256/{}", sha(&l2)), &l2);
    file(&format!("blobs/sha256/{}", sha(&l3)), &l3);
    let manifest = format!(
        r#"[{{"Config":"c.json","RepoTags":["x:latest"],"Layers":["l1/layer.tar","l2/layer.tar","blobs/sha256/{}"]}}]"#,
        sha(&l3)
    );
    file("manifest.json", manifest.as_bytes());
    // docker 25 links the legacy path to the blob.
    let l2_link = format!("../blobs/sha256/{}", sha(&l2));
    add(
        &mut b,
        "l2/layer.tar",
        tar::EntryType::Symlink,
        0o777,
        (0, 0),
        b"",
        Some(&l2_link),
    );
    let archive = t.path().join("docker.tar");
    fs::write(&archive, b.into_inner().expect("tar")).expect("write");
    let layer = build::from_oci_archive(&archive, &opts(&t.path().join("out"))).expect("build");
    let x = t.path().join("x");
    fsck_extract(&layer.path, &x);
    assert_eq!(listing(&x), expected_oci_tree());
}

// ---------- raw disk ----------

#[test]
fn raw_disk_is_zstd_encoded_with_both_digests() {
    let t = tempfile::tempdir().expect("tempdir");
    let disk = t.path().join("disk.img");
    let mut raw = vec![0u8; 32 << 20];
    raw[..512].copy_from_slice(&[0x55; 512]);
    raw[(16 << 20)..(16 << 20) + 11].copy_from_slice(b"carte-label");
    fs::write(&disk, &raw).expect("write");
    let layer = build::from_raw_disk(&disk, &opts(&t.path().join("out"))).expect("encode");
    assert_eq!(
        (layer.format, layer.encoding),
        (Format::RawDisk, Encoding::Zstd)
    );
    assert_eq!(layer.uncompressed_size, raw.len() as u64);
    assert_eq!(layer.sha256, sha(&raw));
    let encoded = fs::read(&layer.path).expect("read");
    assert_eq!(layer.size, encoded.len() as u64);
    assert_eq!(
        layer.encoded_sha256.as_deref(),
        Some(sha(&encoded).as_str())
    );
    assert_eq!(layer.sent_sha256(), sha(&encoded));
    assert!(
        encoded.len() < 64 * 1024,
        "32 MiB of mostly zeros encoded to {} bytes",
        encoded.len()
    );
    assert_eq!(zstd::decode_all(&encoded[..]).expect("decode"), raw);
}

// ---------- kernel ----------

/// Parses a newc cpio into name -> (mode, data).
fn parse_newc(mut data: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let field = |h: &[u8], i: usize| {
        u32::from_str_radix(
            std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).expect("hex"),
            16,
        )
        .expect("hex")
    };
    loop {
        assert!(data.len() >= 110, "truncated cpio");
        let h = &data[..110];
        assert_eq!(&h[..6], b"070701", "newc magic");
        let mode = field(h, 1);
        let size = field(h, 6) as usize;
        let namesize = field(h, 11) as usize;
        let name = String::from_utf8_lossy(&data[110..110 + namesize - 1]).into_owned();
        let off = (110 + namesize).next_multiple_of(4);
        let body = data[off..off + size].to_vec();
        data = &data[(off + size).next_multiple_of(4)..];
        if name == "TRAILER!!!" {
            return out;
        }
        out.insert(name, (mode, body));
    }
}

fn installed_kernel() -> Option<(PathBuf, PathBuf, String)> {
    let mut releases: Vec<String> = fs::read_dir("/lib/modules")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|r| {
            Path::new(&format!("/boot/vmlinuz-{r}")).exists()
                && Path::new(&format!("/lib/modules/{r}/modules.dep")).exists()
        })
        .collect();
    releases.sort();
    let r = releases.pop()?;
    Some((
        PathBuf::from(format!("/boot/vmlinuz-{r}")),
        PathBuf::from(format!("/lib/modules/{r}")),
        r,
    ))
}

#[test]
fn kernel_import_from_the_installed_debian_kernel() {
    let Some((vmlinuz, modules_dir, release)) = installed_kernel() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no installed kernel (scripts/setup installs linux-image-amd64)"
        );
        skip(
            "kernel_import_from_the_installed_debian_kernel",
            "no /boot/vmlinuz-* with /lib/modules",
        );
        return;
    };
    let t = tempfile::tempdir().expect("tempdir");
    let mut o = opts(&t.path().join("out"));
    // lz4 keeps the 400 MB modules layer quick to build in tests; lz4hc is the default.
    o.erofs_compressor = Some("lz4".into());
    let k = build::kernel(
        &KernelSource::Installed {
            vmlinuz: vmlinuz.clone(),
            modules_dir: modules_dir.clone(),
        },
        &o,
    )
    .expect("kernel");
    assert_eq!(k.release, release);
    assert_eq!(k.vmlinuz.format, Format::Kernel);
    assert_eq!(
        k.vmlinuz.sha256,
        sha(&fs::read(&vmlinuz).expect("read vmlinuz"))
    );

    assert_eq!(k.modules_cpio.format, Format::CpioZstd);
    let packed = fs::read(&k.modules_cpio.path).expect("read cpio");
    assert_eq!(&packed[..4], &[0x28, 0xb5, 0x2f, 0xfd], "cpio is zstd");
    let cpio = parse_newc(&zstd::decode_all(&packed[..]).expect("unzstd"));
    let base = format!("lib/modules/{release}");
    let dep_text = fs::read_to_string(modules_dir.join("modules.dep")).expect("modules.dep");
    let virtio_net = dep_text
        .lines()
        .find(|l| l.starts_with("kernel/drivers/net/virtio_net.ko"))
        .expect("virtio_net in modules.dep");
    let (module, deps) = virtio_net.split_once(':').expect("dep line");
    assert!(!deps.trim().is_empty(), "virtio_net has dependencies");
    for m in std::iter::once(module).chain(deps.split_whitespace()) {
        let m = m.trim_end_matches(".xz").trim_end_matches(".zst");
        let (mode, data) = cpio
            .get(&format!("{base}/{m}"))
            .unwrap_or_else(|| panic!("{m} not in cpio"));
        assert_eq!(mode & 0o170000, 0o100000, "{m} is a file");
        assert!(
            data.starts_with(b"\x7fELF"),
            "{m} is an uncompressed ELF module"
        );
    }
    for want in [
        "kernel/fs/erofs/erofs.ko",
        "kernel/fs/ext4/ext4.ko",
        "kernel/fs/jbd2/jbd2.ko",
        "kernel/fs/overlayfs/overlay.ko",
    ] {
        let in_dep = dep_text.lines().any(|l| l.starts_with(want));
        assert!(
            !in_dep || cpio.contains_key(&format!("{base}/{want}")),
            "{want} missing"
        );
    }
    let (_, dep) = cpio
        .get(&format!("{base}/modules.dep"))
        .expect("modules.dep in cpio");
    let dep = String::from_utf8_lossy(dep);
    assert!(
        dep.lines()
            .any(|l| l.starts_with("kernel/drivers/net/virtio_net.ko:")),
        "virtio_net in cpio modules.dep"
    );
    // modules.dep names exactly the modules the cpio holds.
    for line in dep.lines() {
        let m = line.split(':').next().expect("name");
        assert!(
            cpio.contains_key(&format!("{base}/{m}")),
            "modules.dep lists missing {m}"
        );
    }
    assert!(cpio.contains_key(&format!("{base}/modules.alias")));
    // A subset, not the whole tree.
    let all = dep_text.lines().count();
    assert!(
        k.cpio_modules.len() < all / 2,
        "{} of {all} modules",
        k.cpio_modules.len()
    );

    assert_eq!(k.modules_layer.format, Format::Erofs);
    let sb = fs::read(&k.modules_layer.path).expect("read layer");
    assert_eq!(
        &sb[1024..1028],
        &0xE0F5E1E2u32.to_le_bytes(),
        "erofs superblock magic"
    );
    if is_root() {
        let mnt = Mount::new(&k.modules_layer.path, &t.path().join("mnt"));
        let dep_in_layer = mnt.0.join(format!("usr/lib/modules/{release}/modules.dep"));
        assert_eq!(
            fs::read_to_string(dep_in_layer).expect("modules.dep in layer"),
            dep_text
        );
        let m = fs::symlink_metadata(mnt.0.join(format!("usr/lib/modules/{release}/{module}")))
            .expect("module in layer");
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
}

#[test]
fn kernel_import_from_a_deb_with_a_compressed_module() {
    let t = tempfile::tempdir().expect("tempdir");
    let rel = "9.9.9-carte-test";
    let elf = b"\x7fELF fake module".to_vec();
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut &elf[..], &mut xz).expect("xz");
    let mut b = tar::Builder::new(Vec::new());
    use tar::EntryType as E;
    add(
        &mut b,
        &format!("./boot/vmlinuz-{rel}"),
        E::Regular,
        0o644,
        (0, 0),
        b"bzImage",
        None,
    );
    let m = format!("./lib/modules/{rel}");
    add(
        &mut b,
        &format!("{m}/kernel/drivers/net/virtio_net.ko"),
        E::Regular,
        0o644,
        (0, 0),
        &elf,
        None,
    );
    add(
        &mut b,
        &format!("{m}/kernel/net/core/failover.ko.xz"),
        E::Regular,
        0o644,
        (0, 0),
        &xz,
        None,
    );
    add(
        &mut b,
        &format!("{m}/kernel/sound/snd.ko"),
        E::Regular,
        0o644,
        (0, 0),
        &elf,
        None,
    );
    add(
        &mut b,
        &format!("{m}/modules.dep"),
        E::Regular,
        0o644,
        (0, 0),
        DEB_DEP.as_bytes(),
        None,
    );
    add(
        &mut b,
        &format!("{m}/modules.order"),
        E::Regular,
        0o644,
        (0, 0),
        b"kernel/net/core/failover.ko.xz\n",
        None,
    );
    let data = b.into_inner().expect("tar");
    let mut data_xz = Vec::new();
    lzma_rs::xz_compress(&mut &data[..], &mut data_xz).expect("xz");
    let mut deb = b"!<arch>\n".to_vec();
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", gzip(b"")),
        ("data.tar.xz", data_xz),
    ] {
        deb.extend(
            format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                100644,
                body.len()
            )
            .as_bytes(),
        );
        deb.extend(&body);
        if body.len() % 2 == 1 {
            deb.push(b'\n');
        }
    }
    let deb_path = t.path().join("linux-image-test.deb");
    fs::write(&deb_path, deb).expect("write deb");
    let mut o = opts(&t.path().join("out"));
    o.privilege = Privilege::Fakeroot;
    let k = build::kernel(&KernelSource::Deb(deb_path), &o).expect("kernel from deb");
    assert_eq!(k.release, rel);
    assert_eq!(fs::read(&k.vmlinuz.path).expect("vmlinuz"), b"bzImage");
    let cpio = parse_newc(
        &zstd::decode_all(File::open(&k.modules_cpio.path).expect("open")).expect("unzstd"),
    );
    let base = format!("lib/modules/{rel}");
    assert_eq!(
        cpio.get(&format!("{base}/kernel/net/core/failover.ko"))
            .map(|e| &e.1),
        Some(&elf),
        "decompressed"
    );
    assert!(
        !cpio.contains_key(&format!("{base}/kernel/sound/snd.ko")),
        "not a boot module"
    );
    let (_, dep) = &cpio[&format!("{base}/modules.dep")];
    assert_eq!(
        String::from_utf8_lossy(dep),
        "kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko\nkernel/net/core/failover.ko:\n"
    );
    assert_eq!(
        cpio[&format!("{base}/modules.order")].1,
        b"kernel/net/core/failover.ko\n"
    );
    let x = t.path().join("x");
    fsck_extract(&k.modules_layer.path, &x);
    assert!(
        x.join(format!("usr/lib/modules/{rel}/kernel/sound/snd.ko"))
            .is_file(),
        "whole tree in the layer"
    );
    let mut v = String::new();
    File::open(x.join(format!("usr/lib/modules/{rel}/modules.dep")))
        .expect("dep")
        .read_to_string(&mut v)
        .expect("read");
    assert_eq!(v, DEB_DEP, "the layer keeps the package's modules.dep");
}

const DEB_DEP: &str =
    "kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko.xz\nkernel/net/core/failover.ko.xz:\nkernel/sound/snd.ko:\n";

#[test]
fn output_inside_the_source_tree_is_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let src = t.path().join("src");
    fs::create_dir_all(src.join("etc")).expect("mkdir");
    let got = build::build(&build::Source::Dir(src.clone()), &opts(&src.join("out")));
    assert!(matches!(got, Err(Error::Io { .. })), "{got:?}");
    assert!(!src.join("out/layer.erofs").exists());
    // Beside the tree it works, through the same entry point.
    match build::build(&build::Source::Dir(src), &opts(&t.path().join("out"))) {
        Ok(build::Built::Layer(l)) => assert_eq!(l.format, Format::Erofs),
        other => panic!("{other:?}"),
    }
}
