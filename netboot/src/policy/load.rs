//! Loading a policy folder: every `*.toml` file in it, merged and validated into one
//! [`Policy`], or every problem found, each with file, line and reason.
//!
//! This module reads files and nothing else: it does not watch the folder (see
//! [`super::watch`]) and does not choose setups for machines (see [`super::select`]).
//! Within one file, TOML syntax and unknown keys stop at the first problem (that is what
//! the TOML parser reports); every other check runs over all files and reports all.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use imaged::model::{ImageKind, ImageRef, VersionSpec};

use super::catalog::{ImageCatalog, NoCatalog};
use super::{
    Answer, BootSpec, ComposeSpec, DiskChoice, Group, MachineEntry, MachineLayer, Policy, Selector,
    Setup, SyncPolicy, BUILTIN_SETUPS,
};
use crate::arch::ClientArch;
use crate::mac::MacAddr;

/// One problem in one file, with the line it is on (1-based; 0 when it concerns the
/// whole file or folder, and is then left out of the message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a folder; a policy with any error is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors(pub Vec<PolicyError>);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    setup: BTreeMap<Spanned<String>, RawSetup>,
    #[serde(default)]
    group: Vec<Spanned<RawGroup>>,
    #[serde(default)]
    machine: BTreeMap<Spanned<String>, RawMachine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetup {
    kernel: Option<Spanned<String>>,
    #[serde(default)]
    initrd: Vec<Spanned<String>>,
    #[serde(default)]
    cmdline: String,
    answer: Option<Spanned<String>>,
    /// System images, bottom to top (image kernels only).
    #[serde(default)]
    layers: Vec<Spanned<String>>,
    #[serde(default)]
    user: Vec<Spanned<String>>,
    project: Option<Spanned<String>>,
    machine: Option<Spanned<String>>,
    sync: Option<Spanned<String>>,
    disk: Option<Spanned<String>>,
    /// Disk mode: a system image holding a raw whole-disk image, flashed instead of
    /// composing a root.
    flash: Option<Spanned<String>>,
    /// May carte-init overwrite a disk that holds foreign data?
    wipe: Option<Spanned<bool>>,
}

impl RawSetup {
    /// True when any key that only an image setup takes is set.
    fn has_image_keys(&self) -> bool {
        !self.layers.is_empty()
            || !self.user.is_empty()
            || self.project.is_some()
            || self.machine.is_some()
            || self.sync.is_some()
            || self.disk.is_some()
            || self.flash.is_some()
            || self.wipe.is_some()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    selector: Option<RawMatch>,
    setup: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    mac: Vec<Spanned<String>>,
    #[serde(default)]
    arch: Vec<Spanned<String>>,
    #[serde(default)]
    uuid: Vec<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    ip: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Where something was defined, for messages that point at two places.
#[derive(Clone, Debug)]
struct Origin {
    file: PathBuf,
    line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One parsed file with what is needed to turn byte offsets into lines.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let line = self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        // An error at the very end (after the final newline) belongs to the last line.
        line.min(self.text.lines().count().max(1))
    }

    fn origin<T>(&self, spanned: &Spanned<T>) -> Origin {
        Origin {
            file: self.path.clone(),
            line: self.line_of(spanned.span().start),
        }
    }
}

/// Collects problems as validation goes, so every one is reported.
#[derive(Default)]
struct Problems(Vec<PolicyError>);

impl Problems {
    fn at(&mut self, origin: &Origin, message: impl Into<String>) {
        self.0.push(PolicyError {
            file: origin.file.clone(),
            line: origin.line,
            message: message.into(),
        });
    }
}

/// Reads, merges and validates every policy file in `dir`, with no image store: a setup
/// that names an image is reported as not checkable.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    load_dir_with(dir, &NoCatalog)
}

