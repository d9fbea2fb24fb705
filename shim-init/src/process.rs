//! Process plumbing for PID 1: detach the helper as a grandchild (so nothing we fork is
//! left as our zombie; the orphan is reaped by whoever is PID 1, the real init after the
//! exec), reap what has already exited, and hand the real init a clean signal state
//! (empty mask, default dispositions), since `execve` keeps both masks and ignored signals.

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, setsid, ForkResult, Pid};

/// Run `work` in a detached grandchild; returns once the intermediate child is reaped.
pub fn spawn_detached(work: impl FnOnce()) -> Result<(), nix::Error> {
    // SAFETY: the shim is single-threaded when it forks, so the child may run any code.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            // Reap the intermediate child at once: it exits right after forking again.
            loop {
                match waitpid(child, None) {
                    Ok(_) => return Ok(()),
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        ForkResult::Child => {
            let _ = setsid();
            // SAFETY: still single-threaded (we are the freshly forked child).
            let code = match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    clean_signals();
                    work();
                    0
                }
                Ok(ForkResult::Parent { .. }) => 0,
                Err(_) => 1,
            };
            // SAFETY: _exit skips atexit handlers and stdio flushing that belong to PID 1.
            unsafe { libc::_exit(code) }
        }
    }
}

/// Reap every child that has already exited, without blocking. Returns how many.
pub fn reap_exited() -> usize {
    let mut n = 0;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return n,
            Ok(_) => n += 1,
        }
    }
}

/// Empty the signal mask and put every catchable signal back to its default action.
pub fn clean_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for s in Signal::iterator() {
        if matches!(s, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code of ours.
        let _ = unsafe { sigaction(s, &default) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::SigmaskHow;

    #[test]
    fn clean_signals_unblocks_and_resets() {
        // Run in a child process so the test harness's own signals are untouched.
        // SAFETY: the child only calls async-signal-safe-enough code and _exits.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let mut block = SigSet::empty();
                block.add(Signal::SIGTERM);
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&block), None);
                let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
                // SAFETY: installing SIG_IGN runs no code.
                let _ = unsafe { sigaction(Signal::SIGINT, &ignore) };
                clean_signals();
                let mut now = SigSet::empty();
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, None, Some(&mut now));
                // SAFETY: querying by installing the default again returns the previous one.
                let prev = unsafe { sigaction(Signal::SIGINT, &ignore) };
                let ok = !now.contains(Signal::SIGTERM)
                    && prev.is_ok_and(|p| matches!(p.handler(), SigHandler::SigDfl));
                // SAFETY: leave the forked test child without running the harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                let st = waitpid(child, None).expect("wait");
                assert_eq!(st, WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn detached_work_runs_as_an_orphan_not_our_child() {
        let d = tempfile::tempdir().expect("tempdir");
        let flag = d.path().join("ppid");
        let f2 = flag.clone();
        spawn_detached(move || {
            // The intermediate child exits right after forking us; give it a moment.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let _ = std::fs::write(&f2, nix::unistd::getppid().to_string());
        })
        .expect("spawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !flag.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let ppid = std::fs::read_to_string(&flag).expect("grandchild ran");
        assert_ne!(
            ppid,
            std::process::id().to_string(),
            "helper must not be our child"
        );
    }
}
