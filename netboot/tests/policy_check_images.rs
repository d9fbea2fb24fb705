//! `netbootd policy check DIR --data-dir DATA` checks image references against the data
//! folder's store; without `--data-dir` an image setup is reported as not checkable.

use std::process::{Command, Output};

use imaged::access::Principal;
use imaged::model::{ArtefactName, ImageKind, LayerFormat, LayerMeta, NewImage, NewVersion};
use imaged::store::{self, Store, StoreConfig};

fn check(dir: &std::path::Path, data: Option<&std::path::Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_netbootd"));
    c.args(["policy", "check"]).arg(dir).env("RUST_LOG", "off");
    if let Some(d) = data {
        c.arg("--data-dir").arg(d);
    }
    c.output().expect("run netbootd")
}

#[test]
fn image_references_are_checked_against_the_data_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, policy) = (dir.path().join("data"), dir.path().join("policy"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&policy).expect("mkdir");
    let store = Store::open(&data, store::no_references(), StoreConfig::default()).expect("open");
    let admin = Principal::local_admin();
    store
        .create_image(
            &admin,
            NewImage {
                name: "debian".into(),
                kind: ImageKind::System,
                project: None,
                expires_at: None,
            },
        )
        .expect("create");
    let bytes = b"layer".as_slice();
    let a = store
        .upload_blob(&admin, "debian", &mut &bytes[..], None)
        .expect("upload");
    store
        .add_version(
            &admin,
            "debian",
            NewVersion {
                layer: LayerMeta::plain(LayerFormat::Erofs),
                artefacts: [(ArtefactName::Layer, a)].into(),
            },
        )
        .expect("version");
    // A kernel image: layer, vmlinuz and modules, with a release.
    store
        .create_image(
            &admin,
            NewImage {
                name: "linux".into(),
                kind: ImageKind::Kernel,
                project: None,
                expires_at: None,
            },
        )
        .expect("create");
    let mut artefacts = std::collections::BTreeMap::new();
    for (name, bytes) in [
        (ArtefactName::Layer, b"modules erofs".as_slice()),
        (ArtefactName::Vmlinuz, b"MZ".as_slice()),
        (ArtefactName::Modules, b"070701".as_slice()),
    ] {
        let a = store
            .upload_blob(&admin, "linux", &mut &bytes[..], None)
            .expect("upload");
        artefacts.insert(name, a);
    }
    let mut layer = LayerMeta::plain(LayerFormat::Erofs);
    layer.kernel_release = Some("6.1.0-carte".into());
    store
        .add_version(&admin, "linux", NewVersion { layer, artefacts })
        .expect("kernel version");
    let tmp_leftover = data.join("tmp").join("upload-in-progress");
    std::fs::write(&tmp_leftover, b"a running daemon's upload").expect("write");

    let write = |kernel: &str, layers: &str| {
        std::fs::write(
            policy.join("lab.toml"),
            format!(
                "[setup.lab]\nkernel = \"{kernel}\"\nlayers = [{layers}]\n\
                 [[group]]\nsetup = \"lab\"\n"
            ),
        )
        .expect("write")
    };
    write("linux@latest", "\"debian@1\"");
    let out = check(&policy, Some(&data));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (1 setup, 1 group, 0 machines)"),
        "{out:?}"
    );

    // A system image as kernel, and a missing version.
    write("debian@1", "\"debian@1\", \"debian@2\"");
    let out = check(&policy, Some(&data));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lab.toml:2: setup \"lab\": kernel: debian is a system image"),
        "{stderr}"
    );
    assert!(
        stderr.contains("lab.toml:3: ") && stderr.contains("no version 2"),
        "{stderr}"
    );
    assert!(
        tmp_leftover.exists(),
        "a check changes nothing in the data folder"
    );

    // Without a data folder nothing about images can pass.
    write("linux@latest", "\"debian@1\"");
    let out = check(&policy, None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no image store"));

    // A data folder that does not exist is named, not taken for an empty store.
    let missing = dir.path().join("no-such-data");
    let out = check(&policy, Some(&missing));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--data-dir {}: no such folder", missing.display())),
        "{stderr}"
    );
    assert!(!missing.exists(), "the check created the data folder");
}
