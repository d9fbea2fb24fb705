//! The after-boot helper's work, run in a detached grandchild of PID 1: lazy layers
//! (not implemented yet: reported clearly as such), each autostart command with its output
//! saved on the machine layer and its tail posted, then "booted".
//!
//! It never touches the real init's process: it only runs commands and posts events.

use crate::decide::Task;
use carte_contract::{Event, Stage};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};

/// How much of the end of an autostart's output goes into its event.
pub const OUTPUT_TAIL_BYTES: u64 = 2048;

/// Run the tasks in order, handing each event to `post`.
pub fn run(tasks: &[Task], post: &mut dyn FnMut(Event)) {
    for t in tasks {
        match t {
            Task::LazyLayer { name, .. } => post(Event::failed(
                Stage::LazyLayers,
                format!("lazy layer {name}: fetching lazy layers is not implemented yet"),
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

    #[test]
    fn tasks_run_in_order_and_lazy_is_reported_unimplemented() {
        let d = tempfile::tempdir().expect("tempdir");
        let tasks = [
            Task::LazyLayer {
                name: "big".into(),
                mount_point: None,
            },
            Task::Autostart {
                layer: "exp".into(),
                command: "true".into(),
                log: d.path().join("exp.log"),
            },
            Task::ReportBooted,
        ];
        let mut events = Vec::new();
        run(&tasks, &mut |e| events.push(e));
        let stages: Vec<Stage> = events.iter().map(|e| e.stage).collect();
        assert_eq!(stages, [Stage::LazyLayers, Stage::Autostart, Stage::Booted]);
        assert!(events[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not implemented")));
    }
}
