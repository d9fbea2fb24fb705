//! Composing the target root from cached layer files, through [`Sys`]: attach each layer
//! to a loop device and mount it read-only; mount the root overlay with
//! `lowerdir = <kernel modules layer>:<system layers, top first>` and upper/work on the
//! machine layer (a folder on the carte filesystem, or a tmpfs when `ephemeral`); mount each
//! user/project layer read-write at its mount point as its own small overlay (so the
//! content-addressed cache file is never written). Then [`switch_root`] hands over.
//!
//! Every step done is pushed on an undo list; when a step fails, what was done is undone
//! in reverse (unmount, detach, move back) so the boot can be retried from the plan. Once
//! the initramfs contents are being deleted there is no way back, and the error says so.
//! It does not download, verify, or decide which layers a machine gets.

use crate::sys::{Errno, MsFlags, Sys};
use carte_contract::{Layer, LayerKind, MachineLayerPolicy, Plan};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Where things go during composition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Scratch folder in the initramfs: `layers/`, `root/`, `ephemeral/` go below it.
    pub work: PathBuf,
    /// Where the carte filesystem (cache and machine layer) is mounted.
    pub cache_mount: PathBuf,
    /// carte-shim inside the initramfs.
    pub shim: PathBuf,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            work: PathBuf::from("/carte"),
            cache_mount: PathBuf::from("/carte/cache"),
            shim: PathBuf::from("/bin/carte-shim"),
        }
    }
}

/// The folders moved into the new root, in order.
pub const MOVED_MOUNTS: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];
/// Where the shim and the plan wait in `/run` for the switch.
pub const RUN_CARTE: &str = "/run/carte";

/// A failed compose or switch step, naming the path or device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComposeError {
    #[error("compose: layer {name} is raw and cannot be mounted")]
    RawLayer { name: String },
    #[error("compose: layer {name} has no cached file")]
    NotCached { name: String },
    #[error("compose: layer {name}: mount point {mount_point:?} must be absolute without ..")]
    BadMountPoint { name: String, mount_point: String },
    #[error("compose: the plan has no layer for the root")]
    NoLowerLayer,
    #[error("compose: mkdir {path}: {errno}")]
    Mkdir { path: PathBuf, errno: Errno },
    #[error("compose: attach {file} to a loop device: {errno}")]
    LoopAttach { file: PathBuf, errno: Errno },
    #[error("compose: mount {device} on {target}: {errno}")]
    Mount {
        device: String,
        target: PathBuf,
        errno: Errno,
    },
    #[error("switch root: move {from} to {to}: {errno}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        errno: Errno,
    },
    #[error("switch root: write {path}: {errno}")]
    Write { path: PathBuf, errno: Errno },
    #[error("switch root: copy {from} to {to}: {errno}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        errno: Errno,
    },
    #[error("switch root (past the point of no return): {step} {path}: {errno}")]
    NoReturn {
        step: &'static str,
        path: PathBuf,
        errno: Errno,
    },
}

/// One thing to undo.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Undo {
    Detach(PathBuf),
    Umount(PathBuf),
    MoveBack { from: PathBuf, to: PathBuf },
}

/// A composed root, with what it took to build it (to undo if the switch fails early).
#[derive(Debug)]
pub struct Composed {
    /// The new root (overlay) in the initramfs.
    pub root: PathBuf,
    undo: Vec<Undo>,
}

impl Composed {
    /// Undo everything, last first; failures of single undo steps are returned as text.
    pub fn undo(self, sys: &mut dyn Sys) -> Vec<String> {
        run_undo(sys, self.undo)
    }
}

fn run_undo(sys: &mut dyn Sys, mut undo: Vec<Undo>) -> Vec<String> {
    let mut failures = Vec::new();
    while let Some(u) = undo.pop() {
        let r = match &u {
            Undo::Detach(dev) => sys.loop_detach(dev),
            Undo::Umount(p) => sys.umount(p, true),
            Undo::MoveBack { from, to } => sys.move_mount(from, to),
        };
        if let Err(e) = r {
            failures.push(format!("undo {u:?}: {e}"));
        }
    }
    failures
}

/// `mount_point` below `root`, refusing relative paths and `..`.
fn inside(root: &Path, name: &str, mount_point: &str) -> Result<PathBuf, ComposeError> {
    let p = Path::new(mount_point);
    let bad = || ComposeError::BadMountPoint {
        name: name.to_string(),
        mount_point: mount_point.to_string(),
    };
    if !p.is_absolute() {
        return Err(bad());
    }
    let mut out = root.to_path_buf();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err(bad()),
        }
    }
    if out == root {
        return Err(bad());
    }
    Ok(out)
}

/// The layers composed at boot: not lazy, not machine layers (the machine layer is the
/// overlay upper folder, not a file).
pub fn boot_layers(plan: &Plan) -> impl Iterator<Item = &Layer> {
    plan.layers
        .iter()
        .filter(|l| !l.lazy && l.kind != LayerKind::Machine)
}

