//! The real `netbootd serve`, started inside a lab with its own folders: a data folder
//! holding the test kernel and initrd, a policy folder tests edit live, and a log file.
//!
//! It only starts, watches and stops the daemon; what the daemon answers is asserted by
//! the tests. Stopped (SIGTERM, then SIGKILL, by pid) and its folders removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::assets::{self, AssetError};
use crate::console;
use crate::lab::{Lab, SERVER_ADDR};
use crate::proc::{self, ProcError};

/// Where the test kernel and initrd sit under the data folder (policy paths).
pub const KERNEL_PATH: &str = "kernels/vmlinuz";
pub const INITRD_PATH: &str = "initrds/test.cpio.gz";
pub const HTTP_PORT: u16 = 8080;

#[derive(Debug, thiserror::Error)]
pub enum NetbootdError {
    #[error(transparent)]
    Asset(#[from] AssetError),
    #[error("netbootd: preparing {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("netbootd: {0}")]
    Start(#[from] ProcError),
    #[error("netbootd exited ({status}) during {step}; log:\n{log}")]
    Exited {
        step: String,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("netbootd: {0}")]
    Api(ProcError),
    #[error("netbootd: timed out after {secs}s waiting for {what}; log tail:\n{log}")]
    Timeout {
        secs: u64,
        what: String,
        log: String,
    },
}

/// netbootd's `--dhcp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpMode {
    Full,
    Proxy,
    Off,
}

impl DhcpMode {
    fn flag(self) -> &'static str {
        match self {
            DhcpMode::Full => "full",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Off => "off",
        }
    }
}

/// A running netbootd in a lab.
#[derive(Debug)]
pub struct Netbootd {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
    log_on_drop: bool,
}

