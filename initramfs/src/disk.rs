//! Finding (or making) the machine's carte partition: list the block devices in sysfs
//! (path injected), choose the disk the plan's rule names, and find the partition labelled
//! `carte` on it (GPT PARTNAME, as the kernel reports in `uevent`). When there is none, the
//! disk is initialised — a GPT with one `carte` partition ([`crate::gpt`]), the kernel told
//! to re-read it, an ext4 made by `mke2fs` — but only when the disk is blank or the rule
//! sets `may_wipe`; a disk with foreign data is refused with [`DiskError::Foreign`] and not
//! written to. Then the partition is mounted through [`Sys`]. A diskless plan
//! (`select = none`) gets a tmpfs instead.
//!
//! An existing carte partition is only formatted when it reads as empty (a boot that died
//! between the GPT and mke2fs); it is never resized or repaired, and fsck never runs.

use crate::gpt::{self, Contents};
use crate::sys::{Errno, MsFlags, Sys};
use carte_contract::{DiskRule, DiskSelect};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// GPT partition name carte gives its partition.
pub const PART_LABEL: &str = "carte";

/// Disk step failures, naming the device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("disk: no disk matches the plan's rule {rule}")]
    NoDisk { rule: String },
    #[error(
        "disk: {device} has no partition labelled carte and holds {what}; \
         it is left untouched (the policy does not set may_wipe)"
    )]
    Foreign { device: String, what: String },
    #[error("disk: {step} {device}: {kind}")]
    Io {
        step: &'static str,
        device: String,
        kind: std::io::ErrorKind,
    },
    #[error("disk: re-read the partition table of {device}: {errno}")]
    Reread { device: String, errno: Errno },
    #[error("disk: {device} did not appear within {secs}s of writing the partition table")]
    NoPartitionNode { device: String, secs: u64 },
    #[error("disk: run {tool} on {device}: {errno}")]
    Spawn {
        tool: String,
        device: String,
        errno: Errno,
    },
    #[error("disk: {tool} on {device} exited with {code}")]
    Tool {
        tool: String,
        device: String,
        code: i32,
    },
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
    /// Logical block size in bytes (`queue/logical_block_size`, 512 when unknown).
    pub sector: u64,
}

/// Where the disk step looks and what it runs; tests point these into a temporary folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPaths {
    /// `/sys`.
    pub sys_root: PathBuf,
    /// `/dev`.
    pub dev_root: PathBuf,
    /// The `mke2fs` in the initramfs.
    pub mke2fs: PathBuf,
    /// How long to wait for the partition's device node after re-reading the table.
    pub node_wait: Duration,
}

impl Default for DiskPaths {
    fn default() -> DiskPaths {
        DiskPaths {
            sys_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            mke2fs: PathBuf::from("/sbin/mke2fs"),
            node_wait: Duration::from_secs(10),
        }
    }
}

