//! carte-shim: PID 1 of the target root for a moment. Reads the plan carte-init left in
//! `/run/carte/plan.json`, forks a detached helper (lazy layers, autostart, "booted"
//! event), reaps what has exited, cleans the signal state and execs the real init (the
//! plan's, else the kernel's usual fallbacks). Any problem is printed and the real init
//! is exec'd anyway: a missing plan must not keep a machine from booting.

mod decide;
mod helper;
mod process;
mod report;

use carte_contract::{Event, Plan, PLAN_FILE_IN_TARGET};
use std::ffi::CString;
use std::io::Write;
use std::path::Path;

fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "carte-shim: {line}");
}

fn read_plan() -> Result<Plan, String> {
    let raw = std::fs::read(PLAN_FILE_IN_TARGET)
        .map_err(|e| format!("read {PLAN_FILE_IN_TARGET}: {e}"))?;
    serde_json::from_slice(&raw).map_err(|e| format!("parse {PLAN_FILE_IN_TARGET}: {e}"))
}

fn exec(init: &Path, args: &[String]) -> anyhow::Result<std::convert::Infallible> {
    use std::os::unix::ffi::OsStrExt;
    let prog = CString::new(init.as_os_str().as_bytes())?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(CString::new(a.as_str())?);
    }
    Ok(nix::unistd::execv(&prog, &argv)?)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = read_plan();
    let d = decide::decide(plan.as_ref().map_err(String::as_str), &args, &|p| {
        p.exists()
    });
    for w in &d.warnings {
        say(w);
    }
    if let (Ok(plan), false) = (&plan, d.tasks.is_empty()) {
        let reporter = report::Reporter::new(&plan.events_url, &plan.token);
        let tasks = d.tasks.clone();
        let spawned = process::spawn_detached(move || {
            helper::run(&tasks, &mut |e: Event| {
                if let Some(err) = &e.error {
                    say(&format!("{:?}: {err}", e.stage));
                }
                if let Err(why) = reporter.post(&e) {
                    say(&why);
                }
            })
        });
        if let Err(e) = spawned {
            say(&format!("fork helper: {e}; booting without it"));
        }
    }
    process::reap_exited();
    process::clean_signals();
    say(&format!("exec {}", d.init.display()));
    let Err(e) = exec(&d.init, &d.args);
    say(&format!("exec {}: {e}", d.init.display()));
    // Returning from PID 1 panics the kernel; a shell is better than that when present.
    let Err(e) = exec(Path::new("/bin/sh"), &[]);
    say(&format!("exec /bin/sh: {e}; nothing left to run"));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
