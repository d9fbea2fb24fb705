//! netbootd's side of the image store: opening it in the data folder, answering its
//! [`ReferenceCheck`] from the live policy, giving policy validation an
//! [`ImageCatalog`] over it, and the two lookups the boot routes need (the kernel version
//! a setup boots, and whether a blob may be served to machines without a token).
//!
//! It holds no store rule (imaged decides) and no policy rule (the policy engine decides);
//! it only joins them. Store calls are blocking: async callers run them with
//! `spawn_blocking`. **The store never learns about DHCP or iPXE; the policy engine never
//! sees the store except through `ImageCatalog`.**

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use imaged::access::Principal;
use imaged::meta::{MetaStore, SqliteMetaStore};
use imaged::model::{ArtefactName, Digest, ImageKind, ImageRef, VersionSpec};
use imaged::store::{ReferenceCheck, Store, StoreConfig, StoreError};

use crate::ipxe::ResolvedKernel;
use crate::policy::{CatalogImage, ImageCatalog, PolicyHandle};

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("open image store in {path}: {source}")]
    Open { path: PathBuf, source: StoreError },
    #[error("resolve kernel {image}: {source}")]
    Resolve { image: ImageRef, source: StoreError },
    #[error("resolve kernel {image}: version {version} has no {artefact} artefact")]
    MissingArtefact {
        image: ImageRef,
        version: u32,
        artefact: ArtefactName,
    },
    #[error("resolve kernel {image}: version {version} has no kernel release")]
    NoRelease { image: ImageRef, version: u32 },
    #[error("look up boot blob {digest}: {source}")]
    Blob { digest: Digest, source: StoreError },
}

/// The deletion guard: which setups of the live policy use an image. Empty until the
/// policy is loaded (nothing is served before that).
#[derive(Clone, Debug, Default)]
pub struct PolicyReferences(Arc<OnceLock<PolicyHandle>>);

impl PolicyReferences {
    /// Points the guard at the live policy; later calls are ignored.
    pub fn set(&self, policy: PolicyHandle) {
        let _ = self.0.set(policy);
    }
}

impl ReferenceCheck for PolicyReferences {
    fn setups_using(&self, image: &str) -> Vec<String> {
        self.0
            .get()
            .map(|p| p.current().setups_using(image))
            .unwrap_or_default()
    }
}

/// Opens (creating it if needed) the store at `$DATA/carte.db` and `$DATA/blobs`, with
/// deletions guarded by `refs`.
pub fn open_store(data_dir: &Path, refs: PolicyReferences) -> Result<Store, ImagesError> {
    Store::open(data_dir, Arc::new(refs), StoreConfig::default()).map_err(|source| {
        ImagesError::Open {
            path: data_dir.to_path_buf(),
            source,
        }
    })
}

/// netbootd reads the store as the appliance itself: every image a setup may name.
fn appliance() -> Principal {
    Principal::local_admin()
}

/// Policy validation's view of the store.
#[derive(Clone, Debug)]
pub struct StoreCatalog(pub Store);