/// What [`prepare`] mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The device (or `tmpfs`) mounted on the target.
    pub device: String,
    /// Set when the disk was initialised this boot: what it held before.
    pub initialised: Option<String>,
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
            sector: read_trim(&dir.join("queue/logical_block_size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(512),
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

/// The kernel name of partition `n` of disk `disk` (`vda1`, `nvme0n1p1`).
pub fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// Mount the carte filesystem on `target`: the carte partition of the chosen disk (made
/// first when the disk is blank or may be wiped), or a tmpfs for a diskless plan.
pub fn prepare(
    sys: &mut dyn Sys,
    paths: &DiskPaths,
    rule: &DiskRule,
    target: &Path,
) -> Result<Prepared, DiskError> {
    sys.mkdir_all(target).map_err(|errno| DiskError::Mkdir {
        path: target.to_path_buf(),
        errno,
    })?;
    let (prepared, fstype, flags) = if rule.select == DiskSelect::None {
        let p = Prepared {
            device: "tmpfs".into(),
            initialised: None,
        };
        (p, "tmpfs", MsFlags::empty())
    } else {
        let disks = list_disks(&paths.sys_root);
        let disk = choose(&disks, &rule.select).ok_or_else(|| DiskError::NoDisk {
            rule: format!("{:?}", rule.select),
        })?;
        let existing = disk
            .partitions
            .iter()
            .find(|(_, label)| label.as_deref() == Some(PART_LABEL));
        let p = match existing {
            Some((part, _)) => {
                let dev = paths.dev_root.join(part);
                let device = dev.display().to_string();
                // A boot that died between the GPT and mke2fs leaves our partition empty.
                let initialised = if unformatted(&dev) {
                    make_fs(sys, paths, &dev)?;
                    Some("an empty carte partition (formatted now)".to_string())
                } else {
                    None
                };
                Prepared {
                    device,
                    initialised,
                }
            }
            None => initialise(sys, paths, disk, rule.may_wipe)?,
        };
        (p, "ext4", MsFlags::MS_NODEV | MsFlags::MS_NOSUID)
    };
    match sys.mount(&prepared.device, target, fstype, flags, "") {
        Ok(()) | Err(Errno::EBUSY) => Ok(prepared),
        Err(errno) => Err(DiskError::Mount {
            device: prepared.device,
            target: target.to_path_buf(),
            errno,
        }),
    }
}

/// Partition and format `disk` when it is blank or `may_wipe`; refuse otherwise.
fn initialise(
    sys: &mut dyn Sys,
    paths: &DiskPaths,
    disk: &BlockDisk,
    may_wipe: bool,
) -> Result<Prepared, DiskError> {
    let dev = paths.dev_root.join(&disk.name);
    let device = dev.display().to_string();
    let io = |step: &'static str| {
        let device = device.clone();
        move |e: std::io::Error| DiskError::Io {
            step,
            device,
            kind: e.kind(),
        }
    };
    let size = disk.sectors * 512;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .map_err(io("open"))?;
    let before = match gpt::probe(&mut f, size).map_err(io("read"))? {
        Contents::Blank => "nothing (blank)".to_string(),
        Contents::Foreign(what) if may_wipe => {
            gpt::zero_ends(&mut f, size).map_err(io("wipe"))?;
            format!("{what} (wiped: the policy sets may_wipe)")
        }
        Contents::Foreign(what) => return Err(DiskError::Foreign { device, what }),
    };
    let guids = (
        gpt::random_guid(&disk.name),
        gpt::random_guid(&format!("{}1", disk.name)),
    );
    gpt::write(&mut f, size, disk.sector, PART_LABEL, guids).map_err(io("write GPT"))?;
    f.sync_all().map_err(io("fsync"))?;
    drop(f);
    sys.reread_partitions(&dev)
        .map_err(|errno| DiskError::Reread {
            device: device.clone(),
            errno,
        })?;
    let part = paths.dev_root.join(partition_name(&disk.name, 1));
    let part_text = part.display().to_string();
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while !part.exists() {
        if waited >= paths.node_wait {
            return Err(DiskError::NoPartitionNode {
                device: part_text,
                secs: paths.node_wait.as_secs(),
            });
        }
        sys.sleep(step);
        waited += step;
    }
    make_fs(sys, paths, &part)?;
    Ok(Prepared {
        device: part_text,
        initialised: Some(before),
    })
}

/// True when the first 64 KiB of `dev` read as zeros (no superblock of any kind). A device
/// that cannot be read is not called unformatted: the mount will say what is wrong.
fn unformatted(dev: &Path) -> bool {
    use std::io::Read;
    let mut head = vec![0u8; 64 << 10];
    fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head.iter().all(|b| *b == 0))
}

