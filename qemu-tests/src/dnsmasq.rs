//! dnsmasq as an address-only DHCP server in a peer namespace, so proxy-mode netbootd has
//! a real "existing DHCP server" to stand beside. It offers addresses 192.0.2.50-99 and no
//! boot options, DNS is off (`--port=0`), and no config file is read. Killed by pid on drop.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::lab::Peer;
use crate::proc::{self, ProcError};

#[derive(Debug, thiserror::Error)]
pub enum DnsmasqError {
    #[error("dnsmasq: preparing {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dnsmasq: {0}")]
    Start(#[from] ProcError),
    #[error("dnsmasq exited at startup ({status}); log:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
}

#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq on `eth0` of `peer`.
    pub fn address_only(peer: &Peer<'_>) -> Result<Self, DnsmasqError> {
        let prep = |path: PathBuf| move |source| DnsmasqError::Prepare { path, source };
        let dir = tempfile::Builder::new()
            .prefix("carte-dnsmasq-")
            .tempdir()
            .map_err(prep(std::env::temp_dir()))?;
        let log = dir.path().join("dnsmasq.log");
        let out = std::fs::File::create(&log).map_err(prep(log.clone()))?;
        let err = out.try_clone().map_err(prep(log.clone()))?;
        let mut cmd = peer.command("dnsmasq");
        cmd.args(["--no-daemon", "--conf-file=/dev/null", "--port=0"])
            .args(["--interface=eth0", "--bind-interfaces", "--log-dhcp"])
            .arg("--dhcp-range=192.0.2.50,192.0.2.99,255.255.255.0,10m")
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = proc::spawn(&mut cmd)?;
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DnsmasqError::Exited {
                status,
                log: std::fs::read_to_string(&log).unwrap_or_default(),
            });
        }
        Ok(Self { child, dir })
    }

    /// What dnsmasq logged (with `--log-dhcp`, every exchange).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        proc::stop(&mut self.child, Duration::from_secs(1));
    }
}
