//! The image store service: every operation a caller can ask for, with the kind contracts
//! (`access`, `contract`) enforced in one place, over a `MetaStore` and a `BlobStore`.
//!
//! It is synchronous and transport-free: the HTTP API and the local CLI both call it. It
//! knows nothing of boot policy; netbootd tells it which images its setups use through
//! `ReferenceCheck`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::access::{self, Access, Principal, SYSTEM_OWNER};
use crate::blob::{BlobError, BlobStore, FsBlobStore};
use crate::contract;
use crate::meta::{MetaError, MetaStore, SqliteMetaStore, TokenRecord};
use crate::model::{
    check_name, Artefact, ArtefactName, Digest, Image, ImageDetails, ImageKind, ImageRef, NewImage,
    NewToken, NewVersion, Project, Role, TokenInfo, Version,
};
use crate::token;

/// Which setups of the boot policy use an image; netbootd answers from its live policy.
pub trait ReferenceCheck: Send + Sync {
    /// Names of the setups that reference `image` (any version); empty when none.
    fn setups_using(&self, image: &str) -> Vec<String>;
}

impl<F: Fn(&str) -> Vec<String> + Send + Sync> ReferenceCheck for F {
    fn setups_using(&self, image: &str) -> Vec<String> {
        self(image)
    }
}

/// For `imaged` alone, which has no policy: nothing references anything.
pub fn no_references() -> Arc<dyn ReferenceCheck> {
    Arc::new(|_: &str| Vec::new())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("image {image} is used by setup {}", setups.join(", "))]
    Referenced { image: String, setups: Vec<String> },
    #[error("upload exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(
        "declared sha256 {declared} does not match the received content's {actual}; nothing stored"
    )]
    DigestMismatch { declared: Digest, actual: Digest },
    #[error("upload interrupted: {0}")]
    Interrupted(std::io::Error),
    /// Metadata and blobs disagree: the data folder was damaged outside the store.
    #[error("store damaged: {0}")]
    Damaged(String),
    #[error("store: {0}")]
    Meta(MetaError),
    #[error("store: {0}")]
    Blob(BlobError),
    #[error("store: {0}")]
    Token(#[from] token::TokenError),
}

impl From<MetaError> for StoreError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Exists(what) => StoreError::Conflict(what),
            e => StoreError::Meta(e),
        }
    }
}

impl From<BlobError> for StoreError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::Mismatch { declared, actual } => {
                StoreError::DigestMismatch { declared, actual }
            }
            BlobError::TooLarge { limit } => StoreError::TooLarge { limit },
            BlobError::Read(e) => StoreError::Interrupted(e),
            e => StoreError::Blob(e),
        }
    }
}

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Largest blob accepted, in bytes.
    pub max_upload: u64,
    /// Unreferenced blobs younger than this (seconds) survive gc: they may be uploads
    /// whose version is about to be recorded.
    pub blob_grace: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_upload: 64 << 30,
            blob_grace: 3600,
        }
    }
}

/// What a gc run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcReport {
    /// Expired temporary images deleted.
    pub deleted_images: Vec<String>,
    /// Expired images kept because a setup uses them, with those setups.
    pub kept_referenced: Vec<(String, Vec<String>)>,
    /// Unreferenced blobs deleted.
    pub deleted_blobs: usize,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The store; cheap to clone (shared state behind `Arc`).
#[derive(Clone)]
pub struct Store {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    refs: Arc<dyn ReferenceCheck>,
    config: StoreConfig,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .finish()
    }
}

impl Store {
    /// A store over the given parts. Cleans leftovers of interrupted uploads first, so
    /// call it once per process start.
    pub fn new(
        meta: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        refs: Arc<dyn ReferenceCheck>,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        let cleaned = blobs.clean_tmp()?;
        if cleaned > 0 {
            tracing::info!(cleaned, "removed leftovers of interrupted uploads");
        }
        Ok(Store {
            meta,
            blobs,
            refs,
            config,
        })
    }

