//! The builders' error type: one variant per step, each naming the path or tool involved.
//!
//! It does not classify errors for HTTP or exit codes; callers (CLI, API) decide that.

use std::io;
use std::path::PathBuf;

/// What went wrong while building a layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An external tool could not be started.
    #[error("cannot run {tool} (is it installed? scripts/setup installs it): {source}")]
    ToolMissing {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    /// An external tool exited with an error.
    #[error("{tool} failed for {path} ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    /// An archive entry would land outside the staging tree.
    #[error("archive {archive}: entry {entry:?} escapes the staging tree ({why})")]
    Traversal {
        archive: PathBuf,
        entry: PathBuf,
        why: &'static str,
    },
    /// An archive is malformed or of an unsupported kind.
    #[error("archive {archive}: {what}")]
    BadArchive { archive: PathBuf, what: String },
    /// An OCI blob's content does not match its digest.
    #[error("oci archive {archive}: blob {digest} has sha256 {actual}")]
    DigestMismatch {
        archive: PathBuf,
        digest: String,
        actual: String,
    },
    /// Something needs privileges the builder does not have.
    #[error("{path}: {what} needs root and is not emulated")]
    NeedsRoot { path: PathBuf, what: String },
    /// The kernel input is not usable.
    #[error("kernel {path}: {what}")]
    BadKernel { path: PathBuf, what: String },
}

/// Short form for the builders' results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the step and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, step: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, step: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            step,
            path: path.into(),
            source,
        })
    }
}
