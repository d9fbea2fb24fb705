//! Sync-back: before the new setup is composed, each overlay upper the plan names (the
//! machine layer, or a writable layer's changes) is packed ([`crate::pack`]) into a temp
//! file on the carte filesystem while hashed, and — when its sha256 differs from the last
//! one the server confirmed — streamed to the plan's upload URL (`PUT`, bearer = the plan's
//! token, `X-Carte-Sha256`). Only a 2xx answer records the new hash as confirmed. A failed
//! upload leaves a `.pending` marker (with the reason) and is tried again next boot.
//!
//! An empty upper that was never confirmed is nothing to send (a writable layer the last
//! session did not write to); once something was confirmed, an empty upper is a change
//! (everything reverted) and goes up like any other.
//!
//! It never deletes or changes the upper folders themselves (the local data stays until
//! the server has it, and after), and never fails the boot: outcomes are reported.

use crate::fetch::hex;
use crate::pack;
use carte_contract::{Plan, SyncTarget};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Header carrying the sha256 of an upload (imaged's `SHA256_HEADER`).
pub const SHA256_HEADER: &str = "X-Carte-Sha256";

/// One upper to sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// For messages and marker names: `machine` or `layer-<name>`.
    pub key: String,
    /// The overlay upper folder.
    pub upper: PathBuf,
    /// Where to PUT it.
    pub upload_url: String,
}

/// How one item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No upper folder, or an empty one never uploaded: the previous session wrote
    /// nothing there.
    Nothing,
    /// Same content as the last confirmed upload.
    Unchanged { sha256: String },
    /// Uploaded and confirmed.
    Uploaded { sha256: String, bytes: u64 },
}

/// Sync-back failures, naming the item and the URL or path.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync-back {key}: pack {upper} into {temp}: {source}")]
    Pack {
        key: String,
        upper: PathBuf,
        temp: PathBuf,
        source: io::Error,
    },
    #[error("sync-back {key}: upload to {url}: {why}")]
    Upload {
        key: String,
        url: String,
        why: String,
    },
    #[error("sync-back {key}: upload to {url}: server answered {status}")]
    Status {
        key: String,
        url: String,
        status: u16,
    },
    #[error("sync-back {key}: record {path}: {source}")]
    State {
        key: String,
        path: PathBuf,
        source: io::Error,
    },
}

/// The uppers `plan` asks to sync, where compose keeps them below `carte_fs`
/// (`machine/root/upper`, `machine/rw/<layer>/upper`).
pub fn items(plan: &Plan, carte_fs: &Path) -> Vec<Item> {
    let machine = carte_fs.join("machine");
    plan.sync_back
        .iter()
        .map(|s| match &s.target {
            SyncTarget::Machine => Item {
                key: "machine".into(),
                upper: machine.join("root/upper"),
                upload_url: s.upload_url.clone(),
            },
            SyncTarget::Layer(name) => Item {
                key: layer_key(name),
                upper: machine
                    .join("rw")
                    .join(carte_contract::file_name(name))
                    .join("upper"),
                upload_url: s.upload_url.clone(),
            },
        })
        .collect()
}

