//! Recorded-call tests of compose and switch_root with the fake `Sys`.

use super::*;
use crate::sys::FakeSys;
use carte_contract::{DiskRule, DiskSelect, Encoding, Format, MachineId, Mode};

fn layer(name: &str, kind: LayerKind, sha: char) -> Layer {
    Layer {
        name: name.into(),
        version: 1,
        kind,
        format: Format::Erofs,
        encoding: Encoding::None,
        size: 1,
        uncompressed_size: 1,
        sha256: sha.to_string().repeat(64),
        sha256_written: sha.to_string().repeat(64),
        url: format!("http://192.0.2.1/{name}"),
        mount_point: None,
        lazy: false,
        autostart: None,
        restore: None,
    }
}

fn plan(machine_layer: MachineLayerPolicy) -> Plan {
    let mut project = layer("exp", LayerKind::Project, 'e');
    project.mount_point = Some("/srv/exp".into());
    project.format = Format::Ext4;
    let mut lazy = layer("big", LayerKind::User, 'f');
    lazy.lazy = true;
    Plan {
        machine: MachineId {
            mac: "52:54:00:00:00:01".into(),
            name: None,
        },
        mode: Mode::Compose,
        disk: DiskRule {
            select: DiskSelect::First,
            may_wipe: false,
        },
        layers: vec![
            layer("modules-6.1", LayerKind::Kernel, 'a'),
            layer("debian", LayerKind::System, 'b'),
            layer("x11", LayerKind::System, 'c'),
            project,
            lazy,
        ],
        machine_layer,
        sync_back: vec![],
        machine_restore: None,
        init: "/sbin/init".into(),
        token: "t".into(),
        events_url: "http://192.0.2.1/e".into(),
    }
}

fn files(plan: &Plan) -> HashMap<String, PathBuf> {
    plan.layers
        .iter()
        .filter(|l| !l.lazy)
        .map(|l| {
            (
                l.sha256_written.clone(),
                PathBuf::from(format!("/carte/cache/layers/{}", &l.sha256_written[..1])),
            )
        })
        .collect()
}

const COMPOSE_PERSIST: &[&str] = &[
    "mkdir /carte/layers/00-modules-6.1",
    "loop_attach /carte/cache/layers/a ro",
    "mount /dev/loop0 /carte/layers/00-modules-6.1 erofs ro -",
    "mkdir /carte/layers/01-debian",
    "loop_attach /carte/cache/layers/b ro",
    "mount /dev/loop1 /carte/layers/01-debian erofs ro -",
    "mkdir /carte/layers/02-x11",
    "loop_attach /carte/cache/layers/c ro",
    "mount /dev/loop2 /carte/layers/02-x11 erofs ro -",
    "mkdir /carte/layers/03-exp",
    "loop_attach /carte/cache/layers/e ro",
    "mount /dev/loop3 /carte/layers/03-exp ext4 ro -",
    "mkdir /carte/cache/machine/root/upper",
    "mkdir /carte/cache/machine/root/work",
    "mkdir /carte/root",
    "mount overlay /carte/root overlay rw lowerdir=/carte/layers/00-modules-6.1:/carte/layers/02-x11:/carte/layers/01-debian,upperdir=/carte/cache/machine/root/upper,workdir=/carte/cache/machine/root/work",
    "mkdir /carte/cache/machine/rw/exp/upper",
    "mkdir /carte/cache/machine/rw/exp/work",
    "mkdir /carte/root/srv/exp",
    "mount overlay /carte/root/srv/exp overlay rw lowerdir=/carte/layers/03-exp,upperdir=/carte/cache/machine/rw/exp/upper,workdir=/carte/cache/machine/rw/exp/work",
];

#[test]
fn compose_persist_exact_sequence() {
    let p = plan(MachineLayerPolicy::Persist);
    let mut sys = FakeSys::new();
    let c = compose(&mut sys, &p, &files(&p), &Layout::default()).expect("compose");
    assert_eq!(c.root, PathBuf::from("/carte/root"));
    assert_eq!(sys.calls, COMPOSE_PERSIST);
}

#[test]
fn compose_ephemeral_uses_a_tmpfs_upper() {
    let p = plan(MachineLayerPolicy::Ephemeral);
    let mut sys = FakeSys::new();
    compose(&mut sys, &p, &files(&p), &Layout::default()).expect("compose");
    let at = sys
        .calls
        .iter()
        .position(|c| c == "mount tmpfs /carte/ephemeral tmpfs rw mode=0755")
        .expect("tmpfs mounted");
    let overlay = sys
        .calls
        .iter()
        .position(|c| c.starts_with("mount overlay /carte/root "))
        .expect("overlay");
    assert!(at < overlay);
    assert!(sys.calls[overlay]
        .ends_with("upperdir=/carte/ephemeral/root/upper,workdir=/carte/ephemeral/root/work"));
    assert!(!sys.calls.iter().any(|c| c.contains("/carte/cache/machine")));
}

