//! Resolving a requested TFTP file name to a regular file inside one of the roots.
//!
//! The name is cleaned into plain components first (no `..`, no NUL, `\` as a separator),
//! then looked up in each root in order; the first root holding the name decides. The real
//! path is canonicalized and must stay inside the canonical root, so a symlink cannot lead
//! out, except in a [`Root::packaged`] folder: the iPXE folder belongs to the package
//! manager, and Debian's links `ipxe.efi` to `/boot/ipxe.efi`. A client's name never
//! climbs out either way (`..` is refused before any lookup). This module only decides;
//! it does not open files or speak TFTP, and its outcomes never carry real paths to the
//! client.

use std::path::{Component, Path, PathBuf};

/// One folder served over TFTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub dir: PathBuf,
    /// Symlinks in this folder may point outside it (trusted, package-managed folders).
    pub links_may_leave: bool,
}

impl Root {
    /// A folder whose symlinks must stay inside it.
    pub fn contained(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            links_may_leave: false,
        }
    }

    /// A package-managed folder (the iPXE binaries): its own symlinks are followed
    /// wherever they point.
    pub fn packaged(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            links_may_leave: true,
        }
    }
}

impl From<PathBuf> for Root {
    fn from(dir: PathBuf) -> Self {
        Self::contained(dir)
    }
}

/// Why a name is not served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No root holds the name (TFTP error 1).
    NotFound,
    /// The name is not acceptable or leads somewhere we do not serve (TFTP error 2).
    Refused(&'static str),
}

/// Splits a client's name into safe components, or says why it cannot be one.
pub fn clean(name: &str) -> Result<Vec<&str>, Refusal> {
    if name.contains('\0') {
        return Err(Refusal::Refused("name contains NUL"));
    }
    let name = name.strip_prefix(['/', '\\']).unwrap_or(name);
    let mut parts = Vec::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => continue,
            ".." => return Err(Refusal::Refused("name contains ..")),
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(Refusal::Refused("empty name"));
    }
    // `split` leaves only normal names, but say so against odd platform prefixes.
    let normal = parts
        .iter()
        .all(|p| matches!(Path::new(p).components().next(), Some(Component::Normal(_))));
    if !normal {
        return Err(Refusal::Refused("name has a non-plain component"));
    }
    Ok(parts)
}

/// Finds the file for `name`: the canonical path of a regular file inside the first root
/// that holds the name (or, for a packaged root, wherever its link points).
pub fn resolve(roots: &[Root], name: &str) -> Result<PathBuf, Refusal> {
    let parts = clean(name)?;
    for Root {
        dir: root,
        links_may_leave,
    } in roots
    {
        let candidate = parts.iter().fold(root.clone(), |p, part| p.join(part));
        // Follows symlinks: a dangling link counts as absent from this root.
        match std::fs::metadata(&candidate) {
            Ok(_) => {}
            Err(e) if is_absent(&e) => continue,
            Err(_) => return Err(Refusal::Refused("cannot inspect file")),
        }
        let (Ok(real_root), Ok(real)) = (root.canonicalize(), candidate.canonicalize()) else {
            return Err(Refusal::Refused("cannot canonicalize"));
        };
        if !links_may_leave && !real.starts_with(&real_root) {
            return Err(Refusal::Refused("path leaves its root"));
        }
        return match std::fs::metadata(&real) {
            Ok(m) if m.is_file() => Ok(real),
            Ok(_) => Err(Refusal::Refused("not a regular file")),
            Err(_) => Err(Refusal::Refused("cannot inspect file")),
        };
    }
    Err(Refusal::NotFound)
}

