//! What the shim will do, decided from the plan alone (pure, table-tested): which init to
//! exec, with which arguments, and which after-boot tasks the helper runs.
//!
//! It does no IO; whether a file exists is asked through the `exists` callback.

use carte_contract::{Layer, Plan, DEFAULT_INIT};
use std::path::{Path, PathBuf};

/// Inits tried, in order, when the plan's init is missing (as the kernel itself does).
pub const FALLBACK_INITS: [&str; 4] = [DEFAULT_INIT, "/etc/init", "/bin/init", "/bin/sh"];

/// One thing the helper does after boot, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Fetch and mount a lazy layer (all of it: the helper needs URL, hashes, format).
    LazyLayer(Box<Layer>),
    /// Run a layer's autostart command, output saved under `log`.
    Autostart {
        layer: String,
        command: String,
        log: PathBuf,
    },
    /// Tell the server the machine has booted.
    ReportBooted,
}

/// The shim's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The init to exec.
    pub init: PathBuf,
    /// Its arguments (after argv[0]): what the kernel passed us.
    pub args: Vec<String>,
    /// Helper tasks; empty means no helper is forked.
    pub tasks: Vec<Task>,
    /// Warnings for the console (missing plan, missing init...).
    pub warnings: Vec<String>,
}

/// Where autostart output is kept: on the root overlay, so on the machine layer.
pub const AUTOSTART_LOG_DIR: &str = "/var/lib/carte/autostart";

