//! Finding the machine's carte partition: list the block devices in sysfs (path injected),
//! choose the disk the plan's rule names, and find the partition labelled `carte` on it
//! (GPT PARTNAME, as the kernel reports in `uevent`). Then mount it through [`Sys`].
//!
//! Not done yet: creating the partition and filesystem on a blank disk (or one the policy
//! allows wiping). That step stops with [`DiskError::NotInitialised`], naming the disk,
//! and never writes anything. A diskless plan (`select = none`) gets a tmpfs instead.

use crate::sys::{Errno, MsFlags, Sys};
use carte_contract::{DiskRule, DiskSelect};
use std::fs;
use std::path::{Path, PathBuf};

/// GPT partition name carte gives its partition.
pub const PART_LABEL: &str = "carte";

/// Disk step failures, naming the device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("disk: no disk matches the plan's rule {rule}")]
    NoDisk { rule: String },
    #[error(
        "disk: {device} has no partition labelled carte; creating it is not implemented yet \
         (may_wipe={may_wipe}); nothing was written"
    )]
    NotInitialised { device: String, may_wipe: bool },
    #[error("disk: mkdir {path}: {errno}")]
    Mkdir { path: PathBuf, errno: Errno },
    #[error("disk: mount {device} on {target}: {errno}")]
    Mount {
        device: String,
        target: PathBuf,
        errno: Errno,
    },
}

/// A whole disk as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDisk {
    /// Kernel name (`vda`).
    pub name: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Removable media (USB sticks, CD drives) are never chosen by a rule.
    pub removable: bool,
    /// Partitions: (kernel name, GPT name if any).
    pub partitions: Vec<(String, Option<String>)>,
}

