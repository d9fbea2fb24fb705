//! Reading a machine's serial console (a file QEMU appends to) like `expect`: wait, with a
//! bounded timeout, for a pattern after the previous match.
//!
//! Text is matched after [`clean`] removes terminal escapes, carriage returns and
//! backspaces, because SeaBIOS, iPXE and OVMF paint the screen with them. Patterns are
//! plain substrings; this module does not interpret regular expressions.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Width of the text screen SeaBIOS mirrors to the serial port.
pub const SCREEN_COLS: usize = 80;

/// How much of the console an error message shows.
const TAIL_CHARS: usize = 3000;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "console {path}: timed out after {secs}s waiting for {patterns:?}; console tail:\n{tail}"
    )]
    Timeout {
        path: PathBuf,
        secs: u64,
        patterns: Vec<String>,
        tail: String,
    },
    #[error("console {path}: {what} before {patterns:?} appeared; console tail:\n{tail}")]
    Ended {
        path: PathBuf,
        what: String,
        patterns: Vec<String>,
        tail: String,
    },
    #[error("console {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Removes ANSI/VT100 escape sequences, `\r` and other control characters except `\n`
/// and `\t`; a backspace erases the character before it on the same line; a line break
/// right after exactly [`SCREEN_COLS`] characters (a screen wrap) is dropped.
pub fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // Character-set selection takes one more character.
                Some('(') | Some(')') => {
                    chars.next();
                }
                // Two-character escapes such as ESC c (reset).
                Some(_) | None => {}
            },
            // Backspace erases, as on a terminal (iPXE erases its prompts this way).
            '\u{8}' => {
                if !out.ends_with('\n') {
                    out.pop();
                }
            }
            // SeaBIOS's serial console mirrors an 80-column screen and breaks longer
            // lines there; join them back so a message matches whatever its length.
            '\n' if out.rsplit('\n').next().map_or(0, |l| l.chars().count()) == SCREEN_COLS => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The last octet of the address in an iPXE line `net0: 192.0.2.N/MASK ...`.
pub fn ipxe_host_octet(line: &str) -> Option<u8> {
    let rest = line.split("net0: 192.0.2.").nth(1)?;
    rest.split('/').next()?.parse().ok()
}

/// The last `n` characters of `s`, on a character boundary.
pub fn tail(s: &str, n: usize) -> String {
    let skip = s.chars().count().saturating_sub(n);
    s.chars().skip(skip).collect()
}

/// The console of one machine: the file QEMU writes, and how far tests have matched.
#[derive(Debug)]
pub struct Console {
    path: PathBuf,
    raw: Vec<u8>,
    file: Option<File>,
    /// Byte offset into the cleaned text after the last match.
    cursor: usize,
}