fn is_absent(e: &std::io::Error) -> bool {
    // ENOTDIR: a component of the name is a file in this root, so the name is not here.
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_clean(name: &str, expected: Result<&[&str], Refusal>) {
        assert_eq!(clean(name), expected.map(<[&str]>::to_vec), "name {name:?}");
    }

    #[test]
    fn cleans_names() {
        check_clean("ipxe.efi", Ok(&["ipxe.efi"]));
        check_clean("/ipxe.efi", Ok(&["ipxe.efi"]));
        check_clean("\\ipxe.efi", Ok(&["ipxe.efi"]));
        check_clean("a\\b/c", Ok(&["a", "b", "c"]));
        check_clean("//etc/passwd", Ok(&["etc", "passwd"]));
        check_clean("./a//b", Ok(&["a", "b"]));
        let dotdot = Err(Refusal::Refused("name contains .."));
        check_clean("..", dotdot.clone());
        check_clean("../x", dotdot.clone());
        check_clean("/../x", dotdot.clone());
        check_clean("..\\x", dotdot.clone());
        check_clean("a/../../x", dotdot.clone());
        check_clean("a\\..\\x", dotdot);
        check_clean("", Err(Refusal::Refused("empty name")));
        check_clean("/", Err(Refusal::Refused("empty name")));
        check_clean("a\0b", Err(Refusal::Refused("name contains NUL")));
    }

    #[test]
    fn resolves_inside_roots_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let one = tmp.path().join("one");
        let two = tmp.path().join("two");
        let outside = tmp.path().join("secret");
        std::fs::create_dir_all(one.join("sub")).expect("mkdir");
        std::fs::create_dir_all(&two).expect("mkdir");
        std::fs::write(&outside, b"secret").expect("write");
        std::fs::write(one.join("both"), b"1").expect("write");
        std::fs::write(two.join("both"), b"2").expect("write");
        std::fs::write(two.join("only2"), b"2").expect("write");
        std::fs::write(one.join("sub/f"), b"f").expect("write");
        std::os::unix::fs::symlink(&outside, one.join("escape")).expect("symlink");
        std::os::unix::fs::symlink("sub/f", one.join("inner")).expect("symlink");
        std::os::unix::fs::symlink(tmp.path(), one.join("updir")).expect("symlink");
        let roots = vec![Root::contained(&one), Root::contained(&two)];
        let real = |p: PathBuf| p.canonicalize().expect("canonical");

        assert_eq!(resolve(&roots, "both"), Ok(real(one.join("both"))));
        assert_eq!(resolve(&roots, "/only2"), Ok(real(two.join("only2"))));
        assert_eq!(resolve(&roots, "sub\\f"), Ok(real(one.join("sub/f"))));
        assert_eq!(resolve(&roots, "inner"), Ok(real(one.join("sub/f"))));
        assert_eq!(resolve(&roots, "missing"), Err(Refusal::NotFound));
        assert_eq!(resolve(&roots, "both/x"), Err(Refusal::NotFound));
        assert_eq!(
            resolve(&roots, "escape"),
            Err(Refusal::Refused("path leaves its root"))
        );
        assert_eq!(
            resolve(&roots, "updir/secret"),
            Err(Refusal::Refused("path leaves its root"))
        );
        assert_eq!(
            resolve(&roots, "sub"),
            Err(Refusal::Refused("not a regular file"))
        );
        assert_eq!(resolve(&roots, "/etc/passwd"), Err(Refusal::NotFound));
    }

    #[test]
    fn packaged_roots_follow_their_links_out() {
        // Debian: /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi.
        let tmp = tempfile::tempdir().expect("tempdir");
        let ipxe = tmp.path().join("ipxe");
        let boot = tmp.path().join("boot");
        std::fs::create_dir_all(&ipxe).expect("mkdir");
        std::fs::create_dir_all(boot.join("dir")).expect("mkdir");
        std::fs::write(boot.join("ipxe.efi"), b"efi").expect("write");
        std::fs::write(tmp.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(boot.join("ipxe.efi"), ipxe.join("ipxe.efi")).expect("ln");
        std::os::unix::fs::symlink(boot.join("dir"), ipxe.join("dir")).expect("ln");
        let real = boot.join("ipxe.efi").canonicalize().expect("canonical");

        let packaged = [Root::packaged(&ipxe)];
        assert_eq!(resolve(&packaged, "ipxe.efi"), Ok(real));
        // Still only regular files, and a client's own `..` never climbs out.
        assert_eq!(
            resolve(&packaged, "dir"),
            Err(Refusal::Refused("not a regular file"))
        );
        assert_eq!(
            resolve(&packaged, "../secret"),
            Err(Refusal::Refused("name contains .."))
        );
        assert_eq!(
            resolve(&[Root::contained(&ipxe)], "ipxe.efi"),
            Err(Refusal::Refused("path leaves its root"))
        );
    }
}
