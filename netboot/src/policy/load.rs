//! Loading a policy folder. STUB: being implemented.

use std::path::{Path, PathBuf};

use super::Policy;

/// One problem in one file, with the line it is on (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// Every problem found in a folder; a policy with any error is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors(pub Vec<PolicyError>);

pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    let _ = dir;
    Ok(Policy::default())
}