/// Reads, merges and validates every policy file in `dir`; image references are checked
/// against `catalog` (known image, right kind for the slot, existing version).
pub fn load_dir_with(dir: &Path, catalog: &dyn ImageCatalog) -> Result<Policy, PolicyErrors> {
    let whole = |message: String| {
        PolicyErrors(vec![PolicyError {
            file: dir.to_path_buf(),
            line: 0,
            message,
        }])
    };
    let files = policy_files(dir).map_err(|e| whole(format!("cannot read policy folder: {e}")))?;
    if files.is_empty() {
        return Err(whole(
            "policy folder has no *.toml files (at least a default [[group]] is needed)".into(),
        ));
    }
    let mut problems = Problems::default();
    let mut parsed = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                problems.at(
                    &Origin {
                        file: path,
                        line: 0,
                    },
                    format!("cannot read policy file: {e}"),
                );
                continue;
            }
        };
        let source = Source { path, text };
        match toml::from_str::<RawFile>(&source.text) {
            Ok(raw) => parsed.push((source, raw)),
            Err(e) => {
                let line = e.span().map_or(0, |s| source.line_of(s.start));
                let origin = Origin {
                    file: source.path.clone(),
                    line,
                };
                let message = e.message().trim().replace('\n', "; ");
                problems.at(&origin, message);
            }
        }
    }
    // A file that did not parse may define the setups or the default group others rely
    // on: do not pile guesses on top of its real error.
    let complete = problems.0.is_empty();
    let policy = validate(&parsed, complete, catalog, &mut problems);
    if problems.0.is_empty() {
        Ok(policy)
    } else {
        let mut errors = problems.0;
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        Err(PolicyErrors(errors))
    }
}

/// The policy files of `dir`, sorted by name; editor temp and backup files are skipped.
fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_policy_file_name(name) {
            continue;
        }
        // Every `*.toml` entry counts, whatever it is: a directory, a dangling link or a
        // link loop under a policy name is reported when it is read, never skipped
        // quietly (skipping would drop its groups and reservations without a word).
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// True for `name.toml`; false for `.name.toml.swp`, `name.toml~`, `#name.toml#`,
/// `.#name.toml` and other editor leftovers.
pub(crate) fn is_policy_file_name(name: &str) -> bool {
    name.ends_with(".toml")
        && name.len() > ".toml".len()
        && !name.starts_with('.')
        && !name.starts_with('#')
}

fn validate(
    parsed: &[(Source, RawFile)],
    complete: bool,
    catalog: &dyn ImageCatalog,
    problems: &mut Problems,
) -> Policy {
    let mut policy = Policy::default();
    let setup_names = validate_setups(parsed, catalog, &mut policy, problems);
    validate_machines(parsed, &mut policy, problems);
    validate_groups(parsed, &setup_names, complete, &mut policy, problems);
    policy
}

/// Fills `policy.setups`; returns every setup name declared (valid or not) with where.
fn validate_setups(
    parsed: &[(Source, RawFile)],
    catalog: &dyn ImageCatalog,
    policy: &mut Policy,
    problems: &mut Problems,
) -> HashMap<String, Origin> {
    // Every setup name declared, valid or not, so a broken setup does not also make
    // each group that names it "unknown".
    let mut setup_names: HashMap<String, Origin> = HashMap::new();
    for (src, raw) in parsed {
        for (name, setup) in &raw.setup {
            let origin = src.origin(name);
            let name = name.get_ref();
            if BUILTIN_SETUPS.contains(&name.as_str()) {
                problems.at(
                    &origin,
                    format!("setup name {name:?} is a built-in answer; choose another name"),
                );
                continue;
            }
            if let Some(first) = setup_names.get(name) {
                problems.at(
                    &origin,
                    format!("setup {name:?} is defined twice (first at {first})"),
                );
                continue;
            }
            setup_names.insert(name.clone(), origin.clone());
            if let Some(answer) = setup_answer(src, &origin, name, setup, catalog, problems) {
                policy.setups.insert(
                    name.clone(),
                    Setup {
                        name: name.clone(),
                        answer,
                    },
                );
            }
        }
    }

    setup_names
}