struct Ctx<'a> {
    sys: &'a mut dyn Sys,
    undo: Vec<Undo>,
}

impl Ctx<'_> {
    fn mkdir(&mut self, path: &Path) -> Result<(), ComposeError> {
        self.sys
            .mkdir_all(path)
            .map_err(|errno| ComposeError::Mkdir {
                path: path.to_path_buf(),
                errno,
            })
    }

    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), ComposeError> {
        self.sys
            .mount(source, target, fstype, flags, data)
            .map_err(|errno| ComposeError::Mount {
                device: source.to_string(),
                target: target.to_path_buf(),
                errno,
            })?;
        self.undo.push(Undo::Umount(target.to_path_buf()));
        Ok(())
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> Result<(), ComposeError> {
        self.sys
            .move_mount(from, to)
            .map_err(|errno| ComposeError::Move {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                errno,
            })?;
        self.undo.push(Undo::MoveBack {
            from: to.to_path_buf(),
            to: from.to_path_buf(),
        });
        Ok(())
    }
}

fn overlay_data(lower: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// Mount the layers of `plan` (files by `sha256_written`) and the root overlay. On error,
/// everything done so far is undone before returning.
pub fn compose(
    sys: &mut dyn Sys,
    plan: &Plan,
    files: &HashMap<String, PathBuf>,
    layout: &Layout,
) -> Result<Composed, ComposeError> {
    // Check the whole plan before touching anything.
    for l in boot_layers(plan) {
        if l.format.fstype().is_none() {
            return Err(ComposeError::RawLayer {
                name: l.name.clone(),
            });
        }
        if !files.contains_key(&l.sha256_written) {
            return Err(ComposeError::NotCached {
                name: l.name.clone(),
            });
        }
    }
    let root = layout.work.join("root");
    for l in boot_layers(plan) {
        if let Some(mp) = &l.mount_point {
            inside(&root, &l.name, mp)?;
        }
    }
    if !boot_layers(plan).any(|l| l.mount_point.is_none()) {
        return Err(ComposeError::NoLowerLayer);
    }

    let mut ctx = Ctx {
        sys,
        undo: Vec::new(),
    };
    match compose_steps(&mut ctx, plan, files, layout, &root) {
        Ok(()) => Ok(Composed {
            root,
            undo: ctx.undo,
        }),
        Err(e) => {
            run_undo(ctx.sys, ctx.undo);
            Err(e)
        }
    }
}

fn compose_steps(
    ctx: &mut Ctx<'_>,
    plan: &Plan,
    files: &HashMap<String, PathBuf>,
    layout: &Layout,
    root: &Path,
) -> Result<(), ComposeError> {
    let mut kernel_lowers = Vec::new();
    let mut other_lowers = Vec::new();
    let mut rw = Vec::new();
    for (i, l) in boot_layers(plan).enumerate() {
        let file = files
            .get(&l.sha256_written)
            .ok_or(ComposeError::NotCached {
                name: l.name.clone(),
            })?;
        let fstype = l.format.fstype().ok_or(ComposeError::RawLayer {
            name: l.name.clone(),
        })?;
        let dir = layout
            .work
            .join("layers")
            .join(format!("{i:02}-{}", carte_contract::file_name(&l.name)));
        ctx.mkdir(&dir)?;
        let dev = ctx
            .sys
            .loop_attach(file, true)
            .map_err(|errno| ComposeError::LoopAttach {
                file: file.clone(),
                errno,
            })?;
        ctx.undo.push(Undo::Detach(dev.clone()));
        ctx.mount(
            &dev.display().to_string(),
            &dir,
            fstype,
            MsFlags::MS_RDONLY,
            "",
        )?;
        match (&l.mount_point, l.kind) {
            (Some(mp), _) => rw.push((l, mp.clone(), dir)),
            (None, LayerKind::Kernel) => kernel_lowers.push(dir),
            (None, _) => other_lowers.push(dir),
        }
    }
    // overlayfs takes the topmost lower first; the plan lists layers bottom to top. The
    // kernel's modules go on top so no system layer can shadow them.
    other_lowers.reverse();
    let mut lowers = kernel_lowers;
    lowers.extend(other_lowers);

    let base = match plan.machine_layer {
        MachineLayerPolicy::Persist => layout.cache_mount.join("machine"),
        MachineLayerPolicy::Ephemeral => {
            let t = layout.work.join("ephemeral");
            ctx.mkdir(&t)?;
            ctx.mount("tmpfs", &t, "tmpfs", MsFlags::empty(), "mode=0755")?;
            t
        }
    };
    let upper = base.join("root/upper");
    let work = base.join("root/work");
    ctx.mkdir(&upper)?;
    ctx.mkdir(&work)?;
    ctx.mkdir(root)?;
    ctx.mount(
        "overlay",
        root,
        "overlay",
        MsFlags::empty(),
        &overlay_data(&lowers, &upper, &work),
    )?;

    for (l, mp, dir) in rw {
        let target = inside(root, &l.name, &mp)?;
        let layer_base = base.join("rw").join(carte_contract::file_name(&l.name));
        let (up, wk) = (layer_base.join("upper"), layer_base.join("work"));
        ctx.mkdir(&up)?;
        ctx.mkdir(&wk)?;
        ctx.mkdir(&target)?;
        ctx.mount(
            "overlay",
            &target,
            "overlay",
            MsFlags::empty(),
            &overlay_data(&[dir], &up, &wk),
        )?;
    }
    Ok(())
}

/// Free the initramfs: delete everything on the root filesystem's device below `dir`,
/// never descending into another mount. Returns how many entries could not be removed
/// (mount points, busy files): freeing memory is best effort.
fn delete_tree(sys: &mut dyn Sys, dir: &Path, dev: u64) -> usize {
    let Ok(names) = sys.read_dir(dir) else {
        return 1;
    };
    let mut failed = 0;
    for n in names {
        let p = dir.join(n);
        let Ok(info) = sys.lstat(&p) else {
            failed += 1;
            continue;
        };
        if info.dev != dev {
            continue;
        }
        if info.is_dir {
            failed += delete_tree(sys, &p, dev);
            if sys.rmdir(&p).is_err() {
                failed += 1;
            }
        } else if sys.unlink(&p).is_err() {
            failed += 1;
        }
    }
    failed
}

/// Hand over to the new root: leave the plan and the shim in `/run/carte`, move `/dev`
/// `/proc` `/sys` `/run` and the carte filesystem into the new root, delete the initramfs
/// contents, move the new root onto `/`, chroot into it and exec carte-shim with
/// `init_args` (what the kernel passed to /init, for the real init).
///
/// Before the deletion starts, a failure undoes everything (the compose included) and
/// returns a normal error; after, it returns [`ComposeError::NoReturn`]. With the real
/// `Sys` a success never returns (exec); with the fake it returns `Ok`.
pub fn switch_root(
    sys: &mut dyn Sys,
    composed: Composed,
    layout: &Layout,
    plan_json: &[u8],
    init_args: &[String],
) -> Result<(), ComposeError> {
    let root = composed.root.clone();
    let mut ctx = Ctx {
        sys,
        undo: composed.undo,
    };
    match switch_prepare(&mut ctx, layout, &root, plan_json) {
        Ok(()) => {}
        Err(e) => {
            run_undo(ctx.sys, ctx.undo);
            return Err(e);
        }
    }
    let sys = ctx.sys;
    let no_return = |step, path: &Path| {
        let path = path.to_path_buf();
        move |errno| ComposeError::NoReturn { step, path, errno }
    };
    sys.chdir(&root).map_err(no_return("chdir", &root))?;
    let slash = Path::new("/");
    let dev = sys.lstat(slash).map_err(no_return("lstat", slash))?.dev;
    // Mount points and busy files stay; nothing to do about them but carry on.
    let _left = delete_tree(sys, slash, dev);
    sys.move_mount(Path::new("."), slash)
        .map_err(no_return("move new root onto", slash))?;
    let dot = Path::new(".");
    sys.chroot(dot).map_err(no_return("chroot", dot))?;
    sys.chdir(slash).map_err(no_return("chdir", slash))?;
    let shim = Path::new(RUN_CARTE).join("carte-shim");
    sys.exec(&shim, init_args).map_err(no_return("exec", &shim))
}

fn switch_prepare(
    ctx: &mut Ctx<'_>,
    layout: &Layout,
    root: &Path,
    plan_json: &[u8],
) -> Result<(), ComposeError> {
    let run_carte = Path::new(RUN_CARTE);
    ctx.mkdir(run_carte)?;
    let plan_path = run_carte.join("plan.json");
    ctx.sys
        .write_file(&plan_path, plan_json)
        .map_err(|errno| ComposeError::Write {
            path: plan_path.clone(),
            errno,
        })?;
    let shim = run_carte.join("carte-shim");
    ctx.sys
        .copy_file(&layout.shim, &shim)
        .map_err(|errno| ComposeError::Copy {
            from: layout.shim.clone(),
            to: shim.clone(),
            errno,
        })?;
    for m in MOVED_MOUNTS {
        let to = inside(root, m, m)?;
        ctx.mkdir(&to)?;
        ctx.move_mount(Path::new(m), &to)?;
    }
    let cache_to = inside(root, "cache", &format!("{RUN_CARTE}/cache"))?;
    ctx.mkdir(&cache_to)?;
    ctx.move_mount(&layout.cache_mount, &cache_to)
}

#[cfg(test)]
mod tests;
