//! What a well-formed image or version of each kind must carry: the shape half of the kind
//! contracts (who may act is `access.rs`). Pure functions, no IO; each refusal says why.

use crate::model::{
    check_name, ArtefactName, Encoding, Image, ImageKind, LayerFormat, LayerMeta, NewImage,
    NewVersion, Version,
};

/// Checks a new image's fields against its kind.
pub fn check_new_image(new: &NewImage) -> Result<(), String> {
    check_name(&new.name).map_err(|e| e.to_string())?;
    match (new.kind, new.expires_at) {
        (ImageKind::Temporary, None) => return Err("a temporary image needs expires_at".into()),
        (ImageKind::Temporary, Some(_)) | (_, None) => {}
        (kind, Some(_)) => return Err(format!("only temporary images expire, not {kind}")),
    }
    match (new.kind, &new.project) {
        (ImageKind::Project, None) => Err("a project image needs project".into()),
        (ImageKind::Project, Some(p)) => check_name(p).map_err(|e| e.to_string()),
        (_, None) => Ok(()),
        (kind, Some(_)) => Err(format!(
            "only project images belong to a project, not {kind}"
        )),
    }
}

/// Checks a new version's metadata and artefact names against the image's kind.
pub fn check_new_version(image: &Image, new: &NewVersion) -> Result<(), String> {
    let kind = image.kind;
    let layer = new
        .artefacts
        .get(&ArtefactName::Layer)
        .ok_or("a version needs a layer artefact")?;
    let has = |a| new.artefacts.contains_key(&a);
    let meta = &new.layer;
    if kind == ImageKind::Kernel {
        if !has(ArtefactName::Vmlinuz) || !has(ArtefactName::Modules) {
            return Err("a kernel version needs vmlinuz and modules artefacts".into());
        }
        match meta.kernel_release.as_deref() {
            None | Some("") => return Err("a kernel version needs kernel_release".into()),
            Some(r) if r.contains(['/', ' ', '\n']) || r.len() > 128 => {
                return Err(format!("bad kernel_release {r:?}"))
            }
            Some(_) => {}
        }
    } else {
        if has(ArtefactName::Vmlinuz) || has(ArtefactName::Modules) {
            return Err(format!(
                "only kernel versions carry vmlinuz and modules, not {kind}"
            ));
        }
        if meta.kernel_release.is_some() {
            return Err(format!(
                "only kernel versions carry kernel_release, not {kind}"
            ));
        }
    }
    if meta.autostart.is_some() && kind != ImageKind::Project {
        return Err(format!("only project images may autostart, not {kind}"));
    }
    if let Some(m) = &meta.mount_point {
        if !matches!(
            kind,
            ImageKind::User | ImageKind::Temporary | ImageKind::Project
        ) {
            return Err(format!("a {kind} layer has no mount point"));
        }
        if !m.starts_with('/') || m.split('/').any(|c| c == "..") {
            return Err(format!(
                "mount point {m:?} must be an absolute path without .."
            ));
        }
    }
    if meta.base.is_some() {
        // Changes of a writable layer: a tar unpacked into the layer's upper; where and
        // how it is mounted is the base version's business.
        if !matches!(
            kind,
            ImageKind::User | ImageKind::Temporary | ImageKind::Project
        ) {
            return Err(format!(
                "a {kind} image has no writable layer to take changes"
            ));
        }
        if meta.format != LayerFormat::Tar {
            return Err("changes on top of a base version must be a tar".into());
        }
        if meta.mount_point.is_some() || meta.lazy || meta.autostart.is_some() {
            return Err(
                "changes take mount_point, lazy and autostart from their base version".into(),
            );
        }
    }
    match meta.encoding {
        Encoding::None => {
            if meta
                .written_sha256
                .as_ref()
                .is_some_and(|w| *w != layer.sha256)
            {
                return Err("unencoded layer: written_sha256 must equal the layer's sha256".into());
            }
            if meta.uncompressed_size.is_some_and(|u| u != layer.size) {
                return Err("unencoded layer: uncompressed_size must equal its size".into());
            }
        }
        Encoding::Zstd => {
            if meta.written_sha256.is_none() || meta.uncompressed_size.is_none() {
                return Err(
                    "a zstd layer needs written_sha256 and uncompressed_size (what the machine verifies)"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// Checks that `base`, the version a new `tar` of changes names, is one machines mount
/// read-write: a mountable filesystem with a mount point, not lazy, not itself changes.
pub fn check_base(base: &Version) -> Result<(), String> {
    let m: &LayerMeta = &base.layer;
    let label = format!("{}@{}", base.image, base.number);
    if !matches!(
        m.format,
        LayerFormat::Erofs | LayerFormat::Ext4 | LayerFormat::Squashfs
    ) || m.base.is_some()
    {
        return Err(format!("base {label} is not a mountable layer"));
    }
    if m.mount_point.is_none() || m.lazy {
        return Err(format!(
            "base {label} is not mounted read-write (it needs a mount point and must not be lazy)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::blob::sha256_of;
    use crate::model::{Artefact, LayerFormat, LayerMeta};

    fn new_image(kind: ImageKind, project: Option<&str>, expires: Option<u64>) -> NewImage {
        NewImage {
            name: "img".into(),
            kind,
            project: project.map(String::from),
            expires_at: expires,
        }
    }

    #[test]
    fn image_shapes() {
        use ImageKind::*;
        let cases = [
            (new_image(Temporary, None, Some(5)), true),
            (new_image(Temporary, None, None), false),
            (new_image(User, None, Some(5)), false),
            (new_image(Project, Some("p"), None), true),
            (new_image(Project, None, None), false),
            (new_image(Project, Some("P!"), None), false),
            (new_image(System, Some("p"), None), false),
            (new_image(Kernel, None, None), true),
        ];
        for (new, ok) in cases {
            assert_eq!(check_new_image(&new).is_ok(), ok, "{new:?}");
        }
        let mut bad = new_image(User, None, None);
        bad.name = "../etc".into();
        assert!(check_new_image(&bad).is_err());
    }

    fn version(names: &[ArtefactName], edit: impl FnOnce(&mut LayerMeta)) -> NewVersion {
        let mut artefacts = BTreeMap::new();
        for n in names {
            artefacts.insert(
                *n,
                Artefact {
                    sha256: sha256_of(n.as_str().as_bytes()),
                    size: 3,
                },
            );
        }
        let mut layer = LayerMeta::plain(LayerFormat::Erofs);
        edit(&mut layer);
        NewVersion { layer, artefacts }
    }

    fn check(kind: ImageKind, v: NewVersion, ok: bool) {
        let image = Image {
            name: "i".into(),
            kind,
            owner: "o".into(),
            project: None,
            expires_at: None,
            created_at: 0,
        };
        let got = check_new_version(&image, &v);
        assert_eq!(got.is_ok(), ok, "{kind} {v:?}: {got:?}");
    }

    #[test]
    fn version_shapes() {
        use ArtefactName::*;
        use ImageKind::*;
        let release = |m: &mut LayerMeta| m.kernel_release = Some("6.1.0-13-amd64".into());
        check(Kernel, version(&[Layer, Vmlinuz, Modules], release), true);
        check(Kernel, version(&[Layer, Vmlinuz], release), false);
        check(Kernel, version(&[Layer, Vmlinuz, Modules], |_| {}), false);
        check(
            Kernel,
            version(&[Layer, Vmlinuz, Modules], |m| {
                m.kernel_release = Some("../x".into())
            }),
            false,
        );
        check(System, version(&[Layer], |_| {}), true);
        check(System, version(&[Vmlinuz], |_| {}), false);
        check(System, version(&[Layer, Vmlinuz], |_| {}), false);
        check(System, version(&[Layer], release), false);
        let autostart = |m: &mut LayerMeta| m.autostart = Some("make bench".into());
        check(Project, version(&[Layer], autostart), true);
        check(User, version(&[Layer], autostart), false);
        let mount = |p: &str| {
            let p = p.to_string();
            move |m: &mut LayerMeta| m.mount_point = Some(p)
        };
        check(User, version(&[Layer], mount("/home/alice")), true);
        check(User, version(&[Layer], mount("home")), false);
        check(User, version(&[Layer], mount("/home/../etc")), false);
        check(System, version(&[Layer], mount("/opt")), false);
        let zstd = |m: &mut LayerMeta| m.encoding = Encoding::Zstd;
        check(System, version(&[Layer], zstd), false);
        check(
            System,
            version(&[Layer], |m| {
                m.encoding = Encoding::Zstd;
                m.written_sha256 = Some(sha256_of(b"w"));
                m.uncompressed_size = Some(10);
            }),
            true,
        );
        check(
            System,
            version(&[Layer], |m| m.written_sha256 = Some(sha256_of(b"w"))),
            false,
        );
    }

    #[test]
    fn changes_are_tars_of_writable_kinds_without_clauses_of_their_own() {
        use ArtefactName::*;
        use ImageKind::*;
        let changes = |m: &mut LayerMeta| *m = LayerMeta::changes(1);
        for kind in [User, Temporary, Project] {
            check(kind, version(&[Layer], changes), true);
        }
        for kind in [System, Machine] {
            check(kind, version(&[Layer], changes), false);
        }
        let erofs = |m: &mut LayerMeta| m.base = Some(1);
        check(User, version(&[Layer], erofs), false);
        let mounted = |m: &mut LayerMeta| {
            *m = LayerMeta::changes(1);
            m.mount_point = Some("/home/alice".into());
        };
        check(User, version(&[Layer], mounted), false);
        let lazy = |m: &mut LayerMeta| {
            *m = LayerMeta::changes(1);
            m.lazy = true;
        };
        check(Project, version(&[Layer], lazy), false);
    }

    #[test]
    fn a_base_is_a_mounted_writable_filesystem() {
        let base = |edit: &dyn Fn(&mut LayerMeta)| {
            let mut layer = LayerMeta::plain(LayerFormat::Erofs);
            layer.mount_point = Some("/home/alice".into());
            edit(&mut layer);
            Version {
                image: "alice-home".into(),
                number: 1,
                created_at: 0,
                layer,
                artefacts: BTreeMap::new(),
            }
        };
        assert!(check_base(&base(&|_| {})).is_ok());
        let e = check_base(&base(&|m| m.mount_point = None)).expect_err("no mount point");
        assert!(e.contains("alice-home@1"), "{e}");
        assert!(check_base(&base(&|m| m.lazy = true)).is_err());
        assert!(check_base(&base(&|m| *m = LayerMeta::changes(1))).is_err());
        assert!(check_base(&base(&|m| m.format = LayerFormat::Raw)).is_err());
    }
}
