//! The boot sequence, step by step: early mounts → command line → modules → network →
//! plan → disk (or, in disk mode, flash and reboot) → sync-back → cache → fetch →
//! compose → switch root. Each step's failure
//! is a [`BootError`] variant naming the step; progress and failures go to the console
//! (through `say`) and, once the server is known, as events.
//!
//! It never panics and never loops forever by itself except while waiting for the plan
//! server; `main` decides what happens after an error (retry or reboot).

use crate::bench;
use crate::cache::{self, Cache};
use crate::cmdline::{self, BootArgs};
use crate::compose::{self, Layout};
use crate::disk;
use crate::error::BootError;
use crate::events::Reporter;
use crate::fetch;
use crate::fill;
use crate::flash;
use crate::http::{self, Timeouts};
use crate::modules::{self, ModuleIndex};
use crate::net;
use crate::plan;
use crate::restore;
use crate::syncback;
use crate::sys::{Errno, MsFlags, Sys};
use carte_contract::{Event, Mode, Plan, Stage};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the boot looks for things; tests point these into a temporary folder.
#[derive(Debug, Clone)]
pub struct Env {
    /// `/proc` (for `cmdline`).
    pub proc_root: PathBuf,
    /// `/sys`.
    pub sys_root: PathBuf,
    /// `/lib/modules`.
    pub modules_root: PathBuf,
    /// `/dev` (the disk step opens whole disks below it).
    pub dev_root: PathBuf,
    /// The `mke2fs` copied into the initramfs.
    pub mke2fs: PathBuf,
    /// Composition layout.
    pub layout: Layout,
    /// Pause between plan attempts (doubles up to 30 s).
    pub plan_backoff: Duration,
    /// How many times one layer download is attempted.
    pub fetch_attempts: u32,
    /// What the kernel passed to /init beyond its own parameters; handed on to the real
    /// init through carte-shim.
    pub init_args: Vec<String>,
}

impl Default for Env {
    fn default() -> Env {
        Env {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            modules_root: PathBuf::from("/lib/modules"),
            dev_root: PathBuf::from("/dev"),
            mke2fs: PathBuf::from("/sbin/mke2fs"),
            layout: Layout::default(),
            plan_backoff: Duration::from_secs(1),
            fetch_attempts: 3,
            init_args: Vec::new(),
        }
    }
}

impl Env {
    /// What the disk step needs of this environment.
    pub fn disk_paths(&self) -> disk::DiskPaths {
        disk::DiskPaths {
            sys_root: self.sys_root.clone(),
            dev_root: self.dev_root.clone(),
            mke2fs: self.mke2fs.clone(),
            ..disk::DiskPaths::default()
        }
    }
}

