//! Each image kind's contract, enforced by the server (over HTTP where a client would be).

mod common;

use std::collections::BTreeMap;

use common::{files_under, layer_version, Server};
use imaged::access::Principal;
use imaged::blob::sha256_of;
use imaged::client::Client;
use imaged::model::{
    Artefact, ArtefactName, ImageKind, LayerFormat, LayerMeta, NewImage, NewVersion, Role,
};
use imaged::store::{now, StoreConfig};

fn new(name: &str, kind: ImageKind) -> NewImage {
    NewImage {
        name: name.into(),
        kind,
        project: None,
        expires_at: None,
    }
}

/// Uploads `content` and records it as a plain layer version; returns the version number.
fn push(c: &Client, image: &str, content: &[u8]) -> Result<u32, imaged::client::ClientError> {
    c.upload_blob(
        image,
        &mut &content[..],
        content.len() as u64,
        &sha256_of(content),
    )?;
    Ok(c.add_version(image, &layer_version(content))?.number)
}

fn status<T: std::fmt::Debug>(r: Result<T, imaged::client::ClientError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e
            .status()
            .unwrap_or_else(|| panic!("not an HTTP status: {e}")),
    }
}

#[test]
fn system_images_are_published_by_admins_only() {
    let s = Server::start();
    let (alice, admin) = (s.client(&s.alice), s.client(&s.admin));
    assert_eq!(
        status(alice.create_image(&new("mine", ImageKind::System))),
        403
    );
    admin
        .create_image(&new("base", ImageKind::System))
        .expect("admin creates");
    assert_eq!(
        status(push(&alice, "base", b"evil")),
        403,
        "user cannot publish a version"
    );
    assert_eq!(push(&admin, "base", b"v1").expect("v1"), 1);
    assert_eq!(push(&admin, "base", b"v2").expect("v2"), 2);
    // Everyone reads system images; versions are immutable, latest is the highest.
    let shown = alice.show("base").expect("user reads");
    assert_eq!(shown.versions.len(), 2);
    let v1 = alice.version(&"base@1".parse().expect("ref")).expect("v1");
    assert_eq!(v1.artefacts[&ArtefactName::Layer].sha256, sha256_of(b"v1"));
    let latest = alice
        .version(&"base@latest".parse().expect("ref"))
        .expect("latest");
    assert_eq!(latest.number, 2);
    assert_eq!(status(alice.delete("base")), 403);
}

#[test]
fn user_images_are_owner_only() {
    let s = Server::start();
    let (alice, bob, admin) = (s.client(&s.alice), s.client(&s.bob), s.client(&s.admin));
    alice
        .create_image(&new("home", ImageKind::User))
        .expect("create");
    assert_eq!(push(&alice, "home", b"files").expect("owner writes"), 1);
    assert_eq!(status(bob.show("home")), 403);
    assert_eq!(status(push(&bob, "home", b"x")), 403);
    assert!(
        bob.list_images().expect("list").is_empty(),
        "bob does not even see it"
    );
    assert_eq!(admin.show("home").expect("admin reads").versions.len(), 1);
    assert_eq!(
        status(push(&admin, "home", b"x")),
        403,
        "admin does not write user data"
    );
    assert_eq!(status(bob.delete("home")), 403);
    alice.delete("home").expect("owner deletes");
    assert_eq!(status(alice.show("home")), 404);
}

#[test]
fn temporary_images_need_an_expiry_and_gc_deletes_them() {
    let s = Server::start_with(StoreConfig {
        blob_grace: 0,
        ..StoreConfig::default()
    });
    let alice = s.client(&s.alice);
    assert_eq!(
        status(alice.create_image(&new("scratch", ImageKind::Temporary))),
        400
    );
    let t = now();
    for (name, expires) in [("scratch", t + 5), ("later", t + 100_000), ("used", t + 5)] {
        alice
            .create_image(&NewImage {
                expires_at: Some(expires),
                ..new(name, ImageKind::Temporary)
            })
            .expect("create temporary");
        push(&alice, name, name.as_bytes()).expect("push");
    }
    alice
        .create_image(&new("home", ImageKind::User))
        .expect("user image");
    push(&alice, "home", b"kept").expect("push");
    s.refs.set("used", &["bench-setup"]);

    let admin = Principal::local_admin();
    let report = s.store.gc(&admin, t + 10).expect("gc");
    assert_eq!(report.deleted_images, ["scratch"]);
    assert_eq!(
        report.kept_referenced,
        [("used".to_string(), vec!["bench-setup".to_string()])]
    );
    assert_eq!(report.deleted_blobs, 1);
    assert_eq!(status(alice.show("scratch")), 404);
    alice.show("later").expect("not yet expired");
    let blobs = files_under(&s.blobs_dir());
    let names: Vec<String> = blobs
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        !names.contains(&sha256_of(b"scratch").to_string()),
        "its blob is gone"
    );
    for kept in [&b"later"[..], b"used", b"kept"] {
        assert!(
            names.contains(&sha256_of(kept).to_string()),
            "blob of {kept:?} kept"
        );
    }
    // Only admins run gc.
    assert_eq!(status(alice.gc()), 403);
}

