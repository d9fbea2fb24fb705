//! Contract types of the image store, shared with netbootd and carte-init: image kinds,
//! image references (`name@N`, `name@latest`), digests, layer metadata, named artefacts,
//! roles.
//!
//! These types only describe; they do no IO and enforce no access rule (that is
//! `access.rs`). Every input type rejects unknown fields so a typo never passes silently.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an image is and therefore what the server promises about it (DESIGN.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// A kernel: its versions carry the `vmlinuz` and `modules` artefacts and a release.
    Kernel,
    /// A base OS or add-on; only admins publish it.
    System,
    /// A user's own files; only its owner reads (admins too) and writes it.
    User,
    /// The persistent layer of one machine, created on its first boot; owner `system`.
    Machine,
    /// Scratch data; has an expiry after which `gc` deletes it.
    Temporary,
    /// Shared by the members of one project; may carry `autostart`.
    Project,
}

impl ImageKind {
    pub const ALL: [ImageKind; 6] = [
        ImageKind::Kernel,
        ImageKind::System,
        ImageKind::User,
        ImageKind::Machine,
        ImageKind::Temporary,
        ImageKind::Project,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Kernel => "kernel",
            ImageKind::System => "system",
            ImageKind::User => "user",
            ImageKind::Machine => "machine",
            ImageKind::Temporary => "temporary",
            ImageKind::Project => "project",
        }
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: `{:<10}` in a table must line up.
        f.pad(self.as_str())
    }
}

impl FromStr for ImageKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ModelError::Kind(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("bad image name {0:?}: use 1-64 of a-z 0-9 . _ -, starting with a letter or digit")]
    Name(String),
    #[error("bad image reference {0:?}: expected name@N or name@latest")]
    Ref(String),
    #[error("bad sha256 {0:?}: expected 64 lowercase hex digits")]
    Digest(String),
    #[error("unknown image kind {0:?}")]
    Kind(String),
    #[error("unknown artefact {0:?}: expected layer, vmlinuz or modules")]
    Artefact(String),
    #[error("unknown role {0:?}: expected admin or user")]
    Role(String),
}

/// Checks an image, project or user name: 1-64 of `a-z 0-9 . _ -`, first a letter or digit.
/// Names appear in URLs and file names, so nothing else is allowed.
pub fn check_name(name: &str) -> Result<(), ModelError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ModelError::Name(name.to_string()))
    }
}

/// Which version of an image a reference means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VersionSpec {
    /// Version N (N >= 1). Versions are immutable, so this always means the same bytes.
    Exact(u32),
    /// The highest version at the time of resolving.
    Latest,
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Exact(n) => write!(f, "{n}"),
            VersionSpec::Latest => f.write_str("latest"),
        }
    }
}

impl FromStr for VersionSpec {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(VersionSpec::Latest);
        }
        // Digits only: u32::from_str would also take "+3".
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
            return Err(ModelError::Ref(s.to_string()));
        }
        s.parse::<u32>()
            .map(VersionSpec::Exact)
            .map_err(|_| ModelError::Ref(s.to_string()))
    }
}

/// `name@N` or `name@latest`, as policies and the CLI write it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub name: String,
    pub version: VersionSpec,
}

impl FromStr for ImageRef {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = s
            .split_once('@')
            .ok_or_else(|| ModelError::Ref(s.to_string()))?;
        check_name(name)?;
        let version = version
            .parse()
            .map_err(|_| ModelError::Ref(s.to_string()))?;
        Ok(ImageRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A sha256 digest as 64 lowercase hex digits: the name of a blob and an HTTP ETag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn from_bytes(bytes: &[u8]) -> Digest {
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        Digest(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Digest(s.to_string()))
        } else {
            Err(ModelError::Digest(s.to_string()))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Filesystem format of a layer as written on the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerFormat {
    Erofs,
    Ext4,
    Squashfs,
    /// A whole bootable disk, written as it is (`disk` mode).
    Raw,
    /// An overlay upper packed as a tar (whiteouts and xattrs kept): the backup of a
    /// machine layer that carte-init syncs back; never mounted.
    Tar,
}

/// Transfer encoding of the `layer` artefact: what the machine must undo while writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Zstd,
    #[default]
    None,
}

/// A named file of a version. Every version has a `layer`; kernel versions also have the
/// `vmlinuz` iPXE boots and the `modules` newc cpio carte-init loads modules from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtefactName {
    Layer,
    Vmlinuz,
    Modules,
}

impl ArtefactName {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtefactName::Layer => "layer",
            ArtefactName::Vmlinuz => "vmlinuz",
            ArtefactName::Modules => "modules",
        }
    }
}

impl fmt::Display for ArtefactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArtefactName {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "layer" => Ok(ArtefactName::Layer),
            "vmlinuz" => Ok(ArtefactName::Vmlinuz),
            "modules" => Ok(ArtefactName::Modules),
            _ => Err(ModelError::Artefact(s.to_string())),
        }
    }
}

/// One content-addressed file of a version, as sent over the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artefact {
    /// sha256 of the bytes sent (the blob's name, the download's ETag).
    pub sha256: Digest,
    /// Size in bytes of what is sent.
    pub size: u64,
}

