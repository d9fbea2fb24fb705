//! Loading the kernel modules the hardware needs: read `modules.alias` and `modules.dep`,
//! walk `/sys/devices` for `modalias` files, match them (shell globs: `*`, `?`, `[...]`),
//! order dependencies first and load them with `finit_module` through [`Sys`].
//!
//! The modules folder and the sysfs root are injected paths. It does not read
//! `modules.builtin` (a built-in module has no file in `modules.dep`, so it is skipped),
//! does not pass module parameters, and does not decompress: for `.ko.xz`/`.ko.zst`/`.ko.gz`
//! it asks the kernel to (`MODULE_INIT_COMPRESSED_FILE`) and says so clearly if it cannot.

use crate::sys::{Errno, Sys};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Modules composing needs that no device asks for: the kernel would request them on
/// first use through modprobe, which the initramfs does not have, so they are loaded by
/// name, in this order (the ones built in have no file and are skipped). The crc32c
/// drivers come first because libcrc32c (erofs, ext4) only soft-depends on them.
pub const COMPOSE_MODULES: [&str; 7] = [
    "loop",
    "crc32c_intel",
    "crc32c_generic",
    "overlay",
    "erofs",
    "squashfs",
    "ext4",
];

/// Failures reading the module index. Loading failures of single modules are reported in
/// [`LoadReport`] instead: one bad module must not stop the boot.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("modules: read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("modules: {path}:{line}: malformed line")]
    Malformed { path: PathBuf, line: usize },
}

/// One module: its file (relative to the modules folder) and its direct dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModuleEntry {
    file: PathBuf,
    deps: Vec<String>,
}

/// `modules.alias` and `modules.dep` of one kernel.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    aliases: Vec<(String, String)>,
    modules: HashMap<String, ModuleEntry>,
}

/// Module name of a file path: `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net`
/// (dashes become underscores, as the kernel does).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn is_compressed(file: &Path) -> bool {
    let s = file.to_string_lossy();
    s.ends_with(".ko.xz") || s.ends_with(".ko.zst") || s.ends_with(".ko.gz")
}

fn read(path: &Path) -> Result<String, ModulesError> {
    fs::read_to_string(path).map_err(|source| ModulesError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl ModuleIndex {
    /// Read `modules.alias` and `modules.dep` from `dir` (`/lib/modules/<release>`).
    pub fn load(dir: &Path) -> Result<ModuleIndex, ModulesError> {
        let alias_path = dir.join("modules.alias");
        let dep_path = dir.join("modules.dep");
        ModuleIndex::parse(
            &read(&alias_path)?,
            &alias_path,
            &read(&dep_path)?,
            &dep_path,
        )
    }

    /// Parse the two files' text; the paths only name them in errors.
    pub fn parse(
        alias_text: &str,
        alias_path: &Path,
        dep_text: &str,
        dep_path: &Path,
    ) -> Result<ModuleIndex, ModulesError> {
        let mut idx = ModuleIndex::default();
        for (n, line) in alias_text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("alias"), Some(pattern), Some(module), None) => idx
                    .aliases
                    .push((pattern.to_string(), module.replace('-', "_"))),
                _ => {
                    return Err(ModulesError::Malformed {
                        path: alias_path.to_path_buf(),
                        line: n + 1,
                    })
                }
            }
        }
        for (n, line) in dep_text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((file, deps)) = line.split_once(':') else {
                return Err(ModulesError::Malformed {
                    path: dep_path.to_path_buf(),
                    line: n + 1,
                });
            };
            let entry = ModuleEntry {
                file: PathBuf::from(file.trim()),
                deps: deps.split_whitespace().map(module_name).collect(),
            };
            idx.modules.insert(module_name(file.trim()), entry);
        }
        Ok(idx)
    }

    /// Modules whose alias pattern matches one of `modaliases`, that have a file (built-in
    /// ones do not). Sorted and without duplicates.
    pub fn resolve(&self, modaliases: &[String]) -> Vec<String> {
        let mut out = BTreeSet::new();
        for m in modaliases {
            for (pattern, module) in &self.aliases {
                if self.modules.contains_key(module) && glob_match(pattern, m) {
                    out.insert(module.clone());
                }
            }
        }
        out.into_iter().collect()
    }

    /// `wanted` and everything they depend on, dependencies first, each once. Unknown
    /// names are left out.
    pub fn load_order(&self, wanted: &[String]) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for w in wanted {
            self.visit(w, &mut seen, &mut order);
        }
        order
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        // Marking before recursing also stops a (malformed) dependency cycle.
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some(entry) = self.modules.get(name) else {
            return;
        };
        // depmod lists dependencies so that the last one must be loaded first.
        for d in entry.deps.iter().rev() {
            self.visit(d, seen, order);
        }
        order.push(name.to_string());
    }
}

/// Shell-glob match as `modules.alias` uses it: `*` any run, `?` any one character,
/// `[abc]`, `[a-z]`, `[!x]`/`[^x]` classes. A `[` without its `]` matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with single-star backtracking: linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = class_match(&p[pi..], t[ti]) {
                        if matched {
                            pi += len;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Match `c` against the class at the start of `p` (which begins with `[`). Returns
/// whether it matched and the class length, or `None` when the class is not closed.
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
        first = false;
    }
    None
}

