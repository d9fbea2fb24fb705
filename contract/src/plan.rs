//! The plan: everything a machine needs to build its root for one boot. netbootd renders it
//! from the machine's setup; carte-init and carte-shim only read it.
//!
//! Deliberately absent: any policy or selection logic (the server decides), and any local
//! path (where the machine keeps its cache is the machine's business).

use serde::{Deserialize, Serialize};

/// The init a machine execs when the plan names none.
pub const DEFAULT_INIT: &str = "/sbin/init";

fn default_init() -> String {
    DEFAULT_INIT.to_string()
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The plan served to one machine for one boot (`GET` [`crate::plan_path`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Who this plan is for; the machine checks the MAC against its boot NIC.
    pub machine: MachineId,
    /// Whether the machine composes its root from layers or flashes a whole disk.
    pub mode: Mode,
    /// Which local disk holds the carte partition, and whether it may be initialised.
    pub disk: DiskRule,
    /// The layers of this setup, bottom to top (kernel modules first, then system layers,
    /// then user/project layers). In `disk` mode: exactly one `raw` layer, the disk image.
    pub layers: Vec<Layer>,
    /// Whether the overlay upper (the machine layer) persists on the local disk.
    pub machine_layer: MachineLayerPolicy,
    /// What the machine uploads as new versions before this plan replaces it. Empty when
    /// the setup does not ask for sync-back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_back: Vec<SyncBack>,
    /// The last machine layer the server holds for this machine (a `tar` layer, the newest
    /// version of its machine image), set when the setup persists and syncs its machine
    /// layer. The machine unpacks it into its machine layer only when its disk has none
    /// (a new or re-initialised disk); otherwise its own, newer, layer wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_restore: Option<Layer>,
    /// The init carte-shim execs in the target root; `/sbin/init` when the setup names none.
    #[serde(default = "default_init")]
    pub init: String,
    /// The per-boot token for events and uploads (`Authorization: Bearer`). Set by the
    /// server for every plan; the same token the iPXE script put on the kernel command line.
    pub token: String,
    /// Full URL where events are posted ([`crate::events_path`] on the server). Set by the
    /// server so carte-shim, which has no command line of its own, can report.
    pub events_url: String,
}

/// Identity of the machine a plan is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineId {
    /// MAC of the boot NIC, lowercase, colon separated (`52:54:00:00:00:01`).
    pub mac: String,
    /// The name the policy gives the machine, when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How the machine's root is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Layers are cached locally and composed with overlayfs (the normal case).
    Compose,
    /// A whole-disk image is written onto the disk; the machine then boots locally.
    Disk,
}

/// Which disk carte uses, and whether it may be initialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskRule {
    /// How the disk is chosen.
    pub select: DiskSelect,
    /// Whether carte may create its partition on a disk that holds foreign data. A blank
    /// disk is always initialised; a disk with foreign data only when this is true.
    #[serde(default)]
    pub may_wipe: bool,
}

/// How the disk is chosen: a named device or a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskSelect {
    /// This device, as the kernel names it (`/dev/vda`, `/dev/nvme0n1`).
    Device(String),
    /// The largest non-removable disk.
    Largest,
    /// The first non-removable disk in kernel order.
    First,
    /// No disk: the cache lives in RAM for this boot (diskless machines).
    None,
}

/// One layer of the setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Image name in the store (`debian-bookworm`).
    pub name: String,
    /// Image version in the store; versions are immutable.
    pub version: u64,
    /// What the store promises about the image and how the machine uses it.
    pub kind: LayerKind,
    /// The filesystem inside the (decoded) layer file.
    pub format: Format,
    /// How the bytes are encoded on the wire.
    pub encoding: Encoding,
    /// Bytes sent over HTTP (after encoding): the Content-Length of a full GET.
    pub size: u64,
    /// Bytes of the decoded layer file as written to the cache. Equals `size` when the
    /// encoding is `none`.
    pub uncompressed_size: u64,
    /// sha256 (lowercase hex) of the bytes sent; also the blob's ETag on the server.
    pub sha256: String,
    /// sha256 (lowercase hex) of the decoded file as written; the machine's cache names the
    /// file by it. Equals `sha256` when the encoding is `none`.
    pub sha256_written: String,
    /// Where to GET the bytes (absolute URL; Range requests must be honoured).
    pub url: String,
    /// Where the layer is mounted in the target root. `None` for kernel and system layers,
    /// which become overlay lowers of `/`; set for user/project layers mounted read-write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    /// Not needed to reach init: carte-shim fetches and mounts it after boot.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lazy: bool,
    /// A command carte-shim runs once booted (project layers), inside the target root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<String>,
    /// The changes the server holds for this writable layer (a `tar` version of the same
    /// image, synced back from a machine's upper; `version` above is the version those
    /// changes apply on top of). The machine unpacks it into the layer's upper only when
    /// its disk has none for this layer; otherwise its own, newer, upper wins. Set only
    /// on a layer with a mount point that is not lazy, when the setup syncs back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<Layer>>,
}

