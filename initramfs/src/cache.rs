//! The layer cache on the machine's carte filesystem: one file per layer under `layers/`,
//! named by the sha256 of its decoded bytes; partial downloads under `tmp/`; an index
//! (`index.json`) made durable by write-temp, fsync, rename, fsync-folder; least-recently
//! used eviction that never evicts a layer the current plan needs nor a machine layer.
//!
//! A file enters the index only through [`Cache::commit`], which takes a [`Verified`]: the
//! proof, made by the fetch pipeline, that the file's full hash and size were checked. It
//! does not download, hash or mount anything itself, and it keeps no clock: "recently"
//! is a counter stored in the index.

use carte_contract::LayerKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Cache failures, naming the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache: need {need} bytes but only {free} free and {evictable} evictable")]
    NoSpace {
        need: u64,
        free: u64,
        evictable: u64,
    },
    #[error("cache: {0:?} is not a sha256 in lowercase hex")]
    BadName(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A file whose size and sha256 were checked against the plan while it was written, and
/// which was fsynced. Only the fetch pipeline makes one.
#[derive(Debug)]
pub struct Verified {
    pub(crate) temp: PathBuf,
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

impl Verified {
    /// Called by the fetch pipeline only, after comparing the streamed hash and size.
    pub(crate) fn after_checking(temp: PathBuf, sha256: String, size: u64) -> Verified {
        Verified { temp, sha256, size }
    }

    /// The sha256 the file was verified against.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// One cached layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Size in bytes of the decoded file.
    pub size: u64,
    /// Image name, for humans.
    pub name: String,
    /// Image version, for humans.
    pub version: u64,
    /// Kind; machine layers are never evicted.
    pub kind: LayerKind,
    /// Value of the index clock when last used.
    pub last_used: u64,
}

/// The on-disk index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Format version of this file.
    pub version: u32,
    /// Logical clock, bumped on every use.
    pub clock: u64,
    /// Cached layers by sha256.
    pub layers: BTreeMap<String, Entry>,
}

/// What [`Cache::open`] had to repair; printed on the console.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// Index entries dropped because their file was missing or of the wrong size.
    pub dropped: Vec<String>,
    /// Files removed because no index entry vouched for them (partial or unverified).
    pub removed: Vec<PathBuf>,
    /// The index was unreadable and was set aside as `index.json.bad`.
    pub index_reset: bool,
}

/// The cache, open on a folder.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    index: Index,
}

fn valid_sha(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Make a rename or creation inside `dir` durable.
fn fsync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", dir))
}

impl Cache {
    /// Open (creating if needed) the cache in `dir`, and repair it: drop index entries
    /// without a matching file, remove files no entry vouches for and all of `tmp/`.
    pub fn open(dir: &Path) -> Result<(Cache, Repairs), CacheError> {
        let mut repairs = Repairs::default();
        for sub in ["layers", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io("mkdir", &p))?;
        }
        let index_path = dir.join("index.json");
        let index = match fs::read(&index_path) {
            Ok(bytes) => match serde_json::from_slice::<Index>(&bytes) {
                Ok(i) => i,
                Err(_) => {
                    let bad = dir.join("index.json.bad");
                    fs::rename(&index_path, &bad).map_err(io("rename", &index_path))?;
                    repairs.index_reset = true;
                    Index::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(io("read", &index_path)(e)),
        };
        let mut cache = Cache {
            dir: dir.to_path_buf(),
            index,
        };
        cache.index.version = 1;
        let entries: Vec<(String, u64)> = cache
            .index
            .layers
            .iter()
            .map(|(k, e)| (k.clone(), e.size))
            .collect();
        for (sha, size) in entries {
            let ok = valid_sha(&sha)
                && fs::metadata(cache.path_of(&sha)).is_ok_and(|m| m.is_file() && m.len() == size);
            if !ok {
                cache.index.layers.remove(&sha);
                repairs.dropped.push(sha);
            }
        }
        let layers = dir.join("layers");
        for e in fs::read_dir(&layers).map_err(io("list", &layers))? {
            let e = e.map_err(io("list", &layers))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !cache.index.layers.contains_key(&name) {
                remove_any(&e.path())?;
                repairs.removed.push(e.path());
            }
        }
        let tmp = dir.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io("list", &tmp))? {
            let e = e.map_err(io("list", &tmp))?;
            remove_any(&e.path())?;
            repairs.removed.push(e.path());
        }
        if repairs != Repairs::default() {
            cache.save()?;
        }
        Ok((cache, repairs))
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The index as it stands.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Where the layer with this sha256 lives (whether or not it is cached).
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.dir.join("layers").join(sha256)
    }

    /// Where a download of this layer is written before it is verified.
    pub fn temp_path(&self, sha256: &str) -> Result<PathBuf, CacheError> {
        if !valid_sha(sha256) {
            return Err(CacheError::BadName(sha256.to_string()));
        }
        Ok(self.dir.join("tmp").join(format!("{sha256}.part")))
    }