/// Every `modalias` under `sys_root/devices`, without following symlinks (sysfs is full of
/// loops). Unreadable entries are skipped: devices come and go while we walk.
pub fn scan_modaliases(sys_root: &Path) -> Vec<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![sys_root.join("devices")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == "modalias" {
                if let Ok(text) = fs::read_to_string(e.path()) {
                    let m = text.trim();
                    if !m.is_empty() {
                        out.insert(m.to_string());
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// What a load round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Modules loaded now, in load order (including those the kernel already had).
    pub loaded: Vec<String>,
    /// Modules that failed, with the reason as text.
    pub failed: Vec<(String, String)>,
    /// Modules whose file is not there (the modules initrd carries a subset).
    pub missing: Vec<String>,
}

/// Load `order` from `dir`, skipping names in `attempted` and adding each to it.
pub fn load(
    sys: &mut dyn Sys,
    index: &ModuleIndex,
    dir: &Path,
    order: &[String],
    attempted: &mut HashSet<String>,
) -> LoadReport {
    let mut report = LoadReport::default();
    for name in order {
        if !attempted.insert(name.clone()) {
            continue;
        }
        let Some(entry) = index.modules.get(name) else {
            continue;
        };
        let path = dir.join(&entry.file);
        let compressed = is_compressed(&entry.file);
        match sys.finit_module(&path, "", compressed) {
            Ok(()) | Err(Errno::EEXIST) => report.loaded.push(name.clone()),
            // ENOENT is also the kernel's answer to an unknown symbol: only a file that is
            // really absent counts as missing.
            Err(Errno::ENOENT) if !path.exists() => report.missing.push(name.clone()),
            Err(Errno::ENOENT) => report.failed.push((
                name.clone(),
                format!(
                    "finit_module {}: ENOENT: unknown symbol (a dependency failed to load?)",
                    path.display()
                ),
            )),
            Err(e @ (Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS)) if compressed => {
                report.failed.push((
                    name.clone(),
                    format!(
                        "finit_module {}: {e}: compressed module needs a kernel with \
                         CONFIG_MODULE_DECOMPRESS",
                        path.display()
                    ),
                ))
            }
            Err(e) => report.failed.push((
                name.clone(),
                format!("finit_module {}: {e}", path.display()),
            )),
        }
    }
    report
}

/// Scan, resolve and load in rounds until a round finds nothing new (loading a bus driver
/// makes new devices appear) or `rounds` is reached. Returns all rounds' reports merged.
pub fn probe(
    sys: &mut dyn Sys,
    index: &ModuleIndex,
    dir: &Path,
    sys_root: &Path,
    rounds: usize,
) -> LoadReport {
    let mut attempted = HashSet::new();
    let mut total = LoadReport::default();
    for round in 0..rounds {
        let wanted = index.resolve(&scan_modaliases(sys_root));
        let order = index.load_order(&wanted);
        if order.iter().all(|m| attempted.contains(m)) {
            break;
        }
        if round > 0 {
            // Let devices found by the previous round's drivers register.
            sys.sleep(Duration::from_millis(200));
        }
        let r = load(sys, index, dir, &order, &mut attempted);
        total.loaded.extend(r.loaded);
        total.failed.extend(r.failed);
        total.missing.extend(r.missing);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::FakeSys;

    #[test]
    fn glob_table() {
        let cases = [
            (
                "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                true,
            ),
            (
                "pci:v00001AF4d00001000sv*sd*bc*sc*i*",
                "pci:v00001AF4d00001001sv00001AF4sd00000001bc02sc00i00",
                false,
            ),
            ("virtio:d00000001v*", "virtio:d00000001v00001AF4", true),
            ("virtio:d00000001v*", "virtio:d00000002v00001AF4", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[abc]x", "bx", true),
            ("[abc]x", "dx", false),
            ("[a-f]1", "e1", true),
            ("[!a-f]1", "e1", false),
            ("[^a-f]1", "z1", true),
            ("[]]", "]", true),
            ("[unclosed", "[unclosed", true),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("**a**", "bab", true),
            ("*ab", "aab", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("acpi*:PNP0303:*", "acpi:PNP0303:PNP030B:", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(glob_match(p, t), want, "pattern {p:?} text {t:?}");
        }
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name("kernel/drivers/net/virtio_net.ko"),
            "virtio_net"
        );
        assert_eq!(module_name("kernel/fs/fuse/cuse.ko.xz"), "cuse");
        assert_eq!(
            module_name("kernel/drivers/hid/hid-generic.ko.zst"),
            "hid_generic"
        );
    }

    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias fs-erofs erofs
";
    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/block/virtio_blk.ko.xz:
";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(ALIAS, Path::new("a"), DEP, Path::new("d")).expect("parse")
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = ModuleIndex::parse(
            "alias x\n",
            Path::new("/m/modules.alias"),
            "",
            Path::new("d"),
        )
        .expect_err("malformed");
        assert_eq!(e.to_string(), "modules: /m/modules.alias:1: malformed line");
        let e = ModuleIndex::parse(
            "",
            Path::new("a"),
            "\nno colon\n",
            Path::new("/m/modules.dep"),
        )
        .expect_err("malformed");
        assert_eq!(e.to_string(), "modules: /m/modules.dep:2: malformed line");
    }

    #[test]
    fn resolve_skips_builtins_and_dedups() {
        let idx = index();
        let aliases = vec![
            "virtio:d00000001v00001AF4".to_string(),
            "virtio:d00000001v00001AF5".to_string(),
            // e1000 and erofs have aliases but no file: built in.
            "pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00".to_string(),
            "fs-erofs".to_string(),
            "usb:v1234p5678".to_string(),
        ];
        assert_eq!(idx.resolve(&aliases), ["virtio_net"]);
    }

    #[test]
    fn dependencies_come_first_once() {
        let idx = index();
        let order = idx.load_order(&["virtio_net".into(), "virtio_pci".into(), "nope".into()]);
        assert_eq!(
            order,
            [
                "failover",
                "net_failover",
                "virtio_net",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
    }

    #[test]
    fn a_dependency_cycle_terminates() {
        let idx = ModuleIndex::parse(
            "",
            Path::new("a"),
            "a.ko: b.ko\nb.ko: a.ko\n",
            Path::new("d"),
        )
        .expect("parse");
        assert_eq!(idx.load_order(&["a".into()]), ["b", "a"]);
    }

    fn sysfs(devices: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, alias) in devices {
            let d = dir.path().join("devices").join(rel);
            fs::create_dir_all(&d).expect("mkdir");
            fs::write(d.join("modalias"), format!("{alias}\n")).expect("write");
        }
        // A symlink loop, as sysfs has everywhere: must not be followed.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("devices/loop")).expect("link");
        dir
    }

    #[test]
    fn scan_finds_modaliases_without_following_links() {
        let root = sysfs(&[
            (
                "pci0000:00/0000:00:03.0",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            ),
            (
                "pci0000:00/0000:00:03.0/virtio0",
                "virtio:d00000001v00001AF4",
            ),
        ]);
        assert_eq!(
            scan_modaliases(root.path()),
            [
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                "virtio:d00000001v00001AF4"
            ]
        );
    }

    #[test]
    fn probe_loads_in_order_and_accepts_eexist() {
        let root = sysfs(&[
            (
                "pci0000:00/0000:00:03.0",
                "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
            ),
            (
                "pci0000:00/0000:00:03.0/virtio0",
                "virtio:d00000001v00001AF4",
            ),
            (
                "pci0000:00/0000:00:04.0/virtio1",
                "virtio:d00000002v00001AF4",
            ),
        ]);
        let dir = Path::new("/lib/modules/6.1.0-test");
        let mut sys = FakeSys::new();
        sys.module_errno
            .insert(dir.join("kernel/drivers/virtio/virtio.ko"), Errno::EEXIST);
        sys.module_errno
            .insert(dir.join("kernel/net/core/failover.ko"), Errno::ENOENT);
        sys.module_errno.insert(
            dir.join("kernel/drivers/block/virtio_blk.ko.xz"),
            Errno::EINVAL,
        );
        let report = probe(&mut sys, &index(), dir, root.path(), 5);
        assert_eq!(report.missing, ["failover"]);
        assert_eq!(
            report.loaded,
            [
                "net_failover",
                "virtio_net",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "virtio_blk");
        assert!(
            report.failed[0].1.contains("CONFIG_MODULE_DECOMPRESS"),
            "{:?}",
            report.failed
        );
        let m = dir.display();
        assert_eq!(
            sys.calls,
            [
                format!("finit_module {m}/kernel/drivers/block/virtio_blk.ko.xz - compressed"),
                format!("finit_module {m}/kernel/net/core/failover.ko -"),
                format!("finit_module {m}/kernel/drivers/net/net_failover.ko -"),
                format!("finit_module {m}/kernel/drivers/net/virtio_net.ko -"),
                format!("finit_module {m}/kernel/drivers/virtio/virtio.ko -"),
                format!("finit_module {m}/kernel/drivers/virtio/virtio_pci_modern_dev.ko -"),
                format!("finit_module {m}/kernel/drivers/virtio/virtio_pci.ko -"),
            ],
            "second round finds nothing new, so it neither sleeps nor loads"
        );
    }

    #[test]
    fn load_reads_the_index_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("modules.alias"), ALIAS).expect("w");
        fs::write(dir.path().join("modules.dep"), DEP).expect("w");
        let idx = ModuleIndex::load(dir.path()).expect("load");
        assert_eq!(idx.resolve(&["virtio:d00000002v1".into()]), ["virtio_blk"]);
        let missing = ModuleIndex::load(&dir.path().join("nope")).expect_err("missing");
        assert!(missing.to_string().contains("modules.alias"), "{missing}");
    }
}