fn prepare<T>(path: &Path, r: std::io::Result<T>) -> Result<T, NetbootdError> {
    r.map_err(|source| NetbootdError::Prepare {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` through a temporary name and a rename, so the policy
/// watcher never reads half a file.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), NetbootdError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{}.tmp", name.unwrap_or_default()));
    prepare(&tmp, std::fs::write(&tmp, contents))?;
    prepare(path, std::fs::rename(&tmp, path))
}

impl Netbootd {
    /// Starts netbootd on the lab bridge with `policy` files (name, contents) and waits
    /// until its HTTP port listens.
    pub fn start(
        lab: &Lab,
        mode: DhcpMode,
        policy: &[(&str, &str)],
    ) -> Result<Self, NetbootdError> {
        Self::start_seeded(lab, mode, policy, None)
    }

    /// As [`Netbootd::start`], with the data folder first filled with a copy of `seed`
    /// (an image store made beforehand: `carte.db`, `blobs/`, the carte initramfs...).
    /// Blobs are hard-linked when they can be: they are immutable.
    pub fn start_seeded(
        lab: &Lab,
        mode: DhcpMode,
        policy: &[(&str, &str)],
        seed: Option<&Path>,
    ) -> Result<Self, NetbootdError> {
        Self::launch(lab, mode, policy, seed, &[])
    }

    /// As [`Netbootd::start`], with more `serve` flags (`--dhcp-router 192.0.2.1`), not
    /// ones the harness passes already.
    pub fn start_with_flags(
        lab: &Lab,
        mode: DhcpMode,
        policy: &[(&str, &str)],
        flags: &[&str],
    ) -> Result<Self, NetbootdError> {
        Self::launch(lab, mode, policy, None, flags)
    }

    fn launch(
        lab: &Lab,
        mode: DhcpMode,
        policy: &[(&str, &str)],
        seed: Option<&Path>,
        flags: &[&str],
    ) -> Result<Self, NetbootdError> {
        let bin = assets::netbootd_bin()?;
        let dir = prepare(
            Path::new("/tmp"),
            tempfile::Builder::new().prefix("carte-netbootd-").tempdir(),
        )?;
        let data = dir.path().join("data");
        let policy_dir = dir.path().join("policy");
        for d in [
            data.join("kernels"),
            data.join("initrds"),
            policy_dir.clone(),
        ] {
            prepare(&d, std::fs::create_dir_all(&d))?;
        }
        if let Some(seed) = seed {
            let mut cp = std::process::Command::new("cp");
            cp.arg("-a")
                .arg("--reflink=auto")
                .arg("-T")
                .arg(seed)
                .arg(&data);
            proc::run(&mut cp).map_err(|e| NetbootdError::Prepare {
                path: seed.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        let kernel = assets::kernel()?;
        prepare(&kernel, std::fs::copy(&kernel, data.join(KERNEL_PATH)))?;
        let initrd = assets::initrd()?;
        prepare(&initrd, std::fs::copy(&initrd, data.join(INITRD_PATH)))?;
        for (name, contents) in policy {
            write_atomic(&policy_dir.join(name), contents)?;
        }
        let log = dir.path().join("netbootd.log");
        let out = prepare(&log, std::fs::File::create(&log))?;
        let err = prepare(&log, out.try_clone())?;
        let mut cmd = lab.command(&bin);
        cmd.args(["serve", "--interface", "br0", "--server-addr", SERVER_ADDR])
            .args(["--dhcp-mode", mode.flag()])
            .args(["--dhcp-pool", "192.0.2.100-192.0.2.150"])
            .args(["--http-port", &HTTP_PORT.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--policy-dir")
            .arg(&policy_dir)
            .arg("--ipxe-dir")
            .arg(assets::ipxe_dir())
            .args(flags)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("CARTE_NETBOOTD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = proc::spawn(&mut cmd)?;
        let mut me = Self {
            child,
            dir,
            log,
            log_on_drop: true,
        };
        me.wait_listening(lab, Duration::from_secs(20))?;
        Ok(me)
    }

    /// Waits until HTTP listens in the lab (checked with `ss` inside the namespace).
    fn wait_listening(&mut self, lab: &Lab, timeout: Duration) -> Result<(), NetbootdError> {
        let deadline = Instant::now() + timeout;
        let filter = format!("sport = :{HTTP_PORT}");
        loop {
            self.check_alive("startup")?;
            let mut ss = lab.command("ss");
            ss.args(["-Hltn", &filter]);
            if proc::run(&mut ss).is_ok_and(|out| !out.trim().is_empty()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NetbootdError::Timeout {
                    secs: timeout.as_secs(),
                    what: format!("HTTP to listen on port {HTTP_PORT}"),
                    log: console::tail(&self.log(), 3000),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An error if netbootd has exited.
    pub fn check_alive(&mut self, step: &str) -> Result<(), NetbootdError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(NetbootdError::Exited {
                step: step.to_string(),
                status,
                log: self.log(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether dropping prints the log tail (on by default, for failed tests; the demo
    /// turns it off).
    pub fn set_log_on_drop(&mut self, on: bool) {
        self.log_on_drop = on;
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policy")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A new admin token of the store in the data folder (`imaged token create`).
    pub fn admin_token(&self) -> Result<String, NetbootdError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut cmd = std::process::Command::new(assets::imaged_bin()?);
        cmd.args(["token", "create", "--role", "admin", "--name"])
            .arg(format!("harness-{}-{n}", std::process::id()))
            .arg("--data")
            .arg(self.data_dir());
        Ok(proc::run(&mut cmd)
            .map_err(NetbootdError::Api)?
            .trim()
            .to_string())
    }

    /// `GET path` on netbootd's HTTP port from inside the lab, with a bearer token; the
    /// body of a 2xx answer.
    pub fn api_get(&self, lab: &Lab, path: &str, token: &str) -> Result<String, NetbootdError> {
        let mut curl = lab.command("curl");
        curl.args(["-sS", "--fail-with-body", "--max-time", "20", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("http://{SERVER_ADDR}:{HTTP_PORT}{path}"));
        proc::run(&mut curl).map_err(NetbootdError::Api)
    }

    /// Bytes netbootd has sent per blob digest (`GET /api/v1/transfers`).
    pub fn sent_bytes(
        &self,
        lab: &Lab,
        token: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, NetbootdError> {
        let json = self.api_get(lab, "/api/v1/transfers", token)?;
        let bad = |why: String| {
            NetbootdError::Api(ProcError::Output {
                command: "GET /api/v1/transfers".into(),
                why,
            })
        };
        let v: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| bad(format!("{e}: {json}")))?;
        let map = v
            .as_object()
            .ok_or_else(|| bad(format!("not an object: {json}")))?;
        Ok(map
            .iter()
            .map(|(d, s)| (d.clone(), s["bytes"].as_u64().unwrap_or(0)))
            .collect())
    }

    /// `netbootd machines` against this daemon, run inside the lab: its table and the
    /// stage history.
    pub fn machines_table(&self, lab: &Lab, token: &str) -> Result<String, NetbootdError> {
        let mut cmd = lab.command(assets::netbootd_bin()?);
        cmd.args(["machines", "--server"])
            .arg(format!("http://{SERVER_ADDR}:{HTTP_PORT}"))
            .env("CARTE_TOKEN", token);
        proc::run(&mut cmd).map_err(NetbootdError::Api)
    }

    /// Replaces (or adds) one policy file, atomically.
    pub fn write_policy(&self, name: &str, contents: &str) -> Result<(), NetbootdError> {
        write_atomic(&self.policy_dir().join(name), contents)
    }

    /// Everything netbootd logged so far, without terminal escapes.
    pub fn log(&self) -> String {
        console::clean(&std::fs::read(&self.log).unwrap_or_default())
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the log has `count` lines containing all of `needles`; returns them.
    pub fn wait_log(
        &mut self,
        needles: &[&str],
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, NetbootdError> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_lines_with(needles);
            if lines.len() >= count {
                return Ok(lines);
            }
            self.check_alive(&format!("wait for log {needles:?}"))?;
            if Instant::now() >= deadline {
                return Err(NetbootdError::Timeout {
                    secs: timeout.as_secs(),
                    what: format!("{count} log line(s) with {needles:?}"),
                    log: console::tail(&self.log(), 3000),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Netbootd {
    fn drop(&mut self) {
        proc::stop(&mut self.child, Duration::from_secs(3));
        // The test harness shows captured output only for failing tests, so the log of
        // a failed run is at hand, also when the test returned an error.
        if !self.log_on_drop {
            return;
        }
        eprintln!(
            "---- netbootd log (tail) ----\n{}",
            console::tail(&self.log(), 8000)
        );
    }
}