/// Fills `policy.machines`: one entry per MAC, one machine per reserved address.
fn validate_machines(parsed: &[(Source, RawFile)], policy: &mut Policy, problems: &mut Problems) {
    let mut machine_origins: BTreeMap<MacAddr, Origin> = BTreeMap::new();
    let mut reserved: BTreeMap<Ipv4Addr, (MacAddr, Origin)> = BTreeMap::new();
    for (src, raw) in parsed {
        for (key, machine) in &raw.machine {
            let origin = src.origin(key);
            let mac = match key.get_ref().parse::<MacAddr>() {
                Ok(mac) => mac,
                Err(e) => {
                    problems.at(&origin, format!("machine key: {e}"));
                    continue;
                }
            };
            if let Some(first) = machine_origins.get(&mac) {
                problems.at(
                    &origin,
                    format!("machine {mac} is defined twice (first at {first})"),
                );
                continue;
            }
            machine_origins.insert(mac, origin.clone());
            let mut entry = MachineEntry {
                labels: machine.labels.clone(),
                ..MachineEntry::default()
            };
            if let Some(ip) = &machine.ip {
                let at = src.origin(ip);
                match ip.get_ref().parse::<Ipv4Addr>() {
                    Ok(addr) => {
                        if let Some((other, first)) = reserved.get(&addr) {
                            problems.at(
                                &at,
                                format!(
                                    "address {addr} is reserved twice: for {other} at {first} \
                                     and for {mac}"
                                ),
                            );
                        } else {
                            reserved.insert(addr, (mac, at));
                            entry.ip = Some(addr);
                        }
                    }
                    Err(_) => problems.at(&at, format!("invalid IPv4 address {:?}", ip.get_ref())),
                }
            }
            if let Some(hostname) = &machine.hostname {
                if is_hostname(hostname.get_ref()) {
                    entry.hostname = Some(hostname.get_ref().clone());
                } else {
                    problems.at(
                        &src.origin(hostname),
                        format!(
                            "invalid hostname {:?}: use letters, digits, '-' and '.'",
                            hostname.get_ref()
                        ),
                    );
                }
            }
            policy.machines.insert(mac, entry);
        }
    }
}

/// Fills `policy.groups` in file order and checks defaults and overlaps.
fn validate_groups(
    parsed: &[(Source, RawFile)],
    setup_names: &HashMap<String, Origin>,
    complete: bool,
    policy: &mut Policy,
    problems: &mut Problems,
) {
    let mut origins: Vec<Origin> = Vec::new();
    let mut checked: Vec<bool> = Vec::new();
    let mut group_names: HashMap<String, Origin> = HashMap::new();
    for (src, raw) in parsed {
        for group in &raw.group {
            let origin = src.origin(group);
            let group = group.get_ref();
            let name = match &group.name {
                Some(name) => {
                    let at = src.origin(name);
                    if let Some(first) = group_names.get(name.get_ref()) {
                        problems.at(
                            &at,
                            format!(
                                "group name {:?} is used twice (first at {first})",
                                name.get_ref()
                            ),
                        );
                    } else {
                        group_names.insert(name.get_ref().clone(), at);
                    }
                    name.get_ref().clone()
                }
                None => {
                    let file = src.path.file_name().map_or_else(
                        || src.path.display().to_string(),
                        |f| f.to_string_lossy().into_owned(),
                    );
                    format!("{file}:{}", origin.line)
                }
            };
            let setup = group.setup.get_ref();
            if complete
                && !BUILTIN_SETUPS.contains(&setup.as_str())
                && !setup_names.contains_key(setup)
            {
                problems.at(
                    &origin,
                    format!(
                        "group {name:?} names unknown setup {setup:?} (define [setup.{setup}] \
                         or use local, wait or ignore)"
                    ),
                );
            }
            let before = problems.0.len();
            let selector = group
                .selector
                .as_ref()
                .map(|m| selector(src, m, problems))
                .unwrap_or_default();
            // A selector with a bad condition is not a default group nor comparable.
            checked.push(problems.0.len() == before);
            policy.groups.push(Group {
                name,
                selector,
                setup: setup.clone(),
            });
            origins.push(origin);
        }
    }

    check_groups(
        &policy.groups,
        &origins,
        &checked,
        complete,
        parsed,
        problems,
    );
}

