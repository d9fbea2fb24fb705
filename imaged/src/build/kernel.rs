//! Kernel layers: a `vmlinuz` and its modules become three files — the `vmlinuz` iPXE boots, a
//! zstd newc cpio of the boot modules for the initramfs, and the whole modules tree as an erofs
//! layer (the kernel layer's read-only root layer).
//!
//! Input is a `vmlinuz` plus its `/lib/modules/<release>` tree, or a Debian `linux-image-*.deb`
//! (unpacked with `deb.rs`; Debian packages leave `modules.dep` to the postinst, so `depmod -b`
//! is run on the unpacked tree when it is missing). The release is the modules directory name.
//!
//! The cpio holds `lib/modules/<release>/` with the modules chosen by `modset::BOOT_MODULES`
//! and their dependencies, a `modules.dep` cut down to exactly those, and `modules.alias`,
//! `modules.builtin`, `modules.builtin.modinfo`, `modules.order`, `modules.softdep` as they are.
//! `.ko.xz` / `.ko.zst` modules are stored decompressed as `.ko` (and renamed in modules.dep),
//! since a kernel without in-kernel module decompression cannot load them. The `.bin` indexes
//! are left out: they would describe modules the cpio does not hold.
//!
//! The erofs layer holds the tree under `usr/lib/modules/<release>` ([`MODULES_LAYER_DIR`]): on
//! merged-/usr systems (Debian 12, Ubuntu, Fedora) `/lib` is a symlink to `usr/lib`, and a real
//! `lib` directory in a lower layer would be hidden by that symlink. All its files are owned by
//! root. It does not sign, strip or otherwise alter modules.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::cpio::CpioWriter;
use super::error::{Error, IoContext, Result};
use super::layer::{BuiltLayer, Format, Partial};
use super::{deb, erofs, modset, stage, tools, BuildOptions};

/// Where the modules tree sits inside the modules erofs layer.
pub const MODULES_LAYER_DIR: &str = "usr/lib/modules";

/// Module metadata files copied into the cpio when present.
const META_FILES: &[&str] = &[
    "modules.alias",
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
    "modules.softdep",
];

/// Where a kernel comes from.
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// An installed kernel: `/boot/vmlinuz-<release>` and `/lib/modules/<release>`.
    Installed {
        vmlinuz: PathBuf,
        modules_dir: PathBuf,
    },
    /// A Debian `linux-image-*.deb`.
    Deb(PathBuf),
}

/// The three files of a kernel layer.
#[derive(Debug, Clone)]
pub struct KernelLayer {
    /// Kernel release, the modules directory name (`6.1.0-57-amd64`).
    pub release: String,
    /// `out_dir/vmlinuz`.
    pub vmlinuz: BuiltLayer,
    /// `out_dir/modules.cpio.zst`: boot modules for the initramfs.
    pub modules_cpio: BuiltLayer,
    /// `out_dir/modules.erofs`: the whole modules tree.
    pub modules_layer: BuiltLayer,
    /// Module paths (relative to the modules dir, as in the cpio's modules.dep) in the cpio.
    pub cpio_modules: Vec<String>,
}