    /// The cached, verified file for `sha256`, marking it used; `None` if not cached.
    /// Call [`Cache::save`] to make the new use order durable.
    pub fn get(&mut self, sha256: &str) -> Option<PathBuf> {
        self.index.clock += 1;
        let clock = self.index.clock;
        let e = self.index.layers.get_mut(sha256)?;
        e.last_used = clock;
        Some(self.path_of(sha256))
    }

    /// Whether `sha256` is cached (without marking it used).
    pub fn contains(&self, sha256: &str) -> bool {
        self.index.layers.contains_key(sha256)
    }

    /// Bytes held by cached layers.
    pub fn used_bytes(&self) -> u64 {
        self.index.layers.values().map(|e| e.size).sum()
    }

    /// Move a verified file into place and record it, durably: rename, fsync the folder,
    /// then write the index.
    pub fn commit(
        &mut self,
        verified: Verified,
        name: &str,
        version: u64,
        kind: LayerKind,
    ) -> Result<PathBuf, CacheError> {
        if !valid_sha(&verified.sha256) {
            return Err(CacheError::BadName(verified.sha256));
        }
        let dest = self.path_of(&verified.sha256);
        fs::rename(&verified.temp, &dest).map_err(io("rename", &verified.temp))?;
        fsync_dir(&self.dir.join("layers"))?;
        self.index.clock += 1;
        self.index.layers.insert(
            verified.sha256.clone(),
            Entry {
                size: verified.size,
                name: name.to_string(),
                version,
                kind,
                last_used: self.index.clock,
            },
        );
        self.save()?;
        Ok(dest)
    }

    /// Which layers to evict, oldest use first, so that `need` bytes fit when `free` are
    /// free now; never one in `keep` nor a machine layer. Pure: decides, does not delete.
    pub fn plan_eviction(
        &self,
        need: u64,
        free: u64,
        keep: &HashSet<String>,
    ) -> Result<Vec<String>, CacheError> {
        if need <= free {
            return Ok(Vec::new());
        }
        let mut candidates: Vec<(&String, &Entry)> = self
            .index
            .layers
            .iter()
            .filter(|(sha, e)| !keep.contains(*sha) && e.kind != LayerKind::Machine)
            .collect();
        candidates.sort_by_key(|(sha, e)| (e.last_used, (*sha).clone()));
        let mut freed = free;
        let mut out = Vec::new();
        for (sha, e) in &candidates {
            if freed >= need {
                break;
            }
            freed += e.size;
            out.push((*sha).clone());
        }
        if freed < need {
            return Err(CacheError::NoSpace {
                need,
                free,
                evictable: candidates.iter().map(|(_, e)| e.size).sum(),
            });
        }
        Ok(out)
    }

    /// Evict these layers: drop them from the index durably first, then delete the files
    /// (a crash in between leaves strays that [`Cache::open`] removes).
    pub fn evict(&mut self, shas: &[String]) -> Result<(), CacheError> {
        for s in shas {
            self.index.layers.remove(s);
        }
        self.save()?;
        for s in shas {
            let p = self.path_of(s);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &p)(e)),
            }
        }
        Ok(())
    }

    /// Write the index: temp file, fsync, rename over, fsync the folder.
    pub fn save(&self) -> Result<(), CacheError> {
        let path = self.dir.join("index.json");
        let temp = self.dir.join("index.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.index).map_err(|e| CacheError::Io {
            op: "encode",
            path: path.clone(),
            source: e.into(),
        })?;
        let mut f = File::create(&temp).map_err(io("create", &temp))?;
        f.write_all(&bytes).map_err(io("write", &temp))?;
        f.sync_all().map_err(io("fsync", &temp))?;
        drop(f);
        fs::rename(&temp, &path).map_err(io("rename", &temp))?;
        fsync_dir(&self.dir)
    }
}

fn remove_any(p: &Path) -> Result<(), CacheError> {
    let r = if p.is_dir() && !p.is_symlink() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    };
    r.map_err(io("remove", p))
}

