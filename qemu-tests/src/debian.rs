//! The end-to-end Debian setup of issue 5: the layer trees made by `scripts/images`
//! (debootstrap bookworm, a second system layer, a user layer, Debian kernels) and a
//! writable user layer made here (alice's notes, mounted read-write), turned
//! into layers and pushed into an image store by the real `imaged build --push`, and the
//! policy that composes them.
//!
//! The store is built once per process into a seed folder under the harness's cache;
//! each lab's netbootd starts from a copy of it ([`crate::Netbootd::start_seeded`]). It
//! builds and pushes only: what a machine does with the layers is for the tests to judge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::assets::{self, AssetError};
use crate::lab::Lab;
use crate::machine::{Machine, MachineSpec};
use crate::netbootd::Netbootd;
use crate::proc::{self, ProcError};

#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error(transparent)]
    Asset(#[from] AssetError),
    #[error("{0}")]
    Run(#[from] ProcError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// The image names the setup uses, as pushed into the seed store.
pub const BASE: &str = "debian";
pub const EXTRAS: &str = "extras";
pub const USER: &str = "alice-home";
pub const KERNEL: &str = "linux";
/// A writable user layer: mounted read-write at [`NOTES_MOUNT`], where the report
/// appends each boot's id to `boots` (so its changes are synced back as versions of it);
/// its tree is one marker file, made here.
pub const NOTES: &str = "alice-notes";
pub const NOTES_MOUNT: &str = "/srv/notes";
/// The marker at the notes layer's root; the report writes only where it finds it.
pub const NOTES_MARKER: &str = ".carte-notes";
/// A lazy project layer (fetched by carte-shim after init starts) whose autostart reads
/// its file and prints it with the kernel release; not part of [`setup`] unless asked.
pub const PROJECT: &str = "exp";
pub const PROJECT_MOUNT: &str = "/srv/exp";
pub const PROJECT_FILE_TEXT: &str = "hello from the lazy project layer";
pub const PROJECT_AUTOSTART: &str =
    "echo \"autostart says: $(cat /srv/exp/hello.txt) on $(uname -r)\"";

/// One artefact of a pushed version: its sha256 (the ETag and blob name) and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub sha256: String,
    pub size: u64,
}

/// What the seed store holds, version by version (`name@N` → artefact name → blob).
#[derive(Debug)]
pub struct Seed {
    /// The data folder to copy into netbootd's.
    pub dir: PathBuf,
    pub versions: BTreeMap<String, BTreeMap<String, Blob>>,
    /// Kernel release of `linux@1` (the host's Debian kernel) and `linux@2` (its `cloud`
    /// flavour, a different release of the same ABI).
    pub release1: String,
    pub release2: String,
}

impl Seed {
    /// Every blob of `image` (e.g. `linux@2`).
    pub fn blobs(&self, image: &str) -> Vec<&Blob> {
        self.versions
            .get(image)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DebianError {
    let what = what.into();
    move |source| DebianError::Io { what, source }
}

/// Runs a recipe of `scripts/images` and returns its stdout.
fn recipe(args: &[&str]) -> Result<String, DebianError> {
    let script = assets::workspace_root()
        .join("scripts/images")
        .join(args[0]);
    let mut cmd = Command::new(script);
    cmd.args(&args[1..]);
    Ok(proc::run(&mut cmd)?)
}

/// `name=path` lines of `scripts/images/all`.
fn trees() -> Result<BTreeMap<String, PathBuf>, DebianError> {
    Ok(recipe(&["all"])?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect())
}

fn read_release(kernel_dir: &Path) -> Result<String, DebianError> {
    let f = kernel_dir.join("release");
    Ok(std::fs::read_to_string(&f)
        .map_err(io(format!("reading {}", f.display())))?
        .trim()
        .to_string())
}

/// `imaged build ARGS --data DATA --out OUT --push NAME --kind KIND`, parsed.
fn build_push(
    data: &Path,
    out: &Path,
    name: &str,
    kind: &str,
    args: &[&std::ffi::OsStr],
) -> Result<(String, BTreeMap<String, Blob>), DebianError> {
    let mut cmd = Command::new(assets::imaged_bin()?);
    cmd.arg("build")
        .args(args)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--push", name, "--kind", kind]);
    let json = proc::run(&mut cmd)?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| DebianError::Other(format!("imaged build printed no JSON ({e}): {json}")))?;
    let pushed = v["pushed"]
        .as_str()
        .ok_or_else(|| DebianError::Other(format!("imaged build pushed nothing: {json}")))?
        .to_string();
    let mut blobs = BTreeMap::new();
    for artefact in ["layer", "vmlinuz", "modules"] {
        let a = &v[artefact];
        if let (Some(sha256), Some(size)) = (a["sha256"].as_str(), a["size"].as_u64()) {
            let sha256 = a["encoded_sha256"].as_str().unwrap_or(sha256).to_string();
            blobs.insert(artefact.to_string(), Blob { sha256, size });
        }
    }
    Ok((pushed, blobs))
}

/// Removes `debian-seed-<pid>` folders whose process no longer runs.
fn remove_stale_seeds(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("debian-seed-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn make_seed() -> Result<Seed, DebianError> {
    let trees = trees()?;
    let tree = |name: &str| -> Result<PathBuf, DebianError> {
        trees
            .get(name)
            .cloned()
            .ok_or_else(|| DebianError::Other(format!("scripts/images/all made no {name}")))
    };
    let kernel1 = tree("kernel")?;
    let release1 = read_release(&kernel1)?;
    // The second kernel: the cloud flavour of the same ABI, so a kernel change is a real
    // change of release without another mirror or ABI.
    let flavour = release1
        .strip_suffix("-amd64")
        .map(|abi| format!("linux-image-{abi}-cloud-amd64"))
        .ok_or_else(|| DebianError::Other(format!("unexpected kernel release {release1}")))?;
    let kernel2 = PathBuf::from(recipe(&["kernel", &flavour])?.trim());
    let release2 = read_release(&kernel2)?;

    // One seed per process (the static that holds it is never dropped); the seeds of
    // processes that are gone are removed here.
    let cache = assets::cache_dir();
    remove_stale_seeds(&cache);
    let dir = cache.join(format!("debian-seed-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
    }
    let data = dir.join("data");
    let out = dir.join("out");
    std::fs::create_dir_all(&data).map_err(io(format!("creating {}", data.display())))?;
    let mut versions = BTreeMap::new();
    let os = |p: &Path| p.as_os_str().to_owned();
    let mut push = |name: &str, kind: &str, args: Vec<std::ffi::OsString>| {
        eprintln!(
            "qemu-tests: imaged build {} --push {name} --kind {kind}",
            args[0].to_string_lossy()
        );
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (pushed, blobs) = build_push(&data, &out.join(name), name, kind, &refs)?;
        versions.insert(pushed, blobs);
        std::fs::remove_dir_all(out.join(name)).map_err(io("removing build output"))
    };
    push(
        BASE,
        "system",
        vec!["dir".into(), os(&tree("debian-base")?.join("tree"))],
    )?;
    push(
        EXTRAS,
        "system",
        vec!["dir".into(), os(&tree("carte-extras")?.join("tree"))],
    )?;
    push(
        USER,
        "user",
        vec!["dir".into(), os(&tree("user-home")?.join("tree"))],
    )?;
    // The writable user layer: one marker, made here (it needs no recipe).
    let notes_tree = dir.join("notes-tree");
    std::fs::create_dir_all(&notes_tree).map_err(io("creating the notes tree"))?;
    std::fs::write(
        notes_tree.join(NOTES_MARKER),
        "carte writable user layer alice-notes\n",
    )
    .map_err(io("writing the notes marker"))?;
    push(
        NOTES,
        "user",
        vec![
            "dir".into(),
            os(&notes_tree),
            "--mount-point".into(),
            NOTES_MOUNT.into(),
        ],
    )?;
    for k in [&kernel1, &kernel2] {
        let release = read_release(k)?;
        push(
            KERNEL,
            "kernel",
            vec![
                "kernel".into(),
                "--vmlinuz".into(),
                os(&k.join("vmlinuz")),
                "--modules".into(),
                os(&k.join("tree/usr/lib/modules").join(release)),
            ],
        )?;
    }
    // The project layer: one file, made here (it needs no recipe).
    let project_tree = dir.join("project-tree");
    std::fs::create_dir_all(&project_tree).map_err(io("creating the project tree"))?;
    std::fs::write(
        project_tree.join("hello.txt"),
        format!("{PROJECT_FILE_TEXT}\n"),
    )
    .map_err(io("writing the project file"))?;
    let mut create = Command::new(assets::imaged_bin()?);
    create
        .args(["project", "create", PROJECT, "--data"])
        .arg(&data);
    proc::run(&mut create)?;
    push(
        PROJECT,
        "project",
        vec![
            "dir".into(),
            os(&project_tree),
            "--project".into(),
            PROJECT.into(),
            "--mount-point".into(),
            PROJECT_MOUNT.into(),
            "--lazy".into(),
            "--autostart".into(),
            PROJECT_AUTOSTART.into(),
        ],
    )?;
    let initramfs = assets::carte_initramfs()?;
    let to = data.join("carte/initramfs.cpio.zst");
    std::fs::create_dir_all(data.join("carte")).map_err(io("creating data/carte"))?;
    std::fs::copy(&initramfs, &to).map_err(io(format!("copying {}", initramfs.display())))?;
    Ok(Seed {
        dir: data,
        versions,
        release1,
        release2,
    })
}

/// The seed store, built on first use in this process (a few minutes when the trees are
/// not cached yet, under a minute when they are).
pub fn seed() -> Result<&'static Seed, String> {
    static SEED: OnceLock<Result<Seed, String>> = OnceLock::new();
    SEED.get_or_init(|| make_seed().map_err(|e| format!("building the Debian layers: {e}")))
        .as_ref()
        .map_err(Clone::clone)
}

/// The composed Debian setup named `name`: `kernel` (e.g. `linux@1`), both system layers,
/// the user layer, the writable notes layer at its newest version (the changes the last
/// sync-back stored), a persistent machine layer on the largest disk, synced back to the
/// server at the next boot; `extra_cmdline` goes after the console arguments.
pub fn setup(name: &str, kernel: &str, extra_cmdline: &str) -> String {
    format!(
        "[setup.{name}]\nkernel  = \"{kernel}\"\nlayers  = [\"{BASE}@1\", \"{EXTRAS}@1\"]\n\
         user    = [\"{USER}@1\", \"{NOTES}@latest\"]\ncmdline = \"console=ttyS0 {extra_cmdline}\"\n\
         machine = \"persist\"\nsync    = \"on-next-boot\"\ndisk    = \"largest\"\n"
    )
}

/// [`setup`] plus the lazy project layer.
pub fn setup_with_project(name: &str, kernel: &str, extra_cmdline: &str) -> String {
    format!(
        "{}project = \"{PROJECT}@1\"\n",
        setup(name, kernel, extra_cmdline)
    )
}

/// A Debian boot under TCG takes about 70 s cold; room for a loaded CI host.
pub const BOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
const POWEROFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);
/// What the setup adds to the kernel command line: `carte.report=poweroff` makes the
/// machine power off once it has reported.
pub const CMDLINE: &str = "quiet carte.report=poweroff";

/// What one boot of the composed Debian showed.
#[derive(Debug)]
pub struct Boot {
    /// The `CARTE-REPORT` lines, without the prefix.
    pub report: Vec<String>,
    pub console: String,
    /// Bytes written to the machine's disk during this boot (QEMU's counter).
    pub disk_writes: u64,
    /// When QEMU started and when the report's last line was seen (ms since the epoch).
    pub started_ms: u64,
    pub reported_ms: u64,
}

impl Boot {
    /// The rest of the report line starting with `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.report.iter().find_map(|l| l.strip_prefix(key))
    }

    /// The boot ids the persistent machine layer has recorded, oldest first.
    pub fn persisted_boots(&self) -> Vec<&str> {
        self.value("persist ")
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// The boot ids the writable notes layer has recorded, oldest first.
    pub fn noted_boots(&self) -> Vec<&str> {
        self.value("notes ")
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default()
    }

    pub fn secs(&self) -> f64 {
        self.reported_ms.saturating_sub(self.started_ms) as f64 / 1000.0
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Boots `spec` (which should set `pause_on_poweroff`) until the report's last line,
/// then waits until the guest has powered off and reads its disk write counter.
pub fn boot(lab: &Lab, spec: &MachineSpec, nb: &Netbootd) -> Result<Boot, DebianError> {
    let started_ms = now_ms();
    let mut m = Machine::pxe(lab, spec).map_err(|e| DebianError::Other(e.to_string()))?;
    let got = m.expect_any(
        &["CARTE-REPORT multi-user reached", "Kernel panic"],
        BOOT_TIMEOUT,
    );
    let reported_ms = now_ms();
    let fail = |m: &mut Machine, what: &str| {
        DebianError::Other(format!(
            "{what}\nconsole:\n{}\nnetbootd log:\n{}",
            m.console_text(),
            nb.log()
        ))
    };
    match got {
        Ok((0, _)) => {}
        Ok(_) => return Err(fail(&mut m, "the kernel panicked")),
        Err(e) => return Err(fail(&mut m, &e.to_string())),
    }
    let other = |e: crate::machine::MachineError| DebianError::Other(e.to_string());
    m.wait_powered_off(POWEROFF_TIMEOUT).map_err(other)?;
    let disk_writes = m.disk_write_bytes().map_err(other)?;
    let console = m.console_text();
    Ok(Boot {
        report: report(&console),
        console,
        disk_writes,
        started_ms,
        reported_ms,
    })
}

/// The `CARTE-REPORT ` lines of a console, without the prefix.
pub fn report(console: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| {
            l.split_once("CARTE-REPORT ")
                .map(|(_, r)| r.trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_cut_out_of_console_noise() {
        let console =
            "[  1.0] x\nCARTE-REPORT kernel=6.1\n\x20login: CARTE-REPORT multi-user reached\n";
        assert_eq!(report(console), ["kernel=6.1", "multi-user reached"]);
    }

    #[test]
    fn setup_names_every_layer() {
        let s = setup("deb", "linux@2", "quiet");
        assert!(s.contains("kernel  = \"linux@2\""), "{s}");
        assert!(s.contains("layers  = [\"debian@1\", \"extras@1\"]"), "{s}");
        assert!(
            s.contains("user    = [\"alice-home@1\", \"alice-notes@latest\"]"),
            "{s}"
        );
        assert!(s.contains("cmdline = \"console=ttyS0 quiet\""), "{s}");
    }
}
