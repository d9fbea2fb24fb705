//! The after-boot helper's work, run in a detached grandchild of PID 1: the lazy layers
//! (fetched and mounted by the `lazy` callback, [`crate::lazy::mount`] in the real shim),
//! then each autostart command with its output saved on the machine layer and its tail
//! posted — skipped, with an event, for a layer whose lazy mount failed — then "booted".
//!
//! It never touches the real init's process: it only runs commands and posts events.

use crate::decide::Task;
use carte_contract::{Event, Layer, Stage};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How much of the end of an autostart's output goes into its event.
pub const OUTPUT_TAIL_BYTES: u64 = 2048;

/// Fetches and mounts one lazy layer, posting progress; returns where it is mounted.
pub type MountLazy<'a> = dyn FnMut(&Layer, &mut dyn FnMut(Event)) -> Result<PathBuf, String> + 'a;

/// Run the tasks in order, handing each event to `post`.
pub fn run(tasks: &[Task], lazy: &mut MountLazy<'_>, post: &mut dyn FnMut(Event)) {
    let mut not_mounted = HashSet::new();
    for t in tasks {
        match t {
            Task::LazyLayer(l) => {
                let label = format!("{}@{}", l.name, l.version);
                match lazy(l, post) {
                    Ok(at) => post(Event {
                        message: Some(format!("lazy layer {label} mounted on {}", at.display())),
                        ..Event::stage(Stage::LazyLayers)
                    }),
                    Err(why) => {
                        not_mounted.insert(l.name.clone());
                        post(Event::failed(Stage::LazyLayers, why));
                    }
                }
            }
            Task::Autostart { layer, .. } if not_mounted.contains(layer) => post(Event::failed(
                Stage::Autostart,
                format!("autostart {layer}: skipped, its lazy layer is not mounted"),
            )),
            Task::Autostart {
                layer,
                command,
                log,
            } => post(autostart(layer, command, log)),
            Task::ReportBooted => post(Event::stage(Stage::Booted)),
        }
    }
}

/// The last `max` bytes of a file, lossily as text.
pub fn tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Run `command` with `sh -c`, stdout and stderr into `log`; an event says how it ended.
pub fn autostart(layer: &str, command: &str, log: &Path) -> Event {
    let fail = |why: String| Event::failed(Stage::Autostart, format!("autostart {layer}: {why}"));
    if let Some(dir) = log.parent() {
        if let Err(e) = fs::create_dir_all(dir) {
            return fail(format!("mkdir {}: {e}", dir.display()));
        }
    }
    let out = match File::create(log) {
        Ok(f) => f,
        Err(e) => return fail(format!("create {}: {e}", log.display())),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(format!("dup {}: {e}", log.display())),
    };
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status();
    let output = tail(log, OUTPUT_TAIL_BYTES).unwrap_or_default();
    match status {
        Ok(s) if s.success() => Event {
            message: Some(format!(
                "autostart {layer}: exited 0; output in {}:\n{output}",
                log.display()
            )),
            ..Event::stage(Stage::Autostart)
        },
        Ok(s) => Event {
            message: Some(output),
            ..fail(format!("{s}; output in {}", log.display()))
        },
        Err(e) => fail(format!("spawn /bin/sh: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autostart_saves_output_and_reports_status() {
        let d = tempfile::tempdir().expect("tempdir");
        let log = d.path().join("logs/exp.log");
        let e = autostart("exp", "echo hello; echo oops >&2", &log);
        assert_eq!(e.stage, Stage::Autostart);
        assert_eq!(e.error, None, "{e:?}");
        assert_eq!(fs::read_to_string(&log).expect("log"), "hello\noops\n");
        assert!(
            e.message
                .as_deref()
                .is_some_and(|m| m.ends_with("hello\noops\n")),
            "{e:?}"
        );

        let e = autostart("exp", "echo bad; exit 3", &log);
        let err = e.error.clone().expect("failed");
        assert!(err.starts_with("autostart exp: exit status: 3"), "{err}");
        assert_eq!(e.message.as_deref(), Some("bad\n"));
    }

    #[test]
    fn tail_keeps_the_end() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        fs::write(&p, "0123456789").expect("w");
        assert_eq!(tail(&p, 4).expect("tail"), "6789");
        assert_eq!(tail(&p, 100).expect("tail"), "0123456789");
    }

    fn lazy_layer(name: &str) -> Box<Layer> {
        Box::new(Layer {
            name: name.into(),
            version: 2,
            kind: carte_contract::LayerKind::Project,
            format: carte_contract::Format::Erofs,
            encoding: carte_contract::Encoding::None,
            size: 1,
            uncompressed_size: 1,
            sha256: "a".repeat(64),
            sha256_written: "a".repeat(64),
            url: "http://127.0.0.1:9/x".into(),
            mount_point: Some(format!("/srv/{name}")),
            lazy: true,
            autostart: Some("true".into()),
            restore: None,
        })
    }

    #[test]
    fn lazy_layers_mount_before_autostart_and_a_failed_one_skips_its_autostart() {
        let d = tempfile::tempdir().expect("tempdir");
        let flag = d.path().join("ran");
        let tasks = [
            Task::LazyLayer(lazy_layer("good")),
            Task::LazyLayer(lazy_layer("bad")),
            Task::Autostart {
                layer: "good".into(),
                command: format!("touch {}", flag.display()),
                log: d.path().join("good.log"),
            },
            Task::Autostart {
                layer: "bad".into(),
                command: "true".into(),
                log: d.path().join("bad.log"),
            },
            Task::ReportBooted,
        ];
        let mut order = Vec::new();
        let mut lazy = |l: &Layer, _: &mut dyn FnMut(Event)| {
            order.push(l.name.clone());
            if l.name == "good" {
                Ok(PathBuf::from("/srv/good"))
            } else {
                Err(format!("lazy layer {}: fetch failed", l.name))
            }
        };
        let mut events = Vec::new();
        run(&tasks, &mut lazy, &mut |e| events.push(e));
        assert_eq!(order, ["good", "bad"]);
        let stages: Vec<Stage> = events.iter().map(|e| e.stage).collect();
        assert_eq!(
            stages,
            [
                Stage::LazyLayers,
                Stage::LazyLayers,
                Stage::Autostart,
                Stage::Autostart,
                Stage::Booted
            ]
        );
        assert_eq!(
            events[0].message.as_deref(),
            Some("lazy layer good@2 mounted on /srv/good")
        );
        assert_eq!(
            events[1].error.as_deref(),
            Some("lazy layer bad: fetch failed")
        );
        assert_eq!(events[2].error, None, "{:?}", events[2]);
        assert!(flag.exists(), "the good layer's autostart ran");
        assert!(events[3]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("skipped")));
        assert!(
            !d.path().join("bad.log").exists(),
            "bad autostart never ran"
        );
    }
}