impl Console {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            raw: Vec::new(),
            file: None,
            cursor: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call.
    fn refresh(&mut self) -> Result<(), ConsoleError> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(source) => {
                    return Err(ConsoleError::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            f.read_to_end(&mut self.raw)
                .map_err(|source| ConsoleError::Read {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Everything printed so far, cleaned.
    pub fn text(&mut self) -> String {
        let _ = self.refresh();
        clean(&self.raw)
    }

    /// The last few thousand characters, cleaned, for error messages.
    pub fn tail(&mut self) -> String {
        tail(&self.text(), TAIL_CHARS)
    }

    /// Waits until one of `patterns` appears after the previous match and its line is
    /// complete. Returns the index of the pattern and the whole line it is on; the next
    /// search starts after that line. `alive` is polled: when it returns `Some(what)`
    /// (the machine is gone), waiting stops with that reason.
    pub fn expect_any(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
        mut alive: impl FnMut() -> Option<String>,
    ) -> Result<(usize, String), ConsoleError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh()?;
            let text = clean(&self.raw);
            if let Some((idx, line, end)) = find_line(&text, self.cursor, patterns) {
                self.cursor = end;
                return Ok((idx, line));
            }
            let pats = || patterns.iter().map(|p| p.to_string()).collect();
            if let Some(what) = alive() {
                // One last read: the machine may have printed the line as it stopped.
                self.refresh()?;
                let text = clean(&self.raw);
                if let Some((idx, line, end)) = find_line(&text, self.cursor, patterns) {
                    self.cursor = end;
                    return Ok((idx, line));
                }
                return Err(ConsoleError::Ended {
                    path: self.path.clone(),
                    what,
                    patterns: pats(),
                    tail: tail(&text, TAIL_CHARS),
                });
            }
            if Instant::now() >= deadline {
                return Err(ConsoleError::Timeout {
                    path: self.path.clone(),
                    secs: timeout.as_secs(),
                    patterns: pats(),
                    tail: tail(&text, TAIL_CHARS),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Finds the earliest complete line at or after `from` containing one of `patterns`.
/// Returns (pattern index, line, offset just past the line).
fn find_line(text: &str, from: usize, patterns: &[&str]) -> Option<(usize, String, usize)> {
    let rest = text.get(from..)?;
    let (pos, idx) = patterns
        .iter()
        .enumerate()
        .filter_map(|(i, p)| rest.find(p).map(|pos| (pos, i)))
        .min()?;
    let start = rest[..pos].rfind('\n').map_or(0, |n| n + 1);
    // Only a finished line is returned, so a caller never sees half of it.
    let nl = rest[pos..].find('\n')? + pos;
    Some((idx, rest[start..nl].to_string(), from + nl + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_clean(raw: &[u8], expected: &str) {
        assert_eq!(
            clean(raw),
            expected,
            "raw {:?}",
            String::from_utf8_lossy(raw)
        );
    }

    #[test]
    fn clean_removes_what_firmware_paints_with() {
        check_clean(b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\n", "SeaBIOS\n");
        check_clean(
            b"\x1b[1m\x1b[37m\x1b[40miPXE 1.0\x1b[0m -- x\r\n",
            "iPXE 1.0 -- x\n",
        );
        check_clean(b"line...\x08 \x08\x08 \x08net0: up\n", "line.net0: up\n");
        check_clean(b"a\n\x08b\n", "a\nb\n");
        let wrapped = format!("{}\r\n disk\r\nnext\r\n", "x".repeat(78) + " a");
        check_clean(
            wrapped.as_bytes(),
            &format!("{} disk\nnext\n", "x".repeat(78) + " a"),
        );
        check_clean(b"short\r\nline\r\n", "short\nline\n");
        check_clean(b"\x1b(Bplain\ttab\n", "plain\ttab\n");
        check_clean(b"no newline", "no newline");
    }

    #[test]
    fn ipxe_host_octet_reads_ipxe_lines() {
        let check = |line, expected| assert_eq!(ipxe_host_octet(line), expected, "{line}");
        check("net0: 192.0.2.57/255.255.255.0 gw 192.0.2.1", Some(57));
        check("net0: 192.0.2.100/255.255.255.0", Some(100));
        check("net0: fe80::5054:ff:fe00:1/64", None);
    }

    #[test]
    fn find_line_waits_for_the_end_of_the_line() {
        let text = "a\nCARTE-CMDLINE: x y";
        assert_eq!(find_line(text, 0, &["CARTE-CMDLINE:"]), None);
        let text = "a\nCARTE-CMDLINE: x y\nz\n";
        assert_eq!(
            find_line(text, 0, &["CARTE-CMDLINE:"]),
            Some((0, "CARTE-CMDLINE: x y".to_string(), 21))
        );
        // The earliest match wins, whatever the order of patterns.
        assert_eq!(
            find_line("one\ntwo\n", 0, &["two", "one"]),
            Some((1, "one".to_string(), 4))
        );
        // Matching resumes after the previous line.
        assert_eq!(
            find_line("wait\nwait\n", 5, &["wait"]),
            Some((0, "wait".to_string(), 10))
        );
        assert_eq!(find_line("wait\n", 5, &["wait"]), None);
    }

    #[test]
    fn expect_any_reads_a_growing_file_and_times_out_with_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        std::fs::write(&path, b"\x1b[2Jboot\r\nWaiting 1\r\n").expect("write");
        let mut c = Console::new(&path);
        let (i, line) = c
            .expect_any(&["Waiting"], Duration::from_secs(1), || None)
            .expect("first");
        assert_eq!((i, line.as_str()), (0, "Waiting 1"));
        let err = c
            .expect_any(&["Waiting"], Duration::from_millis(300), || None)
            .expect_err("no second line yet");
        let msg = err.to_string();
        assert!(
            msg.contains("timed out") && msg.contains("Waiting 1"),
            "{msg}"
        );
        std::fs::write(&path, b"\x1b[2Jboot\r\nWaiting 1\r\nWaiting 2\r\n").expect("write");
        let (_, line) = c
            .expect_any(&["Waiting"], Duration::from_secs(1), || None)
            .expect("second");
        assert_eq!(line, "Waiting 2");
        let err = c
            .expect_any(&["never"], Duration::from_secs(5), || {
                Some("qemu exited".into())
            })
            .expect_err("machine gone");
        assert!(err.to_string().contains("qemu exited before"), "{err}");
    }
}
