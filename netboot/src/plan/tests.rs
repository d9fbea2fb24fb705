//! Which layers a plan asks to sync back, and how a version of synced changes is planned
//! (its base mounted, the changes named as the layer's restore).

use super::*;
use crate::policy::SyncPolicy;
use imaged::blob::sha256_of;
use imaged::model::{ArtefactName, Digest, LayerFormat, LayerMeta, NewImage, NewVersion};

const BASE: &str = "http://192.0.2.1:8080";

fn admin() -> Principal {
    Principal::local_admin()
}

fn image(store: &Store, name: &str, kind: ImageKind) {
    let project = (kind == ImageKind::Project).then(|| {
        if store.project(&admin(), "p").is_err() {
            store.create_project(&admin(), "p").expect("project");
        }
        "p".to_string()
    });
    store
        .create_image(
            &admin(),
            NewImage {
                name: name.into(),
                kind,
                project,
                expires_at: None,
            },
        )
        .expect("create image");
}

/// One version of `name`, its layer `bytes`, shaped by `edit`.
fn version(store: &Store, name: &str, bytes: &[u8], edit: impl FnOnce(&mut LayerMeta)) {
    let mut artefacts = std::collections::BTreeMap::new();
    let layer = store
        .upload_blob(&admin(), name, &mut &bytes[..], Some(&sha256_of(bytes)))
        .expect("upload");
    artefacts.insert(ArtefactName::Layer, layer);
    let mut meta = LayerMeta::plain(LayerFormat::Erofs);
    edit(&mut meta);
    if name == "linux" {
        for (a, b) in [
            (ArtefactName::Vmlinuz, b"MZ".as_slice()),
            (ArtefactName::Modules, b"070701"),
        ] {
            let x = store
                .upload_blob(&admin(), name, &mut &b[..], Some(&sha256_of(b)))
                .expect("upload");
            artefacts.insert(a, x);
        }
        meta.kernel_release = Some("6.1.0-carte".into());
    }
    store
        .add_version(
            &admin(),
            name,
            NewVersion {
                layer: meta,
                artefacts,
            },
        )
        .expect("add version");
}

fn mount(at: &str) -> impl FnOnce(&mut LayerMeta) + '_ {
    move |m| m.mount_point = Some(at.into())
}

/// A store with a kernel, a system layer, a user layer with a mount point (alice-home),
/// one without (dotfiles), a lazy project layer (exp) and a non-lazy one (work).
fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::images::open_store(dir.path(), crate::images::PolicyReferences::default())
        .expect("store");
    image(&store, "linux", ImageKind::Kernel);
    version(&store, "linux", b"modules", |_| {});
    image(&store, "debian", ImageKind::System);
    version(&store, "debian", b"debian", |_| {});
    image(&store, "alice-home", ImageKind::User);
    version(&store, "alice-home", b"home", mount("/home/alice"));
    image(&store, "dotfiles", ImageKind::User);
    version(&store, "dotfiles", b"dots", |_| {});
    image(&store, "exp", ImageKind::Project);
    version(&store, "exp", b"exp", |m| {
        m.mount_point = Some("/srv/exp".into());
        m.lazy = true;
    });
    image(&store, "work", ImageKind::Project);
    version(&store, "work", b"work", mount("/srv/work"));
    (dir, store)
}

fn r(s: &str) -> ImageRef {
    s.parse().expect("image ref")
}

fn spec(user: &[&str], project: Option<&str>) -> ComposeSpec {
    ComposeSpec {
        kernel: r("linux@1"),
        layers: vec![r("debian@1")],
        user: user.iter().map(|u| r(u)).collect(),
        project: project.map(r),
        machine: MachineLayer::Persist,
        sync: SyncPolicy::OnNextBoot,
        disk: DiskChoice::Largest,
        flash: None,
        wipe: false,
        cmdline: String::new(),
    }
}

fn plan(store: &Store, spec: &ComposeSpec) -> Result<Plan, PlanError> {
    let kernel = ResolvedKernel {
        version: r("linux@1"),
        release: "6.1.0-carte".into(),
        vmlinuz: sha256_of(b"MZ"),
        modules: sha256_of(b"070701"),
    };
    let mac: MacAddr = "52:54:00:00:00:01".parse().expect("mac");
    build(store, spec, &kernel, mac, None, "tok", BASE)
}

fn targets(p: &Plan) -> Vec<(SyncTarget, String)> {
    p.sync_back
        .iter()
        .map(|s| (s.target.clone(), s.upload_url.clone()))
        .collect()
}

#[test]
fn a_syncing_plan_asks_for_the_machine_layer_and_each_writable_layer() {
    let (_dir, store) = store();
    let p = plan(
        &store,
        &spec(&["alice-home@1", "dotfiles@1"], Some("work@1")),
    )
    .expect("plan");
    let m = "/api/v1/machines/52:54:00:00:00:01/sync";
    assert_eq!(
        targets(&p),
        [
            (SyncTarget::Machine, format!("{BASE}{m}/machine")),
            (
                SyncTarget::Layer("alice-home".into()),
                format!("{BASE}{m}/layer/alice-home")
            ),
            (
                SyncTarget::Layer("work".into()),
                format!("{BASE}{m}/layer/work")
            ),
        ],
        "not the kernel, the system layer or a user layer without a mount point"
    );
    // A lazy project layer is mounted read-only by carte-shim: nothing to sync.
    let p = plan(&store, &spec(&["alice-home@1"], Some("exp@1"))).expect("plan");
    assert!(
        !targets(&p)
            .iter()
            .any(|(t, _)| *t == SyncTarget::Layer("exp".into())),
        "{:?}",
        targets(&p)
    );
    assert!(p.layers.iter().all(|l| l.restore.is_none()));
}