/// Exactly one default group, and no two groups of equal weight that could both match.
fn check_groups(
    groups: &[Group],
    origins: &[Origin],
    checked: &[bool],
    complete: bool,
    parsed: &[(Source, RawFile)],
    problems: &mut Problems,
) {
    let defaults: Vec<usize> = (0..groups.len())
        .filter(|i| checked[*i] && groups[*i].selector.weight() == 0)
        .collect();
    match defaults.as_slice() {
        [] if complete => {
            let file = parsed
                .first()
                .map_or_else(PathBuf::new, |(src, _)| src.path.clone());
            problems.at(
                &Origin { file, line: 0 },
                "no default group: add one [[group]] without `match` (for example setup = \"wait\")",
            );
        }
        [] => {}
        [first, rest @ ..] => {
            for i in rest {
                problems.at(
                    &origins[*i],
                    format!(
                        "second default group {:?}: only one group may lack `match` (the first \
                         is {:?} at {})",
                        groups[*i].name, groups[*first].name, origins[*first]
                    ),
                );
            }
        }
    }
    for j in 0..groups.len() {
        for i in 0..j {
            if !checked[i] || !checked[j] {
                continue;
            }
            let (a, b) = (&groups[i].selector, &groups[j].selector);
            let weight = a.weight();
            if weight == 0 || weight != b.weight() || !a.can_overlap(b) {
                continue;
            }
            problems.at(
                &origins[j],
                format!(
                    "groups {:?} at {} and {:?} at {} are equally specific (weight {weight}) and \
                     can match the same machine; make one more specific or their conditions \
                     disjoint",
                    groups[i].name, origins[i], groups[j].name, origins[j]
                ),
            );
        }
    }
}

fn setup_answer(
    src: &Source,
    origin: &Origin,
    name: &str,
    setup: &RawSetup,
    catalog: &dyn ImageCatalog,
    problems: &mut Problems,
) -> Option<Answer> {
    let answer = setup.answer.as_ref().map(|a| (a.get_ref().as_str(), a));
    let non_boot = match answer {
        None | Some(("boot", _)) => None,
        Some(("local", _)) => Some(Answer::Local),
        Some(("wait", _)) => Some(Answer::Wait),
        Some(("ignore", _)) => Some(Answer::Ignore),
        Some((other, at)) => {
            problems.at(
                &src.origin(at),
                format!(
                    "setup {name:?}: unknown answer {other:?} (expected boot, local, wait or ignore)"
                ),
            );
            return None;
        }
    };
    if let Some(answer) = non_boot {
        if setup.kernel.is_some()
            || !setup.initrd.is_empty()
            || !setup.cmdline.is_empty()
            || setup.has_image_keys()
        {
            problems.at(
                origin,
                format!(
                    "setup {name:?}: kernel, initrd, cmdline, layers, user, project, machine, \
                     sync, disk, flash and wipe only apply to answer = \"boot\""
                ),
            );
            return None;
        }
        return Some(answer);
    }
    let Some(kernel) = &setup.kernel else {
        problems.at(
            origin,
            format!("setup {name:?} boots but has no kernel (set kernel, or answer = local, wait or ignore)"),
        );
        return None;
    };
    if is_image_ref(kernel.get_ref()) {
        return compose_answer(src, name, kernel, setup, catalog, problems);
    }
    if setup.has_image_keys() {
        problems.at(
            origin,
            format!(
                "setup {name:?}: layers, user, project, machine, sync, disk, flash and wipe need an \
                 image kernel (kernel = \"name@N\" or \"name@latest\")"
            ),
        );
        return None;
    }
    let mut ok = true;
    for artefact in std::iter::once(kernel).chain(&setup.initrd) {
        if let Err(reason) = check_artefact(artefact.get_ref()) {
            problems.at(
                &src.origin(artefact),
                format!("setup {name:?}: {:?} {reason}", artefact.get_ref()),
            );
            ok = false;
        }
    }
    ok.then(|| {
        Answer::Boot(BootSpec {
            kernel: kernel.get_ref().clone(),
            initrds: setup.initrd.iter().map(|i| i.get_ref().clone()).collect(),
            cmdline: setup.cmdline.clone(),
        })
    })
}