/// The filesystems mounted first: (fstype, target, flags, data).
pub const EARLY_MOUNTS: [(&str, &str, MsFlags, &str); 4] = [
    (
        "proc",
        "/proc",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    (
        "sysfs",
        "/sys",
        MsFlags::MS_NOSUID
            .union(MsFlags::MS_NODEV)
            .union(MsFlags::MS_NOEXEC),
        "",
    ),
    ("devtmpfs", "/dev", MsFlags::MS_NOSUID, "mode=0755"),
    (
        "tmpfs",
        "/run",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=0755",
    ),
];

/// Step 1: mount /proc /sys /dev /run (already mounted is fine: the boot may be a retry)
/// and make sure the console is open.
pub fn early_mounts(sys: &mut dyn Sys) -> Result<(), BootError> {
    for (fstype, target, flags, data) in EARLY_MOUNTS {
        let t = Path::new(target);
        let err = |errno| BootError::EarlyMount {
            fstype,
            target: t.to_path_buf(),
            errno,
        };
        sys.mkdir_all(t).map_err(err)?;
        match sys.mount(fstype, t, fstype, flags, data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => return Err(err(e)),
        }
    }
    // Without a console we would be mute, not broken: carry on either way.
    let _ = sys.open_console(Path::new("/dev/console"));
    Ok(())
}

/// Step 1b: read and parse the command line.
pub fn read_cmdline(env: &Env) -> Result<BootArgs, BootError> {
    let path = env.proc_root.join("cmdline");
    let text = std::fs::read_to_string(&path).map_err(|source| BootError::ReadCmdline {
        path: path.clone(),
        source,
    })?;
    Ok(cmdline::parse(&text)?)
}

/// Step 2: load the modules the hardware needs. A kernel without a modules folder (all
/// built in) is fine.
pub fn load_modules(
    sys: &mut dyn Sys,
    env: &Env,
    say: &mut dyn FnMut(&str),
) -> Result<(), BootError> {
    let release = sys.kernel_release().map_err(BootError::KernelRelease)?;
    let dir = env.modules_root.join(&release);
    if !dir.join("modules.dep").exists() {
        say(&format!(
            "modules: no {}/modules.dep: assuming drivers are built in",
            dir.display()
        ));
        return Ok(());
    }
    let index = ModuleIndex::load(&dir)?;
    let mut report = modules::probe(sys, &index, &dir, &env.sys_root, 10);
    let wanted: Vec<String> = modules::COMPOSE_MODULES
        .iter()
        .map(|m| m.to_string())
        .collect();
    let mut attempted: HashSet<String> = report.loaded.iter().cloned().collect();
    let order = index.load_order(&wanted);
    let more = modules::load(sys, &index, &dir, &order, &mut attempted);
    report.loaded.extend(more.loaded);
    report.failed.extend(more.failed);
    report.missing.extend(more.missing);
    say(&format!("modules: loaded {}", report.loaded.join(" ")));
    if !report.missing.is_empty() {
        say(&format!(
            "modules: not in the modules initrd: {}",
            report.missing.join(" ")
        ));
    }
    for (name, why) in &report.failed {
        say(&format!("modules: {name} failed: {why}"));
    }
    Ok(())
}

/// Step 4: fetch the plan, retrying with backoff while the server cannot give it.
pub fn wait_for_plan(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    args: &BootArgs,
    env: &Env,
    say: &mut dyn FnMut(&str),
) -> (Plan, Vec<u8>) {
    let mut backoff = env.plan_backoff;
    loop {
        match plan::fetch(agent, args) {
            Ok(p) => return p,
            Err(e) => {
                say(&format!(
                    "step 4 (plan): {e}; retrying in {}s",
                    backoff.as_secs()
                ));
                sys.sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Steps 6 and 7: open the cache, make room, download what is missing. Returns the
/// cached file of every boot layer by `sha256_written`.
pub fn fill_cache(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    plan: &Plan,
    env: &Env,
    report: &mut dyn FnMut(Event),
) -> Result<HashMap<String, PathBuf>, BootError> {
    let dir = env.layout.cache_mount.join("cache");
    let (mut cache, repairs) = Cache::open(&dir)?;
    if repairs != cache::Repairs::default() {
        report(Event {
            message: Some(format!(
                "cache repaired: {} entries dropped, {} unverified files removed{}",
                repairs.dropped.len(),
                repairs.removed.len(),
                if repairs.index_reset {
                    ", index reset"
                } else {
                    ""
                }
            )),
            ..Event::stage(Stage::Cache)
        });
    }
    let keep: HashSet<String> = plan
        .layers
        .iter()
        .map(|l| l.sha256_written.clone())
        .collect();
    let layers: Vec<&carte_contract::Layer> = compose::boot_layers(plan).collect();
    fill::ensure(
        sys,
        agent,
        &mut cache,
        &layers,
        &keep,
        fill::How {
            stage: Stage::Fetch,
            attempts: env.fetch_attempts,
        },
        report,
    )
    .map_err(|e| match e {
        fill::FillError::Cache(c) => BootError::Cache(c),
        fill::FillError::Fetch { layer, source } => BootError::Fetch { layer, source },
    })?;
    let mut files = HashMap::new();
    for l in compose::boot_layers(plan) {
        if let Some(p) = cache.get(&l.sha256_written) {
            files.insert(l.sha256_written.clone(), p);
        }
    }
    Ok(files)
}

/// Step 8: upload what the plan asks to sync back, before the new setup's layers come in.
/// Never fails the boot: a failed upload is reported and retried next boot.
pub fn sync_back(agent: &ureq::Agent, plan: &Plan, env: &Env, report: &mut dyn FnMut(Event)) {
    let state = env.layout.cache_mount.join("sync");
    for item in syncback::items(plan, &env.layout.cache_mount) {
        if let Ok(why) = std::fs::read_to_string(syncback::pending_marker(&state, &item.key)) {
            report(Event {
                message: Some(format!(
                    "{}: retrying the upload that failed last boot ({})",
                    item.key,
                    why.trim()
                )),
                ..Event::stage(Stage::SyncBack)
            });
        }
        let e = match syncback::sync_one(agent, &plan.token, &item, &state) {
            Ok(syncback::Outcome::Nothing) => continue,
            Ok(syncback::Outcome::Unchanged { .. }) => Event {
                message: Some(format!("{}: unchanged since the last upload", item.key)),
                ..Event::stage(Stage::SyncBack)
            },
            Ok(syncback::Outcome::Uploaded { sha256, bytes }) => Event {
                message: Some(format!(
                    "{}: uploaded {bytes} bytes, sha256 {sha256}",
                    item.key
                )),
                bytes_done: Some(bytes),
                bytes_total: Some(bytes),
                ..Event::stage(Stage::SyncBack)
            },
            Err(e) => Event::failed(
                Stage::SyncBack,
                format!("{e}; local data kept, retried next boot"),
            ),
        };
        report(e);
    }
}

/// Disk mode: flash the image onto the disk, report, reboot (netbootd answers `local`
/// next). With the fake `Sys` the reboot returns and so does this.
fn disk_mode(
    sys: &mut dyn Sys,
    agent: &ureq::Agent,
    plan: &Plan,
    env: &Env,
    events: &Reporter,
    say: &mut dyn FnMut(&str),
) -> Result<(), BootError> {
    let layer = flash::image_layer(&plan.layers)?;
    let label = format!("{}@{}", layer.name, layer.version);
    post(
        events,
        Event {
            message: Some(format!("flashing {label}")),
            ..Event::stage(Stage::Flash)
        },
        say,
    );
    let done = {
        let mut progress = |p: &fetch::Progress| {
            post(
                events,
                Event::progress(Stage::Flash, p.done, p.total, format!("{label}: {p}")),
                say,
            )
        };
        flash::flash(
            sys,
            agent,
            &env.disk_paths(),
            &plan.disk,
            layer,
            fetch::Options::default(),
            &mut progress,
        )?
    };
    post(
        events,
        Event {
            message: Some(format!("{label}: {}; rebooting", flash::describe(&done))),
            ..Event::stage(Stage::Flashed)
        },
        say,
    );
    sys.sync();
    sys.reboot().map_err(BootError::Reboot)
}

/// Print an event on the console and post it (best effort).
fn post(reporter: &Reporter, e: Event, say: &mut dyn FnMut(&str)) {
    let line = match (&e.error, &e.message) {
        (Some(err), _) => format!("{:?}: error: {err}", e.stage),
        (None, Some(m)) => format!("{:?}: {m}", e.stage),
        (None, None) => format!("{:?}", e.stage),
    };
    say(&line);
    if let Err(why) = reporter.post(&e) {
        say(&format!("events: {why}"));
    }
}

/// The whole sequence. With the real `Sys` it only returns on failure, which it has
/// already posted as an event when the server was known.
pub fn run(sys: &mut dyn Sys, env: &Env, say: &mut dyn FnMut(&str)) -> Result<(), BootError> {
    early_mounts(sys)?;
    let args = read_cmdline(env)?;
    say(&format!("server {} machine {}", args.server, args.mac));
    let agent = http::agent(Timeouts::default());
    // Until the plan names its own events URL, report with what the command line gave.
    let mut events = Reporter::new(
        agent.clone(),
        format!(
            "{}{}",
            args.server,
            carte_contract::events_path(&args.mac.to_string())
        ),
        args.token.clone(),
    );
    let r = after_cmdline(sys, env, &args, &agent, &mut events, say);
    if let Err(e) = &r {
        post(&events, Event::failed(e.stage(), e.to_string()), say);
    }
    r
}

/// Progress of restoring `label` (a tar from the server), as sync-back events.
fn restoring<'a>(
    report: &'a mut dyn FnMut(Event),
    label: &'a str,
) -> impl FnMut(&fetch::Progress) + 'a {
    move |p| {
        report(Event::progress(
            Stage::SyncBack,
            p.done,
            p.total,
            format!("restoring {label}: {p}"),
        ))
    }
}

/// Step 8, second half: a disk without a machine layer gets the last one the server
/// holds (`machine_restore`), before anything is composed over it. A failure stops this
/// boot (retried from the plan): composing without it would start a fresh machine layer
/// that later boots would keep instead of the restored one.
pub fn restore_machine_layer(
    agent: &ureq::Agent,
    plan: &Plan,
    env: &Env,
    report: &mut dyn FnMut(Event),
) -> Result<(), BootError> {
    let label = plan
        .machine_restore
        .as_ref()
        .map(|l| format!("{}@{}", l.name, l.version))
        .unwrap_or_default();
    let outcome = restore::restore(
        agent,
        plan,
        &env.layout.cache_mount,
        &mut restoring(report, &label),
    )?;
    if let restore::Outcome::Restored { label, entries } = outcome {
        report(Event {
            message: Some(format!(
                "machine layer restored from {label} ({entries} entries)"
            )),
            ..Event::stage(Stage::SyncBack)
        });
    }
    Ok(())
}

/// Step 8, last part: each writable layer whose changes the plan names (`restore`, the
/// newest changes synced back for it) and whose upper this disk does not have gets them,
/// before compose would make an empty upper there. A failure stops this boot, as for the
/// machine layer: an empty upper would be kept, and synced back, instead of the changes.
/// After a restore the upper's fingerprint is recorded as confirmed, so an untouched
/// session does not send the same changes back as a new version.
pub fn restore_layers(
    agent: &ureq::Agent,
    plan: &Plan,
    env: &Env,
    report: &mut dyn FnMut(Event),
) -> Result<(), BootError> {
    let state = env.layout.cache_mount.join("sync");
    for r in restore::layer_restores(plan, &env.layout.cache_mount) {
        let label = format!("{}@{}", r.changes.name, r.changes.version);
        let outcome = restore::restore_layer(agent, &r, &mut restoring(report, &label))?;
        let restore::Outcome::Restored { label, entries } = outcome else {
            continue;
        };
        let upper = r.dir.join("upper");
        let key = syncback::layer_key(&r.layer.name);
        let recorded = syncback::fingerprint(&upper)
            .and_then(|sha| syncback::record_confirmed(&state, &key, &sha));
        let note = match recorded {
            Ok(()) => String::new(),
            Err(e) => format!("; not recorded as confirmed ({e}): the next sync sends it again"),
        };
        report(Event {
            message: Some(format!(
                "layer {} restored from {label} ({entries} entries){note}",
                r.layer.name
            )),
            ..Event::stage(Stage::SyncBack)
        });
    }
    Ok(())
}

fn after_cmdline(
    sys: &mut dyn Sys,
    env: &Env,
    args: &BootArgs,
    agent: &ureq::Agent,
    events: &mut Reporter,
    say: &mut dyn FnMut(&str),
) -> Result<(), BootError> {
    load_modules(sys, env, say)?;
    let nic = net::bring_up(sys, &env.sys_root, args.mac, &args.ip, say)?;
    say(&format!("network: boot NIC {nic} is up"));

    let (plan, raw) = wait_for_plan(sys, agent, args, env, say);
    *events = Reporter::new(agent.clone(), plan.events_url.clone(), plan.token.clone());
    let events = &*events;
    post(events, Event::stage(Stage::Plan), say);

    if plan.mode == Mode::Disk {
        return disk_mode(sys, agent, &plan, env, events, say);
    }
    let prepared = disk::prepare(sys, &env.disk_paths(), &plan.disk, &env.layout.cache_mount)?;
    let message = match &prepared.initialised {
        Some(before) => format!(
            "carte filesystem {} created (the disk held {before})",
            prepared.device
        ),
        None => format!("carte filesystem {}", prepared.device),
    };
    post(
        events,
        Event {
            message: Some(message),
            ..Event::stage(Stage::Disk)
        },
        say,
    );
    {
        let mut report = |e: Event| post(events, e, say);
        sync_back(agent, &plan, env, &mut report);
        restore_machine_layer(agent, &plan, env, &mut report)?;
        restore_layers(agent, &plan, env, &mut report)?;
    }
    if let Some(scratch) = &args.bench {
        let mut report = |e: Event| post(events, e, say);
        let disks = (scratch.as_str(), prepared.device.as_str());
        return Ok(bench::run(sys, agent, &plan, env, disks, &mut report)?);
    }
    let files = {
        let mut report = |e: Event| post(events, e, say);
        fill_cache(sys, agent, &plan, env, &mut report)?
    };
    post(events, Event::stage(Stage::Compose), say);
    let composed = compose::compose(sys, &plan, &files, &env.layout).map_err(BootError::Compose)?;
    post(events, Event::stage(Stage::SwitchRoot), say);
    sys.sync();
    compose::switch_root(sys, composed, &env.layout, &raw, &env.init_args)
        .map_err(BootError::SwitchRoot)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::FakeSys;

    #[test]
    fn early_mounts_sequence_and_retry_tolerance() {
        let mut sys = FakeSys::new();
        early_mounts(&mut sys).expect("mounts");
        assert_eq!(
            sys.calls,
            [
                "mkdir /proc",
                "mount proc /proc proc nosuid,nodev,noexec -",
                "mkdir /sys",
                "mount sysfs /sys sysfs nosuid,nodev,noexec -",
                "mkdir /dev",
                "mount devtmpfs /dev devtmpfs nosuid mode=0755",
                "mkdir /run",
                "mount tmpfs /run tmpfs nosuid,nodev mode=0755",
                "open_console /dev/console",
            ]
        );
        // On a retry everything is already mounted: EBUSY is fine.
        let mut sys = FakeSys::new();
        sys.fail_prefix = Some("mount ".into());
        sys.fail_errno = Some(Errno::EBUSY);
        early_mounts(&mut sys).expect("retry");
        // Any other failure names the filesystem and folder.
        let mut sys = FakeSys::new();
        sys.fail_prefix = Some("mount devtmpfs".into());
        sys.fail_errno = Some(Errno::ENODEV);
        let e = early_mounts(&mut sys).expect_err("no devtmpfs");
        assert_eq!(
            e.to_string(),
            "step 1 (early mounts): mount devtmpfs on /dev: ENODEV: No such device"
        );
    }

    fn env(root: &Path) -> Env {
        Env {
            proc_root: root.join("proc"),
            sys_root: root.join("sys"),
            modules_root: root.join("lib/modules"),
            ..Env::default()
        }
    }

    #[test]
    fn a_bad_command_line_stops_at_step_1() {
        let t = tempfile::tempdir().expect("tempdir");
        let e = read_cmdline(&env(t.path())).expect_err("no file");
        assert!(
            e.to_string().starts_with("step 1 (command line): read "),
            "{e}"
        );
        std::fs::create_dir_all(t.path().join("proc")).expect("mkdir");
        std::fs::write(t.path().join("proc/cmdline"), "console=ttyS0 quiet\n").expect("w");
        let e = read_cmdline(&env(t.path())).expect_err("no server");
        assert_eq!(
            e.to_string(),
            "step 1 (command line): kernel command line has no carte.server"
        );
    }

    #[test]
    fn run_stops_at_the_network_step_with_a_clear_message() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("proc")).expect("mkdir");
        std::fs::write(
            t.path().join("proc/cmdline"),
            "carte.server=http://127.0.0.1:9 carte.token=t BOOTIF=01-52-54-00-00-00-01\n",
        )
        .expect("w");
        let nic = t.path().join("sys/class/net/eth0");
        std::fs::create_dir_all(&nic).expect("mkdir");
        std::fs::write(nic.join("address"), "52:54:00:00:00:01\n").expect("w");
        std::fs::write(nic.join("ifindex"), "2\n").expect("w");
        std::fs::write(nic.join("carrier"), "1\n").expect("w");
        // No ip= and no DHCP server answers.
        let mut sys = FakeSys::new();
        let mut lines = Vec::new();
        let e = run(&mut sys, &env(t.path()), &mut |l| lines.push(l.to_string()))
            .expect_err("no DHCP server");
        assert_eq!(e.stage(), Stage::Network);
        assert_eq!(
            e.to_string(),
            "step 3 (network): network: DHCP on eth0: no offer after 30s (5 DISCOVERs sent)"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("assuming drivers are built in")),
            "{lines:?}"
        );
        // The failure was printed as an event, and posting it failed visibly (no server).
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("Network: error: step 3")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with(
                "events: post event to http://127.0.0.1:9/api/v1/machines/52:54:00:00:00:01/events"
            )),
            "{lines:?}"
        );
    }
}
