//! The skip rule for tests that need root, QEMU and network namespaces.
//!
//! As root the test runs for real. Without root and outside CI it prints a loud
//! `SKIPPED (needs root): ...` line and returns; in CI (`CI=true`) a missing prerequisite
//! fails the test, so CI can never pass by skipping. It does not install anything.

use std::io::Write;
use std::path::Path;

/// What a test should do about its prerequisites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Run,
    /// Not in CI: print the reason and return.
    Skip(String),
    /// In CI: fail with the reason.
    Fail(String),
}

/// The pure decision, table-tested: `missing` lists absent tools or files.
pub fn decide(root: bool, ci: bool, missing: &[String]) -> Verdict {
    let reason = if !root {
        Some("needs root".to_string())
    } else if !missing.is_empty() {
        Some(format!("needs {}", missing.join(", ")))
    } else {
        None
    };
    match (reason, ci) {
        (None, _) => Verdict::Run,
        (Some(r), true) => Verdict::Fail(r),
        (Some(r), false) => Verdict::Skip(r),
    }
}

/// True when `CI` is set to something other than empty, `0` or `false`.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "0" && v != "false")
}

/// Tools and files every QEMU test needs.
fn missing_prerequisites() -> Vec<String> {
    let tools = ["qemu-system-x86_64", "ip", "cpio", "gzip"];
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| crate::proc::which(t).is_none())
        .map(|t| t.to_string())
        .collect();
    for f in ["/dev/net/tun", "/bin/busybox"] {
        if !Path::new(f).exists() {
            missing.push(f.to_string());
        }
    }
    if crate::assets::kernel().is_err() {
        missing.push("a kernel in /boot (linux-image-amd64)".to_string());
    }
    missing
}

/// Call first in every QEMU test: `if !prereq::ready("name") { return Ok(()) }`.
/// Panics in CI when something is missing.
pub fn ready(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let missing = if root {
        missing_prerequisites()
    } else {
        Vec::new()
    };
    match decide(root, in_ci(), &missing) {
        Verdict::Run => true,
        Verdict::Skip(reason) => {
            // Straight to the stderr handle: the test harness captures eprintln! output
            // of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n**** SKIPPED ({reason}): {test} ****\n"
            );
            false
        }
        Verdict::Fail(reason) => panic!("{test}: {reason} (CI is set, so this fails)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(root: bool, ci: bool, missing: &[&str], expected: Verdict) {
        let missing: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
        assert_eq!(decide(root, ci, &missing), expected, "root={root} ci={ci}");
    }

    #[test]
    fn skip_rule() {
        check(true, false, &[], Verdict::Run);
        check(true, true, &[], Verdict::Run);
        check(false, false, &[], Verdict::Skip("needs root".into()));
        check(false, true, &[], Verdict::Fail("needs root".into()));
        check(true, false, &["ip"], Verdict::Skip("needs ip".into()));
        check(
            true,
            true,
            &["qemu-system-x86_64", "/dev/net/tun"],
            Verdict::Fail("needs qemu-system-x86_64, /dev/net/tun".into()),
        );
    }
}