/// The key (marker and message name) of a writable layer's upper: `layer-<name>`.
pub fn layer_key(name: &str) -> String {
    format!("layer-{}", carte_contract::file_name(name))
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write `data` to `path` durably: temp file, fsync, rename, fsync the folder.
fn write_durably(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The marker a failed upload leaves for the next boot, in `state`.
pub fn pending_marker(state: &Path, key: &str) -> PathBuf {
    state.join(format!("{key}.pending"))
}

/// The sha256 of the last upload the server confirmed, in `state`.
pub fn confirmed_file(state: &Path, key: &str) -> PathBuf {
    state.join(format!("{key}.confirmed"))
}

/// Sync one item; `state` is the folder for temp archives and markers.
pub fn sync_one(
    agent: &ureq::Agent,
    token: &str,
    item: &Item,
    state: &Path,
) -> Result<Outcome, SyncError> {
    if !item.upper.is_dir() {
        return Ok(Outcome::Nothing);
    }
    let key = item.key.clone();
    let empty = fs::read_dir(&item.upper).is_ok_and(|mut d| d.next().is_none());
    if empty && !confirmed_file(state, &key).exists() {
        return Ok(Outcome::Nothing);
    }
    let temp = state.join(format!("{key}.tar.part"));
    let r = upload(agent, token, item, state, &temp);
    // The archive is only a copy of the upper: it goes either way.
    let _ = fs::remove_file(&temp);
    let pending = pending_marker(state, &key);
    match &r {
        Ok(_) => {
            let _ = fs::remove_file(&pending);
        }
        Err(e) => {
            // Best effort: without the marker the next boot still retries (the hash
            // differs from the confirmed one); the marker tells an admin why.
            let _ = write_durably(&pending, format!("{e}\n").as_bytes());
        }
    }
    r
}

/// The sha256 of the tar `upper` packs to now, without keeping the tar.
pub fn fingerprint(upper: &Path) -> io::Result<String> {
    let w = Hashing {
        inner: io::sink(),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let (_, w) = pack::pack(upper, w)?;
    Ok(hex(w.hasher.finalize()))
}

/// Records `sha256` as what the server holds of `key` (after a restore from the server,
/// whose upper the server therefore has): the next sync sends it only once it changes.
pub fn record_confirmed(state: &Path, key: &str, sha256: &str) -> io::Result<()> {
    fs::create_dir_all(state)?;
    write_durably(
        &confirmed_file(state, key),
        format!("{sha256}\n").as_bytes(),
    )
}

fn upload(
    agent: &ureq::Agent,
    token: &str,
    item: &Item,
    state: &Path,
    temp: &Path,
) -> Result<Outcome, SyncError> {
    let key = item.key.clone();
    let pack_err = |source| SyncError::Pack {
        key: key.clone(),
        upper: item.upper.clone(),
        temp: temp.to_path_buf(),
        source,
    };
    fs::create_dir_all(state).map_err(pack_err)?;
    let file = File::create(temp).map_err(pack_err)?;
    let w = Hashing {
        inner: BufWriter::new(file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let (_, mut w) = pack::pack(&item.upper, w).map_err(pack_err)?;
    w.flush().map_err(pack_err)?;
    let bytes = w.bytes;
    let sha256 = hex(w.hasher.finalize());
    let confirmed = confirmed_file(state, &key);
    if fs::read_to_string(&confirmed).is_ok_and(|c| c.trim() == sha256) {
        return Ok(Outcome::Unchanged { sha256 });
    }
    let mut body = File::open(temp).map_err(pack_err)?;
    let resp = agent
        .put(&item.upload_url)
        .header("Authorization", format!("Bearer {token}"))
        .header(SHA256_HEADER, &sha256)
        .header("Content-Type", "application/x-tar")
        .header("Content-Length", bytes.to_string())
        .send(ureq::SendBody::from_reader(&mut body))
        .map_err(|e| SyncError::Upload {
            key: key.clone(),
            url: item.upload_url.clone(),
            why: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(SyncError::Status {
            key,
            url: item.upload_url.clone(),
            status,
        });
    }
    write_durably(&confirmed, format!("{sha256}\n").as_bytes()).map_err(|source| {
        SyncError::State {
            key,
            path: confirmed.clone(),
            source,
        }
    })?;
    Ok(Outcome::Uploaded { sha256, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{agent, Timeouts};
    use crate::testhttp;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    fn ua() -> ureq::Agent {
        agent(Timeouts {
            connect: Duration::from_secs(5),
            per_read: Duration::from_secs(5),
        })
    }

    fn setup(root: &Path, url: &str) -> Item {
        let upper = root.join("machine/root/upper");
        fs::create_dir_all(upper.join("etc")).expect("mkdir");
        fs::write(upper.join("etc/hostname"), "node1\n").expect("w");
        Item {
            key: "machine".into(),
            upper,
            upload_url: url.into(),
        }
    }

    #[test]
    fn upload_is_confirmed_then_unchanged_then_changed_again() {
        let status = Arc::new(AtomicU16::new(201));
        let s2 = status.clone();
        let srv = testhttp::serve(move |_| (s2.load(Ordering::Relaxed), b"{}".to_vec()));
        let t = tempfile::tempdir().expect("tempdir");
        let item = setup(t.path(), &format!("{}/up", srv.base));
        let state = t.path().join("sync");

        let out = sync_one(&ua(), "tok", &item, &state).expect("upload");
        let Outcome::Uploaded { sha256, bytes } = out else {
            panic!("{out:?}")
        };
        let seen = srv.seen();
        assert_eq!(seen.len(), 1);
        let r = &seen[0];
        assert_eq!((r.method.as_str(), r.path.as_str()), ("PUT", "/up"));
        assert_eq!(r.header("authorization"), Some("Bearer tok"));
        assert_eq!(r.header("x-carte-sha256"), Some(sha256.as_str()));
        assert_eq!(r.body.len() as u64, bytes);
        let got = hex(Sha256::digest(&r.body));
        assert_eq!(got, sha256, "the body is what the header names");
        let names: Vec<String> = tar::Archive::new(&r.body[..])
            .entries()
            .expect("tar")
            .map(|e| e.expect("e").path().expect("p").display().to_string())
            .collect();
        assert_eq!(names, ["etc", "etc/hostname"]);
        assert_eq!(
            fs::read_to_string(confirmed_file(&state, "machine")).expect("confirmed"),
            format!("{sha256}\n")
        );
        assert!(
            !state.join("machine.tar.part").exists(),
            "temp archive gone"
        );

        // Nothing changed: nothing sent.
        let out = sync_one(&ua(), "tok", &item, &state).expect("again");
        assert_eq!(out, Outcome::Unchanged { sha256 });
        assert_eq!(srv.seen().len(), 1);

        // A change is uploaded again.
        fs::write(item.upper.join("etc/motd"), "hi\n").expect("w");
        let out = sync_one(&ua(), "tok", &item, &state).expect("changed");
        assert!(matches!(out, Outcome::Uploaded { .. }), "{out:?}");
        assert_eq!(srv.seen().len(), 2);
    }

    #[test]
    fn a_500_keeps_the_data_and_leaves_a_marker_for_the_next_boot() {
        let status = Arc::new(AtomicU16::new(500));
        let s2 = status.clone();
        let srv = testhttp::serve(move |_| (s2.load(Ordering::Relaxed), Vec::new()));
        let t = tempfile::tempdir().expect("tempdir");
        let item = setup(t.path(), &format!("{}/up", srv.base));
        let state = t.path().join("sync");

        let e = sync_one(&ua(), "tok", &item, &state).expect_err("500");
        assert!(matches!(e, SyncError::Status { status: 500, .. }), "{e}");
        assert_eq!(
            fs::read_to_string(item.upper.join("etc/hostname")).expect("kept"),
            "node1\n",
            "local data untouched"
        );
        let marker = fs::read_to_string(pending_marker(&state, "machine")).expect("marker");
        assert!(marker.contains("server answered 500"), "{marker}");
        assert!(
            !confirmed_file(&state, "machine").exists(),
            "nothing confirmed"
        );

        // Next boot, the server works: uploaded (not "unchanged"), marker cleared.
        status.store(200, Ordering::Relaxed);
        let out = sync_one(&ua(), "tok", &item, &state).expect("retry");
        assert!(matches!(out, Outcome::Uploaded { .. }), "{out:?}");
        assert!(!pending_marker(&state, "machine").exists());
        assert_eq!(srv.seen().len(), 2);
    }

    #[test]
    fn an_empty_upper_is_nothing_until_something_was_confirmed() {
        let srv = testhttp::serve(|_| (201, b"{}".to_vec()));
        let t = tempfile::tempdir().expect("tempdir");
        let upper = t.path().join("machine/rw/notes/upper");
        fs::create_dir_all(&upper).expect("mkdir");
        let item = Item {
            key: layer_key("notes"),
            upper: upper.clone(),
            upload_url: format!("{}/up", srv.base),
        };
        let state = t.path().join("sync");
        let out = sync_one(&ua(), "tok", &item, &state).expect("empty");
        assert_eq!(out, Outcome::Nothing);
        assert!(srv.seen().is_empty(), "an untouched layer sent nothing");

        fs::write(upper.join("boots"), "boot=1\n").expect("w");
        let out = sync_one(&ua(), "tok", &item, &state).expect("written");
        assert!(matches!(out, Outcome::Uploaded { .. }), "{out:?}");
        // Everything reverted: that is a change now, and it goes up.
        fs::remove_file(upper.join("boots")).expect("rm");
        let out = sync_one(&ua(), "tok", &item, &state).expect("reverted");
        assert!(matches!(out, Outcome::Uploaded { .. }), "{out:?}");
        assert_eq!(srv.seen().len(), 2);
    }

    #[test]
    fn a_recorded_fingerprint_makes_an_untouched_restored_upper_unchanged() {
        let srv = testhttp::serve(|_| (201, b"{}".to_vec()));
        let t = tempfile::tempdir().expect("tempdir");
        let upper = t.path().join("machine/rw/notes/upper");
        fs::create_dir_all(&upper).expect("mkdir");
        fs::write(upper.join("boots"), "boot=1\n").expect("w");
        let state = t.path().join("sync");
        let key = layer_key("notes");
        let sha = fingerprint(&upper).expect("fingerprint");
        record_confirmed(&state, &key, &sha).expect("record");
        let item = Item {
            key,
            upper: upper.clone(),
            upload_url: format!("{}/up", srv.base),
        };
        let out = sync_one(&ua(), "tok", &item, &state).expect("unchanged");
        assert_eq!(out, Outcome::Unchanged { sha256: sha });
        assert!(srv.seen().is_empty());
        fs::write(upper.join("boots"), "boot=1\nboot=2\n").expect("w");
        let out = sync_one(&ua(), "tok", &item, &state).expect("changed");
        assert!(matches!(out, Outcome::Uploaded { .. }), "{out:?}");
    }

    #[test]
    fn no_upper_is_nothing_and_items_follow_compose_paths() {
        let t = tempfile::tempdir().expect("tempdir");
        let item = Item {
            key: "machine".into(),
            upper: t.path().join("absent"),
            upload_url: "http://127.0.0.1:9/up".into(),
        };
        let out = sync_one(&ua(), "t", &item, &t.path().join("sync")).expect("nothing");
        assert_eq!(out, Outcome::Nothing);

        let plan: Plan = serde_json::from_value(serde_json::json!({
            "machine": {"mac": "52:54:00:00:00:01"},
            "mode": "compose",
            "disk": {"select": "first"},
            "layers": [],
            "machine_layer": "persist",
            "sync_back": [
                {"target": "machine", "upload_url": "http://192.0.2.1/m"},
                {"target": {"layer": "exp/1"}, "upload_url": "http://192.0.2.1/l"}
            ],
            "token": "t",
            "events_url": "http://192.0.2.1/e"
        }))
        .expect("plan");
        let got = items(&plan, Path::new("/c"));
        assert_eq!(got[0].upper, Path::new("/c/machine/root/upper"));
        assert_eq!(got[1].key, "layer-exp_1");
        assert_eq!(got[1].upper, Path::new("/c/machine/rw/exp_1/upper"));
    }
}