    /// The standard layout: `$DATA/carte.db`, `$DATA/blobs/sha256/`, `$DATA/tmp/`.
    pub fn open(
        data: &Path,
        refs: Arc<dyn ReferenceCheck>,
        config: StoreConfig,
    ) -> Result<Store, StoreError> {
        let blobs = FsBlobStore::open(data)?;
        let meta = SqliteMetaStore::open(&data.join("carte.db"))?;
        Store::new(Arc::new(meta), Arc::new(blobs), refs, config)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    // ---- auth ----

    /// The principal a bearer token stands for, or `None` for an unknown token.
    pub fn authenticate(&self, secret: &str) -> Result<Option<Principal>, StoreError> {
        if !token::well_formed(secret) {
            return Ok(None);
        }
        Ok(self.meta.token(&token::hash(secret))?.map(|t| Principal {
            name: t.name,
            role: t.role,
        }))
    }

    /// Creates a token (admins only); the answer holds the only copy of the secret.
    pub fn create_token(
        &self,
        who: &Principal,
        name: &str,
        role: Role,
    ) -> Result<NewToken, StoreError> {
        if !who.is_admin() {
            return Err(StoreError::Forbidden("only admins create tokens".into()));
        }
        check_name(name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        // `system` owns machine images; `admin` is who the local CLI acts as, so a
        // user-role token of that name would own what the operator made.
        if name == SYSTEM_OWNER || (name == Principal::local_admin().name && role == Role::User) {
            return Err(StoreError::Invalid(format!(
                "the user name {name} is reserved"
            )));
        }
        let secret = token::generate()?;
        self.meta.create_token(&TokenRecord {
            hash: token::hash(&secret),
            name: name.to_string(),
            role,
            created_at: now(),
        })?;
        Ok(NewToken {
            name: name.to_string(),
            role,
            token: secret,
        })
    }

    pub fn tokens(&self, who: &Principal) -> Result<Vec<TokenInfo>, StoreError> {
        if !who.is_admin() {
            return Err(StoreError::Forbidden("only admins list tokens".into()));
        }
        Ok(self
            .meta
            .tokens()?
            .into_iter()
            .map(|t| TokenInfo {
                name: t.name,
                role: t.role,
                created_at: t.created_at,
            })
            .collect())
    }

    // ---- images ----

    fn project_of(&self, image: &Image) -> Result<Option<Project>, StoreError> {
        match &image.project {
            Some(p) => Ok(self.meta.project(p)?),
            None => Ok(None),
        }
    }

    /// The image if `who` may `access` it: NotFound when absent, Forbidden when not theirs.
    fn image_for(&self, who: &Principal, name: &str, access: Access) -> Result<Image, StoreError> {
        let image = self
            .meta
            .image(name)?
            .ok_or_else(|| StoreError::NotFound(format!("image {name}")))?;
        let project = self.project_of(&image)?;
        if !access::allowed(who, &image, project.as_ref(), access) {
            let verb = match access {
                Access::Read => "read",
                Access::Write => "write",
                Access::Delete => "delete",
            };
            return Err(StoreError::Forbidden(format!(
                "{} may not {verb} {} image {name}",
                who.name, image.kind
            )));
        }
        Ok(image)
    }

    pub fn create_image(&self, who: &Principal, new: NewImage) -> Result<Image, StoreError> {
        contract::check_new_image(&new).map_err(StoreError::Invalid)?;
        let project = match &new.project {
            Some(p) => Some(
                self.meta
                    .project(p)?
                    .ok_or_else(|| StoreError::NotFound(format!("project {p}")))?,
            ),
            None => None,
        };
        if let Some(why) = access::create_denied(who, &new, project.as_ref()) {
            return Err(StoreError::Forbidden(why));
        }
        let image = Image {
            name: new.name,
            kind: new.kind,
            owner: if new.kind == ImageKind::Machine {
                SYSTEM_OWNER.to_string()
            } else {
                who.name.clone()
            },
            project: new.project,
            expires_at: new.expires_at,
            created_at: now(),
        };
        self.meta.create_image(&image)?;
        Ok(image)
    }

    /// The images `who` may read.
    pub fn list_images(&self, who: &Principal) -> Result<Vec<Image>, StoreError> {
        let mut out = Vec::new();
        for image in self.meta.images()? {
            let project = self.project_of(&image)?;
            if access::allowed(who, &image, project.as_ref(), Access::Read) {
                out.push(image);
            }
        }
        Ok(out)
    }

    pub fn show_image(&self, who: &Principal, name: &str) -> Result<ImageDetails, StoreError> {
        let image = self.image_for(who, name, Access::Read)?;
        let versions = self.meta.versions(name)?;
        Ok(ImageDetails { image, versions })
    }

    /// Deletes an image and its versions; refused, naming them, while setups use it.
    /// Its blobs go at the next gc.
    pub fn delete_image(&self, who: &Principal, name: &str) -> Result<(), StoreError> {
        self.image_for(who, name, Access::Delete)?;
        let setups = self.refs.setups_using(name);
        if !setups.is_empty() {
            return Err(StoreError::Referenced {
                image: name.to_string(),
                setups,
            });
        }
        if !self.meta.delete_image(name)? {
            return Err(StoreError::NotFound(format!("image {name}")));
        }
        Ok(())
    }

    /// The machine image of `mac`, created (owner `system`) the first time it is asked
    /// for. `mac` is six hex pairs separated by `:` or `-`.
    pub fn ensure_machine_image(&self, mac: &str) -> Result<Image, StoreError> {
        let name = machine_image_name(mac)
            .ok_or_else(|| StoreError::Invalid(format!("bad MAC address {mac:?}")))?;
        if let Some(image) = self.meta.image(&name)? {
            if image.kind != ImageKind::Machine {
                return Err(StoreError::Conflict(format!(
                    "image {name} of kind {}",
                    image.kind
                )));
            }
            return Ok(image);
        }
        let image = Image {
            name: name.clone(),
            kind: ImageKind::Machine,
            owner: SYSTEM_OWNER.to_string(),
            project: None,
            expires_at: None,
            created_at: now(),
        };
        match self.meta.create_image(&image) {
            Ok(()) => Ok(image),
            // Two first boots racing: the other one created it.
            Err(MetaError::Exists(_)) => self
                .meta
                .image(&name)?
                .ok_or_else(|| StoreError::NotFound(format!("image {name}"))),
            Err(e) => Err(e.into()),
        }
    }

    // ---- versions ----

    /// Streams `body` into the blob store for a later `add_version` of `image`.
    /// `declared` is the client's sha256: a mismatch stores nothing.
    pub fn upload_blob(
        &self,
        who: &Principal,
        image: &str,
        body: &mut dyn Read,
        declared: Option<&Digest>,
    ) -> Result<Artefact, StoreError> {
        self.image_for(who, image, Access::Write)?;
        let info = self.blobs.put(body, declared, self.config.max_upload)?;
        self.meta.record_upload(image, &info.digest, now())?;
        Ok(Artefact {
            sha256: info.digest,
            size: info.size,
        })
    }

    /// Records a new immutable version whose artefacts are already stored blobs.
    pub fn add_version(
        &self,
        who: &Principal,
        image: &str,
        new: NewVersion,
    ) -> Result<Version, StoreError> {
        let img = self.image_for(who, image, Access::Write)?;
        contract::check_new_version(&img, &new).map_err(StoreError::Invalid)?;
        let earlier = self.meta.versions(image)?;
        if let Some(base) = new.layer.base {
            let v = earlier.iter().find(|v| v.number == base).ok_or_else(|| {
                StoreError::Invalid(format!("base version {image}@{base} does not exist"))
            })?;
            contract::check_base(v).map_err(StoreError::Invalid)?;
        }
        for (name, a) in &new.artefacts {
            // Only blobs sent to this image (or already in one of its versions): knowing
            // a digest of someone else's blob must not let a caller read it.
            let known = self.meta.has_upload(image, &a.sha256)?
                || earlier
                    .iter()
                    .any(|v| v.artefacts.values().any(|x| x.sha256 == a.sha256));
            if !known {
                return Err(StoreError::Invalid(format!(
                    "artefact {name}: blob {} was not uploaded to image {image}",
                    a.sha256
                )));
            }
            let path = self.blobs.locate(&a.sha256)?.ok_or_else(|| {
                StoreError::Invalid(format!(
                    "artefact {name}: blob {} was not uploaded",
                    a.sha256
                ))
            })?;
            let size = std::fs::metadata(&path)
                .map_err(|source| {
                    StoreError::Blob(BlobError::Io {
                        step: "stat",
                        path: path.clone(),
                        source,
                    })
                })?
                .len();
            if size != a.size {
                return Err(StoreError::Invalid(format!(
                    "artefact {name}: declared size {} but blob {} has {size}",
                    a.size, a.sha256
                )));
            }
        }
        self.meta
            .add_version(image, &new, now())?
            .ok_or_else(|| StoreError::NotFound(format!("image {image}")))
    }

    /// Records the changes a machine synced back for the writable layer `image`: `body`
    /// (a tar of the layer's overlay upper, sha256 `declared`) becomes the next version,
    /// a `tar` whose `base` is version `base` (the version that machine mounts). It writes
    /// as [`access::sync_writer`] says (the image's owner), so the kind contracts hold;
    /// netbootd calls it only for a layer the machine's current plan mounts writable and
    /// asks to sync back. The base is checked before anything is stored; a body that does
    /// not match `declared`, or is cut off, leaves no version.
    pub fn add_synced_changes(
        &self,
        image: &str,
        base: u32,
        body: &mut dyn Read,
        declared: &Digest,
    ) -> Result<Version, StoreError> {
        let img = self
            .meta
            .image(image)?
            .ok_or_else(|| StoreError::NotFound(format!("image {image}")))?;
        let project = self.project_of(&img)?;
        let who = access::sync_writer(&img, project.as_ref()).ok_or_else(|| {
            StoreError::Forbidden(format!(
                "{} image {image} takes no changes from machines",
                img.kind
            ))
        })?;
        let v = self
            .meta
            .version(image, crate::model::VersionSpec::Exact(base))?
            .ok_or_else(|| {
                StoreError::Invalid(format!("base version {image}@{base} does not exist"))
            })?;
        contract::check_base(&v).map_err(StoreError::Invalid)?;
        let artefact = self.upload_blob(&who, image, body, Some(declared))?;
        self.add_version(
            &who,
            image,
            NewVersion {
                layer: crate::model::LayerMeta::changes(base),
                artefacts: [(ArtefactName::Layer, artefact)].into(),
            },
        )
    }

    /// One image's record (kind, owner, project), without its versions.
    pub fn image(&self, who: &Principal, name: &str) -> Result<Image, StoreError> {
        self.image_for(who, name, Access::Read)
    }

    /// One version; `@latest` resolves to the highest.
    pub fn version(&self, who: &Principal, r: &ImageRef) -> Result<Version, StoreError> {
        self.image_for(who, &r.name, Access::Read)?;
        self.meta
            .version(&r.name, r.version)?
            .ok_or_else(|| StoreError::NotFound(format!("version {r}")))
    }

    /// An artefact of a version and the path of its blob, for streaming.
    pub fn artefact(
        &self,
        who: &Principal,
        r: &ImageRef,
        name: ArtefactName,
    ) -> Result<(Artefact, PathBuf), StoreError> {
        let v = self.version(who, r)?;
        let a = v
            .artefacts
            .get(&name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("artefact {name} of {r}")))?;
        let path = self
            .blobs
            .locate(&a.sha256)?
            .ok_or_else(|| StoreError::Damaged(format!("blob {} of {r} is missing", a.sha256)))?;
        Ok((a, path))
    }

    // ---- projects ----

    /// Creates a project owned by (and with the sole member) `who`.
    pub fn create_project(&self, who: &Principal, name: &str) -> Result<Project, StoreError> {
        check_name(name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.meta.create_project(name, &who.name)?;
        self.meta
            .project(name)?
            .ok_or_else(|| StoreError::NotFound(format!("project {name}")))
    }

    /// All projects for admins; for others the ones they are a member of.
    pub fn projects(&self, who: &Principal) -> Result<Vec<Project>, StoreError> {
        Ok(self
            .meta
            .projects()?
            .into_iter()
            .filter(|p| who.is_admin() || p.members.contains(&who.name))
            .collect())
    }

    pub fn project(&self, who: &Principal, name: &str) -> Result<Project, StoreError> {
        let p = self
            .meta
            .project(name)?
            .ok_or_else(|| StoreError::NotFound(format!("project {name}")))?;
        if !(who.is_admin() || p.members.contains(&who.name)) {
            return Err(StoreError::Forbidden(format!(
                "{} is not a member of project {name}",
                who.name
            )));
        }
        Ok(p)
    }

    /// Adds a member; only the project's owner or an admin may.
    pub fn add_member(
        &self,
        who: &Principal,
        project: &str,
        user: &str,
    ) -> Result<Project, StoreError> {
        check_name(user).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let p = self
            .meta
            .project(project)?
            .ok_or_else(|| StoreError::NotFound(format!("project {project}")))?;
        if !(who.is_admin() || p.owner == who.name) {
            return Err(StoreError::Forbidden(format!(
                "only the owner of project {project} or an admin adds members"
            )));
        }
        if !self.meta.add_member(project, user)? {
            return Err(StoreError::NotFound(format!("project {project}")));
        }
        self.meta
            .project(project)?
            .ok_or_else(|| StoreError::NotFound(format!("project {project}")))
    }

    // ---- gc ----

    /// Deletes expired temporary images (except those a setup uses) and then blobs no
    /// version references that are older than the grace period. Admins only.
    pub fn gc(&self, who: &Principal, now: u64) -> Result<GcReport, StoreError> {
        if !who.is_admin() {
            return Err(StoreError::Forbidden("only admins run gc".into()));
        }
        let mut report = GcReport::default();
        for image in self.meta.images()? {
            let expired =
                image.kind == ImageKind::Temporary && image.expires_at.is_some_and(|t| t <= now);
            if !expired {
                continue;
            }
            let setups = self.refs.setups_using(&image.name);
            if !setups.is_empty() {
                report.kept_referenced.push((image.name, setups));
                continue;
            }
            if self.meta.delete_image(&image.name)? {
                report.deleted_images.push(image.name);
            }
        }
        // Read references after deleting, and the blob list after that: a version
        // recorded meanwhile points at a blob younger than the grace period.
        let referenced = self.meta.referenced_blobs()?;
        for blob in self.blobs.list()? {
            if referenced.contains(&blob.digest)
                || blob.stored_at.saturating_add(self.config.blob_grace) > now
            {
                continue;
            }
            self.blobs.delete(&blob.digest)?;
            report.deleted_blobs += 1;
        }
        Ok(report)
    }
}

/// `machine-52-54-00-00-00-01` for MAC `52:54:00:00:00:01` (any case, `:` or `-`).
pub fn machine_image_name(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| format!("machine-{}", parts.join("-").to_ascii_lowercase()))
}