/// Loop devices attached and not detached, and mounts not unmounted, after a run.
fn leftovers(calls: &[String]) -> (Vec<String>, Vec<String>) {
    let mut loops: Vec<String> = Vec::new();
    let mut mounts: Vec<String> = Vec::new();
    let mut n = 0;
    for c in calls {
        let w: Vec<&str> = c.split(' ').collect();
        match w[0] {
            "loop_attach" => {
                loops.push(format!("/dev/loop{n}"));
                n += 1;
            }
            "loop_detach" => loops.retain(|l| l != w[1]),
            "mount" => mounts.push(w[2].to_string()),
            "umount" => mounts.retain(|m| m != w[1]),
            _ => {}
        }
    }
    (loops, mounts)
}

#[test]
fn failure_at_every_step_cleans_up() {
    let p = plan(MachineLayerPolicy::Ephemeral);
    let total = {
        let mut sys = FakeSys::new();
        compose(&mut sys, &p, &files(&p), &Layout::default()).expect("compose");
        sys.calls.len()
    };
    for n in 1..=total {
        let mut sys = FakeSys::failing_at(n);
        let r = compose(&mut sys, &p, &files(&p), &Layout::default());
        assert!(r.is_err(), "call {n} failed but compose succeeded");
        let failed = sys.calls[n - 1].clone();
        // The failing call itself did nothing; every success before it is undone.
        let mut done = sys.calls[..n - 1].to_vec();
        let (loops, mounts) = leftovers(&done);
        let undo = &sys.calls[n..];
        let (l2, m2) = leftovers(&{
            done.extend(undo.iter().cloned());
            done
        });
        assert!(
            l2.is_empty() && m2.is_empty(),
            "after failing {failed:?}: left {l2:?} {m2:?}"
        );
        // Undo is in reverse order: the last successful attach or mount goes first.
        let last = sys.calls[..n - 1]
            .iter()
            .rev()
            .find(|c| c.starts_with("mount ") || c.starts_with("loop_attach "));
        if let Some(last) = last.filter(|c| c.starts_with("mount ")) {
            let target = last.split(' ').nth(2).unwrap_or_default();
            assert_eq!(
                undo[0],
                format!("umount {target} detach"),
                "failing {failed:?}"
            );
            assert_eq!(mounts.last().map(String::as_str), Some(target));
        } else if last.is_some() {
            let dev = loops.last().expect("a loop device");
            assert_eq!(undo[0], format!("loop_detach {dev}"), "failing {failed:?}");
        } else {
            assert!(undo.is_empty(), "nothing to undo for {failed:?}: {undo:?}");
        }
    }
}

#[test]
fn error_names_the_step_and_path() {
    let p = plan(MachineLayerPolicy::Persist);
    let mut sys = FakeSys::new();
    sys.fail_prefix = Some("mount overlay /carte/root ".into());
    sys.fail_errno = Some(Errno::EINVAL);
    let e = compose(&mut sys, &p, &files(&p), &Layout::default()).expect_err("fails");
    assert_eq!(
        e.to_string(),
        "compose: mount overlay on /carte/root: EINVAL: Invalid argument"
    );
    let undo_start = sys
        .calls
        .iter()
        .position(|c| c.starts_with("mount overlay"))
        .expect("ov")
        + 1;
    assert_eq!(
        &sys.calls[undo_start..],
        [
            "umount /carte/layers/03-exp detach",
            "loop_detach /dev/loop3",
            "umount /carte/layers/02-x11 detach",
            "loop_detach /dev/loop2",
            "umount /carte/layers/01-debian detach",
            "loop_detach /dev/loop1",
            "umount /carte/layers/00-modules-6.1 detach",
            "loop_detach /dev/loop0",
        ]
    );
}

#[test]
fn plan_problems_are_refused_before_any_call() {
    let check = |p: Plan, f: HashMap<String, PathBuf>, want: ComposeError| {
        let mut sys = FakeSys::new();
        let e = compose(&mut sys, &p, &f, &Layout::default()).expect_err("refused");
        assert_eq!(e, want);
        assert!(sys.calls.is_empty(), "{:?}", sys.calls);
    };
    let mut p = plan(MachineLayerPolicy::Persist);
    p.layers[1].format = Format::Raw;
    check(
        p.clone(),
        files(&p),
        ComposeError::RawLayer {
            name: "debian".into(),
        },
    );

    let p = plan(MachineLayerPolicy::Persist);
    let mut f = files(&p);
    f.remove(&"c".repeat(64));
    check(p, f, ComposeError::NotCached { name: "x11".into() });

    for bad in ["srv/exp", "/srv/../etc", "/"] {
        let mut p = plan(MachineLayerPolicy::Persist);
        p.layers[3].mount_point = Some(bad.into());
        check(
            p.clone(),
            files(&p),
            ComposeError::BadMountPoint {
                name: "exp".into(),
                mount_point: bad.into(),
            },
        );
    }

    let mut p = plan(MachineLayerPolicy::Persist);
    p.layers.retain(|l| l.mount_point.is_some());
    check(p.clone(), files(&p), ComposeError::NoLowerLayer);
}