impl ImageCatalog for StoreCatalog {
    fn image(&self, name: &str) -> Result<Option<CatalogImage>, String> {
        match self.0.show_image(&appliance(), name) {
            Ok(d) => Ok(Some(CatalogImage {
                kind: d.image.kind,
                versions: d.versions.iter().map(|v| v.number).collect(),
            })),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Policy validation's view of a data folder's metadata alone, for `netbootd policy
/// check`: unlike opening the [`Store`], it changes nothing in the data folder (no upload
/// clean-up, no folders created). `None` when the folder has no `carte.db`.
pub fn metadata_catalog(data_dir: &Path) -> Result<Option<MetaCatalog>, ImagesError> {
    let db = data_dir.join("carte.db");
    if !db.is_file() {
        return Ok(None);
    }
    let meta = SqliteMetaStore::open(&db).map_err(|e| ImagesError::Open {
        path: db.clone(),
        source: StoreError::Meta(e),
    })?;
    Ok(Some(MetaCatalog(Arc::new(meta))))
}

/// [`ImageCatalog`] over image metadata (see [`metadata_catalog`]).
pub struct MetaCatalog(Arc<dyn MetaStore>);

impl ImageCatalog for MetaCatalog {
    fn image(&self, name: &str) -> Result<Option<CatalogImage>, String> {
        let Some(image) = self.0.image(name).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let versions = self.0.versions(name).map_err(|e| e.to_string())?;
        Ok(Some(CatalogImage {
            kind: image.kind,
            versions: versions.iter().map(|v| v.number).collect(),
        }))
    }
}

/// The version number `image` means now (`@latest` resolved).
pub fn resolve_version(store: &Store, image: &ImageRef) -> Result<u32, ImagesError> {
    store
        .version(&appliance(), image)
        .map(|v| v.number)
        .map_err(|source| ImagesError::Resolve {
            image: image.clone(),
            source,
        })
}

/// The version `kernel` means now (`@latest` resolved at this call) and its artefacts.
pub fn resolve_kernel(store: &Store, kernel: &ImageRef) -> Result<ResolvedKernel, ImagesError> {
    let v = store
        .version(&appliance(), kernel)
        .map_err(|source| ImagesError::Resolve {
            image: kernel.clone(),
            source,
        })?;
    let artefact = |name: ArtefactName| {
        v.artefacts
            .get(&name)
            .map(|a| a.sha256.clone())
            .ok_or_else(|| ImagesError::MissingArtefact {
                image: kernel.clone(),
                version: v.number,
                artefact: name,
            })
    };
    let release = v
        .layer
        .kernel_release
        .clone()
        .ok_or_else(|| ImagesError::NoRelease {
            image: kernel.clone(),
            version: v.number,
        })?;
    Ok(ResolvedKernel {
        version: ImageRef {
            name: kernel.name.clone(),
            version: VersionSpec::Exact(v.number),
        },
        release,
        vmlinuz: artefact(ArtefactName::Vmlinuz)?,
        modules: artefact(ArtefactName::Modules)?,
    })
}

/// A blob machines may fetch without a token, found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootBlob {
    pub path: PathBuf,
    pub size: u64,
}

/// The blob `digest` if it is an artefact of some version of one of `kernels` (the
/// kernel images the current policy names) and that image really is a kernel image;
/// `None` otherwise, so nothing else is ever served without a token.
pub fn boot_blob(
    store: &Store,
    kernels: &BTreeSet<String>,
    digest: &Digest,
) -> Result<Option<BootBlob>, ImagesError> {
    let who = appliance();
    let err = |source| ImagesError::Blob {
        digest: digest.clone(),
        source,
    };
    for name in kernels {
        let details = match store.show_image(&who, name) {
            Ok(d) => d,
            // Deleted since the policy loaded (it cannot be while named, but be safe).
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(err(e)),
        };
        if details.image.kind != ImageKind::Kernel {
            continue;
        }
        for v in &details.versions {
            for (artefact, a) in &v.artefacts {
                if a.sha256 != *digest {
                    continue;
                }
                let r = ImageRef {
                    name: name.clone(),
                    version: VersionSpec::Exact(v.number),
                };
                let (meta, path) = store.artefact(&who, &r, *artefact).map_err(err)?;
                return Ok(Some(BootBlob {
                    path,
                    size: meta.size,
                }));
            }
        }
    }
    Ok(None)
}

/// The `layer` artefact of `name@version` if its sha256 is `digest`: a layer some issued
/// plan names.
pub fn plan_blob(
    store: &Store,
    name: &str,
    version: u64,
    digest: &Digest,
) -> Result<Option<BootBlob>, ImagesError> {
    let Ok(number) = u32::try_from(version) else {
        return Ok(None);
    };
    let r = ImageRef {
        name: name.to_string(),
        version: VersionSpec::Exact(number),
    };
    match store.artefact(&appliance(), &r, ArtefactName::Layer) {
        Ok((meta, path)) if meta.sha256 == *digest => Ok(Some(BootBlob {
            path,
            size: meta.size,
        })),
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
        Err(source) => Err(ImagesError::Blob {
            digest: digest.clone(),
            source,
        }),
    }
}