#[test]
fn gc_spares_young_unreferenced_blobs() {
    let s = Server::start(); // default grace: one hour
    let alice = s.client(&s.alice);
    alice
        .create_image(&new("home", ImageKind::User))
        .expect("create");
    alice
        .upload_blob("home", &mut &b"staged"[..], 6, &sha256_of(b"staged"))
        .expect("upload without a version yet");
    let report = s.client(&s.admin).gc().expect("gc");
    assert_eq!(report.deleted_blobs, 0);
    assert_eq!(
        alice
            .add_version("home", &layer_version(b"staged"))
            .expect("record")
            .number,
        1
    );
}

#[test]
fn project_members_read_strangers_cannot() {
    let s = Server::start();
    let carol_token = s
        .store
        .create_token(&Principal::local_admin(), "carol", Role::User)
        .expect("token")
        .token;
    let (alice, bob, carol) = (s.client(&s.alice), s.client(&s.bob), s.client(&carol_token));
    alice.create_project("lab").expect("project");
    let exp = NewImage {
        project: Some("lab".into()),
        ..new("exp", ImageKind::Project)
    };
    assert_eq!(status(bob.create_image(&exp)), 403, "not a member yet");
    assert_eq!(
        status(bob.add_member("lab", "bob")),
        403,
        "only the owner adds members"
    );
    let p = alice.add_member("lab", "bob").expect("add bob");
    assert_eq!(p.members, ["alice", "bob"]);
    bob.create_image(&exp).expect("member creates");
    let content = b"results";
    bob.upload_blob("exp", &mut &content[..], 7, &sha256_of(content))
        .expect("upload");
    let mut v = layer_version(content);
    v.layer.autostart = Some("./run-experiment".into());
    v.layer.mount_point = Some("/srv/lab".into());
    bob.add_version("exp", &v).expect("member writes");
    let read = alice
        .version(&"exp@latest".parse().expect("ref"))
        .expect("member reads");
    assert_eq!(read.layer.autostart.as_deref(), Some("./run-experiment"));
    assert_eq!(status(carol.show("exp")), 403);
    assert_eq!(status(carol.version(&"exp@1".parse().expect("ref"))), 403);
    assert!(carol.list_images().expect("list").is_empty());
    assert_eq!(status(carol.projects().map(|p| assert!(p.is_empty()))), 200);
    // autostart is a project clause only.
    alice
        .create_image(&new("home", ImageKind::User))
        .expect("user image");
    alice
        .upload_blob("home", &mut &content[..], 7, &sha256_of(content))
        .expect("upload");
    assert_eq!(status(alice.add_version("home", &v)), 400);
}

#[test]
fn kernel_versions_carry_vmlinuz_modules_and_release() {
    let s = Server::start();
    let (alice, bob) = (s.client(&s.alice), s.client(&s.bob));
    alice
        .create_image(&new("linux", ImageKind::Kernel))
        .expect("create");
    let files: [(ArtefactName, &[u8]); 3] = [
        (ArtefactName::Layer, b"modules as an erofs layer"),
        (ArtefactName::Vmlinuz, b"MZ kernel image"),
        (ArtefactName::Modules, b"070701 cpio of modules"),
    ];
    let mut artefacts = BTreeMap::new();
    for (name, content) in files {
        let a = alice
            .upload_blob(
                "linux",
                &mut &content[..],
                content.len() as u64,
                &sha256_of(content),
            )
            .expect("upload");
        artefacts.insert(name, a);
    }
    let mut only_layer = BTreeMap::new();
    only_layer.insert(ArtefactName::Layer, artefacts[&ArtefactName::Layer].clone());
    let bare = NewVersion {
        layer: LayerMeta::plain(LayerFormat::Erofs),
        artefacts: only_layer,
    };
    assert_eq!(
        status(alice.add_version("linux", &bare)),
        400,
        "needs vmlinuz and modules"
    );
    let no_release = NewVersion {
        layer: LayerMeta::plain(LayerFormat::Erofs),
        artefacts: artefacts.clone(),
    };
    assert_eq!(
        status(alice.add_version("linux", &no_release)),
        400,
        "needs a release"
    );
    let good = NewVersion {
        layer: LayerMeta {
            kernel_release: Some("6.1.0-13-amd64".into()),
            ..LayerMeta::plain(LayerFormat::Erofs)
        },
        artefacts,
    };
    let v = alice.add_version("linux", &good).expect("kernel version");
    assert_eq!(v.layer.kernel_release.as_deref(), Some("6.1.0-13-amd64"));
    // Everyone may boot it; only its owner versions it.
    let out = tempfile::tempdir().expect("tempdir");
    let dest = out.path().join("vmlinuz");
    bob.download(
        &"linux@1".parse().expect("ref"),
        ArtefactName::Vmlinuz,
        &dest,
        &mut |_, _| {},
    )
    .expect("download vmlinuz");
    assert_eq!(std::fs::read(&dest).expect("read"), b"MZ kernel image");
    assert_eq!(status(bob.add_version("linux", &good)), 403);
    // A size that does not match the stored blob is refused.
    let mut lying = good.clone();
    lying.artefacts.insert(
        ArtefactName::Vmlinuz,
        Artefact {
            sha256: sha256_of(b"MZ kernel image"),
            size: 1,
        },
    );
    assert_eq!(status(alice.add_version("linux", &lying)), 400);
}