impl Layer {
    /// Whether carte-init mounts this layer read-write (its own overlay at its mount
    /// point, upper on the machine's disk): a user, temporary or project layer with a
    /// mount point that is needed to reach init. Lazy layers are mounted read-only by
    /// carte-shim after boot, and layers without a mount point are read-only lowers of `/`.
    pub fn writable(&self) -> bool {
        self.mount_point.is_some()
            && !self.lazy
            && matches!(
                self.kind,
                LayerKind::User | LayerKind::Temporary | LayerKind::Project
            )
    }
}

/// Image kinds (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// The kernel's modules as a read-only layer (the kernel itself is booted by iPXE).
    Kernel,
    /// Base OS or add-on: a read-only lower of the root overlay.
    System,
    /// A user's files: read-only lower, or read-write at its mount point.
    User,
    /// A machine's persistent state as last backed up.
    Machine,
    /// Scratch data with an expiry; used like `user`.
    Temporary,
    /// Shared project data; read-write at its mount point, may carry `autostart`.
    Project,
}

/// Filesystem inside a decoded layer file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// EROFS image (read-only).
    Erofs,
    /// ext4 image.
    Ext4,
    /// squashfs image (read-only).
    Squashfs,
    /// Raw bytes: a whole-disk image in `disk` mode; never mounted.
    Raw,
    /// A tar of an overlay upper (a machine layer backup, or the changes of a writable
    /// layer); unpacked, never mounted.
    Tar,
}

impl Format {
    /// The kernel filesystem type to mount this format with; `None` for `raw`.
    pub fn fstype(self) -> Option<&'static str> {
        match self {
            Format::Erofs => Some("erofs"),
            Format::Ext4 => Some("ext4"),
            Format::Squashfs => Some("squashfs"),
            Format::Raw | Format::Tar => None,
        }
    }
}

/// Wire encoding of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// zstd stream; decoded while downloading.
    Zstd,
    /// Sent as is.
    None,
}

/// What happens to the overlay upper across boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineLayerPolicy {
    /// Kept on the local disk across boots and re-flashes.
    Persist,
    /// A tmpfs, lost at the next boot.
    Ephemeral,
}

/// One thing to upload before the new plan replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBack {
    /// What to upload.
    pub target: SyncTarget,
    /// Where to PUT the new version (with the plan's token).
    pub upload_url: String,
}

