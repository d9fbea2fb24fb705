//! Disk mode against the test HTTP server, with a sparse file as the disk.

use super::*;
use crate::http::{agent, Timeouts};
use crate::sys::FakeSys;
use crate::testhttp;
use carte_contract::{Encoding, LayerKind};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

const DISK: u64 = 16 << 20;

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// 1 MiB of data, 3 MiB of zeros, 64 KiB + 100 bytes of data, 2 MiB of zeros, 7 bytes.
fn image() -> Vec<u8> {
    let mut v: Vec<u8> = (0..1 << 20).map(|i| (i % 251 + 1) as u8).collect();
    v.extend(std::iter::repeat_n(0u8, 3 << 20));
    v.extend((0..(64 << 10) + 100).map(|i| (i % 13 + 1) as u8));
    v.extend(std::iter::repeat_n(0u8, 2 << 20));
    v.extend([9u8; 7]);
    v
}

fn layer(url: &str, wire: &[u8], raw: &[u8]) -> Layer {
    Layer {
        name: "disk".into(),
        version: 1,
        kind: LayerKind::System,
        format: Format::Raw,
        encoding: Encoding::Zstd,
        size: wire.len() as u64,
        uncompressed_size: raw.len() as u64,
        sha256: hex(Sha256::digest(wire)),
        sha256_written: hex(Sha256::digest(raw)),
        url: url.into(),
        mount_point: None,
        lazy: false,
        autostart: None,
        restore: None,
    }
}

/// sysfs and /dev with one 16 MiB disk `vdc` (a sparse file), `plant` bytes written in it.
fn machine(root: &Path, plant: &[(u64, &[u8])]) -> DiskPaths {
    let b = root.join("block/vdc");
    fs::create_dir_all(&b).expect("mkdir");
    fs::write(b.join("size"), format!("{}\n", DISK / 512)).expect("w");
    fs::write(b.join("removable"), "0\n").expect("w");
    fs::create_dir_all(root.join("dev")).expect("mkdir");
    let f = fs::File::create(root.join("dev/vdc")).expect("create");
    f.set_len(DISK).expect("size");
    for (off, bytes) in plant {
        f.write_all_at(bytes, *off).expect("plant");
    }
    DiskPaths {
        sys_root: root.to_path_buf(),
        dev_root: root.join("dev"),
        ..DiskPaths::default()
    }
}

fn rule(may_wipe: bool) -> DiskRule {
    DiskRule {
        select: carte_contract::DiskSelect::First,
        may_wipe,
    }
}

fn opts() -> fetch::Options {
    fetch::Options {
        resumes: 1,
        backoff: Duration::from_millis(1),
        progress_every: Duration::ZERO,
    }
}

fn ua() -> ureq::Agent {
    agent(Timeouts {
        connect: Duration::from_secs(5),
        per_read: Duration::from_secs(5),
    })
}

/// Where the next data at or after `off` starts (SEEK_DATA), or the file end.
/// Flashes `l` onto the disk of `paths` with the test agent and options, wiping allowed or
/// not, ignoring progress.
fn flash_with(
    sys: &mut FakeSys,
    paths: &DiskPaths,
    may_wipe: bool,
    l: &Layer,
) -> Result<Flashed, FlashError> {
    flash(sys, &ua(), paths, &rule(may_wipe), l, opts(), &mut |_| {})
}

fn next_data(f: &fs::File, off: u64) -> u64 {
    // SAFETY: lseek on an open descriptor; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if r < 0 {
        f.metadata().expect("meta").len()
    } else {
        r as u64
    }
}

