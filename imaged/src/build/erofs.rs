//! Making an erofs image from a tree with `mkfs.erofs` (erofs-utils).
//!
//! erofs-utils 1.5 (Debian 12) has no `--tar` import, so it always reads a directory tree;
//! owners, modes, device nodes, hard links and xattrs come from that tree (or from fakeroot's
//! view of it, see `stage.rs`). Writing erofs ourselves was not worth it: the format has
//! compressed extents and xattr sharing that mkfs.erofs already gets right.

use std::path::Path;

use super::tools;
use super::Result;

/// Runs mkfs.erofs on `src` writing `out`. `compressor` `None` means uncompressed;
/// `timestamp` fixes every inode's time (reproducible images), else mtimes are kept.
pub fn mkfs(
    src: &Path,
    out: &Path,
    compressor: Option<&str>,
    timestamp: Option<u64>,
    fakeroot_state: Option<&Path>,
) -> Result<()> {
    mkfs_with(src, out, compressor, timestamp, fakeroot_state, false)
}

/// As [`mkfs`]; with `all_root`, every inode is owned by root whatever the tree says.
pub fn mkfs_with(
    src: &Path,
    out: &Path,
    compressor: Option<&str>,
    timestamp: Option<u64>,
    fakeroot_state: Option<&Path>,
    all_root: bool,
) -> Result<()> {
    let mut args: Vec<std::ffi::OsString> = vec!["--quiet".into()];
    if all_root {
        args.push("--all-root".into());
    }
    if let Some(c) = compressor {
        args.push(format!("-z{c}").into());
    }
    match timestamp {
        Some(t) => args.push(format!("-T{t}").into()),
        None => args.push("--preserve-mtime".into()),
    }
    args.push(out.into());
    args.push(src.into());
    tools::run("mkfs.erofs", args, fakeroot_state, out)
}

/// The compressor to use when the caller did not name one: lz4hc, else lz4, else none.
pub fn default_compressor() -> Option<String> {
    let available = tools::erofs_compressors();
    ["lz4hc", "lz4"]
        .into_iter()
        .find(|c| available.iter().any(|a| a == c))
        .map(String::from)
}
