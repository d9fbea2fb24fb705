//! carte-init: PID 1 of carte's initramfs. Runs the boot sequence ([`carte_init::boot`])
//! with the real system, prints every failure on the console naming the step and cause,
//! posts it, and then waits and retries from the start — or reboots when the initramfs
//! is already gone. It never panics on purpose and never returns.

use carte_init::boot::{self, Env};
use carte_init::sys::{RealSys, Sys};
use std::io::Write;
use std::time::Duration;

fn say(line: &str) {
    // The console is all we have; if writing fails there is nobody to tell.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "carte-init: {line}");
}

fn main() {
    let mut sys = RealSys;
    let env = Env {
        init_args: std::env::args().skip(1).collect(),
        ..Env::default()
    };
    let mut wait = Duration::from_secs(5);
    loop {
        let result = boot::run(&mut sys, &env, &mut say);
        let e = match result {
            Ok(()) => carte_init::error::BootError::ExecReturned,
            Err(e) => e,
        };
        say(&format!("FAILED: {e}"));
        if e.needs_reboot() {
            say("the initramfs is gone: rebooting in 30s");
            sys.sleep(Duration::from_secs(30));
            if let Err(errno) = sys.reboot() {
                say(&format!("reboot: {errno}"));
            }
        } else {
            say(&format!("retrying from the start in {}s", wait.as_secs()));
        }
        sys.sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}
