//! In-memory `MetaStore` for tests: the same outcomes as SQLite, nothing persisted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use super::{MetaError, MetaStore, TokenRecord};
use crate::model::{Digest, Image, NewVersion, Project, Version, VersionSpec};

#[derive(Debug, Default)]
struct Inner {
    images: BTreeMap<String, Image>,
    versions: BTreeMap<String, Vec<Version>>,
    projects: BTreeMap<String, Project>,
    tokens: BTreeMap<Digest, TokenRecord>,
    /// Highest version a deleted image had: numbers are never reused.
    tombstones: BTreeMap<String, u32>,
    uploads: BTreeSet<(String, Digest)>,
}

#[derive(Debug, Default)]
pub struct MemoryMetaStore {
    inner: Mutex<Inner>,
}

impl MemoryMetaStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave Inner half-updated: every method edits at the end.
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl MetaStore for MemoryMetaStore {
    fn create_image(&self, image: &Image) -> Result<(), MetaError> {
        let mut g = self.lock();
        if g.images.contains_key(&image.name) {
            return Err(MetaError::Exists(format!("image {}", image.name)));
        }
        g.images.insert(image.name.clone(), image.clone());
        Ok(())
    }

    fn image(&self, name: &str) -> Result<Option<Image>, MetaError> {
        Ok(self.lock().images.get(name).cloned())
    }

    fn images(&self) -> Result<Vec<Image>, MetaError> {
        Ok(self.lock().images.values().cloned().collect())
    }

    fn delete_image(&self, name: &str) -> Result<bool, MetaError> {
        let mut g = self.lock();
        if let Some(last) = g
            .versions
            .remove(name)
            .and_then(|v| v.last().map(|v| v.number))
        {
            let t = g.tombstones.entry(name.to_string()).or_default();
            *t = (*t).max(last);
        }
        g.uploads.retain(|(image, _)| image != name);
        Ok(g.images.remove(name).is_some())
    }

    fn add_version(
        &self,
        image: &str,
        new: &NewVersion,
        now: u64,
    ) -> Result<Option<Version>, MetaError> {
        let mut g = self.lock();
        if !g.images.contains_key(image) {
            return Ok(None);
        }
        let floor = g.tombstones.get(image).copied().unwrap_or(0);
        let list = g.versions.entry(image.to_string()).or_default();
        let number = list.last().map_or(floor, |v| v.number.max(floor)) + 1;
        let v = Version {
            image: image.to_string(),
            number,
            created_at: now,
            layer: new.layer.clone(),
            artefacts: new.artefacts.clone(),
        };
        list.push(v.clone());
        Ok(Some(v))
    }

    fn versions(&self, image: &str) -> Result<Vec<Version>, MetaError> {
        Ok(self.lock().versions.get(image).cloned().unwrap_or_default())
    }

    fn version(&self, image: &str, spec: VersionSpec) -> Result<Option<Version>, MetaError> {
        let g = self.lock();
        let Some(list) = g.versions.get(image) else {
            return Ok(None);
        };
        Ok(match spec {
            VersionSpec::Latest => list.last().cloned(),
            VersionSpec::Exact(n) => list.iter().find(|v| v.number == n).cloned(),
        })
    }

    fn referenced_blobs(&self) -> Result<BTreeSet<Digest>, MetaError> {
        let g = self.lock();
        Ok(g.versions
            .values()
            .flatten()
            .flat_map(|v| v.artefacts.values().map(|a| a.sha256.clone()))
            .collect())
    }

    fn record_upload(&self, image: &str, blob: &Digest, _now: u64) -> Result<(), MetaError> {
        self.lock()
            .uploads
            .insert((image.to_string(), blob.clone()));
        Ok(())
    }

    fn has_upload(&self, image: &str, blob: &Digest) -> Result<bool, MetaError> {
        Ok(self
            .lock()
            .uploads
            .contains(&(image.to_string(), blob.clone())))
    }

    fn create_project(&self, name: &str, owner: &str) -> Result<(), MetaError> {
        let mut g = self.lock();
        if g.projects.contains_key(name) {
            return Err(MetaError::Exists(format!("project {name}")));
        }
        g.projects.insert(
            name.to_string(),
            Project {
                name: name.to_string(),
                owner: owner.to_string(),
                members: vec![owner.to_string()],
            },
        );
        Ok(())
    }

    fn project(&self, name: &str) -> Result<Option<Project>, MetaError> {
        Ok(self.lock().projects.get(name).cloned())
    }

    fn projects(&self) -> Result<Vec<Project>, MetaError> {
        Ok(self.lock().projects.values().cloned().collect())
    }

    fn add_member(&self, project: &str, user: &str) -> Result<bool, MetaError> {
        let mut g = self.lock();
        let Some(p) = g.projects.get_mut(project) else {
            return Ok(false);
        };
        if !p.members.iter().any(|m| m == user) {
            p.members.push(user.to_string());
            p.members.sort();
        }
        Ok(true)
    }

    fn create_token(&self, token: &TokenRecord) -> Result<(), MetaError> {
        let mut g = self.lock();
        if g.tokens.contains_key(&token.hash) {
            return Err(MetaError::Exists("token".to_string()));
        }
        g.tokens.insert(token.hash.clone(), token.clone());
        Ok(())
    }

    fn token(&self, hash: &Digest) -> Result<Option<TokenRecord>, MetaError> {
        Ok(self.lock().tokens.get(hash).cloned())
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, MetaError> {
        let mut v: Vec<_> = self.lock().tokens.values().cloned().collect();
        v.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_conformance() {
        crate::meta::conformance::exercise(&super::MemoryMetaStore::new());
    }
}
