//! The metadata store: images, versions, projects, members and tokens behind one narrow
//! trait, with a SQLite implementation and an in-memory one for tests.
//!
//! It records and looks up; it enforces no access rule and no kind contract (that is
//! `store.rs`), and it never touches blob files. "Not found" is `Ok(None)` / `Ok(false)`,
//! never an error, so callers cannot confuse it with a failing database.

mod memory;
mod sqlite;

#[cfg(test)]
mod conformance;

use std::collections::BTreeSet;

pub use memory::MemoryMetaStore;
pub use sqlite::SqliteMetaStore;

use crate::model::{Digest, Image, NewVersion, Project, Role, Version, VersionSpec};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata: {0} already exists")]
    Exists(String),
    #[error("metadata: sqlite {step}: {source}")]
    Sqlite {
        step: &'static str,
        source: rusqlite::Error,
    },
    #[error("metadata: corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

/// A stored token: only the sha256 of the secret is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub hash: Digest,
    /// The user name the token acts as.
    pub name: String,
    pub role: Role,
    pub created_at: u64,
}

/// Images, versions, projects, members, tokens. Every method is one atomic step.
pub trait MetaStore: Send + Sync {
    /// Fails with `Exists` when the name is taken.
    fn create_image(&self, image: &Image) -> Result<(), MetaError>;
    fn image(&self, name: &str) -> Result<Option<Image>, MetaError>;
    /// All images, sorted by name.
    fn images(&self) -> Result<Vec<Image>, MetaError>;
    /// Deletes an image with all its versions; `false` when there was none.
    fn delete_image(&self, name: &str) -> Result<bool, MetaError>;
    /// Records the next version with its artefacts in one transaction: one above the
    /// highest this name ever had, also before a deletion, so `name@N` is never reused;
    /// `None` when the image does not exist. The caller has stored the blobs already.
    fn add_version(
        &self,
        image: &str,
        new: &NewVersion,
        now: u64,
    ) -> Result<Option<Version>, MetaError>;
    /// All versions of an image, ascending.
    fn versions(&self, image: &str) -> Result<Vec<Version>, MetaError>;
    /// One version; `Latest` resolves to the highest.
    fn version(&self, image: &str, spec: VersionSpec) -> Result<Option<Version>, MetaError>;
    /// Every blob some version points at.
    fn referenced_blobs(&self) -> Result<BTreeSet<Digest>, MetaError>;
    /// Notes that `blob` was uploaded to `image`: a version may only name blobs sent to
    /// its own image, so knowing a digest never grants its content. Forgotten with the image.
    fn record_upload(&self, image: &str, blob: &Digest, now: u64) -> Result<(), MetaError>;
    /// Whether `blob` was uploaded to `image` (and the image not deleted since).
    fn has_upload(&self, image: &str, blob: &Digest) -> Result<bool, MetaError>;

    /// Creates a project whose only member is its owner; `Exists` when the name is taken.
    fn create_project(&self, name: &str, owner: &str) -> Result<(), MetaError>;
    fn project(&self, name: &str) -> Result<Option<Project>, MetaError>;
    fn projects(&self) -> Result<Vec<Project>, MetaError>;
    /// Adds a member (idempotent); `false` when the project does not exist.
    fn add_member(&self, project: &str, user: &str) -> Result<bool, MetaError>;

    /// Fails with `Exists` when the hash is already stored.
    fn create_token(&self, token: &TokenRecord) -> Result<(), MetaError>;
    fn token(&self, hash: &Digest) -> Result<Option<TokenRecord>, MetaError>;
    fn tokens(&self) -> Result<Vec<TokenRecord>, MetaError>;
}
