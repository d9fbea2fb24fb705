//! Resolving a request path under a served root. **No path ever resolves outside the
//! root**: `..`, `.`, empty segments, absolute paths and backslashes are refused before
//! touching the file system, hidden names (`.name`) are not served, and symlinks are followed only to targets inside the root
//! (except in the package-managed iPXE folder, [`Links::MayLeave`]).
//! It does not open files or decide what is served (that is `files`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathRefused {
    /// The path is malformed or tries to climb out (answered 400).
    #[error("path {0:?} is not a plain relative path")]
    Malformed(String),
    /// Nothing there, or it leads outside the root (answered 404, so the answer does not
    /// tell which).
    #[error("path {0:?} is not served")]
    NotServed(String),
}

/// Whether symlinks inside a root may point outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Only targets inside the root (the data folder).
    StayInside,
    /// Anywhere: a package-managed folder (Debian links `ipxe.efi` to `/boot/ipxe.efi`).
    /// The request path itself still never climbs out.
    MayLeave,
}

/// Returns the canonical path of `rel` under `root`, or why it is refused. `rel` is the
/// already percent-decoded request path, so `%2e%2e` arrives here as `..`.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, PathRefused> {
    resolve_with(root, rel, Links::StayInside)
}

/// [`resolve`] with a choice about symlinks leaving the root.
pub fn resolve_with(root: &Path, rel: &str, links: Links) -> Result<PathBuf, PathRefused> {
    let malformed = || PathRefused::Malformed(rel.to_string());
    if rel.is_empty() || rel.starts_with('/') || rel.contains(['\\', '\0']) {
        return Err(malformed());
    }
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(malformed());
    }
    let not_served = || PathRefused::NotServed(rel.to_string());
    // Hidden names are never served: netbootd keeps its own state (the lease file) in
    // `.netbootd/` under the data folder, and `.git` and the like are no boot files.
    if rel.split('/').any(|seg| seg.starts_with('.')) {
        return Err(not_served());
    }
    let root = root.canonicalize().map_err(|_| not_served())?;
    let real = root.join(rel).canonicalize().map_err(|_| not_served())?;
    // A symlink inside the root may point anywhere; only its target counts.
    if links == Links::StayInside && !real.starts_with(&root) {
        return Err(not_served());
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_everything_that_climbs_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/k"), b"kernel").expect("write");
        std::fs::write(dir.path().join("secret"), b"secret").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).expect("ln");
        std::os::unix::fs::symlink("sub/k", root.join("in")).expect("ln");

        let canon = root.canonicalize().expect("canon");
        assert_eq!(resolve(&root, "sub/k"), Ok(canon.join("sub/k")));
        assert_eq!(resolve(&root, "in"), Ok(canon.join("sub/k")));

        let check = |rel: &str, malformed: bool| {
            let got = resolve(&root, rel);
            let want = if malformed {
                PathRefused::Malformed(rel.into())
            } else {
                PathRefused::NotServed(rel.into())
            };
            assert_eq!(got, Err(want), "{rel}");
        };
        check("../secret", true);
        check("sub/../../secret", true);
        check("sub/../k", true);
        check("./sub/k", true);
        check("/etc/passwd", true);
        check("sub//k", true);
        check("sub\\..\\..\\secret", true);
        check("", true);
        check("sub/k\0", true);
        check("out", false);
        check(".netbootd/leases.json", false);
        check("sub/.hidden", false);
        check("missing", false);
    }
}
