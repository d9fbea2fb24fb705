//! OCI image archives (`skopeo copy oci-archive:`, `docker save`): the layers, applied in
//! order into one staging tree with whiteouts and opaque directories honoured, then built as a
//! tree layer.
//!
//! The archive is unpacked (regular files only) into a work directory; `index.json` leads to a
//! manifest (through nested indexes; with several, the one for this machine's architecture),
//! else docker's `manifest.json` lists the layers. Every blob named by a sha256 digest is
//! checked against it before use. Image config (entrypoint, env) is not read: a layer is a
//! filesystem only.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{Error, IoContext, Result};
use super::{archive, layer, stage, staged_to_layer, BuildOptions};

/// Builds a layer from an OCI image layout archive or a `docker save` archive.
pub fn from_oci_archive(path: &Path, opts: &BuildOptions) -> Result<layer::BuiltLayer> {
    let dir = opts.staging_dir()?;
    let layout = dir.path().join("layout");
    fs::create_dir(&layout).ctx("create layout directory", &layout)?;
    unpack_layout(path, &layout)?;
    let layers = layer_files(path, &layout)?;
    tracing::info!(archive = %path.display(), layers = layers.len(), "applying oci layers");

    let root = dir.path().join("root");
    fs::create_dir(&root).ctx("create staging root", &root)?;
    let mut staging = stage::Staging::new(&root, opts.stage_mode())?;
    for (file, digest) in &layers {
        if let Some(d) = digest {
            verify(path, file, d)?;
        }
        staging.apply_tar(file, archive::open_decompressed(file)?, true)?;
    }
    let staged = staging.finish(&dir.path().join("fakeroot.state"))?;
    staged_to_layer(&staged, opts, dir.path())
}

fn bad(archive: &Path, what: impl Into<String>) -> Error {
    Error::BadArchive {
        archive: archive.to_path_buf(),
        what: what.into(),
    }
}

