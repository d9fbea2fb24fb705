//! Which kernel modules go into the boot modules cpio: a table of globs, closed over
//! `modules.dep`.
//!
//! Extend [`BOOT_MODULES`] to boot on more hardware: each entry is a glob over module paths as
//! `modules.dep` writes them (relative to `/lib/modules/<release>`); `*` matches within one path
//! segment, `**` any number of segments, and `.ko*` also matches `.ko.xz` / `.ko.zst`.
//! Dependencies need no entry: every module a selected one needs (transitively) is added.
//! It does not read module files or modinfo; it works on names only.

use std::collections::{BTreeMap, BTreeSet};

/// Modules carte's initramfs may need to reach and mount its layers.
pub const BOOT_MODULES: &[&str] = &[
    // Wired NICs.
    "kernel/drivers/net/ethernet/**",
    "kernel/drivers/net/virtio_net.ko*",
    "kernel/drivers/net/mii.ko*",
    "kernel/drivers/net/phy/**",
    "kernel/drivers/net/mdio/**",
    "kernel/net/core/**",
    "kernel/drivers/virtio/**",
    // Storage.
    "kernel/drivers/block/virtio_blk.ko*",
    "kernel/drivers/scsi/virtio_scsi.ko*",
    "kernel/drivers/nvme/host/**",
    "kernel/drivers/ata/ahci.ko*",
    "kernel/drivers/ata/libahci.ko*",
    "kernel/drivers/ata/ata_piix.ko*",
    "kernel/drivers/ata/libata.ko*",
    "kernel/drivers/scsi/sd_mod.ko*",
    "kernel/drivers/scsi/scsi_mod.ko*",
    "kernel/drivers/scsi/scsi_common.ko*",
    "kernel/drivers/block/loop.ko*",
    // Filesystems carte mounts, and the checksums they use.
    "kernel/fs/erofs/**",
    "kernel/fs/ext4/**",
    "kernel/fs/jbd2/**",
    "kernel/fs/mbcache.ko*",
    "kernel/fs/overlayfs/**",
    "kernel/fs/squashfs/**",
    "kernel/lib/crc16.ko*",
    "kernel/lib/libcrc32c.ko*",
    "kernel/crypto/crc32c*",
    "kernel/arch/x86/crypto/crc32c*",
];

/// Whether `path` matches the glob `pattern` (see the module doc).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|i| match_segments(rest, &segs[i..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                match_segment(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

fn match_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| match_segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && match_segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && match_segment(rest, &s[1..]),
    }
}

/// Parses `modules.dep`: each module path with the paths it depends on.
pub fn parse_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| {
            (
                m.trim().to_string(),
                deps.split_whitespace().map(String::from).collect(),
            )
        })
        .collect()
}

/// The modules matching `patterns`, plus all their dependencies.
pub fn select(deps: &BTreeMap<String, Vec<String>>, patterns: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo: Vec<&String> = deps
        .keys()
        .filter(|m| patterns.iter().any(|p| glob_match(p, m)))
        .collect();
    while let Some(m) = todo.pop() {
        if !out.insert(m.clone()) {
            continue;
        }
        for d in deps.get(m).into_iter().flatten() {
            if !out.contains(d) {
                todo.push(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, path: &str, expected: bool) {
        assert_eq!(glob_match(pattern, path), expected, "{pattern} vs {path}");
    }

    #[test]
    fn globs() {
        check("kernel/fs/erofs/**", "kernel/fs/erofs/erofs.ko", true);
        check(
            "kernel/drivers/net/ethernet/**",
            "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
            true,
        );
        check(
            "kernel/drivers/net/virtio_net.ko*",
            "kernel/drivers/net/virtio_net.ko.zst",
            true,
        );
        check(
            "kernel/drivers/net/virtio_net.ko*",
            "kernel/drivers/net/veth.ko",
            false,
        );
        check("kernel/lib/crc16.ko*", "kernel/lib/crc16.ko", true);
        check("kernel/fs/ext4/**", "kernel/fs/ext2/ext2.ko", false);
        check("kernel/*/x.ko", "kernel/a/b/x.ko", false);
        check("kernel/**/x.ko", "kernel/a/b/x.ko", true);
    }

    #[test]
    fn dependencies_are_closed_transitively() {
        let deps = parse_dep(
            "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\nkernel/unrelated.ko:\n",
        );
        let got = select(&deps, &["kernel/a.ko"]);
        let want: BTreeSet<String> = ["kernel/a.ko", "kernel/b.ko", "kernel/c.ko"]
            .map(String::from)
            .into();
        assert_eq!(got, want);
    }
}
