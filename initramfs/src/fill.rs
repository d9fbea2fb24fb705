//! Filling the layer cache with what a set of layers needs: make room (least recently used
//! first, never a layer in `keep`), then download each missing layer through the fetch
//! pipeline, retrying a failed download with backoff, and commit it to the index. Used by
//! carte-init for the boot layers and by carte-shim for the lazy ones.
//!
//! It does not mount anything and does not decide which layers are wanted.

use crate::cache::{self, Cache, CacheError};
use crate::fetch::{self, FetchError, Source};
use crate::sys::Sys;
use carte_contract::{Event, Layer, Stage};
use std::collections::HashSet;
use std::time::Duration;

/// A failed fill: the cache, or one layer's download (after every attempt).
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error("fetch {layer}: {source}")]
    Fetch { layer: String, source: FetchError },
}

/// How to fill: the stage events are posted under, and how many times a download is
/// attempted.
#[derive(Debug, Clone, Copy)]
pub struct How {
    pub stage: Stage,
    pub attempts: u32,
}

/// Make sure every layer of `layers` is in `cache`; progress and retried failures go to
/// `report` as events of `how.stage`. Saves the index at the end.
pub fn ensure(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    cache: &mut Cache,
    layers: &[&Layer],
    keep: &HashSet<String>,
    how: How,
    report: &mut dyn FnMut(Event),
) -> Result<(), FillError> {
    let How { stage, attempts } = how;
    let missing: Vec<&Layer> = layers
        .iter()
        .copied()
        .filter(|l| !cache.contains(&l.sha256_written))
        .collect();
    // Each missing layer needs its decoded size in the cache dir (the temp file).
    let need: u64 = missing.iter().map(|l| l.uncompressed_size).sum();
    let free = cache::free_bytes(cache.dir())?;
    let evict = cache.plan_eviction(need, free, keep)?;
    if !evict.is_empty() {
        report(Event {
            message: Some(format!("evicting {} layers to make room", evict.len())),
            ..Event::stage(Stage::Cache)
        });
        cache.evict(&evict)?;
    }
    for l in missing {
        let src = Source::from(l);
        let label = format!("{}@{}", l.name, l.version);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let temp = cache.temp_path(&l.sha256_written)?;
            let mut progress = |p: &fetch::Progress| {
                report(Event::progress(
                    stage,
                    p.done,
                    p.total,
                    format!("{label}: {p}"),
                ))
            };
            match fetch::fetch(agent, &src, &temp, fetch::Options::default(), &mut progress) {
                Ok(v) => {
                    cache.commit(v, &l.name, l.version, l.kind)?;
                    break;
                }
                Err(e) if attempt < attempts => {
                    report(Event::failed(
                        stage,
                        format!("{label}: {e}; fetching again"),
                    ));
                    sys.sleep(Duration::from_secs(2 * u64::from(attempt)));
                }
                Err(source) => {
                    return Err(FillError::Fetch {
                        layer: label,
                        source,
                    })
                }
            }
        }
    }
    cache.save()?;
    Ok(())
}
