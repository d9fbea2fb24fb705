//! One behavioural suite every `MetaStore` must pass, so the fake cannot drift from SQLite.

use std::collections::BTreeMap;

use super::{MetaError, MetaStore, TokenRecord};
use crate::blob::sha256_of;
use crate::model::{
    Artefact, ArtefactName, Image, ImageKind, LayerFormat, LayerMeta, NewVersion, Role, VersionSpec,
};

fn image(name: &str) -> Image {
    Image {
        name: name.to_string(),
        kind: ImageKind::User,
        owner: "alice".to_string(),
        project: None,
        expires_at: Some(99),
        created_at: 5,
    }
}

fn version(content: &[u8]) -> NewVersion {
    let mut artefacts = BTreeMap::new();
    artefacts.insert(
        ArtefactName::Layer,
        Artefact {
            sha256: sha256_of(content),
            size: content.len() as u64,
        },
    );
    NewVersion {
        layer: LayerMeta {
            mount_point: Some("/home/alice".to_string()),
            ..LayerMeta::plain(LayerFormat::Ext4)
        },
        artefacts,
    }
}

pub fn exercise(s: &dyn MetaStore) {
    // Images: create, duplicate, lookup, not found.
    s.create_image(&image("b")).expect("create b");
    s.create_image(&image("a")).expect("create a");
    assert!(matches!(
        s.create_image(&image("a")),
        Err(MetaError::Exists(_))
    ));
    assert_eq!(s.image("a").expect("get"), Some(image("a")));
    assert_eq!(s.image("zzz").expect("get missing"), None);
    let names: Vec<_> = s
        .images()
        .expect("list")
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["a", "b"]);

    // Versions: numbered from 1, latest is the highest, missing image is None.
    assert_eq!(s.version("a", VersionSpec::Latest).expect("latest"), None);
    let v1 = s
        .add_version("a", &version(b"one"), 10)
        .expect("v1")
        .expect("image exists");
    let v2 = s
        .add_version("a", &version(b"two"), 11)
        .expect("v2")
        .expect("image exists");
    assert_eq!((v1.number, v2.number), (1, 2));
    assert_eq!(
        s.add_version("nope", &version(b"x"), 1).expect("missing"),
        None
    );
    assert_eq!(
        s.version("a", VersionSpec::Latest).expect("latest"),
        Some(v2.clone())
    );
    assert_eq!(
        s.version("a", VersionSpec::Exact(1)).expect("v1"),
        Some(v1.clone())
    );
    assert_eq!(s.version("a", VersionSpec::Exact(3)).expect("v3"), None);
    assert_eq!(s.versions("a").expect("versions"), vec![v1, v2]);
    s.add_version("b", &version(b"one"), 12)
        .expect("b v1")
        .expect("exists");
    let refs = s.referenced_blobs().expect("refs");
    assert_eq!(refs.len(), 2, "shared content counted once: {refs:?}");

    // Deleting takes the versions along.
    assert!(s.delete_image("a").expect("delete"));
    assert!(!s.delete_image("a").expect("delete again"));
    assert!(s.versions("a").expect("versions").is_empty());
    assert_eq!(
        s.referenced_blobs()
            .expect("refs")
            .into_iter()
            .collect::<Vec<_>>(),
        vec![sha256_of(b"one")]
    );

    // A re-created name never reuses a deleted image's version numbers.
    s.create_image(&image("a")).expect("re-create a");
    let v3 = s
        .add_version("a", &version(b"three"), 13)
        .expect("v3")
        .expect("exists");
    assert_eq!(v3.number, 3);
    assert!(s.delete_image("a").expect("delete"));
    s.create_image(&image("a")).expect("re-create a again");
    assert_eq!(
        s.add_version("a", &version(b"4"), 14)
            .expect("v4")
            .expect("exists")
            .number,
        4
    );
    assert!(s.delete_image("a").expect("delete"));
    s.create_image(&image("a"))
        .expect("re-create a, no versions since");
    assert!(s.delete_image("a").expect("delete without versions"));
    s.create_image(&image("a")).expect("re-create");
    assert_eq!(
        s.add_version("a", &version(b"5"), 15)
            .expect("v5")
            .expect("exists")
            .number,
        5
    );
    assert!(s.delete_image("a").expect("delete"));

    // Uploads are per image and go with it.
    let d = sha256_of(b"up");
    s.create_image(&image("u")).expect("u");
    assert!(!s.has_upload("u", &d).expect("none yet"));
    s.record_upload("u", &d, 1).expect("record");
    s.record_upload("u", &d, 2).expect("record twice");
    assert!(s.has_upload("u", &d).expect("recorded"));
    assert!(!s.has_upload("b", &d).expect("other image"));
    assert!(s.delete_image("u").expect("delete"));
    s.create_image(&image("u")).expect("re-create u");
    assert!(!s.has_upload("u", &d).expect("forgotten with the image"));
    assert!(s.delete_image("u").expect("delete"));

    // Projects and members.
    s.create_project("p", "carol").expect("project");
    assert!(matches!(
        s.create_project("p", "x"),
        Err(MetaError::Exists(_))
    ));
    assert!(s.add_member("p", "bob").expect("add"));
    assert!(s.add_member("p", "bob").expect("add twice is idempotent"));
    assert!(!s.add_member("q", "bob").expect("missing project"));
    let p = s.project("p").expect("get").expect("exists");
    assert_eq!(
        (p.owner.as_str(), p.members),
        ("carol", vec!["bob".into(), "carol".into()])
    );
    assert_eq!(s.project("q").expect("missing"), None);
    assert_eq!(s.projects().expect("list").len(), 1);

    // Tokens are looked up by hash.
    let t = TokenRecord {
        hash: sha256_of(b"carte_secret"),
        name: "alice".to_string(),
        role: Role::User,
        created_at: 3,
    };
    s.create_token(&t).expect("token");
    assert!(matches!(s.create_token(&t), Err(MetaError::Exists(_))));
    assert_eq!(s.token(&t.hash).expect("get"), Some(t.clone()));
    assert_eq!(s.token(&sha256_of(b"other")).expect("missing"), None);
    assert_eq!(s.tokens().expect("list"), vec![t]);
}