/// Extracts the regular files of the outer archive. Symlinks (docker 25 links
/// `<id>/layer.tar` to `../blobs/sha256/<hex>`) become copies of their target when it is a
/// file inside the layout; anything else is skipped, so the layout directory holds no symlink
/// an entry could be written through.
fn unpack_layout(path: &Path, layout: &Path) -> Result<()> {
    let mut ar = tar::Archive::new(archive::open_decompressed(path)?);
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for entry in ar
        .entries()
        .map_err(|e| bad(path, format!("read entries: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(path, format!("read entry: {e}")))?;
        if entry.header().entry_type() == tar::EntryType::Symlink {
            let raw = entry
                .path()
                .map_err(|e| bad(path, format!("entry path: {e}")))?
                .into_owned();
            if let (Ok(rel), Ok(Some(target))) = (stage::clean(&raw), entry.link_name()) {
                links.push((rel, target.into_owned()));
            }
            continue;
        }
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let raw = entry
            .path()
            .map_err(|e| bad(path, format!("entry path: {e}")))?
            .into_owned();
        let rel = stage::clean(&raw).map_err(|why| Error::Traversal {
            archive: path.to_path_buf(),
            entry: raw.clone(),
            why,
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = layout.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx("create layout directory", parent)?;
        }
        let mut f = File::create(&dest).ctx("write layout file", &dest)?;
        io::copy(&mut entry, &mut f).ctx("write layout file", &dest)?;
    }
    for (rel, target) in links {
        let Some(resolved) = resolve_within(rel.parent().unwrap_or(Path::new("")), &target) else {
            continue;
        };
        let (from, to) = (layout.join(resolved), layout.join(&rel));
        if from.is_file() && !to.exists() {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).ctx("create layout directory", parent)?;
            }
            fs::copy(&from, &to).ctx("copy linked layout file", &from)?;
        }
    }
    Ok(())
}

/// `dir/target` normalised, if it stays inside the layout (`None` for absolute targets or too
/// many `..`).
fn resolve_within(dir: &Path, target: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in dir.components().chain(target.components()) {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn read_json(archive: &Path, file: &Path) -> Result<Value> {
    let text = fs::read(file).ctx("read", file)?;
    serde_json::from_slice(&text).map_err(|e| bad(archive, format!("{}: {e}", file.display())))
}

/// The path of a blob named by `sha256:<hex>`.
fn blob(archive: &Path, layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(archive, format!("unsupported digest {digest:?}")))?;
    Ok(layout.join("blobs").join("sha256").join(hex))
}

/// The layer files in application order, each with its digest when one is known.
fn layer_files(archive: &Path, layout: &Path) -> Result<Vec<(PathBuf, Option<String>)>> {
    let index = layout.join("index.json");
    if index.exists() {
        let mut doc = read_json(archive, &index)?;
        // Follow indexes down to an image manifest (bounded: a loop is malformed).
        for _ in 0..8 {
            if doc.get("layers").is_some() {
                break;
            }
            let digest = pick_manifest(archive, &doc)?;
            let file = blob(archive, layout, &digest)?;
            verify(archive, &file, &digest)?;
            doc = read_json(archive, &file)?;
        }
        let layers = doc
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(archive, "manifest has no layers"))?;
        return layers
            .iter()
            .map(|l| {
                let d = l
                    .get("digest")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(archive, "layer without digest"))?;
                Ok((blob(archive, layout, d)?, Some(d.to_string())))
            })
            .collect();
    }
    let manifest = layout.join("manifest.json");
    if !manifest.exists() {
        return Err(bad(
            archive,
            "neither index.json nor manifest.json: not an OCI or docker archive",
        ));
    }
    let doc = read_json(archive, &manifest)?;
    let images = doc
        .as_array()
        .ok_or_else(|| bad(archive, "manifest.json is not a list"))?;
    let [image] = images.as_slice() else {
        return Err(bad(
            archive,
            format!("manifest.json lists {} images, expected one", images.len()),
        ));
    };
    let layers = image
        .get("Layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(archive, "manifest.json image has no Layers"))?;
    layers
        .iter()
        .map(|l| {
            let rel = l
                .as_str()
                .ok_or_else(|| bad(archive, "layer path is not a string"))?;
            let clean = stage::clean(Path::new(rel)).map_err(|why| Error::Traversal {
                archive: archive.to_path_buf(),
                entry: PathBuf::from(rel),
                why,
            })?;
            // Newer docker writes layers as blobs/sha256/<hex>: the name is the digest.
            let digest = rel
                .strip_prefix("blobs/sha256/")
                .filter(|h| h.len() == 64)
                .map(|h| format!("sha256:{h}"));
            Ok((layout.join(clean), digest))
        })
        .collect()
}

/// The manifest digest an index points to: its only one, or the one for this architecture.
fn pick_manifest(archive: &Path, index: &Value) -> Result<String> {
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(archive, "index has no manifests"))?;
    let digest = |m: &Value| m.get("digest").and_then(Value::as_str).map(String::from);
    if let [only] = manifests.as_slice() {
        return digest(only).ok_or_else(|| bad(archive, "manifest without digest"));
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let fits: Vec<&Value> = manifests
        .iter()
        .filter(|m| {
            let p = m.get("platform");
            p.and_then(|p| p.get("architecture"))
                .and_then(Value::as_str)
                == Some(arch)
                && p.and_then(|p| p.get("os")).and_then(Value::as_str) == Some("linux")
        })
        .collect();
    match fits.as_slice() {
        [one] => digest(one).ok_or_else(|| bad(archive, "manifest without digest")),
        _ => Err(bad(
            archive,
            format!(
                "{} manifests, {} for linux/{arch}: cannot choose",
                manifests.len(),
                fits.len()
            ),
        )),
    }
}

fn verify(archive: &Path, file: &Path, digest: &str) -> Result<()> {
    let (actual, _) = layer::sha256_file(file)?;
    if digest.strip_prefix("sha256:") != Some(actual.as_str()) {
        return Err(Error::DigestMismatch {
            archive: archive.to_path_buf(),
            digest: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_symlinks_resolve_only_inside() {
        let r = |d: &str, t: &str| resolve_within(Path::new(d), Path::new(t));
        assert_eq!(
            r("abc", "../blobs/sha256/ff"),
            Some(PathBuf::from("blobs/sha256/ff"))
        );
        assert_eq!(r("abc", "../../etc/passwd"), None);
        assert_eq!(r("abc", "/etc/passwd"), None);
    }
}
