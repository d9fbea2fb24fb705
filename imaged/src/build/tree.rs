//! Measuring a staged tree: inode count, file bytes and an ext4 block estimate.
//!
//! It only reads metadata; it never changes the tree.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::error::{IoContext, Result};

/// ext4 block size the builders use.
pub const BLOCK: u64 = 4096;

/// What a tree holds, counted once per inode (hard links share one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Distinct inodes, the root included.
    pub inodes: u64,
    /// Bytes of regular file content.
    pub content_bytes: u64,
    /// ext4 blocks the content needs: file data, directory blocks, long symlinks, xattr blocks.
    pub blocks: u64,
}

/// Walks `root` without following symlinks.
pub fn measure(root: &Path) -> Result<TreeStats> {
    let mut st = TreeStats::default();
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).ctx("stat", &p)?;
        let first = seen.insert((m.dev(), m.ino()));
        let ft = m.file_type();
        if ft.is_dir() {
            let mut dirent_bytes = 24u64;
            for child in fs::read_dir(&p).ctx("read directory", &p)? {
                let child = child.ctx("read directory", &p)?;
                dirent_bytes += (8 + child.file_name().len() as u64).next_multiple_of(4);
                stack.push(child.path());
            }
            // Big directories get an htree: one index block per ~500 leaf blocks, rounded up.
            let leaf = dirent_bytes.div_ceil(BLOCK).max(1);
            st.blocks += leaf + leaf.div_ceil(500);
        }
        if !first {
            continue;
        }
        st.inodes += 1;
        if ft.is_file() {
            st.content_bytes += m.len();
            let data = m.len().div_ceil(BLOCK);
            // Extent tree blocks for large or fragmented files: generous, one per 32 MiB.
            st.blocks += data + data.div_ceil(8192);
        } else if ft.is_symlink() && m.len() >= 60 {
            st.blocks += 1;
        }
        if xattr_bytes(&p) > 96 {
            // Beyond the in-inode space of a 256-byte inode, xattrs take a block.
            st.blocks += 1;
        }
    }
    Ok(st)
}

/// Approximate on-disk bytes of an inode's xattrs (names, values, entry headers).
fn xattr_bytes(p: &Path) -> u64 {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: c is NUL-terminated; a null buffer with size 0 asks only for the needed length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return 0;
    }
    let mut names = vec![0u8; n as usize];
    // SAFETY: names has names.len() writable bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return 0;
    }
    let mut total = 0u64;
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let Ok(cn) = CString::new(name) else { continue };
        // SAFETY: both strings are NUL-terminated; size 0 asks only for the value length.
        let v = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
        total += 16 + name.len() as u64 + v.max(0) as u64;
    }
    total
}