#[test]
fn without_sync_or_with_an_ephemeral_machine_layer_nothing_is_synced() {
    let (_dir, store) = store();
    let mut s = spec(&["alice-home@1"], Some("work@1"));
    s.sync = SyncPolicy::default();
    assert_ne!(s.sync, SyncPolicy::OnNextBoot, "the default does not sync");
    assert!(plan(&store, &s).expect("plan").sync_back.is_empty());
    let mut s = spec(&["alice-home@1"], Some("work@1"));
    s.machine = MachineLayer::Ephemeral;
    let p = plan(&store, &s).expect("plan");
    assert!(p.sync_back.is_empty(), "{:?}", p.sync_back);
    assert_eq!(p.machine_restore, None);
}

/// Synced changes of `name` on top of version `base`; returns the tar's digest.
fn changes(store: &Store, name: &str, base: u32, tar: &[u8]) -> Digest {
    let sha = sha256_of(tar);
    let v = store
        .add_synced_changes(name, base, &mut &tar[..], &sha)
        .expect("changes");
    assert_eq!(v.layer.base, Some(base));
    sha
}

#[test]
fn changes_are_planned_as_their_base_with_a_restore() {
    let (_dir, store) = store();
    let sha = changes(&store, "alice-home", 1, b"tar of alice's upper");
    for at in ["alice-home@latest", "alice-home@2"] {
        let p = plan(&store, &spec(&[at], None)).expect("plan");
        let home = p
            .layers
            .iter()
            .find(|l| l.name == "alice-home")
            .expect("home");
        assert_eq!(home.version, 1, "{at}: the base is what is mounted");
        assert_eq!(home.format, Format::Erofs);
        assert_eq!(home.mount_point.as_deref(), Some("/home/alice"));
        assert_eq!(home.sha256, sha256_of(b"home").to_string());
        let restore = home.restore.as_deref().expect("a restore");
        assert_eq!((restore.version, restore.format), (2, Format::Tar), "{at}");
        assert_eq!(restore.sha256, sha.to_string());
        assert_eq!(restore.url, format!("{BASE}/boot/blobs/sha256/{sha}"));
        assert!(
            targets(&p).contains(&(
                SyncTarget::Layer("alice-home".into()),
                format!("{BASE}/api/v1/machines/52:54:00:00:00:01/sync/layer/alice-home")
            )),
            "{at}"
        );
    }
    // The base itself, named exactly: no restore.
    let p = plan(&store, &spec(&["alice-home@1"], None)).expect("plan");
    assert!(p.layers.iter().all(|l| l.restore.is_none()));
    // Without sync the changes still come back (they are the layer's content) ...
    let mut s = spec(&["alice-home@latest"], None);
    s.sync = SyncPolicy::default();
    let p = plan(&store, &s).expect("plan");
    assert!(p.layers.iter().any(|l| l.restore.is_some()));
    // ... but an ephemeral machine layer has no disk to restore them onto: refused.
    s.machine = MachineLayer::Ephemeral;
    let e = plan(&store, &s).expect_err("ephemeral");
    assert!(
        matches!(
            e,
            PlanError::ChangesNeedPersist {
                version: 2,
                base: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("alice-home@latest"), "{e}");
}

#[test]
fn changes_go_only_onto_a_mounted_writable_base_of_a_data_image() {
    let (_dir, store) = store();
    let tar = b"tar".as_slice();
    let sha = sha256_of(tar);
    for (name, base) in [
        ("dotfiles", 1), // no mount point: a read-only lower of /
        ("exp", 1),      // lazy: mounted read-only
        ("alice-home", 9),
        ("debian", 1), // a system image
        ("linux", 1),
    ] {
        let e = store
            .add_synced_changes(name, base, &mut &tar[..], &sha)
            .expect_err(name);
        assert!(
            matches!(e, StoreError::Invalid(_) | StoreError::Forbidden(_)),
            "{name}: {e}"
        );
        let versions = store.show_image(&admin(), name).expect("show").versions;
        assert_eq!(versions.len(), 1, "{name}: a version was added");
    }
    // A project's results come back the same way, written as its owner (a member).
    changes(&store, "work", 1, b"results");
    assert_eq!(
        store
            .show_image(&admin(), "work")
            .expect("show")
            .versions
            .len(),
        2
    );
    // Changes on top of changes are refused too: the base is always a filesystem.
    changes(&store, "alice-home", 1, b"first");
    let e = store
        .add_synced_changes("alice-home", 2, &mut &tar[..], &sha)
        .expect_err("changes of changes");
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
}
