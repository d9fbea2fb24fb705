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
//! before it composes. Not here yet: restoring a machine layer version onto a new disk,
//! and syncing writable user or project layers.

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
    #[error("plan: layer {image}: a machine layer backup (tar) cannot be mounted")]
    Tar { image: ImageRef },
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

/// One layer of the plan from the version `r` means now; `raw` says whether a raw disk
/// image is what is wanted (disk mode) or refused (compose).
fn layer(store: &Store, r: &ImageRef, base: &str, raw: bool) -> Result<Layer, PlanError> {
    let who = Principal::local_admin();
    let err = |source| PlanError::Store {
        image: r.clone(),
        source,
    };
    let image = store.show_image(&who, &r.name).map_err(err)?.image;
    let v = store.version(&who, r).map_err(err)?;
    let a = v
        .artefacts
        .get(&ArtefactName::Layer)
        .ok_or_else(|| PlanError::NoLayer { image: r.clone() })?;
    let m = &v.layer;
    let sha = a.sha256.to_string();
    Ok(Layer {
        name: v.image.clone(),
        version: u64::from(v.number),
        kind: kind(image.kind),
        format: match (m.format, raw) {
            (model::LayerFormat::Raw, true) => Format::Raw,
            (model::LayerFormat::Raw, false) => {
                return Err(PlanError::RawDisk { image: r.clone() })
            }
            (_, true) => return Err(PlanError::NotRaw { image: r.clone() }),
            (model::LayerFormat::Tar, false) => return Err(PlanError::Tar { image: r.clone() }),
            (model::LayerFormat::Erofs, false) => Format::Erofs,
            (model::LayerFormat::Ext4, false) => Format::Ext4,
            (model::LayerFormat::Squashfs, false) => Format::Squashfs,
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
    })
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
    let (mode, layers) = match &spec.flash {
        Some(image) => (Mode::Disk, vec![layer(store, image, base, true)?]),
        None => {
            let mut layers = vec![layer(store, &kernel.version, base, false)?];
            for r in spec.layers.iter().chain(&spec.user).chain(&spec.project) {
                layers.push(layer(store, r, base, false)?);
            }
            (Mode::Compose, layers)
        }
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
        sync_back: if spec.sync == SyncPolicy::OnNextBoot
            && spec.machine == MachineLayer::Persist
            && spec.flash.is_none()
        {
            vec![SyncBack {
                target: SyncTarget::Machine,
                upload_url: format!(
                    "{base}{}",
                    carte_contract::sync_machine_path(&mac.to_string())
                ),
            }]
        } else {
            Vec::new()
        },
        init: DEFAULT_INIT.to_string(),
        token: token.to_string(),
        events_url: format!("{base}{}", carte_contract::events_path(&mac.to_string())),
    })
}