/// How a machine writes and uses the `layer` artefact of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerMeta {
    pub format: LayerFormat,
    #[serde(default)]
    pub encoding: Encoding,
    /// Size after decoding, i.e. of what is written to the machine's disk; absent when the
    /// client did not say (then, with encoding `none`, it equals the sent size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
    /// sha256 of what is written (after decoding): what the machine verifies its cache
    /// against. With encoding `none` it equals the sent sha256 and may be left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_sha256: Option<Digest>,
    /// Where a user or project layer is mounted read-write in the target root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    /// Not needed to reach init: the shim fetches it after boot.
    #[serde(default)]
    pub lazy: bool,
    /// Command the shim runs once booted (project images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<String>,
    /// `uname -r` of the kernel (kernel images only, required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// For a `tar` of changes (a writable user, temporary or project layer's upper, synced
    /// back from a machine): the version of the same image those changes apply on top of.
    /// That version is what machines mount; this one is unpacked into the layer's upper.
    /// Absent for every other version (kept in the version row's JSON like the rest, so
    /// older rows simply have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u32>,
}

impl LayerMeta {
    /// Plain metadata for a layer of `format`, unencoded, no clauses.
    pub fn plain(format: LayerFormat) -> LayerMeta {
        LayerMeta {
            format,
            encoding: Encoding::None,
            uncompressed_size: None,
            written_sha256: None,
            mount_point: None,
            lazy: false,
            autostart: None,
            kernel_release: None,
            base: None,
        }
    }

    /// Metadata of a `tar` of changes that applies on top of version `base`.
    pub fn changes(base: u32) -> LayerMeta {
        LayerMeta {
            base: Some(base),
            ..LayerMeta::plain(LayerFormat::Tar)
        }
    }
}

/// What a client sends to record a version once its artefacts are uploaded as blobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    pub layer: LayerMeta,
    /// Named artefacts; `layer` is always required.
    pub artefacts: BTreeMap<ArtefactName, Artefact>,
}

/// A recorded, immutable version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub image: String,
    pub number: u32,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub layer: LayerMeta,
    pub artefacts: BTreeMap<ArtefactName, Artefact>,
}

/// An image: a name, an owner, a kind and (separately stored) its versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    pub kind: ImageKind,
    /// User name of the owner; `system` for machine images.
    pub owner: String,
    /// Project whose members share it (project images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Seconds since the Unix epoch after which `gc` deletes it (temporary images only,
    /// required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    pub created_at: u64,
}

/// An image with its versions, as `show` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDetails {
    pub image: Image,
    /// Ascending; the last one is what `@latest` means.
    pub versions: Vec<Version>,
}

/// What a client sends to create an image; the owner is the caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewImage {
    pub name: String,
    pub kind: ImageKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// A project: a named group whose members share its project images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: String,
    pub owner: String,
    /// Member user names, the owner included, sorted.
    pub members: Vec<String>,
}

/// What a token may do beyond what ownership gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

impl FromStr for Role {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            _ => Err(ModelError::Role(s.to_string())),
        }
    }
}

/// A token as listed: never the secret, which is only shown once at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// The user name the token acts as.
    pub name: String,
    pub role: Role,
    pub created_at: u64,
}

/// The answer to a token creation: the only time the secret is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    /// `carte_<random>`; only its sha256 is stored.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ref(input: &str, expected: Option<(&str, VersionSpec)>) {
        let got = input.parse::<ImageRef>();
        match expected {
            Some((name, version)) => {
                let r = got.expect("valid ref");
                assert_eq!((r.name.as_str(), r.version), (name, version), "{input}");
                assert_eq!(r.to_string(), input, "display round-trips");
            }
            None => assert!(got.is_err(), "{input} should be rejected, got {got:?}"),
        }
    }

    #[test]
    fn image_refs() {
        check_ref("debian@7", Some(("debian", VersionSpec::Exact(7))));
        check_ref("x11@latest", Some(("x11", VersionSpec::Latest)));
        check_ref(
            "linux-6.1.0_a.b@12",
            Some(("linux-6.1.0_a.b", VersionSpec::Exact(12))),
        );
        for bad in [
            "debian",
            "debian@",
            "@3",
            "debian@0",
            "debian@07",
            "debian@+3",
            "debian@-1",
            "debian@Latest",
            "Debian@1",
            "-x@1",
            ".x@1",
            "a/b@1",
            "a b@1",
            "a@1@2",
            "a@99999999999",
        ] {
            check_ref(bad, None);
        }
        let long = format!("{}@1", "a".repeat(65));
        check_ref(&long, None);
    }

    #[test]
    fn digests() {
        let d = Digest::from_bytes(&[0xab, 0x01, 0xff]);
        assert_eq!(d.as_str(), "ab01ff");
        let ok = "a".repeat(64);
        assert!(ok.parse::<Digest>().is_ok());
        for bad in [
            "a".repeat(63),
            "A".repeat(64),
            "g".repeat(64),
            String::new(),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_rejects_unknown_fields() {
        let ok = r#"{"name":"a","kind":"user"}"#;
        assert!(serde_json::from_str::<NewImage>(ok).is_ok());
        let bad = r#"{"name":"a","kind":"user","colour":"red"}"#;
        assert!(serde_json::from_str::<NewImage>(bad).is_err());
        let bad_meta = r#"{"format":"erofs","lazzy":true}"#;
        assert!(serde_json::from_str::<LayerMeta>(bad_meta).is_err());
        let bad_kind = r#"{"name":"a","kind":"users"}"#;
        assert!(serde_json::from_str::<NewImage>(bad_kind).is_err());
    }

    #[test]
    fn new_version_round_trips() {
        let mut artefacts = BTreeMap::new();
        artefacts.insert(
            ArtefactName::Layer,
            Artefact {
                sha256: Digest::from_bytes(&[0; 32]),
                size: 3,
            },
        );
        let v = NewVersion {
            layer: LayerMeta::plain(LayerFormat::Erofs),
            artefacts,
        };
        let json = serde_json::to_string(&v).expect("serialise");
        assert!(json.contains(r#""layer":{"sha256""#), "{json}");
        let back: NewVersion = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, v);
    }
}