/// True when a kernel value means an image (`name@N`, `name@latest`) rather than a path
/// under data_dir or a URL: it has an `@` and neither a `/` nor a `:`.
fn is_image_ref(value: &str) -> bool {
    value.contains('@') && !value.contains('/') && !value.contains(':')
}

/// Which kinds of image each slot of an image setup takes.
#[derive(Clone, Copy)]
enum Slot {
    Kernel,
    Layers,
    User,
    Project,
    Flash,
}

impl Slot {
    fn key(self) -> &'static str {
        match self {
            Slot::Kernel => "kernel",
            Slot::Layers => "layers",
            Slot::User => "user",
            Slot::Project => "project",
            Slot::Flash => "flash",
        }
    }

    fn takes(self, kind: ImageKind) -> bool {
        match self {
            Slot::Kernel => kind == ImageKind::Kernel,
            Slot::Layers => kind == ImageKind::System,
            Slot::User => matches!(kind, ImageKind::User | ImageKind::Temporary),
            Slot::Project => kind == ImageKind::Project,
            Slot::Flash => kind == ImageKind::System,
        }
    }

    fn wants(self) -> &'static str {
        match self {
            Slot::Kernel => "a kernel image",
            Slot::Layers => "system images",
            Slot::User => "user or temporary images",
            Slot::Project => "a project image",
            Slot::Flash => "a system image (a raw whole-disk image)",
        }
    }
}

/// Parses one image reference and checks it against the catalog: the image exists, its
/// kind fits the slot and the version is there.
fn check_image(
    src: &Source,
    setup: &str,
    slot: Slot,
    value: &Spanned<String>,
    catalog: &dyn ImageCatalog,
    problems: &mut Problems,
) -> Option<ImageRef> {
    let at = src.origin(value);
    let key = slot.key();
    let r: ImageRef = match value.get_ref().parse() {
        Ok(r) => r,
        Err(e) => {
            problems.at(&at, format!("setup {setup:?}: {key}: {e}"));
            return None;
        }
    };
    let image = match catalog.image(&r.name) {
        Ok(Some(image)) => image,
        Ok(None) => {
            problems.at(
                &at,
                format!("setup {setup:?}: {key}: unknown image {:?}", r.name),
            );
            return None;
        }
        Err(why) => {
            problems.at(
                &at,
                format!("setup {setup:?}: {key}: cannot check {r}: {why}"),
            );
            return None;
        }
    };
    if !slot.takes(image.kind) {
        problems.at(
            &at,
            format!(
                "setup {setup:?}: {key}: {} is a {} image; {key} takes {}",
                r.name,
                image.kind,
                slot.wants()
            ),
        );
        return None;
    }
    let missing = match r.version {
        VersionSpec::Exact(n) => (!image.versions.contains(&n)).then(|| {
            let have = image
                .versions
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>();
            let have = if have.is_empty() {
                "none yet".to_string()
            } else {
                have.join(", ")
            };
            format!("image {} has no version {n} (versions: {have})", r.name)
        }),
        VersionSpec::Latest => image
            .versions
            .is_empty()
            .then(|| format!("image {} has no versions yet, so no latest", r.name)),
    };
    if let Some(why) = missing {
        problems.at(&at, format!("setup {setup:?}: {key}: {why}"));
        return None;
    }
    Some(r)
}