#[test]
fn machine_images_are_created_on_first_boot() {
    let s = Server::start();
    let m = s
        .store
        .ensure_machine_image("52:54:00:AB:cd:ef")
        .expect("first boot");
    assert_eq!(
        (m.name.as_str(), m.kind, m.owner.as_str()),
        ("machine-52-54-00-ab-cd-ef", ImageKind::Machine, "system")
    );
    let again = s
        .store
        .ensure_machine_image("52-54-00-ab-cd-ef")
        .expect("second boot");
    assert_eq!(again, m, "one per machine");
    assert!(s.store.ensure_machine_image("52:54:00:ab:cd").is_err());
    assert!(s.store.ensure_machine_image("zz:54:00:ab:cd:ef").is_err());
    let alice = s.client(&s.alice);
    assert_eq!(status(alice.show(&m.name)), 403);
    assert_eq!(
        status(alice.create_image(&new("machine-x", ImageKind::Machine))),
        403
    );
    s.client(&s.admin).show(&m.name).expect("admin reads");
}

#[test]
fn delete_is_refused_while_a_setup_uses_the_image() {
    let s = Server::start();
    let admin = s.client(&s.admin);
    admin
        .create_image(&new("debian", ImageKind::System))
        .expect("create");
    s.refs.set("debian", &["hugepages-a", "x11-desk"]);
    let err = admin.delete("debian").expect_err("referenced");
    assert_eq!(err.status(), Some(409));
    let msg = err.to_string();
    assert!(
        msg.contains("hugepages-a") && msg.contains("x11-desk"),
        "{msg}"
    );
    admin.show("debian").expect("still there");
    s.refs.set("debian", &[]);
    admin.delete("debian").expect("deleted once unused");
    assert_eq!(status(admin.show("debian")), 404);
}

#[test]
fn bad_names_and_duplicates() {
    let s = Server::start();
    let alice = s.client(&s.alice);
    for bad in ["", "UPPER", "../x", "a/b", "-lead"] {
        assert_eq!(
            status(alice.create_image(&new(bad, ImageKind::User))),
            400,
            "{bad:?}"
        );
    }
    alice
        .create_image(&new("dup", ImageKind::User))
        .expect("create");
    assert_eq!(
        status(alice.create_image(&new("dup", ImageKind::User))),
        409
    );
    assert_eq!(status(alice.create_project("p")), 200);
    assert_eq!(status(alice.create_project("p")), 409);
}

#[test]
fn reserved_user_names_and_a_missing_blob() {
    let s = Server::start();
    let admin = s.client(&s.admin);
    assert_eq!(status(admin.create_token("system", Role::Admin)), 400);
    assert_eq!(status(admin.create_token("admin", Role::User)), 400);
    admin
        .create_token("admin", Role::Admin)
        .expect("an admin may be called admin");

    // A blob removed behind the store's back is a server fault (500), not a 404.
    admin
        .create_image(&new("base", ImageKind::System))
        .expect("create");
    push(&admin, "base", b"content").expect("push");
    for p in files_under(&s.blobs_dir()) {
        std::fs::remove_file(p).expect("damage");
    }
    let out = tempfile::tempdir().expect("tempdir");
    let err = admin
        .download(
            &"base@1".parse().expect("ref"),
            ArtefactName::Layer,
            &out.path().join("x"),
            &mut |_, _| {},
        )
        .expect_err("damaged");
    assert_eq!(err.status(), Some(500), "{err}");
}

#[test]
fn knowing_a_digest_does_not_grant_the_blob() {
    let s = Server::start();
    let (alice, bob) = (s.client(&s.alice), s.client(&s.bob));
    alice
        .create_image(&new("secret", ImageKind::User))
        .expect("create");
    push(&alice, "secret", b"alice's private data").expect("push");
    bob.create_image(&new("mine", ImageKind::User))
        .expect("create");
    // Bob learnt the digest (an ETag, a plan) and names it in his own version.
    let err = bob
        .add_version("mine", &layer_version(b"alice's private data"))
        .expect_err("not his blob");
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string().contains("not uploaded to image mine"),
        "{err}"
    );
    // Re-using a blob already in the same image's versions is fine (metadata-only bump).
    assert_eq!(
        alice
            .add_version("secret", &layer_version(b"alice's private data"))
            .expect("same image")
            .number,
        2
    );
}
