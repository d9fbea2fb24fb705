//! Building a machine's [`Plan`] for one boot of an image setup: the kernel version's
//! modules layer, then the system layers bottom to top, then user and project layers,
//! each with its digests, sizes and the URL it is fetched from.
//!
//! A setup with `flash` gets a `disk` mode plan instead: its one layer is the raw
//! whole-disk image carte-init writes onto the disk.
//!
//! It reads versions from the store (blocking) and decides nothing the policy did not
//! say. With `sync = "on-next-boot"` on a persistent machine layer the plan asks carte-init
//! to upload the last session's machine layer (`PUT` [`carte_contract::sync_machine_path`])
//! and the upper of each writable layer (a user, temporary or project layer with a mount
//! point that is not lazy: `PUT` [`carte_contract::sync_layer_path`]) before it composes,
//! and names the newest machine layer version as `machine_restore`. Lazy layers get no
//! sync-back: carte-shim mounts them read-only, so they have no upper.
//!
//! A user or project reference that resolves to a `tar` of changes (a version a machine
//! synced back, with a `base`) mounts its base version and names the changes as that
//! layer's `restore`, which carte-init unpacks into the layer's upper on a disk that has
//! none. The upper lives on the machine's disk, so that takes a persistent machine layer.

use carte_contract::{
    DiskRule, DiskSelect, Encoding, Format, Layer, LayerKind, MachineId, MachineLayerPolicy, Mode,
    Plan, SyncBack, SyncTarget, DEFAULT_INIT,
};
use imaged::access::Principal;
use imaged::model::{self, ArtefactName, ImageKind, ImageRef};
use imaged::store::{Store, StoreError};

use crate::ipxe::{ResolvedKernel, BOOT_BLOBS_PATH};
use crate::mac::MacAddr;
use crate::policy::{ComposeSpec, DiskChoice, MachineLayer, SyncPolicy};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan: layer {image}: {source}")]
    Store { image: ImageRef, source: StoreError },
    #[error("plan: layer {image}: the version has no layer artefact")]
    NoLayer { image: ImageRef },
    #[error("plan: layer {image}: a raw disk image cannot be composed (name it in flash)")]
    RawDisk { image: ImageRef },
    #[error("plan: flash {image}: not a raw disk image (imaged build raw makes one)")]
    NotRaw { image: ImageRef },
    #[error("plan: layer {image}: a tar (a machine layer backup) is never mounted")]
    Tar { image: ImageRef },
    #[error(
        "plan: layer {image}: version {version} holds changes synced back from a machine, \
         which only a persistent machine layer can restore (set machine = \"persist\" or name \
         the base version {base})"
    )]
    ChangesNeedPersist {
        image: ImageRef,
        version: u32,
        base: u32,
    },
}

fn kind(k: ImageKind) -> LayerKind {
    match k {
        ImageKind::Kernel => LayerKind::Kernel,
        ImageKind::System => LayerKind::System,
        ImageKind::User => LayerKind::User,
        ImageKind::Machine => LayerKind::Machine,
        ImageKind::Temporary => LayerKind::Temporary,
        ImageKind::Project => LayerKind::Project,
    }
}

/// What a plan layer is for, which decides the formats it may have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Mounted: erofs, ext4 or squashfs.
    Mount,
    /// Flashed onto the disk (disk mode): raw only.
    Flash,
    /// Unpacked into the machine layer: tar only.
    Restore,
}

/// The kind of the image `r` names and the version it means now.
fn resolve(store: &Store, r: &ImageRef) -> Result<(ImageKind, model::Version), PlanError> {
    let who = Principal::local_admin();
    let err = |source| PlanError::Store {
        image: r.clone(),
        source,
    };
    let kind = store.image(&who, &r.name).map_err(err)?.kind;
    Ok((kind, store.version(&who, r).map_err(err)?))
}

/// One layer of the plan from the version `r` means now, for `used`.
fn layer(store: &Store, r: &ImageRef, base: &str, used: Use) -> Result<Layer, PlanError> {
    let (kind, v) = resolve(store, r)?;
    layer_of(kind, &v, r, base, used)
}

/// The plan layer of version `v` (of an image of `kind`, named by `r`), for `used`.
fn layer_of(
    image_kind: ImageKind,
    v: &model::Version,
    r: &ImageRef,
    base: &str,
    used: Use,
) -> Result<Layer, PlanError> {
    let a = v
        .artefacts
        .get(&ArtefactName::Layer)
        .ok_or_else(|| PlanError::NoLayer { image: r.clone() })?;
    let m = &v.layer;
    let sha = a.sha256.to_string();
    Ok(Layer {
        name: v.image.clone(),
        version: u64::from(v.number),
        kind: kind(image_kind),
        format: match (m.format, used) {
            (model::LayerFormat::Raw, Use::Flash) => Format::Raw,
            (_, Use::Flash) => return Err(PlanError::NotRaw { image: r.clone() }),
            (model::LayerFormat::Tar, Use::Restore) => Format::Tar,
            (model::LayerFormat::Raw, _) => return Err(PlanError::RawDisk { image: r.clone() }),
            (model::LayerFormat::Tar, _) | (_, Use::Restore) => {
                return Err(PlanError::Tar { image: r.clone() })
            }
            (model::LayerFormat::Erofs, Use::Mount) => Format::Erofs,
            (model::LayerFormat::Ext4, Use::Mount) => Format::Ext4,
            (model::LayerFormat::Squashfs, Use::Mount) => Format::Squashfs,
        },
        encoding: match m.encoding {
            model::Encoding::None => Encoding::None,
            model::Encoding::Zstd => Encoding::Zstd,
        },
        size: a.size,
        uncompressed_size: m.uncompressed_size.unwrap_or(a.size),
        sha256_written: m
            .written_sha256
            .as_ref()
            .map_or_else(|| sha.clone(), |d| d.to_string()),
        url: format!("{base}{BOOT_BLOBS_PATH}/{sha}"),
        sha256: sha,
        mount_point: m.mount_point.clone(),
        lazy: m.lazy,
        autostart: m.autostart.clone(),
        restore: None,
    })
}

