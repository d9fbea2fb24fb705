//! `imaged build`: maps flags onto `build::build(&Source, &BuildOptions)`, prints what was
//! built as JSON and, with `--push NAME`, stores it as a new version through the same
//! backend as `imaged push` (local data folder or `--server`).
//!
//! It builds nothing itself and holds no store rule: the builders make the files, the
//! store checks the version against the image's kind.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use imaged::build::{self, BuildOptions, Built, BuiltLayer, FsFormat, KernelSource, Source};
use imaged::model::{ArtefactName, Digest, Encoding, ImageKind, LayerFormat, LayerMeta};

use crate::{push_version, Backend, NewImageArgs};

#[derive(Subcommand)]
pub(crate) enum BuildCmd {
    /// A layer from a directory tree, read as it is.
    Dir(TreeArgs),
    /// A layer from a tar, tar.gz, tar.zst or tar.xz archive.
    Tar(TreeArgs),
    /// A layer from an OCI image archive (docker save, skopeo oci-archive).
    Oci(TreeArgs),
    /// A whole-disk image, zstd-encoded for transfer.
    Raw {
        /// The disk image file.
        src: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// A kernel layer: vmlinuz, modules cpio and modules erofs.
    Kernel(KernelArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    Erofs,
    Ext4,
}

#[derive(Args)]
pub(crate) struct TreeArgs {
    /// The folder, tar or OCI archive to build from.
    src: PathBuf,
    /// The layer's filesystem (erofs: compact, read-only; ext4: for tools that need it).
    #[arg(long, value_enum, default_value = "erofs")]
    format: FormatArg,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("kernel-source").required(true).args(["vmlinuz", "deb"])))]
pub(crate) struct KernelArgs {
    /// The kernel image (with --modules).
    #[arg(long, requires = "modules", conflicts_with = "deb")]
    vmlinuz: Option<PathBuf>,
    /// Its /lib/modules/<release> directory.
    #[arg(long, requires = "vmlinuz")]
    modules: Option<PathBuf>,
    /// A Debian linux-image-*.deb.
    #[arg(long)]
    deb: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub(crate) struct Common {
    /// Where the built files go.
    #[arg(long)]
    out: PathBuf,
    /// Also push the result as a new version of this image.
    #[arg(long)]
    push: Option<String>,
    #[command(flatten)]
    image: NewImageArgs,
    /// Mount point of a user or project layer.
    #[arg(long, requires = "push")]
    mount_point: Option<String>,
    /// Fetched by carte-shim after the target's init starts (user and project layers).
    #[arg(long, requires = "push")]
    lazy: bool,
    /// Project images: the command carte-shim runs once booted.
    #[arg(long, requires = "push")]
    autostart: Option<String>,
}

impl BuildCmd {
    fn common(&self) -> &Common {
        match self {
            BuildCmd::Dir(a) | BuildCmd::Tar(a) | BuildCmd::Oci(a) => &a.common,
            BuildCmd::Raw { common, .. } => common,
            BuildCmd::Kernel(a) => &a.common,
        }
    }

