//! Lazy layers, after the real init has started: fetch the layer into the same cache
//! carte-init uses (the carte filesystem, moved to `/run/carte/cache` by the switch), with
//! carte-init's own fill and fetch code (verified before it enters the cache), then attach
//! it to a loop device and mount it read-only at its mount point — or below
//! `/run/carte/lazy/` when it has none (a lazy system layer cannot join the root overlay
//! once it is mounted). Every system call goes through carte-init's `Sys`.
//!
//! It never evicts a layer the plan names, and never mounts outside the target root.

use carte_contract::{Event, Layer, Stage};
use carte_init::cache::{Cache, CacheError};
use carte_init::fill::{self, FillError};
use carte_init::sys::{Errno, MsFlags, Sys};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Where lazy layers go; tests point these into a temporary folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LazyEnv {
    /// The layer cache (`<carte fs>/cache`).
    pub cache_dir: PathBuf,
    /// The target root (mount points are below it).
    pub root: PathBuf,
    /// Where a lazy layer without a mount point is mounted (`<name>` below it).
    pub unmounted_dir: PathBuf,
    /// Download attempts per layer.
    pub attempts: u32,
}

impl Default for LazyEnv {
    fn default() -> LazyEnv {
        LazyEnv {
            cache_dir: PathBuf::from("/run/carte/cache/cache"),
            root: PathBuf::from("/"),
            unmounted_dir: PathBuf::from("/run/carte/lazy"),
            attempts: 3,
        }
    }
}

/// A lazy layer that could not be mounted, naming the layer and path.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error("lazy layer {name}: raw layers cannot be mounted")]
    Raw { name: String },
    #[error("lazy layer {name}: mount point {mount_point:?} must be absolute without ..")]
    BadMountPoint { name: String, mount_point: String },
    #[error("lazy layer {name}: {source}")]
    Cache {
        name: String,
        source: Box<CacheError>,
    },
    #[error("lazy layer {name}: {source}")]
    Fill {
        name: String,
        source: Box<FillError>,
    },
    #[error("lazy layer {name}: not in the cache after fetching")]
    NotCached { name: String },
    #[error("lazy layer {name}: mkdir {path}: {errno}")]
    Mkdir {
        name: String,
        path: PathBuf,
        errno: Errno,
    },
    #[error("lazy layer {name}: attach {file} to a loop device: {errno}")]
    Attach {
        name: String,
        file: PathBuf,
        errno: Errno,
    },
    #[error("lazy layer {name}: mount {device} on {target}: {errno}")]
    Mount {
        name: String,
        device: PathBuf,
        target: PathBuf,
        errno: Errno,
    },
}

/// Where `layer` is mounted: its mount point below the root, or its own folder below
/// `unmounted_dir`.
pub fn target_of(env: &LazyEnv, layer: &Layer) -> Result<PathBuf, LazyError> {
    let Some(mp) = &layer.mount_point else {
        return Ok(env
            .unmounted_dir
            .join(carte_contract::file_name(&layer.name)));
    };
    let bad = || LazyError::BadMountPoint {
        name: layer.name.clone(),
        mount_point: mp.clone(),
    };
    let p = Path::new(mp);
    if !p.is_absolute() {
        return Err(bad());
    }
    let mut out = env.root.clone();
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err(bad()),
        }
    }
    if out == env.root {
        return Err(bad());
    }
    Ok(out)
}

/// Fetch (if not cached) and mount one lazy layer; `keep` are the plan's layers (never
/// evicted). Returns where it is mounted.
pub fn mount(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    env: &LazyEnv,
    keep: &HashSet<String>,
    layer: &Layer,
    report: &mut dyn FnMut(Event),
) -> Result<PathBuf, LazyError> {
    let name = layer.name.clone();
    let fstype = layer
        .format
        .fstype()
        .ok_or_else(|| LazyError::Raw { name: name.clone() })?;
    let target = target_of(env, layer)?;
    let (mut cache, _repairs) = Cache::open(&env.cache_dir).map_err(|source| LazyError::Cache {
        name: name.clone(),
        source: Box::new(source),
    })?;
    let how = fill::How {
        stage: Stage::LazyLayers,
        attempts: env.attempts,
    };
    fill::ensure(sys, agent, &mut cache, &[layer], keep, how, report).map_err(|source| {
        LazyError::Fill {
            name: name.clone(),
            source: Box::new(source),
        }
    })?;
    let file = cache
        .get(&layer.sha256_written)
        .ok_or_else(|| LazyError::NotCached { name: name.clone() })?;
    // Recording the use (LRU) is worth a write; failing to is not worth a failure.
    let _ = cache.save();
    sys.mkdir_all(&target).map_err(|errno| LazyError::Mkdir {
        name: name.clone(),
        path: target.clone(),
        errno,
    })?;
    let device = sys
        .loop_attach(&file, true)
        .map_err(|errno| LazyError::Attach {
            name: name.clone(),
            file: file.clone(),
            errno,
        })?;
    let source = device.display().to_string();
    if let Err(errno) = sys.mount(&source, &target, fstype, MsFlags::MS_RDONLY, "") {
        // Give the loop device back; the error below is what matters.
        let _ = sys.loop_detach(&device);
        return Err(LazyError::Mount {
            name,
            device,
            target,
            errno,
        });
    }
    Ok(target)
}

#[cfg(test)]
mod tests;
