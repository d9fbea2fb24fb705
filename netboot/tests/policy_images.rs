//! Setups that name images: what a valid image setup becomes, and each rejection
//! (unknown image, wrong kind in a slot, missing version, bad value) with file and line,
//! checked against a fake catalog.

use imaged::model::ImageKind;
use netboot::policy::{
    load_dir, load_dir_with, Answer, DiskChoice, MachineLayer, MemoryCatalog, PolicyError,
    SyncPolicy,
};

fn catalog() -> MemoryCatalog {
    MemoryCatalog::default()
        .with("linux", ImageKind::Kernel, 2)
        .with("debian", ImageKind::System, 7)
        .with("x11", ImageKind::System, 3)
        .with("alice-home", ImageKind::User, 1)
        .with("scratch", ImageKind::Temporary, 1)
        .with("exp", ImageKind::Project, 4)
        .with("empty", ImageKind::Kernel, 0)
}

fn load(setup: &str) -> Result<netboot::policy::Policy, Vec<PolicyError>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!("{setup}\n[[group]]\nsetup = \"wait\"\n");
    std::fs::write(dir.path().join("lab.toml"), text).expect("write");
    load_dir_with(dir.path(), &catalog()).map_err(|e| e.0)
}

/// The setup text is rejected with exactly these `(line, message fragment)`, all in
/// lab.toml.
fn check(setup: &str, want: &[(usize, &str)]) {
    let got = match load(setup) {
        Ok(p) => panic!("expected errors for {setup:?}, got {p:?}"),
        Err(e) => e,
    };
    let short: Vec<(usize, String)> = got
        .iter()
        .map(|e| {
            assert!(e.file.ends_with("lab.toml"), "{e}");
            (e.line, e.message.clone())
        })
        .collect();
    assert_eq!(short.len(), want.len(), "{setup}\ngot {short:#?}");
    for ((line, message), (wline, wfrag)) in short.iter().zip(want) {
        assert_eq!(line, wline, "{message:?} in {setup}");
        assert!(
            message.contains(wfrag),
            "{message:?} should contain {wfrag:?}"
        );
    }
}

#[test]
fn an_image_setup_loads_with_every_slot() {
    let p = load(
        r#"[setup.lab]
kernel  = "linux@2"
layers  = ["debian@7", "x11@latest"]
user    = ["alice-home@1", "scratch@latest"]
project = "exp@latest"
cmdline = "hugepages=512"
machine = "ephemeral"
sync    = "on-next-boot"
disk    = "/dev/vda"
"#,
    )
    .expect("valid");
    let Answer::Compose(c) = &p.setups["lab"].answer else {
        panic!(
            "an image kernel makes a compose setup: {:?}",
            p.setups["lab"]
        );
    };
    assert_eq!(c.kernel.to_string(), "linux@2");
    let names = |v: &[imaged::model::ImageRef]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(&c.layers),
        ["debian@7", "x11@latest"],
        "bottom to top"
    );
    assert_eq!(names(&c.user), ["alice-home@1", "scratch@latest"]);
    assert_eq!(
        c.project.as_ref().map(|r| r.to_string()).as_deref(),
        Some("exp@latest")
    );
    assert_eq!(
        (c.machine, c.sync),
        (MachineLayer::Ephemeral, SyncPolicy::OnNextBoot)
    );
    assert_eq!(c.cmdline, "hugepages=512");
    assert_eq!(c.disk, DiskChoice::Device("/dev/vda".into()));
    assert_eq!(p.setups_using("x11"), ["lab"]);
    assert_eq!(p.setups_using("alice-home"), ["lab"]);
    assert!(p.setups_using("nothing").is_empty());
    assert_eq!(p.kernel_images().into_iter().collect::<Vec<_>>(), ["linux"]);

    // Defaults: the machine layer persists, nothing is synced back.
    let p = load("[setup.min]\nkernel = \"linux@latest\"\n").expect("valid");
    let Answer::Compose(c) = &p.setups["min"].answer else {
        panic!("compose");
    };
    assert_eq!(
        (c.machine, c.sync),
        (MachineLayer::Persist, SyncPolicy::Never)
    );
    assert!(c.layers.is_empty());

    // Paths and URLs stay plain kernels, also with an '@' in them.
    for kernel in ["kernels/vmlinuz@2", "http://198.51.100.1/k@1", "vmlinuz"] {
        let p = load(&format!("[setup.p]\nkernel = \"{kernel}\"\n")).expect("valid");
        assert!(matches!(p.setups["p"].answer, Answer::Boot(_)), "{kernel}");
    }
}