/// Imports a kernel.
pub fn kernel(src: &KernelSource, opts: &BuildOptions) -> Result<KernelLayer> {
    fs::create_dir_all(&opts.out_dir).ctx("create output directory", &opts.out_dir)?;
    let work = opts.staging_dir()?;
    let (vmlinuz, modules_dir) = match src {
        KernelSource::Installed {
            vmlinuz,
            modules_dir,
        } => (vmlinuz.clone(), modules_dir.clone()),
        KernelSource::Deb(deb_path) => unpack_deb(deb_path, work.path(), opts)?,
    };
    let release = modules_dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::BadKernel {
            path: modules_dir.clone(),
            what: "modules directory has no usable name (expected /lib/modules/<release>)".into(),
        })?
        .to_string();
    if !modules_dir.join("modules.dep").is_file() {
        return Err(Error::BadKernel {
            path: modules_dir,
            what: "no modules.dep (run depmod)".into(),
        });
    }
    let vm_name = vmlinuz.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if vm_name.starts_with("vmlinuz-") && vm_name != format!("vmlinuz-{release}") {
        tracing::warn!(vmlinuz = %vmlinuz.display(), %release, "vmlinuz name does not match the modules release");
    }

    let vm_out = Partial::new(opts.out_dir.join("vmlinuz"));
    fs::copy(&vmlinuz, vm_out.path()).ctx("copy vmlinuz", &vmlinuz)?;
    let vmlinuz_layer = BuiltLayer::plain(&vm_out.commit()?, Format::Kernel, None)?;

    let cpio_out = Partial::new(opts.out_dir.join("modules.cpio.zst"));
    let cpio_modules = write_cpio(&modules_dir, &release, cpio_out.path(), opts.zstd_level)?;
    let modules_cpio = BuiltLayer::plain(&cpio_out.commit()?, Format::CpioZstd, None)?;

    let layer_root = work.path().join("modules-layer");
    let dest = layer_root.join(MODULES_LAYER_DIR).join(&release);
    fs::create_dir_all(dest.parent().unwrap_or(&layer_root))
        .ctx("create modules layer tree", &layer_root)?;
    link_tree(&modules_dir, &dest)?;
    let layer_out = Partial::new(opts.out_dir.join("modules.erofs"));
    erofs::mkfs_with(
        &layer_root,
        layer_out.path(),
        opts.compressor().as_deref(),
        opts.timestamp,
        None,
        true,
    )?;
    let modules_layer = BuiltLayer::plain(&layer_out.commit()?, Format::Erofs, None)?;

    tracing::info!(%release, modules = cpio_modules.len(), "kernel layer built");
    Ok(KernelLayer {
        release,
        vmlinuz: vmlinuz_layer,
        modules_cpio,
        modules_layer,
        cpio_modules,
    })
}

/// Unpacks a kernel .deb into `work`; returns its vmlinuz and modules directory.
fn unpack_deb(deb_path: &Path, work: &Path, opts: &BuildOptions) -> Result<(PathBuf, PathBuf)> {
    let root = work.join("deb");
    fs::create_dir(&root).ctx("create deb staging", &root)?;
    let mut staging = stage::Staging::new(&root, opts.stage_mode())?;
    staging.apply_tar(deb_path, deb::open_data(deb_path)?, false)?;
    // Owners do not matter here: the modules layer is made all-root.
    staging.finish(&work.join("deb.state"))?;
    let bad = |what: &str| Error::BadKernel {
        path: deb_path.to_path_buf(),
        what: what.into(),
    };
    let mut vmlinuz = None;
    if let Ok(rd) = fs::read_dir(root.join("boot")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("vmlinuz-") {
                if vmlinuz.is_some() {
                    return Err(bad("more than one boot/vmlinuz-*"));
                }
                vmlinuz = Some(e.path());
            }
        }
    }
    let vmlinuz = vmlinuz.ok_or_else(|| bad("no boot/vmlinuz-* in the package"))?;
    let mut found = Vec::new();
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(rd) = fs::read_dir(root.join(base)) {
            found.extend(rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    let [modules_dir] = found.as_slice() else {
        return Err(bad(&format!(
            "expected one lib/modules/<release>, found {}",
            found.len()
        )));
    };
    if !modules_dir.join("modules.dep").exists() {
        let release = modules_dir.file_name().unwrap_or_default().to_os_string();
        let mut args = vec![
            std::ffi::OsString::from("-b"),
            root.clone().into_os_string(),
            release,
        ];
        if modules_dir.starts_with(root.join("usr")) {
            // depmod looks under <base>/lib/modules; point it at the usr tree.
            args[1] = root.join("usr").into_os_string();
        }
        tools::run("depmod", args, None, modules_dir)?;
    }
    Ok((vmlinuz, modules_dir.clone()))
}

/// Writes the boot-modules cpio; returns the module paths it holds.
fn write_cpio(modules_dir: &Path, release: &str, out: &Path, level: i32) -> Result<Vec<String>> {
    let dep_path = modules_dir.join("modules.dep");
    let dep_text = fs::read_to_string(&dep_path).ctx("read modules.dep", &dep_path)?;
    let deps = modset::parse_dep(&dep_text);
    let chosen = modset::select(&deps, modset::BOOT_MODULES);

    let file = File::create(out).ctx("create modules cpio", out)?;
    let enc = zstd::Encoder::new(BufWriter::new(file), level).ctx("start zstd encoder", out)?;
    let mut cpio = CpioWriter::new(enc, 0);
    let base = format!("lib/modules/{release}");
    let mut dirs: BTreeSet<String> =
        ["lib".to_string(), "lib/modules".to_string(), base.clone()].into();
    for m in &chosen {
        let mut p = Path::new(m).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(format!("{base}/{}", d.display()));
            p = d.parent();
        }
    }
    // Sorted, so a parent always precedes its children.
    for d in &dirs {
        cpio.dir(d, 0o755).ctx("write modules cpio", out)?;
    }
    let mut names = Vec::with_capacity(chosen.len());
    for m in &chosen {
        let src = modules_dir.join(m);
        let data = read_module(&src)?;
        let name = uncompressed_name(m);
        cpio.file(&format!("{base}/{name}"), 0o644, &data)
            .ctx("write modules cpio", out)?;
        names.push(name);
    }
    let mut dep_out = String::new();
    for m in &chosen {
        dep_out.push_str(&uncompressed_name(m));
        dep_out.push(':');
        for d in deps.get(m).into_iter().flatten() {
            dep_out.push(' ');
            dep_out.push_str(&uncompressed_name(d));
        }
        dep_out.push('\n');
    }
    cpio.file(&format!("{base}/modules.dep"), 0o644, dep_out.as_bytes())
        .ctx("write modules cpio", out)?;
    for meta in META_FILES {
        let p = modules_dir.join(meta);
        match fs::read(&p) {
            Ok(mut data) => {
                if *meta == "modules.order" {
                    let text = String::from_utf8_lossy(&data);
                    data = text
                        .lines()
                        .map(|l| uncompressed_name(l) + "\n")
                        .collect::<String>()
                        .into_bytes();
                }
                cpio.file(&format!("{base}/{meta}"), 0o644, &data)
                    .ctx("write modules cpio", out)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).ctx("read module metadata", &p),
        }
    }
    let enc = cpio.finish().ctx("finish modules cpio", out)?;
    let mut w = enc.finish().ctx("finish zstd frame", out)?;
    w.flush().ctx("write modules cpio", out)?;
    Ok(names)
}

