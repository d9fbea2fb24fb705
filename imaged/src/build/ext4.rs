//! Making an ext4 image from a tree with `mkfs.ext4 -d` (e2fsprogs), sized to the content.
//!
//! The image is as large as the tree needs (blocks and inodes counted by `tree.rs`, plus the
//! journal, metadata margin and the caller's headroom), never a fixed disk size. If mkfs still
//! runs out of space or inodes, it is retried once with twice the size. Without root,
//! archive xattrs are added after mkfs with `debugfs -w` (see `stage.rs` for why).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use super::error::{Error, IoContext, Result};
use super::stage::Xattrs;
use super::tools;
use super::tree::{TreeStats, BLOCK};

/// Size in bytes and inode count for an ext4 image holding `st` with `headroom` free bytes.
pub fn plan(st: &TreeStats, headroom: u64) -> (u64, u64) {
    let headroom_blocks = headroom.div_ceil(BLOCK);
    // Free inodes in proportion to the free space (one per 16 KiB), plus a margin.
    let inodes = (st.inodes + st.inodes / 10 + 64 + headroom / 16384).next_multiple_of(8);
    let inode_table_blocks = (inodes * 256).div_ceil(BLOCK);
    let content = st.blocks + st.blocks / 20 + inode_table_blocks + headroom_blocks;
    // Group descriptors, bitmaps and backup superblocks: a few per 128 MiB group, plus 1 MiB.
    let meta = content.div_ceil(32768) * 8 + 256;
    let without_journal = content + meta;
    let total = without_journal + journal_blocks(without_journal);
    (total * BLOCK, inodes)
}

/// e2fsprogs' default journal size for a filesystem of `blocks` 4 KiB blocks.
fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 2048 => 0,
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// Writes `out` as an ext4 image of `src`.
pub fn mkfs(
    src: &Path,
    out: &Path,
    st: &TreeStats,
    headroom: u64,
    fakeroot_state: Option<&Path>,
) -> Result<()> {
    let (size, inodes) = plan(st, headroom);
    match attempt(src, out, size, inodes, fakeroot_state) {
        Err(Error::ToolFailed { stderr, .. }) if out_of_space(&stderr) => {
            tracing::info!(path = %out.display(), size, "ext4 estimate too small, retrying at twice the size");
            attempt(src, out, size * 2, inodes * 2, fakeroot_state)
        }
        other => other,
    }
}

fn attempt(
    src: &Path,
    out: &Path,
    size: u64,
    inodes: u64,
    fakeroot_state: Option<&Path>,
) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .ctx("create ext4 image", out)?;
    f.set_len(size).ctx("size ext4 image", out)?;
    drop(f);
    let args: Vec<std::ffi::OsString> = vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-b".into(),
        BLOCK.to_string().into(),
        "-I".into(),
        "256".into(),
        "-N".into(),
        inodes.to_string().into(),
        "-m".into(),
        "0".into(),
        "-d".into(),
        src.into(),
        out.into(),
    ];
    tools::run("mkfs.ext4", args, fakeroot_state, out)
}

/// Writes `xattrs` (paths relative to the image root) into the ext4 image with
/// `debugfs -w -f SCRIPT`; values go through files so any bytes survive. debugfs exits 0 even
/// when a command fails, so any stderr line besides its version banner is an error.
pub fn apply_xattrs(image: &Path, xattrs: &[(PathBuf, Xattrs)], work: &Path) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix(".xattrs-")
        .tempdir_in(work)
        .ctx("create xattr work directory", work)?;
    let mut script = String::new();
    for (i, (rel, pairs)) in xattrs.iter().enumerate() {
        let path = format!("/{}", rel.display());
        let name_ok =
            |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
        if path.contains(['"', '\n', '\r']) {
            return Err(Error::NeedsRoot {
                path: rel.clone(),
                what: "an xattr on a path debugfs cannot quote".into(),
            });
        }
        for (j, (name, value)) in pairs.iter().enumerate() {
            let name = String::from_utf8_lossy(name);
            if !name_ok(&name) {
                return Err(Error::NeedsRoot {
                    path: rel.clone(),
                    what: format!("the xattr name {name:?}"),
                });
            }
            let vfile = dir.path().join(format!("{i}-{j}"));
            std::fs::write(&vfile, value).ctx("write xattr value", &vfile)?;
            script.push_str(&format!(
                "ea_set -f \"{}\" \"{path}\" {name}\n",
                vfile.display()
            ));
        }
    }
    let script_path = dir.path().join("script");
    std::fs::write(&script_path, script).ctx("write debugfs script", &script_path)?;
    let args: Vec<std::ffi::OsString> =
        vec!["-w".into(), "-f".into(), script_path.into(), image.into()];
    let stderr = tools::run_capture("debugfs", args, image)?;
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !errors.is_empty() {
        return Err(Error::ToolFailed {
            tool: "debugfs",
            path: image.to_path_buf(),
            status: "ea_set failed".into(),
            stderr: errors.join("\n"),
        });
    }
    Ok(())
}

fn out_of_space(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("no space left") || s.contains("could not allocate") || s.contains("no free space")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_content_and_headroom() {
        let st = TreeStats {
            inodes: 1000,
            content_bytes: 100 << 20,
            blocks: (100 << 20) / BLOCK + 1000,
        };
        let (size, inodes) = plan(&st, 64 << 20);
        assert!(size > (164 << 20), "{size}");
        // Not a fixed disk: well under twice the need.
        assert!(size < (260 << 20), "{size}");
        assert!(inodes >= 1100, "{inodes}");
    }

    #[test]
    fn journal_grows_with_the_filesystem() {
        assert_eq!(journal_blocks(1000), 0);
        assert_eq!(journal_blocks(10_000), 1024);
        assert_eq!(journal_blocks(1 << 30), 262144);
    }

    #[test]
    fn too_small_an_estimate_is_retried_once_at_twice_the_size() {
        let t = tempfile::tempdir().expect("tempdir");
        let src = t.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("f"), vec![1u8; 1200 << 10]).expect("write");
        // Pretend the tree is empty: the first image (about 1 MiB) cannot hold 1.2 MiB.
        let lie = TreeStats {
            inodes: 2,
            content_bytes: 0,
            blocks: 0,
        };
        let (first, _) = plan(&lie, 0);
        assert!(first < 1200 << 10, "first try must be too small: {first}");
        let out = t.path().join("img");
        mkfs(&src, &out, &lie, 0, None).expect("retried build");
        let size = std::fs::metadata(&out).expect("stat").len();
        assert_eq!(size, first * 2, "the retry doubles the size");
    }

    #[test]
    fn space_errors_are_recognised() {
        assert!(out_of_space(
            "__populate_fs: Could not allocate block in ext2 filesystem while writing file"
        ));
        assert!(out_of_space("No space left on device"));
        assert!(!out_of_space("bad magic number"));
    }
}