fn uevent_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(str::to_string)
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Whole disks under `sys_root/block` (loop, ram and zram devices left out), in kernel
/// name order, each with its partitions.
pub fn list_disks(sys_root: &Path) -> Vec<BlockDisk> {
    let mut disks = Vec::new();
    let Ok(entries) = fs::read_dir(sys_root.join("block")) else {
        return disks;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "sr", "fd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let dir = e.path();
        let mut partitions = Vec::new();
        if let Ok(subs) = fs::read_dir(&dir) {
            for s in subs.flatten() {
                if !s.path().join("partition").exists() {
                    continue;
                }
                let uevent = read_trim(&s.path().join("uevent")).unwrap_or_default();
                partitions.push((
                    s.file_name().to_string_lossy().into_owned(),
                    uevent_field(&uevent, "PARTNAME"),
                ));
            }
        }
        partitions.sort();
        disks.push(BlockDisk {
            sectors: read_trim(&dir.join("size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
            name,
            partitions,
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// The disk a rule picks, if any. `None` is never passed here (no disk wanted).
pub fn choose<'a>(disks: &'a [BlockDisk], select: &DiskSelect) -> Option<&'a BlockDisk> {
    let fixed = || disks.iter().filter(|d| !d.removable && d.sectors > 0);
    match select {
        DiskSelect::Device(dev) => {
            let name = dev.strip_prefix("/dev/").unwrap_or(dev);
            disks.iter().find(|d| d.name == name)
        }
        DiskSelect::First => fixed().next(),
        DiskSelect::Largest => {
            fixed().max_by_key(|d| (d.sectors, std::cmp::Reverse(d.name.clone())))
        }
        DiskSelect::None => None,
    }
}

/// Mount the carte filesystem on `target`: the carte partition of the chosen disk, or a
/// tmpfs for a diskless plan. Returns what was mounted (for the console).
pub fn prepare(
    sys: &mut dyn Sys,
    sys_root: &Path,
    rule: &DiskRule,
    target: &Path,
) -> Result<String, DiskError> {
    sys.mkdir_all(target).map_err(|errno| DiskError::Mkdir {
        path: target.to_path_buf(),
        errno,
    })?;
    let (device, fstype, flags) = if rule.select == DiskSelect::None {
        ("tmpfs".to_string(), "tmpfs", MsFlags::empty())
    } else {
        let disks = list_disks(sys_root);
        let disk = choose(&disks, &rule.select).ok_or_else(|| DiskError::NoDisk {
            rule: format!("{:?}", rule.select),
        })?;
        let part = disk
            .partitions
            .iter()
            .find(|(_, label)| label.as_deref() == Some(PART_LABEL))
            .ok_or_else(|| DiskError::NotInitialised {
                device: format!("/dev/{}", disk.name),
                may_wipe: rule.may_wipe,
            })?;
        (
            format!("/dev/{}", part.0),
            "ext4",
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        )
    };
    match sys.mount(&device, target, fstype, flags, "") {
        Ok(()) | Err(Errno::EBUSY) => Ok(device),
        Err(errno) => Err(DiskError::Mount {
            device,
            target: target.to_path_buf(),
            errno,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::FakeSys;

    fn disk(
        root: &Path,
        name: &str,
        sectors: u64,
        removable: bool,
        parts: &[(&str, Option<&str>)],
    ) {
        let d = root.join("block").join(name);
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join("size"), format!("{sectors}\n")).expect("w");
        fs::write(d.join("removable"), if removable { "1\n" } else { "0\n" }).expect("w");
        for (p, label) in parts {
            let pd = d.join(p);
            fs::create_dir_all(&pd).expect("mkdir");
            fs::write(pd.join("partition"), "1\n").expect("w");
            let mut ue = format!("MAJOR=254\nDEVNAME={p}\nDEVTYPE=partition\n");
            if let Some(l) = label {
                ue.push_str(&format!("PARTNAME={l}\n"));
            }
            fs::write(pd.join("uevent"), ue).expect("w");
        }
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        disk(
            t.path(),
            "vda",
            1000,
            false,
            &[("vda1", Some("EFI")), ("vda2", Some("carte"))],
        );
        disk(t.path(), "vdb", 5000, false, &[("vdb1", None)]);
        disk(t.path(), "sda", 9000, true, &[]);
        disk(t.path(), "loop0", 99999, false, &[]);
        t
    }

    #[test]
    fn rules_choose_the_right_disk() {
        let t = tree();
        let disks = list_disks(t.path());
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "vda", "vdb"]);
        let pick = |s: DiskSelect| choose(&disks, &s).map(|d| d.name.clone());
        assert_eq!(
            pick(DiskSelect::Device("/dev/vdb".into())).as_deref(),
            Some("vdb")
        );
        assert_eq!(
            pick(DiskSelect::Device("vda".into())).as_deref(),
            Some("vda")
        );
        assert_eq!(pick(DiskSelect::Device("/dev/nvme0n1".into())), None);
        assert_eq!(
            pick(DiskSelect::First).as_deref(),
            Some("vda"),
            "removable sda skipped"
        );
        assert_eq!(pick(DiskSelect::Largest).as_deref(), Some("vdb"));
        assert_eq!(
            disks[1].partitions[1],
            ("vda2".into(), Some("carte".into()))
        );
    }

    #[test]
    fn prepare_mounts_the_carte_partition() {
        let t = tree();
        let mut sys = FakeSys::new();
        let rule = DiskRule {
            select: DiskSelect::First,
            may_wipe: false,
        };
        let dev = prepare(&mut sys, t.path(), &rule, Path::new("/carte/cache")).expect("prepare");
        assert_eq!(dev, "/dev/vda2");
        assert_eq!(
            sys.calls,
            [
                "mkdir /carte/cache",
                "mount /dev/vda2 /carte/cache ext4 nosuid,nodev -"
            ]
        );
    }

    #[test]
    fn a_disk_without_carte_partition_is_left_alone() {
        let t = tree();
        let mut sys = FakeSys::new();
        let rule = DiskRule {
            select: DiskSelect::Largest,
            may_wipe: true,
        };
        let e = prepare(&mut sys, t.path(), &rule, Path::new("/c")).expect_err("not init");
        assert_eq!(
            e,
            DiskError::NotInitialised {
                device: "/dev/vdb".into(),
                may_wipe: true
            }
        );
        assert_eq!(
            sys.calls,
            ["mkdir /c"],
            "nothing but the mount point was touched"
        );
    }

    #[test]
    fn diskless_gets_a_tmpfs_and_missing_disk_is_named() {
        let t = tree();
        let mut sys = FakeSys::new();
        let none = DiskRule {
            select: DiskSelect::None,
            may_wipe: false,
        };
        prepare(&mut sys, t.path(), &none, Path::new("/c")).expect("tmpfs");
        assert_eq!(sys.calls[1], "mount tmpfs /c tmpfs rw -");
        let missing = DiskRule {
            select: DiskSelect::Device("/dev/nvme0n1".into()),
            may_wipe: false,
        };
        let e = prepare(&mut sys, t.path(), &missing, Path::new("/c")).expect_err("none");
        assert!(e.to_string().contains("nvme0n1"), "{e}");
    }
}