/// Decide from the plan (or the reason it could not be read) and our own arguments.
pub fn decide(
    plan: Result<&Plan, &str>,
    args: &[String],
    exists: &dyn Fn(&Path) -> bool,
) -> Decision {
    let mut warnings = Vec::new();
    let mut tasks = Vec::new();
    let wanted = match plan {
        Ok(p) => {
            for l in p.layers.iter().filter(|l| l.lazy) {
                tasks.push(Task::LazyLayer(Box::new(l.clone())));
            }
            for l in &p.layers {
                if let Some(cmd) = l.autostart.as_ref().filter(|c| !c.trim().is_empty()) {
                    tasks.push(Task::Autostart {
                        layer: l.name.clone(),
                        command: cmd.clone(),
                        log: Path::new(AUTOSTART_LOG_DIR)
                            .join(format!("{}.log", carte_contract::file_name(&l.name))),
                    });
                }
            }
            tasks.push(Task::ReportBooted);
            p.init.clone()
        }
        Err(why) => {
            warnings.push(format!("no plan ({why}): no helper, trying {DEFAULT_INIT}"));
            DEFAULT_INIT.to_string()
        }
    };
    let mut candidates = vec![wanted.as_str()];
    for f in FALLBACK_INITS {
        if !candidates.contains(&f) {
            candidates.push(f);
        }
    }
    let mut init = None;
    for c in candidates {
        if exists(Path::new(c)) {
            init = Some(PathBuf::from(c));
            break;
        }
        warnings.push(format!("init {c} not found"));
    }
    let init = init.unwrap_or_else(|| {
        warnings.push("no init found at all: exec of the plan's init will fail".into());
        PathBuf::from(&wanted)
    });
    Decision {
        init,
        args: args.to_vec(),
        tasks,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carte_contract::{DiskRule, DiskSelect, Encoding, Format, Layer, LayerKind, MachineId};
    use carte_contract::{MachineLayerPolicy, Mode};

    fn layer(name: &str, lazy: bool, autostart: Option<&str>) -> Layer {
        Layer {
            name: name.into(),
            version: 1,
            kind: LayerKind::Project,
            format: Format::Erofs,
            encoding: Encoding::None,
            size: 1,
            uncompressed_size: 1,
            sha256: "a".repeat(64),
            sha256_written: "a".repeat(64),
            url: "http://192.0.2.1/x".into(),
            mount_point: Some(format!("/srv/{name}")),
            lazy,
            autostart: autostart.map(str::to_string),
            restore: None,
        }
    }

    fn plan(init: &str, layers: Vec<Layer>) -> Plan {
        Plan {
            machine: MachineId {
                mac: "52:54:00:00:00:01".into(),
                name: None,
            },
            mode: Mode::Compose,
            disk: DiskRule {
                select: DiskSelect::None,
                may_wipe: false,
            },
            layers,
            machine_layer: MachineLayerPolicy::Ephemeral,
            sync_back: vec![],
            machine_restore: None,
            init: init.into(),
            token: "t".into(),
            events_url: "http://192.0.2.1/e".into(),
        }
    }

    fn only(paths: &'static [&'static str]) -> impl Fn(&Path) -> bool {
        move |p| paths.iter().any(|x| Path::new(x) == p)
    }

    #[test]
    fn plan_init_and_tasks() {
        let p = plan(
            "/lib/systemd/systemd",
            vec![
                layer("data", true, None),
                layer("exp", false, Some("/srv/exp/run.sh")),
                layer("blank", false, Some("  ")),
            ],
        );
        let data = p.layers[0].clone();
        let d = decide(Ok(&p), &["single".into()], &only(&["/lib/systemd/systemd"]));
        assert_eq!(d.init, PathBuf::from("/lib/systemd/systemd"));
        assert_eq!(d.args, ["single"]);
        assert_eq!(
            d.tasks,
            [
                Task::LazyLayer(Box::new(data)),
                Task::Autostart {
                    layer: "exp".into(),
                    command: "/srv/exp/run.sh".into(),
                    log: "/var/lib/carte/autostart/exp.log".into()
                },
                Task::ReportBooted,
            ]
        );
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
    }

    #[test]
    fn init_falls_back_like_the_kernel() {
        let check = |init: &str, present: &'static [&'static str], want: &str| {
            let p = plan(init, vec![]);
            let d = decide(Ok(&p), &[], &only(present));
            assert_eq!(
                d.init,
                PathBuf::from(want),
                "init {init} present {present:?}"
            );
        };
        check("/sbin/init", &["/sbin/init"], "/sbin/init");
        check("/usr/bin/myinit", &["/sbin/init"], "/sbin/init");
        check("/usr/bin/myinit", &["/bin/sh"], "/bin/sh");
        check("/usr/bin/myinit", &[], "/usr/bin/myinit");
        let d = decide(Ok(&plan("/sbin/init", vec![])), &[], &only(&["/bin/sh"]));
        let missing = d
            .warnings
            .iter()
            .filter(|w| *w == "init /sbin/init not found")
            .count();
        assert_eq!(missing, 1, "each candidate tried once: {:?}", d.warnings);
        let p = plan("/x", vec![]);
        let d = decide(Ok(&p), &[], &only(&["/bin/sh"]));
        assert!(
            d.warnings.iter().any(|w| w == "init /x not found"),
            "{:?}",
            d.warnings
        );
    }

    #[test]
    fn no_plan_means_no_helper_but_still_an_init() {
        let d = decide(
            Err("read /run/carte/plan.json: ENOENT"),
            &[],
            &only(&["/sbin/init"]),
        );
        assert_eq!(d.init, PathBuf::from("/sbin/init"));
        assert!(d.tasks.is_empty());
        assert!(d.warnings[0].contains("no plan"), "{:?}", d.warnings);
    }

    #[test]
    fn autostart_log_names_are_safe() {
        let p = plan(
            "/sbin/init",
            vec![layer("../../etc/x y", false, Some("true"))],
        );
        let d = decide(Ok(&p), &[], &only(&["/sbin/init"]));
        assert_eq!(
            d.tasks[0],
            Task::Autostart {
                layer: "../../etc/x y".into(),
                command: "true".into(),
                log: "/var/lib/carte/autostart/.._.._etc_x_y.log".into()
            }
        );
    }
}
