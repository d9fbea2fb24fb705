//! Layer builders: a directory, a tar / tar.zst, an OCI image archive, a kernel or a raw disk
//! image becomes layer files (erofs by default, ext4 for writable layers) with their digests.
//!
//! Entry points: [`from_dir`], [`from_tar`], [`from_oci_archive`], [`kernel`],
//! [`from_raw_disk`], or [`build`] with a [`Source`] (what the CLI maps its flags to). Each
//! writes into `BuildOptions::out_dir` and returns [`BuiltLayer`]s; storing them is the store's
//! job, not this module's. No daemon is needed and nothing here touches the network.
//!
//! **Root and not root.** Images are made by the real tools (`mkfs.erofs`, `mkfs.ext4 -d`), which
//! take owners, modes, device nodes, hard links and xattrs from a directory tree.
//! - A directory source is read as it is, root or not: what the tree holds is what the image
//!   holds (a non-root builder can only read what it may read).
//! - Archives (tar, OCI) are unpacked into a staging tree (`stage.rs`). As root, entries are
//!   created for real: lchown, chmod, mknod, every xattr. Without root, the staging tree holds
//!   placeholder files owned by the builder and the archive's owners, modes and device numbers
//!   go into a fakeroot state file; mkfs then runs under `fakeroot -i STATE`, so the image gets
//!   the archive's metadata although nothing was chowned on the host. fakeroot hides real
//!   xattrs from the programs it runs, so archive xattrs (file capabilities, ...) are recorded
//!   instead and written into an ext4 image afterwards with `debugfs -w` (`ea_set`); erofs has
//!   no such editor, so an erofs layer from an archive with xattrs needs root and is refused
//!   without it (`Error::NeedsRoot`) rather than built without them. [`Privilege`] picks the
//!   mode; `Fakeroot` can be forced as root (tests do, to check both routes).
//! - Archive entries with `..` or an absolute path, or whose parent is a symlink, are refused.
//!
//! **Tools and crates.** erofs-utils 1.5 has no tar import, hence the staging tree. tar, gzip
//! and zstd are read with crates (`tar`, `flate2`, `zstd`); xz (Debian `.deb` data) with the
//! pure-Rust `lzma-rs`, to avoid a C liblzma build; the `.deb` ar container and the newc cpio
//! are small enough to write here. `depmod` is run only when a `.deb` lacks `modules.dep`.
//! External programs: `mkfs.erofs`, `mkfs.ext4`, `debugfs` (non-root ext4 xattrs), `fakeroot`
//! (non-root archive builds), `depmod`; `scripts/setup` installs them.
//!
//! **Not here.** Storing, hashing for the store's index, uploading: the store's job. Nothing is
//! mounted (tests mount to check), no package maintainer script is run, no OCI image config
//! (entrypoint, env) is read: a layer is a filesystem only.

mod archive;
mod cpio;
mod deb;
mod erofs;
mod error;
mod ext4;
mod kernel;
mod layer;
pub mod modset;
mod oci;
mod raw;
mod stage;
mod sys;
mod tools;
mod tree;

use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use kernel::{kernel, KernelLayer, KernelSource, MODULES_LAYER_DIR};
pub use layer::{sha256_file, BuiltLayer, Encoding, Format};
pub use modset::BOOT_MODULES;
pub use oci::from_oci_archive;
pub use raw::from_raw_disk;

use error::IoContext;

/// Filesystem of a layer built from a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsFormat {
    /// Read-only, compressed.
    #[default]
    Erofs,
    /// Writable, sized to the content plus `BuildOptions::ext4_headroom`.
    Ext4,
}