/// The answer of a setup whose kernel is an image.
fn compose_answer(
    src: &Source,
    name: &str,
    kernel: &Spanned<String>,
    setup: &RawSetup,
    catalog: &dyn ImageCatalog,
    problems: &mut Problems,
) -> Option<Answer> {
    let before = problems.0.len();
    if let Some(first) = setup.initrd.first() {
        problems.at(
            &src.origin(first),
            format!(
                "setup {name:?}: initrd does not go with an image kernel (carte adds its \
                 initramfs and the kernel's modules itself)"
            ),
        );
    }
    let kernel = check_image(src, name, Slot::Kernel, kernel, catalog, problems);
    let list = |slot: Slot, values: &[Spanned<String>], problems: &mut Problems| {
        values
            .iter()
            .filter_map(|v| check_image(src, name, slot, v, catalog, problems))
            .collect::<Vec<_>>()
    };
    let layers = list(Slot::Layers, &setup.layers, problems);
    let user = list(Slot::User, &setup.user, problems);
    let project = setup
        .project
        .as_ref()
        .and_then(|p| check_image(src, name, Slot::Project, p, catalog, problems));
    let flash = setup
        .flash
        .as_ref()
        .and_then(|f| check_image(src, name, Slot::Flash, f, catalog, problems));
    if let Some(f) = &setup.flash {
        if !setup.layers.is_empty()
            || !setup.user.is_empty()
            || setup.project.is_some()
            || setup.machine.is_some()
            || setup.sync.is_some()
        {
            problems.at(
                &src.origin(f),
                format!(
                    "setup {name:?}: flash writes a whole disk instead of composing a root: \
                     layers, user, project, machine and sync do not go with it"
                ),
            );
        }
        if matches!(
            setup.disk.as_ref().map(|d| d.get_ref().as_str()),
            Some("none")
        ) {
            problems.at(
                &src.origin(f),
                format!("setup {name:?}: flash needs a disk (disk = \"none\")"),
            );
        }
    }
    let wipe = setup.wipe.as_ref().is_some_and(|w| *w.get_ref());
    let machine = match setup.machine.as_ref().map(|m| (m.get_ref().as_str(), m)) {
        None | Some(("persist", _)) => MachineLayer::Persist,
        Some(("ephemeral", _)) => MachineLayer::Ephemeral,
        Some((other, at)) => {
            problems.at(
                &src.origin(at),
                format!(
                    "setup {name:?}: machine = {other:?}: expected \"persist\" or \"ephemeral\""
                ),
            );
            MachineLayer::Persist
        }
    };
    let sync = match setup.sync.as_ref().map(|m| (m.get_ref().as_str(), m)) {
        None | Some(("never", _)) => SyncPolicy::Never,
        Some(("on-next-boot", _)) => SyncPolicy::OnNextBoot,
        Some((other, at)) => {
            problems.at(
                &src.origin(at),
                format!("setup {name:?}: sync = {other:?}: expected \"never\" or \"on-next-boot\""),
            );
            SyncPolicy::Never
        }
    };
    let disk = match setup.disk.as_ref().map(|d| (d.get_ref().as_str(), d)) {
        None | Some(("largest", _)) => DiskChoice::Largest,
        Some(("first", _)) => DiskChoice::First,
        Some(("none", _)) => DiskChoice::None,
        Some((dev, _)) if is_device(dev) => DiskChoice::Device(dev.to_string()),
        Some((other, at)) => {
            problems.at(
                &src.origin(at),
                format!(
                    "setup {name:?}: disk = {other:?}: expected \"largest\", \"first\", \
                     \"none\" or a device such as \"/dev/vda\""
                ),
            );
            DiskChoice::Largest
        }
    };
    if problems.0.len() != before {
        return None;
    }
    Some(Answer::Compose(ComposeSpec {
        kernel: kernel?,
        layers,
        user,
        project,
        machine,
        sync,
        disk,
        flash,
        wipe,
        cmdline: setup.cmdline.clone(),
    }))
}