    /// True when the result is to be stored (so a backend is needed).
    pub fn pushes(&self) -> bool {
        self.common().push.is_some()
    }
}

/// Runs one build (kernels default to `--kind kernel` when pushed); prints the built files (and the pushed version) as JSON.
pub(crate) fn run(backend: Option<&dyn Backend>, cmd: &BuildCmd) -> Result<()> {
    let common = cmd.common();
    let mut default_kind = None;
    let (source, format) = match cmd {
        BuildCmd::Dir(a) => (Source::Dir(a.src.clone()), a.format),
        BuildCmd::Tar(a) => (Source::Tar(a.src.clone()), a.format),
        BuildCmd::Oci(a) => (Source::OciArchive(a.src.clone()), a.format),
        BuildCmd::Raw { src, .. } => (Source::RawDisk(src.clone()), FormatArg::Erofs),
        BuildCmd::Kernel(a) => {
            default_kind = Some(ImageKind::Kernel);
            let src = match (&a.vmlinuz, &a.modules, &a.deb) {
                (Some(vmlinuz), Some(modules_dir), None) => KernelSource::Installed {
                    vmlinuz: vmlinuz.clone(),
                    modules_dir: modules_dir.clone(),
                },
                (None, None, Some(deb)) => KernelSource::Deb(deb.clone()),
                _ => bail!("build kernel: give --vmlinuz F --modules DIR, or --deb F"),
            };
            (Source::Kernel(src), FormatArg::Erofs)
        }
    };
    let mut opts = BuildOptions::new(&common.out);
    opts.format = match format {
        FormatArg::Erofs => FsFormat::Erofs,
        FormatArg::Ext4 => FsFormat::Ext4,
    };
    let built =
        build::build(&source, &opts).with_context(|| format!("build {}", source.describe()))?;
    let mut report = match &built {
        Built::Layer(l) => json!({ "layer": layer_json(l) }),
        Built::Kernel(k) => json!({
            "release": k.release,
            "layer": layer_json(&k.modules_layer),
            "vmlinuz": layer_json(&k.vmlinuz),
            "modules": layer_json(&k.modules_cpio),
            "cpio_modules": k.cpio_modules,
        }),
    };
    if let Some(name) = &common.push {
        let Some(b) = backend else {
            bail!("--push needs a store: --data DIR or --server URL");
        };
        let v = push_built(b, name, &built, common, default_kind)?;
        report["pushed"] = Value::String(format!("{}@{}", v.image, v.number));
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn push_built(
    b: &dyn Backend,
    name: &str,
    built: &Built,
    common: &Common,
    default_kind: Option<ImageKind>,
) -> Result<imaged::model::Version> {
    let image = NewImageArgs {
        kind: common.image.kind.or(default_kind),
        project: common.image.project.clone(),
        expires_in: common.image.expires_in,
    };
    let (main, extra, release) = match built {
        Built::Layer(l) => (l, vec![], None),
        Built::Kernel(k) => (
            &k.modules_layer,
            vec![
                (ArtefactName::Vmlinuz, k.vmlinuz.path.clone()),
                (ArtefactName::Modules, k.modules_cpio.path.clone()),
            ],
            Some(k.release.clone()),
        ),
    };
    let mut files = vec![(ArtefactName::Layer, main.path.clone())];
    files.extend(extra);
    let layer = LayerMeta {
        format: layer_format(main)?,
        encoding: match main.encoding {
            build::Encoding::None => Encoding::None,
            build::Encoding::Zstd => Encoding::Zstd,
        },
        uncompressed_size: Some(main.uncompressed_size),
        written_sha256: Some(
            main.sha256
                .parse::<Digest>()
                .with_context(|| format!("digest of {}", main.path.display()))?,
        ),
        mount_point: common.mount_point.clone(),
        lazy: common.lazy,
        autostart: common.autostart.clone(),
        kernel_release: release,
        base: None,
    };
    push_version(b, name, &image, files, layer)
}

fn layer_format(l: &BuiltLayer) -> Result<LayerFormat> {
    Ok(match l.format {
        build::Format::Erofs => LayerFormat::Erofs,
        build::Format::Ext4 => LayerFormat::Ext4,
        build::Format::RawDisk => LayerFormat::Raw,
        other => bail!(
            "{} is a {} file, not a layer filesystem",
            l.path.display(),
            other.as_str()
        ),
    })
}

fn layer_json(l: &BuiltLayer) -> Value {
    json!({
        "path": l.path,
        "format": l.format.as_str(),
        "encoding": l.encoding.as_str(),
        "size": l.size,
        "uncompressed_size": l.uncompressed_size,
        "sha256": l.sha256,
        "encoded_sha256": l.encoded_sha256,
        "content_bytes": l.content_bytes,
    })
}
