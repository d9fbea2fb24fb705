//! Content-addressed blob storage: `put` streams bytes into a file named by their sha256.
//!
//! The filesystem implementation writes to `$DATA/tmp/` while hashing, fsyncs the file,
//! renames it to `$DATA/blobs/sha256/ab/abcdef...` and fsyncs the folder, so a blob that
//! has a name is complete and durable. It knows nothing of images or versions: recording
//! a blob (and so making it visible) is the metadata store's job, done only after `put`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::model::Digest;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob: declared sha256 {declared} but received {actual}")]
    Mismatch { declared: Digest, actual: Digest },
    #[error("blob: upload exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("blob: reading the upload: {0}")]
    Read(io::Error),
    #[error("blob: {step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// A stored blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// A blob as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Digest,
    /// Seconds since the Unix epoch when it was stored: gc spares young unreferenced
    /// blobs, which may be uploads whose version is about to be recorded.
    pub stored_at: u64,
}

/// Where blobs live. Narrow so an object-storage backend can replace the filesystem.
pub trait BlobStore: Send + Sync {
    /// Streams `body` into a blob. Fails, storing nothing, when the stream fails, when it
    /// exceeds `limit` bytes or when `declared` is given and differs from the content's
    /// sha256.
    fn put(
        &self,
        body: &mut dyn Read,
        declared: Option<&Digest>,
        limit: u64,
    ) -> Result<BlobInfo, BlobError>;
    /// The path of a blob, or `None` when it is not stored.
    fn locate(&self, digest: &Digest) -> Result<Option<PathBuf>, BlobError>;
    /// Every stored blob with when it was stored.
    fn list(&self) -> Result<Vec<StoredBlob>, BlobError>;
    /// Deletes a blob; deleting a missing blob is not an error.
    fn delete(&self, digest: &Digest) -> Result<(), BlobError>;
    /// Removes leftovers of interrupted uploads (except those of other live processes);
    /// returns how many. Call at startup only.
    fn clean_tmp(&self) -> Result<usize, BlobError>;
}

/// Blobs as files under a data folder.
#[derive(Debug)]
pub struct FsBlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

impl FsBlobStore {
    /// Opens (creating folders as needed) the blob store under `data`.
    pub fn open(data: &Path) -> Result<FsBlobStore, BlobError> {
        let blobs = data.join("blobs").join("sha256");
        let tmp = data.join("tmp");
        fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        Ok(FsBlobStore {
            blobs,
            tmp,
            counter: AtomicU64::new(0),
        })
    }

    fn path_of(&self, digest: &Digest) -> PathBuf {
        let s = digest.as_str();
        self.blobs.join(&s[..2]).join(s)
    }

    /// Copies `body` into `file` while hashing; stops at the limit.
    fn fill(
        file: &mut File,
        body: &mut dyn Read,
        limit: u64,
        path: &Path,
    ) -> Result<BlobInfo, BlobError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BlobError::Read(e)),
            };
            size += n as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(io_err("write", path))?;
        }
        file.sync_all().map_err(io_err("fsync", path))?;
        Ok(BlobInfo {
            digest: Digest::from_bytes(&hasher.finalize()),
            size,
        })
    }
}

fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync folder", dir))
}

impl BlobStore for FsBlobStore {
    fn put(
        &self,
        body: &mut dyn Read,
        declared: Option<&Digest>,
        limit: u64,
    ) -> Result<BlobInfo, BlobError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("upload-{}-{n}", std::process::id()));
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        let result = Self::fill(&mut file, body, limit, &tmp).and_then(|info| match declared {
            Some(d) if *d != info.digest => Err(BlobError::Mismatch {
                declared: d.clone(),
                actual: info.digest,
            }),
            _ => Ok(info),
        });
        drop(file);
        let info = match result {
            Ok(info) => info,
            Err(e) => {
                // Best effort: a leftover is also removed by the next start's clean_tmp.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let dest = self.path_of(&info.digest);
        let dir = dest.parent().unwrap_or(&self.blobs).to_path_buf();
        let created_dir = !dir.exists();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        if created_dir {
            sync_dir(&self.blobs)?;
        }
        // Same content, same name: renaming over an existing blob is harmless.
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(BlobError::Io {
                step: "rename into place",
                path: dest,
                source: e,
            });
        }
        sync_dir(&dir)?;
        Ok(info)
    }

    fn locate(&self, digest: &Digest) -> Result<Option<PathBuf>, BlobError> {
        let p = self.path_of(digest);
        match fs::metadata(&p) {
            Ok(_) => Ok(Some(p)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::Io {
                step: "stat",
                path: p,
                source: e,
            }),
        }
    }

    fn list(&self) -> Result<Vec<StoredBlob>, BlobError> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.blobs).map_err(io_err("list", &self.blobs))? {
            let shard = shard.map_err(io_err("list", &self.blobs))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&shard).map_err(io_err("list", &shard))? {
                let entry = entry.map_err(io_err("list", &shard))?;
                // Anything not named like a digest is not ours to report (or delete).
                let Some(digest) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let stored_at = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map_err(io_err("stat", &entry.path()))?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                out.push(StoredBlob { digest, stored_at });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        let p = self.path_of(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Io {
                step: "delete",
                path: p,
                source: e,
            }),
        }
    }

    fn clean_tmp(&self) -> Result<usize, BlobError> {
        let mut n = 0;
        for entry in fs::read_dir(&self.tmp).map_err(io_err("list", &self.tmp))? {
            let entry = entry.map_err(io_err("list", &self.tmp))?;
            if in_flight_elsewhere(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let p = entry.path();
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(io_err("clean", &p))?;
            n += 1;
        }
        Ok(n)
    }
}

/// Whether a tmp file is an upload of another live process (`upload-<pid>-<n>`): a CLI
/// opening the data folder must not break the uploads of a running server.
fn in_flight_elsewhere(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix("upload-")
        .and_then(|r| r.split('-').next())
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists()
}

/// sha256 of a byte slice, for tests and small artefacts.
pub fn sha256_of(bytes: &[u8]) -> Digest {
    Digest::from_bytes(&Sha256::digest(bytes))
}

/// sha256 and size of a reader, streamed (the client's first pass before a push).
pub fn sha256_reader(r: &mut dyn Read) -> io::Result<BlobInfo> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(BlobInfo {
        digest: Digest::from_bytes(&hasher.finalize()),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_names_by_content_and_shards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("open");
        let info = store
            .put(&mut &b"hello"[..], None, 100)
            .expect("put succeeds");
        assert_eq!(info.digest, sha256_of(b"hello"));
        assert_eq!(info.size, 5);
        let p = store.locate(&info.digest).expect("locate").expect("stored");
        let s = info.digest.as_str();
        assert!(
            p.ends_with(format!("blobs/sha256/{}/{s}", &s[..2])),
            "{p:?}"
        );
        assert_eq!(fs::read(&p).expect("read"), b"hello");
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].digest, info.digest);
    }

    #[test]
    fn limit_is_enforced_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::open(dir.path()).expect("open");
        let err = store
            .put(&mut &[7u8; 11][..], None, 10)
            .expect_err("over the limit");
        assert!(matches!(err, BlobError::TooLarge { limit: 10 }), "{err}");
        assert!(store.list().expect("list").is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        // Exactly at the limit is fine.
        store.put(&mut &[7u8; 10][..], None, 10).expect("at limit");
    }
}
