//! Live reload of the policy folder. STUB: being implemented.

use std::path::Path;

use super::{PolicyErrors, PolicyHandle};

/// Loads `dir` once (failing if it is invalid), then keeps the returned handle up to date
/// as files change; an invalid edit is logged with file and line and ignored.
pub fn watch(dir: &Path) -> Result<PolicyHandle, PolicyErrors> {
    let policy = super::load_dir(dir)?;
    Ok(PolicyHandle::new(policy))
}