/// A user or project layer of the plan: the version `r` means now or, when that version
/// is a `tar` of changes (it has a `base`), its base version with the changes as the
/// layer's `restore`. `persist` says whether the machine layer (where uppers live) stays
/// on the disk; without it such changes cannot be restored and the plan is refused.
fn data_layer(store: &Store, r: &ImageRef, base: &str, persist: bool) -> Result<Layer, PlanError> {
    let (image_kind, v) = resolve(store, r)?;
    let Some(on) = v.layer.base else {
        return layer_of(image_kind, &v, r, base, Use::Mount);
    };
    if !persist {
        return Err(PlanError::ChangesNeedPersist {
            image: r.clone(),
            version: v.number,
            base: on,
        });
    }
    let exact = |n| ImageRef {
        name: r.name.clone(),
        version: model::VersionSpec::Exact(n),
    };
    let changes = layer_of(image_kind, &v, &exact(v.number), base, Use::Restore)?;
    let mut mounted = layer(store, &exact(on), base, Use::Mount)?;
    mounted.restore = Some(Box::new(changes));
    Ok(mounted)
}

/// The plan for `mac` booting `spec` with the already resolved `kernel`; `token` is this
/// boot's token, `base` the server as machines see it.
pub fn build(
    store: &Store,
    spec: &ComposeSpec,
    kernel: &ResolvedKernel,
    mac: MacAddr,
    name: Option<String>,
    token: &str,
    base: &str,
) -> Result<Plan, PlanError> {
    let persist = spec.machine == MachineLayer::Persist;
    let (mode, layers) = match &spec.flash {
        Some(image) => (Mode::Disk, vec![layer(store, image, base, Use::Flash)?]),
        None => {
            let mut layers = vec![layer(store, &kernel.version, base, Use::Mount)?];
            for r in &spec.layers {
                layers.push(layer(store, r, base, Use::Mount)?);
            }
            for r in spec.user.iter().chain(&spec.project) {
                layers.push(data_layer(store, r, base, persist)?);
            }
            (Mode::Compose, layers)
        }
    };
    let syncs = spec.sync == SyncPolicy::OnNextBoot && persist && spec.flash.is_none();
    let machine_restore = if syncs {
        machine_backup(store, mac, base)?
    } else {
        None
    };
    let sync_back = if syncs {
        sync_targets(&layers, mac, base)
    } else {
        Vec::new()
    };
    Ok(Plan {
        machine: MachineId {
            mac: mac.to_string(),
            name,
        },
        mode,
        disk: DiskRule {
            select: match &spec.disk {
                DiskChoice::Largest => DiskSelect::Largest,
                DiskChoice::First => DiskSelect::First,
                DiskChoice::None => DiskSelect::None,
                DiskChoice::Device(d) => DiskSelect::Device(d.clone()),
            },
            // A disk with foreign data is written only when the policy says `wipe = true`.
            may_wipe: spec.wipe,
        },
        layers,
        machine_layer: match spec.machine {
            MachineLayer::Persist => MachineLayerPolicy::Persist,
            MachineLayer::Ephemeral => MachineLayerPolicy::Ephemeral,
        },
        // The machine layer goes back only where it persists (an ephemeral one is gone).
        machine_restore,
        sync_back,
        init: DEFAULT_INIT.to_string(),
        token: token.to_string(),
        events_url: format!("{base}{}", carte_contract::events_path(&mac.to_string())),
    })
}

/// What a syncing plan asks carte-init to upload: the machine layer, then the upper of
/// each writable layer (once per name), each to its own route.
fn sync_targets(layers: &[Layer], mac: MacAddr, base: &str) -> Vec<SyncBack> {
    let mac = mac.to_string();
    let mut out = vec![SyncBack {
        target: SyncTarget::Machine,
        upload_url: format!("{base}{}", carte_contract::sync_machine_path(&mac)),
    }];
    for l in layers.iter().filter(|l| l.writable()) {
        let target = SyncTarget::Layer(l.name.clone());
        if out.iter().any(|s| s.target == target) {
            continue;
        }
        out.push(SyncBack {
            target,
            upload_url: format!("{base}{}", carte_contract::sync_layer_path(&mac, &l.name)),
        });
    }
    out
}

/// The newest version of `mac`'s machine image (its last synced-back machine layer), if
/// there is one.
fn machine_backup(store: &Store, mac: MacAddr, base: &str) -> Result<Option<Layer>, PlanError> {
    let Some(name) = imaged::store::machine_image_name(&mac.to_string()) else {
        return Ok(None);
    };
    let latest = ImageRef {
        name,
        version: model::VersionSpec::Latest,
    };
    match layer(store, &latest, base, Use::Restore) {
        Ok(l) => Ok(Some(l)),
        Err(PlanError::Store {
            source: StoreError::NotFound(_),
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
