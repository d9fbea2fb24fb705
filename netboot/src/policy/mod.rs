//! Boot policy: which setup each machine boots, read from a folder of TOML files.
//!
//! **The policy engine does no network IO.** Loading ([`load`]) turns a folder into a
//! validated [`Policy`] or a list of errors with file and line; selection
//! ([`Policy::select`]) is a pure function of the policy and a machine's [`MachineFacts`];
//! [`watch`] swaps in a new policy only when the whole folder validates, so a bad edit
//! never replaces the good one.

pub mod catalog;
pub mod load;
pub mod select;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

use crate::arch::ClientArch;
use crate::mac::MacAddr;
use imaged::model::ImageRef;

pub use catalog::{CatalogImage, ImageCatalog, MemoryCatalog, NoCatalog};
pub use load::{load_dir, load_dir_with, PolicyError, PolicyErrors};
pub use watch::{watch, watch_with};

/// Built-in setup names that need no `[setup.*]` table.
pub const BUILTIN_SETUPS: [&str; 3] = ["local", "wait", "ignore"];

/// A validated policy: every group names an existing setup, there is exactly one
/// default group, and no two groups of equal specificity can match the same machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    pub setups: BTreeMap<String, Setup>,
    /// Groups in file order; selection picks the most specific match.
    pub groups: Vec<Group>,
    /// Per-machine facts the admin declares: static address reservations and labels.
    pub machines: BTreeMap<MacAddr, MachineEntry>,
}

/// What a setup tells a machine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Boot a kernel over HTTP.
    Boot(BootSpec),
    /// Boot a kernel image with the carte initramfs, which composes the named layers.
    Compose(ComposeSpec),
    /// Boot the local disk (`sanboot` on BIOS, `exit` on UEFI).
    Local,
    /// Park: sleep, then ask again, so a queued setup starts without a power cycle.
    Wait,
    /// Send nothing at all, so another server can boot the machine.
    Ignore,
}

/// A kernel, its initrds and command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSpec {
    /// A path under the data folder (served at `/files/...`) or an absolute http(s) URL.
    pub kernel: String,
    /// Same forms as `kernel`, in order.
    pub initrds: Vec<String>,
    /// Extra kernel command line; carte's own arguments are appended by the renderer.
    pub cmdline: String,
}

impl Answer {
    /// The answer's name in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Answer::Boot(_) => "boot",
            Answer::Compose(_) => "compose",
            Answer::Local => "local",
            Answer::Wait => "wait",
            Answer::Ignore => "ignore",
        }
    }
}

/// A setup made of images: `kernel = "linux@2"`, `layers = [...]` and so on. Every
/// reference was checked against the image catalog when the policy was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComposeSpec {
    /// A kernel image; its `vmlinuz` is booted and its `modules` cpio is an initrd.
    pub kernel: ImageRef,
    /// System images, bottom to top: the read-only lower layers of the root.
    pub layers: Vec<ImageRef>,
    /// User (or temporary) images.
    pub user: Vec<ImageRef>,
    /// A project image.
    pub project: Option<ImageRef>,
    pub machine: MachineLayer,
    pub sync: SyncPolicy,
    /// Which local disk holds the layer cache (or receives the flashed image).
    pub disk: DiskChoice,
    /// Disk mode: this system image's raw whole-disk image is written onto the disk
    /// instead of composing a root; the machine then boots it from the disk (`local`).
    pub flash: Option<ImageRef>,
    /// The policy allows carte-init to overwrite a disk holding foreign data (`wipe =
    /// true`); without it such a disk is never written.
    pub wipe: bool,
    /// Extra kernel command line; carte's own arguments are appended by the renderer.
    pub cmdline: String,
}

impl ComposeSpec {
    /// Every image the setup names.
    pub fn refs(&self) -> impl Iterator<Item = &ImageRef> {
        std::iter::once(&self.kernel)
            .chain(&self.layers)
            .chain(&self.user)
            .chain(&self.project)
            .chain(&self.flash)
    }
}

/// What becomes of the machine's persistent layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MachineLayer {
    /// Kept on the local disk across boots (the default).
    #[default]
    Persist,
    /// Started empty at every boot.
    Ephemeral,
}

/// `disk = ...` of an image setup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DiskChoice {
    /// The largest non-removable disk (the default).
    #[default]
    Largest,
    /// The first non-removable disk in kernel order.
    First,
    /// No disk: the cache lives in RAM for this boot.
    None,
    /// This device (`/dev/vda`).
    Device(String),
}

/// When changes to machine and user layers go back to the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Never (the default).
    #[default]
    Never,
    /// At the start of the next boot, before the layers are mounted.
    OnNextBoot,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    pub name: String,
    pub answer: Answer,
}

/// A group: a selector and the setup it gives to machines that match it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// `name` from the file, or `file.toml:LINE` when it has none (for logs).
    pub name: String,
    pub selector: Selector,
    pub setup: String,
}

/// Conditions a machine must all meet. An empty selector is the default group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub macs: Vec<MacAddr>,
    pub arches: Vec<ClientArch>,
    /// SMBIOS UUIDs, lowercase, hyphenated.
    pub uuids: Vec<String>,
    /// Every label listed must be set on the machine (in `[machine."MAC"]`) to this value.
    pub labels: BTreeMap<String, String>,
}

/// What the admin declares about one machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineEntry {
    /// Static reservation used by full-mode DHCP.
    pub ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What is known about a machine when it asks (from DHCP or from the iPXE request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineFacts {
    pub mac: MacAddr,
    pub arch: Option<ClientArch>,
    /// SMBIOS UUID (DHCP option 97 or iPXE `${uuid}`), lowercase, hyphenated.
    pub uuid: Option<String>,
}

/// The outcome of selection, kept whole so the daemon can log every decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub group: String,
    pub setup: String,
    pub answer: Answer,
}

impl Policy {
    /// Names of the setups that name image `image` (any version), for refusing its
    /// deletion.
    pub fn setups_using(&self, image: &str) -> Vec<String> {
        self.setups
            .values()
            .filter(|s| match &s.answer {
                Answer::Compose(c) => c.refs().any(|r| r.name == image),
                _ => false,
            })
            .map(|s| s.name.clone())
            .collect()
    }

    /// The kernel images setups name: their artefacts are served to machines without a
    /// token (kernels are world-readable by contract).
    pub fn kernel_images(&self) -> BTreeSet<String> {
        self.setups
            .values()
            .filter_map(|s| match &s.answer {
                Answer::Compose(c) => Some(c.kernel.name.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The live policy, shared by the DHCP, TFTP and HTTP services. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PolicyHandle {
    inner: Arc<RwLock<Arc<Policy>>>,
}

impl PolicyHandle {
    pub fn new(policy: Policy) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(policy))),
        }
    }

    /// The policy in force now. Callers hold the returned `Arc` for one request.
    pub fn current(&self) -> Arc<Policy> {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the policy in force (only ever with one that validated).
    pub fn replace(&self, policy: Policy) {
        let mut guard = match self.inner.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(policy);
    }
}