/// How archive entries get their owners and device nodes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privilege {
    /// `Root` when running as root, else `Fakeroot`.
    #[default]
    Auto,
    /// Create owners, devices and xattrs for real.
    Root,
    /// Record them and run mkfs under `fakeroot -i`.
    Fakeroot,
}

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where the layer files are written (`layer.erofs`, `layer.ext4`, `disk.raw.zst`,
    /// `vmlinuz`, `modules.cpio.zst`, `modules.erofs`).
    pub out_dir: PathBuf,
    /// Filesystem of tree layers.
    pub format: FsFormat,
    /// erofs compressor (`lz4hc`, `lz4`); `None` picks lz4hc if mkfs.erofs has it, else lz4.
    pub erofs_compressor: Option<String>,
    /// Build an uncompressed erofs (overrides `erofs_compressor`).
    pub erofs_uncompressed: bool,
    /// Free space left in an ext4 layer, in bytes.
    pub ext4_headroom: u64,
    /// Fixed timestamp for every erofs inode (reproducible builds); `None` keeps mtimes.
    pub timestamp: Option<u64>,
    /// Root or fakeroot for archive staging.
    pub privilege: Privilege,
    /// Where staging trees go; `None` means inside `out_dir`.
    pub work_dir: Option<PathBuf>,
    /// zstd level for transfer encoding and the modules cpio (3: fast, and zero runs still
    /// shrink to almost nothing).
    pub zstd_level: i32,
}

impl BuildOptions {
    /// Defaults: erofs, lz4hc when available, 64 MiB ext4 headroom, mtimes kept, auto privilege.
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        BuildOptions {
            out_dir: out_dir.into(),
            format: FsFormat::Erofs,
            erofs_compressor: None,
            erofs_uncompressed: false,
            ext4_headroom: 64 << 20,
            timestamp: None,
            privilege: Privilege::Auto,
            work_dir: None,
            zstd_level: 3,
        }
    }

    fn stage_mode(&self) -> stage::Mode {
        match self.privilege {
            Privilege::Root => stage::Mode::Root,
            Privilege::Fakeroot => stage::Mode::Fakeroot,
            Privilege::Auto if tools::is_root() => stage::Mode::Root,
            Privilege::Auto => stage::Mode::Fakeroot,
        }
    }

    fn staging_dir(&self) -> Result<tempfile::TempDir> {
        let base = self.work_dir.as_deref().unwrap_or(&self.out_dir);
        std::fs::create_dir_all(base).ctx("create work directory", base)?;
        tempfile::Builder::new()
            .prefix(".stage-")
            .tempdir_in(base)
            .ctx("create staging directory", base)
    }

    fn compressor(&self) -> Option<String> {
        if self.erofs_uncompressed {
            return None;
        }
        self.erofs_compressor
            .clone()
            .or_else(erofs::default_compressor)
    }
}

/// What to build from.
#[derive(Debug, Clone)]
pub enum Source {
    Dir(PathBuf),
    /// tar, tar.gz, tar.zst or tar.xz (told apart by magic bytes).
    Tar(PathBuf),
    OciArchive(PathBuf),
    Kernel(KernelSource),
    RawDisk(PathBuf),
}