/// Free bytes on the filesystem holding `dir` (for unprivileged writers).
pub fn free_bytes(dir: &Path) -> Result<u64, CacheError> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(|e| CacheError::Io {
        op: "statvfs",
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    Ok(s.blocks_available() * s.fragment_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(c: char) -> String {
        c.to_string().repeat(64)
    }

    /// Put a file in tmp/ and commit it as if verified.
    fn put(cache: &mut Cache, c: char, size: usize, kind: LayerKind) {
        let s = sha(c);
        let t = cache.temp_path(&s).expect("temp");
        fs::write(&t, vec![0u8; size]).expect("write");
        let v = Verified::after_checking(t, s, size as u64);
        cache
            .commit(v, &format!("layer-{c}"), 1, kind)
            .expect("commit");
    }

    #[test]
    fn commit_persists_and_reopens() {
        let d = tempfile::tempdir().expect("tempdir");
        let (mut c, repairs) = Cache::open(d.path()).expect("open");
        assert_eq!(repairs, Repairs::default());
        put(&mut c, 'a', 10, LayerKind::System);
        assert!(d.path().join("layers").join(sha('a')).is_file());
        assert!(!d.path().join("index.json.tmp").exists());
        let (mut c2, repairs) = Cache::open(d.path()).expect("reopen");
        assert_eq!(repairs, Repairs::default());
        assert_eq!(
            c2.get(&sha('a')),
            Some(d.path().join("layers").join(sha('a')))
        );
        assert_eq!(c2.get(&sha('b')), None);
        assert_eq!(c2.used_bytes(), 10);
    }

    #[test]
    fn open_removes_unvouched_files_and_drops_missing_entries() {
        let d = tempfile::tempdir().expect("tempdir");
        let (mut c, _) = Cache::open(d.path()).expect("open");
        put(&mut c, 'a', 10, LayerKind::System);
        put(&mut c, 'b', 10, LayerKind::System);
        // A partial download, a file that never entered the index, a vanished layer and
        // one whose size changed.
        fs::write(
            d.path().join("tmp").join(format!("{}.part", sha('c'))),
            b"x",
        )
        .expect("w");
        fs::write(d.path().join("layers").join(sha('d')), b"x").expect("w");
        fs::remove_file(d.path().join("layers").join(sha('a'))).expect("rm");
        fs::write(d.path().join("layers").join(sha('b')), b"short").expect("w");
        let (c, repairs) = Cache::open(d.path()).expect("reopen");
        assert!(c.index().layers.is_empty());
        let mut dropped = repairs.dropped.clone();
        dropped.sort();
        assert_eq!(dropped, [sha('a'), sha('b')]);
        assert!(repairs
            .removed
            .contains(&d.path().join("layers").join(sha('d'))));
        assert!(repairs
            .removed
            .contains(&d.path().join("layers").join(sha('b'))));
        assert_eq!(fs::read_dir(d.path().join("tmp")).expect("ls").count(), 0);
        assert_eq!(
            fs::read_dir(d.path().join("layers")).expect("ls").count(),
            0
        );
        // And the repaired index is durable.
        let (c, repairs) = Cache::open(d.path()).expect("again");
        assert_eq!(repairs, Repairs::default());
        assert!(c.index().layers.is_empty());
    }

    #[test]
    fn a_corrupt_index_is_set_aside() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("index.json"), b"{not json").expect("w");
        let (c, repairs) = Cache::open(d.path()).expect("open");
        assert!(repairs.index_reset);
        assert!(c.index().layers.is_empty());
        assert!(d.path().join("index.json.bad").exists());
    }

    #[test]
    fn eviction_is_lru_and_respects_keep_and_machine() {
        let d = tempfile::tempdir().expect("tempdir");
        let (mut c, _) = Cache::open(d.path()).expect("open");
        put(&mut c, 'a', 100, LayerKind::System); // oldest
        put(&mut c, 'b', 100, LayerKind::Machine);
        put(&mut c, 'c', 100, LayerKind::System);
        put(&mut c, 'd', 100, LayerKind::User);
        c.get(&sha('a')); // a is now the most recent
        let keep: HashSet<String> = [sha('d')].into();
        let check = |need, free, want: Result<Vec<char>, ()>| {
            let got = c.plan_eviction(need, free, &keep).map_err(|_| ());
            let want = want.map(|v| v.into_iter().map(sha).collect::<Vec<_>>());
            assert_eq!(got, want, "need {need} free {free}");
        };
        check(50, 50, Ok(vec![]));
        check(60, 50, Ok(vec!['c']));
        check(150, 50, Ok(vec!['c']));
        check(151, 50, Ok(vec!['c', 'a']));
        check(250, 50, Ok(vec!['c', 'a']));
        check(251, 50, Err(()));
        let err = c.plan_eviction(251, 50, &keep).expect_err("no space");
        assert_eq!(
            err.to_string(),
            "cache: need 251 bytes but only 50 free and 200 evictable"
        );
        c.evict(&[sha('c')]).expect("evict");
        assert!(!d.path().join("layers").join(sha('c')).exists());
        let (c2, repairs) = Cache::open(d.path()).expect("reopen");
        assert_eq!(repairs, Repairs::default());
        assert!(!c2.contains(&sha('c')));
        assert!(c2.contains(&sha('a')) && c2.contains(&sha('b')) && c2.contains(&sha('d')));
    }

    #[test]
    fn bad_names_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let (c, _) = Cache::open(d.path()).expect("open");
        assert!(c.temp_path("../../etc/passwd").is_err());
        assert!(c.temp_path(&"A".repeat(64)).is_err());
        assert!(c.temp_path(&sha('0')).is_ok());
    }

    #[test]
    fn free_bytes_reports_something() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(d.path()).expect("statvfs") > 0);
    }
}