/// `/dev/NAME` with a plain device name (letters, digits).
fn is_device(value: &str) -> bool {
    value.strip_prefix("/dev/").is_some_and(|n| {
        !n.is_empty() && n.len() <= 32 && n.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A kernel or initrd is an http(s) URL or a relative path that stays under data_dir.
fn check_artefact(value: &str) -> Result<(), &'static str> {
    if value.starts_with("http://") || value.starts_with("https://") {
        return Ok(());
    }
    if value.contains("://") {
        return Err("is not a path under data_dir nor an http(s) URL");
    }
    if value.is_empty() {
        return Err("is empty");
    }
    if value.starts_with('/') {
        return Err("is absolute; give a path relative to data_dir");
    }
    if value.contains('\\') {
        return Err("contains a backslash; use '/'");
    }
    if value.split('/').any(|part| part == "..") {
        return Err("contains '..'; it must stay under data_dir");
    }
    Ok(())
}

fn selector(src: &Source, raw: &RawMatch, problems: &mut Problems) -> Selector {
    let mut sel = Selector {
        labels: raw.labels.clone(),
        ..Selector::default()
    };
    for mac in &raw.mac {
        match mac.get_ref().parse::<MacAddr>() {
            Ok(m) => sel.macs.push(m),
            Err(e) => problems.at(&src.origin(mac), format!("match.mac: {e}")),
        }
    }
    for arch in &raw.arch {
        match ClientArch::from_name(arch.get_ref()) {
            Some(a) => sel.arches.push(a),
            None => problems.at(
                &src.origin(arch),
                format!(
                    "match.arch: unknown architecture {:?} (expected bios, efi-ia32, efi-x64, \
                     efi-arm32, efi-arm64, efi-x64-http or efi-arm64-http)",
                    arch.get_ref()
                ),
            ),
        }
    }
    for uuid in &raw.uuid {
        match normalise_uuid(uuid.get_ref()) {
            Some(u) => sel.uuids.push(u),
            None => problems.at(
                &src.origin(uuid),
                format!(
                    "match.uuid: invalid SMBIOS UUID {:?} (expected 8-4-4-4-12 hex digits)",
                    uuid.get_ref()
                ),
            ),
        }
    }
    sel
}

/// Lowercase hyphenated form of a UUID given in any case, or `None` if it is not one.
pub(crate) fn normalise_uuid(s: &str) -> Option<String> {
    let s = s.trim();
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups
        .iter()
        .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    (lens == [8, 4, 4, 4, 12] && hex).then(|| s.to_ascii_lowercase())
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_names() {
        for (name, want) in [
            ("a.toml", true),
            ("10-racks.toml", true),
            (".a.toml.swp", false),
            (".a.toml", false),
            ("a.toml~", false),
            ("#a.toml#", false),
            (".#a.toml", false),
            ("a.toml.bak", false),
            (".toml", false),
            ("readme.md", false),
        ] {
            assert_eq!(is_policy_file_name(name), want, "{name}");
        }
    }

    #[test]
    fn artefact_paths() {
        for (value, ok) in [
            ("kernels/vmlinuz", true),
            ("vmlinuz", true),
            ("http://198.51.100.1/vmlinuz", true),
            ("https://example.org/k", true),
            ("/boot/vmlinuz", false),
            ("../etc/passwd", false),
            ("kernels/../../x", false),
            ("kernels\\x", false),
            ("ftp://example.org/k", false),
            ("", false),
            ("kernels/..x", true),
        ] {
            assert_eq!(check_artefact(value).is_ok(), ok, "{value}");
        }
    }

    #[test]
    fn uuids() {
        assert_eq!(
            normalise_uuid("4C4C4544-0042-3510-8052-B4C04F4A4B31").as_deref(),
            Some("4c4c4544-0042-3510-8052-b4c04f4a4b31")
        );
        for bad in [
            "",
            "4c4c4544004235108052b4c04f4a4b31",
            "4c4c4544-0042-3510-8052-b4c04f4a4b3g",
        ] {
            assert_eq!(normalise_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        for (name, ok) in [
            ("node1", true),
            ("node-1.lab", true),
            ("", false),
            ("-node", false),
            ("no de", false),
            ("a..b", false),
        ] {
            assert_eq!(is_hostname(name), ok, "{name}");
        }
    }
}
