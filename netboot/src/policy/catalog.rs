//! What policy validation needs to know about images: an image's kind and its version
//! numbers, behind the small [`ImageCatalog`] trait.
//!
//! The daemon implements it over the image store (`crate::images`); tests use
//! [`MemoryCatalog`]. **It is read-only and the policy engine never reaches a network
//! through it**; it does not resolve `@latest` for booting (that happens per request in
//! the HTTP layer, so a newly pushed version boots without a policy edit).

use std::collections::BTreeMap;

use imaged::model::ImageKind;

/// One image as validation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogImage {
    pub kind: ImageKind,
    /// Version numbers, ascending.
    pub versions: Vec<u32>,
}

/// Looks images up by name.
pub trait ImageCatalog: Send + Sync {
    /// The image called `name`, `Ok(None)` when there is none, `Err` with a reason when
    /// the catalog cannot be read.
    fn image(&self, name: &str) -> Result<Option<CatalogImage>, String>;
}

/// A catalog with no store behind it (`netbootd policy check` without `--data`): every
/// image reference is reported, so a check never passes for images it did not see.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCatalog;

impl ImageCatalog for NoCatalog {
    fn image(&self, _name: &str) -> Result<Option<CatalogImage>, String> {
        Err("no image store to check it against (give the data folder)".into())
    }
}

/// A fixed in-memory catalog, for tests and tools.
#[derive(Clone, Debug, Default)]
pub struct MemoryCatalog(pub BTreeMap<String, CatalogImage>);

impl MemoryCatalog {
    /// Adds `name` of `kind` with versions `1..=versions`.
    pub fn with(mut self, name: &str, kind: ImageKind, versions: u32) -> Self {
        self.0.insert(
            name.to_string(),
            CatalogImage {
                kind,
                versions: (1..=versions).collect(),
            },
        );
        self
    }
}

impl ImageCatalog for MemoryCatalog {
    fn image(&self, name: &str) -> Result<Option<CatalogImage>, String> {
        Ok(self.0.get(name).cloned())
    }
}
