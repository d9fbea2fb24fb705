//! Running the external filesystem tools (mkfs.erofs, mkfs.ext4, fakeroot, depmod).
//!
//! Only spawning and error capture live here; which arguments to pass is each builder's business.
//! No shell is involved: arguments go to the program as they are.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::{Error, Result};

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `tool` with `args` (optionally under `fakeroot -i state`), failing with its stderr.
/// `about` is the path the run concerns, named in the error.
pub fn run<I, S>(
    tool: &'static str,
    args: I,
    fakeroot_state: Option<&Path>,
    about: &Path,
) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = match fakeroot_state {
        Some(state) => {
            let mut c = Command::new("fakeroot");
            c.arg("-i").arg(state).arg("--").arg(tool);
            c
        }
        None => Command::new(tool),
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    tracing::debug!(?cmd, "running");
    let out = cmd.output().map_err(|source| Error::ToolMissing {
        tool: if fakeroot_state.is_some() {
            "fakeroot"
        } else {
            tool
        },
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::ToolFailed {
        tool,
        path: about.to_path_buf(),
        status: out.status.to_string(),
        stderr: tail(&String::from_utf8_lossy(&out.stderr), 2000),
    })
}

/// Runs `tool` with `args`; on success returns its stderr (for tools that report errors there
/// but still exit 0).
pub fn run_capture<I, S>(tool: &'static str, args: I, about: &Path) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::ToolMissing { tool, source })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        return Ok(stderr);
    }
    Err(Error::ToolFailed {
        tool,
        path: about.to_path_buf(),
        status: out.status.to_string(),
        stderr: tail(&stderr, 2000),
    })
}

/// The compressors `mkfs.erofs --help` lists (erofs-utils prints "Available compressors are: ...").
pub fn erofs_compressors() -> Vec<String> {
    let Ok(out) = Command::new("mkfs.erofs")
        .arg("--help")
        .stdin(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    parse_compressors(&text)
}

fn parse_compressors(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| l.split_once("Available compressors are:"))
        .flat_map(|(_, list)| {
            list.split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The last `max` bytes of `s`, cut at a char boundary, without trailing whitespace.
fn tail(s: &str, max: usize) -> String {
    let s = s.trim_end();
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressors_are_parsed_from_help() {
        let help = "usage: ...\n --quiet   quiet\n\nAvailable compressors are: lz4hc, lz4\n";
        assert_eq!(parse_compressors(help), vec!["lz4hc", "lz4"]);
        assert!(parse_compressors("no list here").is_empty());
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef\n", 3), "def");
        assert_eq!(tail("ab", 10), "ab");
    }
}