/// Put an ext4 labelled `carte` on `part` with the initramfs's mke2fs.
fn make_fs(sys: &mut dyn Sys, paths: &DiskPaths, part: &Path) -> Result<(), DiskError> {
    let part_text = part.display().to_string();
    let args: Vec<String> = ["-q", "-F", "-t", "ext4", "-L", PART_LABEL, &part_text]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tool = paths.mke2fs.display().to_string();
    match sys.run(&paths.mke2fs, &args) {
        Ok(0) => Ok(()),
        Ok(code) => Err(DiskError::Tool {
            tool,
            device: part_text,
            code,
        }),
        Err(errno) => Err(DiskError::Spawn {
            tool,
            device: part_text,
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

    fn paths(root: &Path) -> DiskPaths {
        DiskPaths {
            sys_root: root.to_path_buf(),
            dev_root: root.join("dev"),
            mke2fs: PathBuf::from("/sbin/mke2fs"),
            node_wait: Duration::from_millis(300),
        }
    }

    /// Calls with the temporary folder written as `T`.
    fn calls(sys: &FakeSys, root: &Path) -> Vec<String> {
        let r = root.display().to_string();
        sys.calls.iter().map(|c| c.replace(&r, "T")).collect()
    }

    const DISK: u64 = 64 << 20;

    /// Add disk `vdc` (64 MiB, no partitions) with its device file; `plant` bytes in it;
    /// `node` also creates `vdc1` as the kernel would after the re-read.
    fn blank_vdc(root: &Path, plant: &[(u64, &[u8])], node: bool) -> PathBuf {
        use std::io::{Seek, SeekFrom, Write};
        disk(root, "vdc", DISK / 512, false, &[]);
        fs::create_dir_all(root.join("dev")).expect("mkdir");
        let dev = root.join("dev/vdc");
        let mut f = fs::File::create(&dev).expect("create");
        f.set_len(DISK).expect("size");
        for (off, bytes) in plant {
            f.seek(SeekFrom::Start(*off)).expect("seek");
            f.write_all(bytes).expect("plant");
        }
        if node {
            fs::write(root.join("dev/vdc1"), b"").expect("node");
        }
        dev
    }

    fn vdc(may_wipe: bool) -> DiskRule {
        DiskRule {
            select: DiskSelect::Device("/dev/vdc".into()),
            may_wipe,
        }
    }

    #[test]
    fn prepare_mounts_the_carte_partition() {
        let t = tree();
        let mut sys = FakeSys::new();
        let rule = DiskRule {
            select: DiskSelect::First,
            may_wipe: false,
        };
        let p =
            prepare(&mut sys, &paths(t.path()), &rule, Path::new("/carte/cache")).expect("prepare");
        assert_eq!(p.device, format!("{}/dev/vda2", t.path().display()));
        assert_eq!(p.initialised, None);
        assert_eq!(
            calls(&sys, t.path()),
            [
                "mkdir /carte/cache",
                "mount T/dev/vda2 /carte/cache ext4 nosuid,nodev -"
            ]
        );
    }

    #[test]
    fn a_blank_disk_gets_a_gpt_and_an_ext4() {
        let t = tree();
        let dev = blank_vdc(t.path(), &[], true);
        let mut sys = FakeSys::new();
        let p = prepare(&mut sys, &paths(t.path()), &vdc(false), Path::new("/c")).expect("init");
        assert_eq!(p.initialised.as_deref(), Some("nothing (blank)"));
        assert_eq!(
            calls(&sys, t.path()),
            [
                "mkdir /c",
                "rereadpt T/dev/vdc",
                "run /sbin/mke2fs -q -F -t ext4 -L carte T/dev/vdc1",
                "mount T/dev/vdc1 /c ext4 nosuid,nodev -",
            ]
        );
        let mut f = fs::File::open(&dev).expect("open");
        assert_eq!(
            gpt::probe(&mut f, DISK).expect("probe"),
            Contents::Foreign("a GPT".into())
        );
        let raw = fs::read(&dev).expect("read");
        let name: Vec<u8> = "carte".bytes().flat_map(|b| [b, 0]).collect();
        assert_eq!(&raw[1024 + 56..1024 + 66], &name[..], "first entry's name");
        let h = &raw[512..512 + 92];
        let mut zeroed = h.to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(
            crc32fast::hash(&zeroed).to_le_bytes(),
            h[16..20],
            "header crc"
        );
    }

    fn check_foreign(plant: &[(u64, &[u8])], what: &str) {
        let t = tree();
        // A stray byte in the first MiB besides the signature: wiping must clear it.
        let mut plant = plant.to_vec();
        plant.push((300_000, &[7]));
        let dev = blank_vdc(t.path(), &plant, true);
        let before = fs::read(&dev).expect("read");
        let mut sys = FakeSys::new();
        let e =
            prepare(&mut sys, &paths(t.path()), &vdc(false), Path::new("/c")).expect_err("foreign");
        assert_eq!(
            e,
            DiskError::Foreign {
                device: dev.display().to_string(),
                what: what.into()
            }
        );
        assert!(e.to_string().contains("left untouched"), "{e}");
        assert_eq!(sys.calls, ["mkdir /c"], "nothing else was done");
        assert!(fs::read(&dev).expect("read") == before, "disk unchanged");

        // The same disk with may_wipe is initialised, and says what it held.
        let mut sys = FakeSys::new();
        let p = prepare(&mut sys, &paths(t.path()), &vdc(true), Path::new("/c")).expect("wipe");
        let said = p.initialised.expect("initialised");
        assert!(said.starts_with(what) && said.contains("wiped"), "{said}");
        let raw = fs::read(&dev).expect("read");
        assert_eq!(&raw[512..520], b"EFI PART");
        assert_eq!(raw[300_000], 0, "the first MiB was wiped");
    }

    #[test]
    fn foreign_data_is_left_alone_unless_may_wipe() {
        check_foreign(
            &[(510, &[0x55, 0xAA])],
            "an MBR partition table or boot sector",
        );
        check_foreign(
            &[
                (510, &[0x55, 0xAA]),
                (512, b"EFI PART"),
                (DISK - 512, b"EFI PART"),
            ],
            "a GPT",
        );
        check_foreign(&[(1080, &[0x53, 0xEF])], "an ext2/3/4 filesystem");
    }

    #[test]
    fn initialising_fails_clearly_without_a_node_or_with_a_failing_mke2fs() {
        let t = tree();
        blank_vdc(t.path(), &[], false);
        let mut sys = FakeSys::new();
        let e =
            prepare(&mut sys, &paths(t.path()), &vdc(false), Path::new("/c")).expect_err("no node");
        assert!(matches!(e, DiskError::NoPartitionNode { .. }), "{e}");
        assert_eq!(
            sys.calls.iter().filter(|c| c.starts_with("sleep")).count(),
            3
        );

        let t = tree();
        blank_vdc(t.path(), &[], true);
        let mut sys = FakeSys::new();
        sys.run_status = 1;
        let e =
            prepare(&mut sys, &paths(t.path()), &vdc(false), Path::new("/c")).expect_err("mke2fs");
        assert_eq!(
            e.to_string(),
            format!(
                "disk: /sbin/mke2fs on {}/dev/vdc1 exited with 1",
                t.path().display()
            )
        );
        assert!(!sys.calls.iter().any(|c| c.starts_with("mount")));
    }

    #[test]
    fn an_empty_carte_partition_is_formatted_a_formatted_one_is_not() {
        let t = tree();
        fs::create_dir_all(t.path().join("dev")).expect("mkdir");
        let part = t.path().join("dev/vda2");
        fs::File::create(&part)
            .and_then(|f| f.set_len(1 << 20))
            .expect("part");
        let rule = DiskRule {
            select: DiskSelect::First,
            may_wipe: false,
        };
        let mut sys = FakeSys::new();
        let p = prepare(&mut sys, &paths(t.path()), &rule, Path::new("/c")).expect("format");
        assert!(p.initialised.is_some());
        assert_eq!(
            calls(&sys, t.path())[1],
            "run /sbin/mke2fs -q -F -t ext4 -L carte T/dev/vda2"
        );
        let mut head = vec![0u8; 1 << 20];
        head[1080] = 0x53;
        head[1081] = 0xEF;
        fs::write(&part, &head).expect("superblock");
        let mut sys = FakeSys::new();
        let p = prepare(&mut sys, &paths(t.path()), &rule, Path::new("/c")).expect("mount");
        assert_eq!(p.initialised, None);
        assert!(
            !sys.calls.iter().any(|c| c.starts_with("run")),
            "{:?}",
            sys.calls
        );
    }

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_name("vda", 1), "vda1");
        assert_eq!(partition_name("nvme0n1", 1), "nvme0n1p1");
        assert_eq!(partition_name("mmcblk0", 2), "mmcblk0p2");
    }

    #[test]
    fn diskless_gets_a_tmpfs_and_missing_disk_is_named() {
        let t = tree();
        let mut sys = FakeSys::new();
        let none = DiskRule {
            select: DiskSelect::None,
            may_wipe: false,
        };
        prepare(&mut sys, &paths(t.path()), &none, Path::new("/c")).expect("tmpfs");
        assert_eq!(sys.calls[1], "mount tmpfs /c tmpfs rw -");
        let missing = DiskRule {
            select: DiskSelect::Device("/dev/nvme0n1".into()),
            may_wipe: false,
        };
        let e = prepare(&mut sys, &paths(t.path()), &missing, Path::new("/c")).expect_err("none");
        assert!(e.to_string().contains("nvme0n1"), "{e}");
    }
}