/// A fake initramfs: root filesystem on device 1, the new root and the layer mounts on
/// other devices.
fn initramfs_tree(sys: &mut FakeSys) {
    sys.add_dir("/", 1);
    sys.add_file("/init", 1);
    sys.add_dir("/bin", 1);
    sys.add_file("/bin/carte-shim", 1);
    sys.add_dir("/lib", 1);
    sys.add_dir("/lib/modules", 1);
    sys.add_file("/lib/modules/x.ko", 1);
    sys.add_dir("/carte", 1);
    sys.add_dir("/carte/root", 9);
    sys.add_file("/carte/root/etc", 9);
    sys.add_dir("/carte/layers", 1);
    sys.add_dir("/carte/layers/00-modules-6.1", 10);
}

#[test]
fn switch_root_exact_sequence() {
    let p = plan(MachineLayerPolicy::Persist);
    let mut sys = FakeSys::new();
    initramfs_tree(&mut sys);
    let c = compose(&mut sys, &p, &files(&p), &Layout::default()).expect("compose");
    let before = sys.calls.len();
    switch_root(&mut sys, c, &Layout::default(), b"{}", &["single".into()]).expect("switch");
    let calls: Vec<&String> = sys.calls[before..].iter().collect();
    let expected = [
        "mkdir /run/carte",
        "write /run/carte/plan.json (2 bytes)",
        "copy /bin/carte-shim /run/carte/carte-shim",
        "mkdir /carte/root/dev",
        "move /dev /carte/root/dev",
        "mkdir /carte/root/proc",
        "move /proc /carte/root/proc",
        "mkdir /carte/root/sys",
        "move /sys /carte/root/sys",
        "mkdir /carte/root/run",
        "move /run /carte/root/run",
        "mkdir /carte/root/run/carte/cache",
        "move /carte/cache /carte/root/run/carte/cache",
        "chdir /carte/root",
        "lstat /",
        "read_dir /",
        "lstat /bin",
        "read_dir /bin",
        "lstat /bin/carte-shim",
        "unlink /bin/carte-shim",
        "rmdir /bin",
        "lstat /carte",
        "read_dir /carte",
        "lstat /carte/layers",
        "read_dir /carte/layers",
        "lstat /carte/layers/00-modules-6.1",
        "rmdir /carte/layers",
        "lstat /carte/root",
        "rmdir /carte",
        "lstat /init",
        "unlink /init",
        "lstat /lib",
        "read_dir /lib",
        "lstat /lib/modules",
        "read_dir /lib/modules",
        "lstat /lib/modules/x.ko",
        "unlink /lib/modules/x.ko",
        "rmdir /lib/modules",
        "rmdir /lib",
        "move . /",
        "chroot .",
        "chdir /",
        "exec /run/carte/carte-shim single",
    ];
    assert_eq!(calls, expected);
    // Other mounts were never entered: the new root's files and the layer mount survive.
    assert!(sys.tree.contains_key(Path::new("/carte/root/etc")));
    assert!(sys
        .tree
        .contains_key(Path::new("/carte/layers/00-modules-6.1")));
    assert!(!sys.tree.contains_key(Path::new("/init")));
}

#[test]
fn switch_failure_before_deletion_moves_everything_back() {
    let p = plan(MachineLayerPolicy::Persist);
    let mut sys = FakeSys::new();
    sys.fail_prefix = Some("move /carte/cache".into());
    let c = compose(&mut sys, &p, &files(&p), &Layout::default()).expect("compose");
    let e = switch_root(&mut sys, c, &Layout::default(), b"{}", &[]).expect_err("fails");
    assert!(matches!(e, ComposeError::Move { .. }), "{e:?}");
    let at = sys
        .calls
        .iter()
        .position(|c| c.starts_with("move /carte/cache"))
        .expect("move");
    let undo: Vec<&str> = sys.calls[at + 1..]
        .iter()
        .map(String::as_str)
        .take(5)
        .collect();
    assert_eq!(
        undo,
        [
            "move /carte/root/run /run",
            "move /carte/root/sys /sys",
            "move /carte/root/proc /proc",
            "move /carte/root/dev /dev",
            "umount /carte/root/srv/exp detach",
        ]
    );
    let (loops, mounts) = leftovers(&sys.calls);
    assert!(
        loops.is_empty() && mounts.is_empty(),
        "{loops:?} {mounts:?}"
    );
    assert!(!sys
        .calls
        .iter()
        .any(|c| c.starts_with("unlink") || c.starts_with("chroot")));
}

#[test]
fn switch_failure_after_deletion_is_no_return() {
    let p = plan(MachineLayerPolicy::Persist);
    let mut sys = FakeSys::new();
    initramfs_tree(&mut sys);
    sys.fail_prefix = Some("exec".into());
    sys.fail_errno = Some(Errno::ENOENT);
    let c = compose(&mut sys, &p, &files(&p), &Layout::default()).expect("compose");
    let e = switch_root(&mut sys, c, &Layout::default(), b"{}", &[]).expect_err("fails");
    assert_eq!(
        e.to_string(),
        "switch root (past the point of no return): exec /run/carte/carte-shim: \
         ENOENT: No such file or directory"
    );
}