#[test]
fn the_disk_gets_exactly_the_image_and_zero_runs_stay_holes() {
    let raw = image();
    let wire = zstd::encode_all(&raw[..], 3).expect("encode");
    let w2 = wire.clone();
    let srv = testhttp::serve(move |_| (200, w2.clone()));
    let t = tempfile::tempdir().expect("tempdir");
    let paths = machine(t.path(), &[]);
    let l = layer(&format!("{}/img", srv.base), &wire, &raw);
    let mut sys = FakeSys::new();
    let mut seen = 0;
    let f = flash(
        &mut sys,
        &ua(),
        &paths,
        &rule(false),
        &l,
        opts(),
        &mut |_| seen += 1,
    )
    .expect("flash");
    assert!(seen > 0, "progress reported");
    assert_eq!(f.image, raw.len() as u64);
    assert_eq!(f.before, "nothing (blank)");
    // Written: the two data regions rounded up to 64 KiB blocks, and the short last
    // block (100 zeros and 7 data bytes).
    assert_eq!(f.written, (1 << 20) + 2 * (64 << 10) + 107);

    let disk = fs::read(t.path().join("dev/vdc")).expect("read");
    assert_eq!(disk.len() as u64, DISK, "the disk keeps its size");
    assert!(disk[..raw.len()] == raw[..], "exact image bytes");
    assert!(disk[raw.len()..].iter().all(|b| *b == 0));

    let file = fs::File::open(t.path().join("dev/vdc")).expect("open");
    let zero_start = 1u64 << 20;
    assert!(
        next_data(&file, zero_start) >= zero_start + (3 << 20),
        "the 3 MiB zero run is a hole"
    );
    let second = zero_start + (3 << 20) + 2 * (64 << 10);
    assert!(next_data(&file, second) >= second + (2 << 20) - (64 << 10));

    // The zero runs (64 KiB blocks, merged) were handed to discard.
    let dev = t.path().join("dev/vdc").display().to_string();
    let discards: Vec<&String> = sys
        .calls
        .iter()
        .filter(|c| c.starts_with("discard"))
        .collect();
    assert_eq!(
        discards,
        [
            &format!("discard {dev} {}+{}", 1 << 20, 3 << 20),
            &format!("discard {dev} {second}+{}", (2 << 20) - (64 << 10)),
        ]
    );
    assert_eq!(f.discarded, (3 << 20) + (2 << 20) - (64 << 10));
    assert_eq!(sys.calls.last().map(String::as_str), Some("sync"));
}

#[test]
fn no_discard_support_is_fine_and_a_foreign_disk_is_refused() {
    let raw = image();
    let wire = zstd::encode_all(&raw[..], 3).expect("encode");
    let w2 = wire.clone();
    let srv = testhttp::serve(move |_| (200, w2.clone()));
    let l = layer(&format!("{}/img", srv.base), &wire, &raw);

    let t = tempfile::tempdir().expect("tempdir");
    let paths = machine(t.path(), &[]);
    let mut sys = FakeSys::new();
    sys.fail_prefix = Some("discard".into());
    sys.fail_errno = Some(Errno::EOPNOTSUPP);
    let f = flash_with(&mut sys, &paths, false, &l).expect("ok");
    assert_eq!(f.discarded, 0);
    assert_eq!(
        sys.calls
            .iter()
            .filter(|c| c.starts_with("discard"))
            .count(),
        1,
        "discard is not tried again after EOPNOTSUPP"
    );

    let t = tempfile::tempdir().expect("tempdir");
    let paths = machine(t.path(), &[(510, &[0x55, 0xAA])]);
    let requests_before = srv.seen().len();
    let mut sys = FakeSys::new();
    let e = flash_with(&mut sys, &paths, false, &l).expect_err("foreign");
    assert!(e.to_string().contains("left untouched"), "{e}");
    assert_eq!(srv.seen().len(), requests_before, "nothing was downloaded");
    let disk = fs::read(t.path().join("dev/vdc")).expect("read");
    assert!(disk[..510].iter().all(|b| *b == 0), "disk unchanged");

    // With may_wipe the same disk is flashed.
    let f = flash_with(&mut sys, &paths, true, &l).expect("wipe");
    assert!(f.before.contains("MBR"), "{}", f.before);
}

#[test]
fn a_corrupt_image_fails_before_fsync_and_a_big_one_is_refused() {
    let raw = image();
    let wire = zstd::encode_all(&raw[..], 3).expect("encode");
    let w2 = wire.clone();
    let srv = testhttp::serve(move |_| (200, w2.clone()));
    let t = tempfile::tempdir().expect("tempdir");
    let paths = machine(t.path(), &[]);
    let mut l = layer(&format!("{}/img", srv.base), &wire, &raw);
    l.sha256_written = "0".repeat(64);
    let mut sys = FakeSys::new();
    let e = flash_with(&mut sys, &paths, false, &l).expect_err("corrupt");
    assert!(
        matches!(e, FlashError::Fetch(FetchError::WrittenSha256 { .. })),
        "{e}"
    );
    assert!(!sys.calls.iter().any(|c| c.starts_with("discard")));

    l.uncompressed_size = DISK + 1;
    let e = flash_with(&mut sys, &paths, false, &l).expect_err("too big");
    assert!(matches!(e, FlashError::TooBig { .. }), "{e}");
}

#[test]
fn image_layer_must_be_raw() {
    let mut l = layer("http://127.0.0.1:9/x", b"a", b"a");
    assert!(image_layer(std::slice::from_ref(&l)).is_ok());
    l.format = Format::Ext4;
    assert!(matches!(image_layer(&[l]), Err(FlashError::NotRaw { .. })));
    assert!(matches!(image_layer(&[]), Err(FlashError::NoImage)));
}