/// `x.ko.xz` / `x.ko.zst` / `x.ko.gz` -> `x.ko`.
fn uncompressed_name(m: &str) -> String {
    for ext in [".xz", ".zst", ".gz"] {
        if let Some(base) = m.strip_suffix(ext) {
            if base.ends_with(".ko") {
                return base.to_string();
            }
        }
    }
    m.to_string()
}

/// A module's bytes, decompressed if it is compressed.
fn read_module(p: &Path) -> Result<Vec<u8>> {
    let name = p.to_string_lossy();
    let bad = |e: String| Error::BadKernel {
        path: p.to_path_buf(),
        what: format!("decompress module: {e}"),
    };
    if name.ends_with(".ko.xz") {
        let f = File::open(p).ctx("open module", p)?;
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut io::BufReader::new(f), &mut out)
            .map_err(|e| bad(e.to_string()))?;
        Ok(out)
    } else if name.ends_with(".ko.zst") {
        let f = File::open(p).ctx("open module", p)?;
        zstd::decode_all(f).map_err(|e| bad(e.to_string()))
    } else if name.ends_with(".ko.gz") {
        let f = File::open(p).ctx("open module", p)?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut out)
            .map_err(|e| bad(e.to_string()))?;
        Ok(out)
    } else {
        fs::read(p).ctx("read module", p)
    }
}

/// Mirrors `src` at `dest`: directories made, files hard-linked (copied across filesystems),
/// symlinks recreated. Hard links keep a 400 MB modules tree from being copied.
fn link_tree(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir(dest).ctx("create directory", dest)?;
    for e in fs::read_dir(src).ctx("read directory", src)? {
        let e = e.ctx("read directory", src)?;
        let from = e.path();
        let to = dest.join(e.file_name());
        let ft = e.file_type().ctx("stat", &from)?;
        if ft.is_dir() {
            link_tree(&from, &to)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&from).ctx("read symlink", &from)?;
            std::os::unix::fs::symlink(target, &to).ctx("create symlink", &to)?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).ctx("copy", &from)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_module_names_lose_their_suffix() {
        assert_eq!(uncompressed_name("kernel/a/b.ko.xz"), "kernel/a/b.ko");
        assert_eq!(uncompressed_name("kernel/a/b.ko.zst"), "kernel/a/b.ko");
        assert_eq!(uncompressed_name("kernel/a/b.ko"), "kernel/a/b.ko");
        assert_eq!(uncompressed_name("notes.xz"), "notes.xz");
    }
}
