//! A lab: one private network namespace with a bridge `br0` (192.0.2.1/24) and `lo` up,
//! taps for machines, and optional peer namespaces joined to the bridge by a veth.
//!
//! The namespace has no route and no interface to the outside, so nothing a test runs
//! can reach beyond 192.0.2.0/24. On drop, every process still in the namespace is killed
//! by pid and the namespace is deleted (which also removes its taps and veths). A lab does
//! not start netbootd or QEMU itself; see [`crate::netbootd`] and [`crate::machine`].

use std::ffi::OsStr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::proc::{self, ProcError};

/// The address netbootd serves from, on the lab bridge.
pub const SERVER_ADDR: &str = "192.0.2.1";

static NEXT: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("creating lab namespace {ns}: {source}")]
    Create { ns: String, source: ProcError },
    #[error("creating tap {tap} in {ns}: {source}")]
    Tap {
        ns: String,
        tap: String,
        source: ProcError,
    },
    #[error("joining peer namespace {peer} to {ns}: {source}")]
    Peer {
        ns: String,
        peer: String,
        source: ProcError,
    },
}

/// Runs `ip ARGS...`.
fn ip<I, S>(args: I) -> Result<String, ProcError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    proc::run(Command::new("ip").args(args))
}

/// A command that runs `program` inside namespace `ns`.
fn command_in(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Kills (SIGKILL, by pid) whatever still runs in `ns`, then deletes it.
fn destroy(ns: &str) {
    if let Ok(pids) = ip(["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    // Deleting fails while a killed process is still being torn down; retry briefly.
    for _ in 0..20 {
        if ip(["netns", "del", ns]).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("qemu-tests: could not delete namespace {ns}");
}

/// A private network namespace with bridge `br0` at 192.0.2.1/24.
#[derive(Debug)]
pub struct Lab {
    ns: String,
    peers: AtomicU32,
}

impl Lab {
    /// Creates `carte-<pid>-<n>` with `lo` and `br0` up.
    pub fn new() -> Result<Self, LabError> {
        let ns = format!(
            "carte-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let err = |source| LabError::Create {
            ns: ns.clone(),
            source,
        };
        ip(["netns", "add", &ns]).map_err(err)?;
        // From here on, Drop cleans up even if a later step fails.
        let lab = Lab {
            ns: ns.clone(),
            peers: AtomicU32::new(0),
        };
        let n = ns.as_str();
        ip(["-n", n, "link", "set", "lo", "up"]).map_err(err)?;
        ip(["-n", n, "link", "add", "br0", "type", "bridge"]).map_err(err)?;
        // No STP delay: a machine's first DHCP packet must not be eaten by the bridge.
        ip([
            "-n",
            n,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])
        .map_err(err)?;
        ip(["-n", n, "addr", "add", "192.0.2.1/24", "dev", "br0"]).map_err(err)?;
        ip(["-n", n, "link", "set", "br0", "up"]).map_err(err)?;
        Ok(lab)
    }

    pub fn name(&self) -> &str {
        &self.ns
    }

    /// Creates tap `name` in the namespace, enslaved to `br0` and up.
    pub fn tap(&self, name: &str) -> Result<(), LabError> {
        let n = self.ns.as_str();
        let err = |source| LabError::Tap {
            ns: self.ns.clone(),
            tap: name.to_string(),
            source,
        };
        ip(["-n", n, "tuntap", "add", "dev", name, "mode", "tap"]).map_err(err)?;
        ip(["-n", n, "link", "set", name, "master", "br0"]).map_err(err)?;
        ip(["-n", n, "link", "set", name, "up"]).map_err(err)?;
        Ok(())
    }

    /// A command that runs `program` inside the lab namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.ns, program)
    }

    /// A second namespace joined to `br0` by a veth, its end named `eth0` with `addr`
    /// (CIDR, inside 192.0.2.0/24). Used to run another DHCP server beside netbootd.
    pub fn peer(&self, addr: &str) -> Result<Peer<'_>, LabError> {
        let k = self.peers.fetch_add(1, Ordering::Relaxed);
        let peer_ns = format!("{}-p{k}", self.ns);
        let host_end = format!("vp{k}");
        let err = |source| LabError::Peer {
            ns: self.ns.clone(),
            peer: peer_ns.clone(),
            source,
        };
        ip(["netns", "add", &peer_ns]).map_err(err)?;
        let peer = Peer {
            _lab: self,
            ns: peer_ns.clone(),
        };
        let (n, p) = (self.ns.as_str(), peer_ns.as_str());
        ip([
            "-n", n, "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", p,
        ])
        .map_err(err)?;
        ip(["-n", n, "link", "set", &host_end, "master", "br0"]).map_err(err)?;
        ip(["-n", n, "link", "set", &host_end, "up"]).map_err(err)?;
        ip(["-n", p, "link", "set", "lo", "up"]).map_err(err)?;
        ip(["-n", p, "addr", "add", addr, "dev", "eth0"]).map_err(err)?;
        ip(["-n", p, "link", "set", "eth0", "up"]).map_err(err)?;
        Ok(peer)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        destroy(&self.ns);
    }
}

/// A peer namespace on the lab bridge; deleted (with its processes) on drop, before the
/// lab it borrows.
#[derive(Debug)]
pub struct Peer<'lab> {
    _lab: &'lab Lab,
    ns: String,
}

impl Peer<'_> {
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// A command that runs `program` inside the peer namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in(&self.ns, program)
    }
}

impl Drop for Peer<'_> {
    fn drop(&mut self) {
        destroy(&self.ns);
    }
}