#[test]
fn image_references_are_checked_against_the_catalog() {
    let s = |body: &str| format!("[setup.lab]\n{body}");
    // Unknown images, in every slot.
    check(
        &s("kernel = \"nolinux@1\"\n"),
        &[(2, "kernel: unknown image \"nolinux\"")],
    );
    check(
        &s("kernel = \"linux@1\"\nlayers = [\"debian@7\", \"gone@1\"]\n"),
        &[(3, "layers: unknown image \"gone\"")],
    );
    // Wrong kind in a slot.
    check(
        &s("kernel = \"alice-home@1\"\n"),
        &[(2, "alice-home is a user image; kernel takes a kernel image")],
    );
    check(
        &s("kernel = \"linux@1\"\nlayers = [\"alice-home@1\"]\n"),
        &[(
            3,
            "layers: alice-home is a user image; layers takes system images",
        )],
    );
    check(
        &s("kernel = \"linux@1\"\nuser = [\"debian@1\"]\n"),
        &[(3, "user: debian is a system image")],
    );
    check(
        &s("kernel = \"linux@1\"\nproject = \"debian@1\"\n"),
        &[(
            3,
            "project: debian is a system image; project takes a project image",
        )],
    );
    // Missing versions.
    check(
        &s("kernel = \"linux@3\"\n"),
        &[(2, "image linux has no version 3 (versions: 1, 2)")],
    );
    check(
        &s("kernel = \"empty@latest\"\n"),
        &[(2, "image empty has no versions yet")],
    );
    check(&s("kernel = \"empty@1\"\n"), &[(2, "(versions: none yet)")]);
    // Malformed references and values.
    check(
        &s("kernel = \"linux@\"\n"),
        &[(2, "kernel: bad image reference")],
    );
    check(
        &s("kernel = \"linux@1\"\nlayers = [\"debian\"]\n"),
        &[(3, "layers: bad image reference \"debian\"")],
    );
    check(
        &s("kernel = \"linux@1\"\nmachine = \"keep\"\n"),
        &[(
            3,
            "machine = \"keep\": expected \"persist\" or \"ephemeral\"",
        )],
    );
    check(
        &s("kernel = \"linux@1\"\nsync = \"always\"\n"),
        &[(
            3,
            "sync = \"always\": expected \"never\" or \"on-next-boot\"",
        )],
    );
    check(
        &s("kernel = \"linux@1\"\ndisk = \"/dev/../sda\"\n"),
        &[(
            3,
            "disk = \"/dev/../sda\": expected \"largest\", \"first\", \"none\" or a device",
        )],
    );
    check(
        &s("kernel = \"linux@1\"\ninitrd = [\"extra.cpio\"]\n"),
        &[(3, "initrd does not go with an image kernel")],
    );
    // Image keys need an image kernel; non-boot answers take none.
    check(
        &s("kernel = \"kernels/vmlinuz\"\nlayers = [\"debian@7\"]\n"),
        &[(
            1,
            "layers, user, project, machine, sync, disk, flash and wipe need an image kernel",
        )],
    );
    check(
        &s("answer = \"local\"\nlayers = [\"debian@7\"]\n"),
        &[(1, "only apply to answer = \"boot\"")],
    );
    // Every bad reference is reported, not just the first.
    check(
        &s("kernel = \"debian@7\"\nlayers = [\"linux@1\", \"x11@9\"]\n"),
        &[
            (2, "kernel: debian is a system image"),
            (3, "layers: linux is a kernel image"),
            (3, "image x11 has no version 9"),
        ],
    );
}

#[test]
fn without_a_store_image_setups_do_not_validate() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("a.toml"),
        "[setup.lab]\nkernel = \"linux@1\"\n[[group]]\nsetup = \"lab\"\n",
    )
    .expect("write");
    let errors = load_dir(dir.path()).expect_err("no catalog").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, 2);
    assert!(
        errors[0]
            .message
            .contains("cannot check linux@1: no image store"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_flash_setup_names_a_system_image_and_nothing_to_compose() {
    let p = load(
        "[setup.appliance]\nkernel = \"linux@2\"\nflash = \"debian@7\"\ndisk = \"/dev/vda\"\nwipe = true\n",
    )
    .expect("a flash setup loads");
    let Answer::Compose(spec) = &p.setups["appliance"].answer else {
        panic!("{p:?}");
    };
    assert_eq!(spec.flash, Some("debian@7".parse().expect("ref")));
    assert!(spec.wipe);
    assert_eq!(spec.disk, DiskChoice::Device("/dev/vda".into()));
    let p = load("[setup.a]\nkernel = \"linux@2\"\nflash = \"debian@7\"\n").expect("loads");
    let Answer::Compose(spec) = &p.setups["a"].answer else {
        panic!("{p:?}");
    };
    assert!(!spec.wipe, "wipe defaults to false");

    let s = |body: &str| format!("[setup.a]\nkernel = \"linux@2\"\n{body}");
    check(
        &s("flash = \"alice-home@1\"\n"),
        &[(3, "alice-home is a user image; flash takes a system image")],
    );
    check(
        &s("flash = \"debian@7\"\nlayers = [\"x11@3\"]\n"),
        &[(
            3,
            "layers, user, project, machine and sync do not go with it",
        )],
    );
    check(
        &s("flash = \"debian@7\"\ndisk = \"none\"\n"),
        &[(3, "flash needs a disk")],
    );
    check(&s("flash = \"debian@9\"\n"), &[(3, "has no version 9")]);
    check(&s("wipe = \"yes\"\n"), &[(3, "expected a boolean")]);
    check(
        "[setup.a]\nkernel = \"k/vmlinuz\"\nflash = \"debian@7\"\n",
        &[(1, "need an image kernel")],
    );
}