/// The machine layer, or one writable layer by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncTarget {
    /// The overlay upper of the last session.
    Machine,
    /// The changes to the writable layer of this name.
    Layer(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, kind: LayerKind) -> Layer {
        Layer {
            name: name.into(),
            version: 3,
            kind,
            format: Format::Erofs,
            encoding: Encoding::Zstd,
            size: 10,
            uncompressed_size: 20,
            sha256: "a".repeat(64),
            sha256_written: "b".repeat(64),
            url: format!("http://192.0.2.1:8080/blobs/{name}"),
            mount_point: None,
            lazy: false,
            autostart: None,
            restore: None,
        }
    }

    fn plan() -> Plan {
        let mut project = layer("exp", LayerKind::Project);
        project.mount_point = Some("/srv/exp".into());
        project.autostart = Some("/srv/exp/run".into());
        project.lazy = true;
        Plan {
            machine: MachineId {
                mac: "52:54:00:00:00:01".into(),
                name: Some("node1".into()),
            },
            mode: Mode::Compose,
            disk: DiskRule {
                select: DiskSelect::Device("/dev/vda".into()),
                may_wipe: false,
            },
            layers: vec![
                layer("linux-6.1", LayerKind::Kernel),
                layer("debian", LayerKind::System),
                project,
            ],
            machine_layer: MachineLayerPolicy::Persist,
            sync_back: vec![SyncBack {
                target: SyncTarget::Machine,
                upload_url: "http://192.0.2.1:8080/up".into(),
            }],
            machine_restore: Some(Layer {
                format: Format::Tar,
                ..layer("machine-52-54-00-00-00-01", LayerKind::Machine)
            }),
            init: "/lib/systemd/systemd".into(),
            token: "tok".into(),
            events_url: "http://192.0.2.1:8080/api/v1/machines/52:54:00:00:00:01/events".into(),
        }
    }

    #[test]
    fn plan_round_trips() {
        let p = plan();
        let json = serde_json::to_string(&p).expect("serialise");
        let back: Plan = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, p);
    }

    #[test]
    fn wire_shape_is_stable() {
        let json = serde_json::to_value(plan()).expect("serialise");
        assert_eq!(json["mode"], "compose");
        assert_eq!(json["disk"]["select"]["device"], "/dev/vda");
        assert_eq!(json["layers"][0]["kind"], "kernel");
        assert_eq!(json["layers"][0]["encoding"], "zstd");
        assert_eq!(json["sync_back"][0]["target"], "machine");
        // Optional fields left unset are omitted.
        assert!(json["layers"][0].get("mount_point").is_none());
        assert!(json["layers"][0].get("lazy").is_none());
    }

    #[test]
    fn defaults_apply_when_omitted() {
        let json = r#"{
            "machine": {"mac": "52:54:00:00:00:02"},
            "mode": "disk",
            "disk": {"select": "largest"},
            "layers": [],
            "machine_layer": "ephemeral",
            "token": "t",
            "events_url": "http://192.0.2.1/e"
        }"#;
        let p: Plan = serde_json::from_str(json).expect("parse");
        assert_eq!(p.init, DEFAULT_INIT);
        assert!(!p.disk.may_wipe);
        assert_eq!(p.disk.select, DiskSelect::Largest);
        assert!(p.sync_back.is_empty());
        assert_eq!(p.machine.name, None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(plan()).expect("serialise");
        v["layers"][0]["compression"] = "zstd".into();
        let err = serde_json::from_value::<Plan>(v).expect_err("unknown layer field");
        assert!(err.to_string().contains("compression"), "{err}");

        let mut v = serde_json::to_value(plan()).expect("serialise");
        v["colour"] = "blue".into();
        assert!(serde_json::from_value::<Plan>(v).is_err());
    }

    #[test]
    fn a_layer_restore_round_trips_and_only_mounted_non_lazy_data_layers_are_writable() {
        let mut home = layer("alice-home", LayerKind::User);
        assert!(!home.writable(), "no mount point: a lower of /");
        home.mount_point = Some("/home/alice".into());
        assert!(home.writable());
        home.restore = Some(Box::new(Layer {
            version: 4,
            format: Format::Tar,
            ..layer("alice-home", LayerKind::User)
        }));
        let mut p = plan();
        p.layers.push(home);
        let json = serde_json::to_value(&p).expect("serialise");
        assert_eq!(json["layers"][3]["restore"]["format"], "tar");
        assert_eq!(json["layers"][3]["restore"]["version"], 4);
        assert!(json["layers"][0].get("restore").is_none());
        let back: Plan = serde_json::from_value(json).expect("parse");
        assert_eq!(back, p);

        let exp = &plan().layers[2];
        assert!(exp.mount_point.is_some() && exp.lazy);
        assert!(
            !exp.writable(),
            "lazy layers are mounted read-only by the shim"
        );
        let mut system = layer("debian", LayerKind::System);
        system.mount_point = Some("/opt".into());
        assert!(!system.writable());
    }

    #[test]
    fn fstype_per_format() {
        assert_eq!(Format::Erofs.fstype(), Some("erofs"));
        assert_eq!(Format::Squashfs.fstype(), Some("squashfs"));
        assert_eq!(Format::Ext4.fstype(), Some("ext4"));
        assert_eq!(Format::Raw.fstype(), None);
    }
}
