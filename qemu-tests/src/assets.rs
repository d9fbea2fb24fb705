//! Where the harness finds what it boots: the Debian kernel, the test initrd (built once
//! by `scripts/make-test-initrd`), OVMF firmware, iPXE binaries and the netbootd binary.
//!
//! It locates and builds files; it does not install packages (`scripts/setup` does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::proc;

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("no kernel: set CARTE_TEST_KERNEL or install linux-image-amd64 (no /boot/vmlinuz-*)")]
    NoKernel,
    #[error("building the test initrd with {script}: {reason}")]
    Initrd { script: PathBuf, reason: String },
    #[error("no OVMF firmware pair in /usr/share/OVMF (install ovmf)")]
    NoOvmf,
    #[error("{path} does not exist: build it first (`cargo build --workspace --bins`)")]
    NotBuilt { path: PathBuf },
    #[error("{path} does not exist: build it first (`scripts/build-initramfs`)")]
    NoInitramfs { path: PathBuf },
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Cargo's target folder: `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The harness's own scratch folder under the target folder.
pub fn cache_dir() -> PathBuf {
    target_dir().join("carte-qemu")
}

/// The debug netbootd binary; an error says how to build it.
pub fn netbootd_bin() -> Result<PathBuf, AssetError> {
    debug_bin("netbootd")
}

/// The debug imaged binary (the image store's CLI); an error says how to build it.
pub fn imaged_bin() -> Result<PathBuf, AssetError> {
    debug_bin("imaged")
}

fn debug_bin(name: &str) -> Result<PathBuf, AssetError> {
    let path = target_dir().join("debug").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(AssetError::NotBuilt { path })
    }
}

/// The static carte initramfs made by `scripts/build-initramfs`.
pub fn carte_initramfs() -> Result<PathBuf, AssetError> {
    let path = workspace_root().join("target-static/carte-initramfs.cpio.zst");
    if path.is_file() {
        Ok(path)
    } else {
        Err(AssetError::NoInitramfs { path })
    }
}

/// `CARTE_TEST_KERNEL`, or the newest `/boot/vmlinuz-*`.
pub fn kernel() -> Result<PathBuf, AssetError> {
    if let Some(k) = std::env::var_os("CARTE_TEST_KERNEL") {
        return Ok(PathBuf::from(k));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .map_err(|_| AssetError::NoKernel)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    // Version strings sort well enough for Debian's single installed kernel series.
    found.sort();
    found.pop().ok_or(AssetError::NoKernel)
}

/// The test initrd, built once per process into the cache folder.
pub fn initrd() -> Result<PathBuf, AssetError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let script = workspace_root().join("scripts").join("make-test-initrd");
    let result = BUILT.get_or_init(|| {
        // The script renames a finished archive into place, so a concurrent reader
        // never sees half of one.
        let out = cache_dir().join("test-initrd.cpio.gz");
        proc::run(Command::new(&script).arg(&out))
            .map(|_| out)
            .map_err(|e| e.to_string())
    });
    result
        .clone()
        .map_err(|reason| AssetError::Initrd { script, reason })
}

/// OVMF code (read-only) and the pristine variables store to copy per machine.
pub fn ovmf() -> Result<(PathBuf, PathBuf), AssetError> {
    let dir = Path::new("/usr/share/OVMF");
    [
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
        ("OVMF_CODE.fd", "OVMF_VARS.fd"),
    ]
    .iter()
    .map(|(c, v)| (dir.join(c), dir.join(v)))
    .find(|(c, v)| c.is_file() && v.is_file())
    .ok_or(AssetError::NoOvmf)
}

/// Debian's iPXE first stages (`ipxe` package), or `CARTE_TEST_IPXE_DIR`.
pub fn ipxe_dir() -> PathBuf {
    std::env::var_os("CARTE_TEST_IPXE_DIR")
        .map_or_else(|| PathBuf::from("/usr/lib/ipxe"), PathBuf::from)
}