impl Source {
    /// What is built from, for messages: `directory /srv/tree`, `kernel package x.deb`.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir(p) => format!("directory {}", p.display()),
            Source::Tar(p) => format!("tar archive {}", p.display()),
            Source::OciArchive(p) => format!("OCI archive {}", p.display()),
            Source::Kernel(KernelSource::Installed { vmlinuz, .. }) => {
                format!("kernel {}", vmlinuz.display())
            }
            Source::Kernel(KernelSource::Deb(p)) => format!("kernel package {}", p.display()),
            Source::RawDisk(p) => format!("disk image {}", p.display()),
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub enum Built {
    Layer(BuiltLayer),
    Kernel(Box<KernelLayer>),
}

/// Builds from any source.
pub fn build(source: &Source, opts: &BuildOptions) -> Result<Built> {
    Ok(match source {
        Source::Dir(p) => Built::Layer(from_dir(p, opts)?),
        Source::Tar(p) => Built::Layer(from_tar(p, opts)?),
        Source::OciArchive(p) => Built::Layer(from_oci_archive(p, opts)?),
        Source::Kernel(k) => Built::Kernel(Box::new(kernel(k, opts)?)),
        Source::RawDisk(p) => Built::Layer(from_raw_disk(p, opts)?),
    })
}

/// Builds a layer from a directory tree, read as it is.
pub fn from_dir(src: &Path, opts: &BuildOptions) -> Result<BuiltLayer> {
    let meta = std::fs::metadata(src).ctx("stat source directory", src)?;
    if !meta.is_dir() {
        return Err(Error::Io {
            step: "source is not a directory",
            path: src.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    // mkfs would read the image it is writing (and the work directory) into itself.
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    std::fs::create_dir_all(&opts.out_dir).ctx("create output directory", &opts.out_dir)?;
    let work = opts.work_dir.as_deref().unwrap_or(&opts.out_dir);
    if canon(&opts.out_dir).starts_with(canon(src)) || canon(work).starts_with(canon(src)) {
        return Err(Error::Io {
            step: "output or work directory inside the source tree",
            path: opts.out_dir.clone(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    tree_to_layer(src, None, opts, "layer")
}

/// Builds a layer from a tar archive (plain, gzip, zstd or xz).
pub fn from_tar(path: &Path, opts: &BuildOptions) -> Result<BuiltLayer> {
    let dir = opts.staging_dir()?;
    let root = dir.path().join("root");
    std::fs::create_dir(&root).ctx("create staging root", &root)?;
    let mut staging = stage::Staging::new(&root, opts.stage_mode())?;
    staging.apply_tar(path, archive::open_decompressed(path)?, false)?;
    let staged = staging.finish(&dir.path().join("fakeroot.state"))?;
    staged_to_layer(&staged, opts, dir.path())
}

/// Builds the layer of a staged archive tree, applying xattrs fakeroot could not carry.
fn staged_to_layer(
    staged: &stage::StagedTree,
    opts: &BuildOptions,
    work: &Path,
) -> Result<BuiltLayer> {
    if let (FsFormat::Erofs, Some((path, x))) = (opts.format, staged.pending_xattrs.first()) {
        return Err(Error::NeedsRoot {
            path: path.clone(),
            what: format!(
                "an erofs layer with xattrs ({}) from an archive",
                String::from_utf8_lossy(&x[0].0)
            ),
        });
    }
    let layer = tree_to_layer(
        &staged.root,
        staged.fakeroot_state.as_deref(),
        opts,
        "layer",
    )?;
    if !staged.pending_xattrs.is_empty() {
        ext4::apply_xattrs(&layer.path, &staged.pending_xattrs, work)?;
        return BuiltLayer::plain(&layer.path, layer.format, layer.content_bytes);
    }
    Ok(layer)
}

/// Makes `out_dir/<stem>.erofs|ext4` from a tree and describes it.
fn tree_to_layer(
    src: &Path,
    fakeroot_state: Option<&Path>,
    opts: &BuildOptions,
    stem: &str,
) -> Result<BuiltLayer> {
    std::fs::create_dir_all(&opts.out_dir).ctx("create output directory", &opts.out_dir)?;
    let stats = tree::measure(src)?;
    let (out, format) = match opts.format {
        FsFormat::Erofs => {
            let out = layer::Partial::new(opts.out_dir.join(format!("{stem}.erofs")));
            erofs::mkfs(
                src,
                out.path(),
                opts.compressor().as_deref(),
                opts.timestamp,
                fakeroot_state,
            )?;
            (out.commit()?, Format::Erofs)
        }
        FsFormat::Ext4 => {
            let out = layer::Partial::new(opts.out_dir.join(format!("{stem}.ext4")));
            ext4::mkfs(src, out.path(), &stats, opts.ext4_headroom, fakeroot_state)?;
            (out.commit()?, Format::Ext4)
        }
    };
    tracing::info!(src = %src.display(), out = %out.display(), inodes = stats.inodes, "layer built");
    BuiltLayer::plain(&out, format, Some(stats.content_bytes))
}
