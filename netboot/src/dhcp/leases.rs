//! The full-mode lease store: bound leases and declined addresses, persisted as JSON.
//!
//! Writes go to a temporary file that is fsynced, renamed over the old one, and the
//! folder fsynced, so a crash leaves the old or the new file, never half of one. A
//! corrupt file is set aside (renamed) and the store starts empty. Offers are held only
//! in memory (they last seconds). It deliberately does not choose addresses: that is
//! [`super::full`]'s job.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// One address held by one machine until `expires` (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub expires: u64,
}

/// An address a client declined (someone else answers ARP for it), unusable until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declined {
    pub ip: Ipv4Addr,
    pub until: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseFile {
    version: u32,
    leases: Vec<Lease>,
    declined: Vec<Declined>,
}

const FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("cannot write lease file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode leases for {path}: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What [`LeaseStore::load`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LoadReport {
    /// No file yet (or no path: in memory only).
    Fresh,
    /// This many leases were read.
    Loaded(usize),
    /// The file was unreadable or corrupt and was renamed to `to`.
    SetAside { reason: String, to: PathBuf },
}

#[derive(Debug, Default)]
pub struct LeaseStore {
    path: Option<PathBuf>,
    bound: BTreeMap<MacAddr, Lease>,
    offers: BTreeMap<MacAddr, Lease>,
    declined: BTreeMap<Ipv4Addr, u64>,
    /// Each bound lease's end as the file last written (or read) has it.
    on_disk: BTreeMap<MacAddr, u64>,
}

impl LeaseStore {
    /// A store that never touches the disk (tests).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads `path`; a missing file is an empty store, a corrupt one is set aside.
    pub fn load(path: &Path) -> (Self, LoadReport) {
        let mut store = Self {
            path: Some(path.to_path_buf()),
            ..Self::default()
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (store, LoadReport::Fresh)
            }
            Err(e) => return (store, set_aside(path, format!("read failed: {e}"))),
        };
        let file: LeaseFile = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => return (store, set_aside(path, format!("parse failed: {e}"))),
        };
        if file.version != FILE_VERSION {
            let reason = format!("unknown version {}", file.version);
            return (store, set_aside(path, reason));
        }
        let n = file.leases.len();
        for lease in file.leases {
            store.on_disk.insert(lease.mac, lease.expires);
            store.bound.insert(lease.mac, lease);
        }
        for d in file.declined {
            store.declined.insert(d.ip, d.until);
        }
        (store, LoadReport::Loaded(n))
    }

    fn save(&mut self) -> Result<(), LeaseError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = LeaseFile {
            version: FILE_VERSION,
            leases: self.bound.values().copied().collect(),
            declined: self
                .declined
                .iter()
                .map(|(ip, until)| Declined {
                    ip: *ip,
                    until: *until,
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|source| LeaseError::Encode {
            path: path.clone(),
            source,
        })?;
        write_durably(path, &json).map_err(|source| LeaseError::Write {
            path: path.clone(),
            source,
        })?;
        self.on_disk = self.bound.iter().map(|(m, l)| (*m, l.expires)).collect();
        Ok(())
    }

    /// When `mac`'s lease ends according to the lease file (`None`: not in the file, or
    /// no file).
    pub fn expires_on_disk(&self, mac: MacAddr) -> Option<u64> {
        self.on_disk.get(&mac).copied()
    }

    /// The bound lease of `mac`, expired or not.
    pub fn bound(&self, mac: MacAddr) -> Option<Lease> {
        self.bound.get(&mac).copied()
    }

    /// The outstanding offer to `mac`, if still held at `now`.
    pub fn offered(&self, mac: MacAddr, now: u64) -> Option<Lease> {
        self.offers.get(&mac).copied().filter(|l| l.expires > now)
    }

    /// Addresses another machine holds at `now` (unexpired lease or offer), with holder.
    pub fn taken(&self, now: u64) -> BTreeMap<Ipv4Addr, MacAddr> {
        self.bound
            .values()
            .chain(self.offers.values())
            .filter(|l| l.expires > now)
            .map(|l| (l.ip, l.mac))
            .collect()
    }

    pub fn is_declined(&self, ip: Ipv4Addr, now: u64) -> bool {
        self.declined.get(&ip).is_some_and(|until| *until > now)
    }

    /// Holds `ip` for `mac` until `expires` (in memory). Offers expired at `now` are
    /// dropped first, so a flood of DISCOVERs from ever new MACs cannot grow the table.
    pub fn offer(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64, expires: u64) {
        self.offers.retain(|_, l| l.expires > now);
        self.offers.insert(mac, Lease { mac, ip, expires });
    }

    /// Offers held in memory, expired or not.
    pub fn offers_held(&self) -> usize {
        self.offers.len()
    }

    pub fn drop_offer(&mut self, mac: MacAddr) {
        self.offers.remove(&mac);
    }

    /// Binds `ip` to `mac`; a lease of another machine on the same address is removed
    /// (only reservations take an address that way). Persists.
    pub fn bind(&mut self, mac: MacAddr, ip: Ipv4Addr, expires: u64) -> Result<(), LeaseError> {
        self.offers.remove(&mac);
        self.bound.retain(|m, l| *m == mac || l.ip != ip);
        self.offers.retain(|_, l| l.ip != ip);
        self.bound.insert(mac, Lease { mac, ip, expires });
        self.save()
    }

    /// Moves the end of `mac`'s bound lease to `expires`, in memory only (the file keeps
    /// the earlier end until the next write).
    pub fn extend(&mut self, mac: MacAddr, expires: u64) {
        self.offers.remove(&mac);
        if let Some(lease) = self.bound.get_mut(&mac) {
            lease.expires = lease.expires.max(expires);
        }
    }

    /// Frees `mac`'s lease on `ip`; returns whether there was one. Persists.
    pub fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> Result<bool, LeaseError> {
        self.offers.remove(&mac);
        if self.bound.get(&mac).is_some_and(|l| l.ip == ip) {
            self.bound.remove(&mac);
            self.save()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Quarantines `ip` until `until` and drops whatever held it. Persists.
    pub fn decline(&mut self, ip: Ipv4Addr, until: u64) -> Result<(), LeaseError> {
        self.bound.retain(|_, l| l.ip != ip);
        self.offers.retain(|_, l| l.ip != ip);
        self.declined.insert(ip, until);
        self.save()
    }
}

fn set_aside(path: &Path, reason: String) -> LoadReport {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut to = path.as_os_str().to_owned();
    to.push(format!(".corrupt-{stamp}"));
    let to = PathBuf::from(to);
    match std::fs::rename(path, &to) {
        Ok(()) => tracing::error!(
            path = %path.display(),
            moved_to = %to.display(),
            "lease file is corrupt ({reason}); set aside, starting with no leases"
        ),
        Err(e) => tracing::error!(
            path = %path.display(),
            "lease file is corrupt ({reason}) and could not be set aside: {e}; \
             starting with no leases, it will be overwritten"
        ),
    }
    LoadReport::SetAside { reason, to }
}

/// Temporary file in the same folder, fsync, rename, fsync the folder.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&dir)?.sync_all()
}
