//! Live reload of the policy folder: the folder is watched with `notify`, bursts of
//! changes are debounced, and the whole folder is reloaded; only a policy that validates
//! replaces the one in force.
//!
//! The watcher runs on its own OS thread (not a tokio task), so it works the same inside
//! or outside a runtime, and it stops once every clone of the returned handle is gone.
//! It watches the folder, not single files, so editors that write a temp file and rename
//! it over the original are seen. A folder replaced as a whole is noticed within a second
//! or so and watched anew; a removed folder leaves the last good policy in force.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::catalog::{ImageCatalog, NoCatalog};
use super::load::is_policy_file_name;
use super::{PolicyError, PolicyErrors, PolicyHandle};

/// Quiet time after the last change before reloading, so a burst of writes (an editor's
/// temp file, rename and chmod) costs one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// How often the watcher thread checks whether anyone still holds the handle.
const LIVENESS: Duration = Duration::from_secs(1);

/// [`watch_with`] without an image store: setups that name images do not validate.
pub fn watch(dir: &Path) -> Result<PolicyHandle, PolicyErrors> {
    watch_with(dir, Arc::new(NoCatalog))
}

/// Loads `dir` once (failing if it is invalid), then keeps the returned handle up to date
/// as files change; an invalid edit is logged with file and line and ignored. Image
/// references are checked against `catalog` at every load. A change in the catalog alone
/// (a version pushed) does not cause a reload.
pub fn watch_with(
    dir: &Path,
    catalog: Arc<dyn ImageCatalog>,
) -> Result<PolicyHandle, PolicyErrors> {
    let policy = super::load_dir_with(dir, catalog.as_ref())?;
    let handle = PolicyHandle::new(policy);
    let (tx, rx) = mpsc::channel();
    let mut watched = identity(dir);
    let watcher = start_watcher(dir, tx.clone()).map_err(|e| watch_error(dir, &e))?;
    let weak = Arc::downgrade(&handle.inner);
    let thread_dir = dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("policy-watch".into())
        .spawn(move || {
            // Owning the watcher here keeps it alive exactly as long as this thread.
            let mut _watcher = watcher;
            loop {
                match rx.recv_timeout(LIVENESS) {
                    Ok(()) => {}
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if weak.strong_count() == 0 {
                            return;
                        }
                        // A folder replaced as a whole (mv, a deploy tool) is a new inode
                        // the old watch does not see: watch the new one and reload.
                        let now = identity(&thread_dir);
                        if now.is_none() || now == watched {
                            continue;
                        }
                        match start_watcher(&thread_dir, tx.clone()) {
                            Ok(w) => {
                                _watcher = w;
                                watched = now;
                                tracing::info!(dir = %thread_dir.display(), "policy folder was replaced; watching the new one");
                            }
                            Err(e) => {
                                tracing::warn!(dir = %thread_dir.display(), "cannot watch the replaced policy folder: {e}");
                                continue;
                            }
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                while rx.recv_timeout(DEBOUNCE).is_ok() {}
                let Some(inner) = weak.upgrade() else { return };
                reload(&thread_dir, catalog.as_ref(), &PolicyHandle { inner });
            }
        });
    if let Err(e) = spawned {
        return Err(watch_error(dir, &e));
    }
    tracing::info!(dir = %dir.display(), "watching policy folder");
    Ok(handle)
}

/// Which folder `dir` is now (device and inode), `None` when it is gone.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Watches `dir`, sending `()` on `tx` for every change that may concern the policy.
fn start_watcher(dir: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let watch_dir = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            // Reading a file (our own reload, `policy check`, an editor opening it) is not
            // a change; counting it made every reload trigger the next one, forever.
            Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => false,
            Ok(ev) => ev.need_rescan() || ev.paths.iter().any(|p| concerns_policy(&watch_dir, p)),
            // A watcher error may mean lost events: reload to be sure.
            Err(_) => true,
        };
        if relevant {
            // The receiver is gone only when the thread has ended; nothing left to do.
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Loads the folder and swaps the policy in only if it validates.
fn reload(dir: &Path, catalog: &dyn ImageCatalog, handle: &PolicyHandle) {
    match super::load_dir_with(dir, catalog) {
        Ok(policy) => {
            tracing::info!(
                dir = %dir.display(),
                setups = policy.setups.len(),
                groups = policy.groups.len(),
                machines = policy.machines.len(),
                "policy reloaded"
            );
            handle.replace(policy);
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::warn!(
                    file = %e.file.display(),
                    line = e.line,
                    "policy edit rejected, keeping the last good policy: {e}"
                );
            }
        }
    }
}

/// True for a change to a policy file or to the folder itself; editor temp files alone
/// do not cause a reload.
fn concerns_policy(dir: &Path, path: &Path) -> bool {
    path == dir
        || path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_policy_file_name)
}

fn watch_error(dir: &Path, e: &dyn std::fmt::Display) -> PolicyErrors {
    PolicyErrors(vec![PolicyError {
        file: PathBuf::from(dir),
        line: 0,
        message: format!("cannot watch policy folder: {e}"),
    }])
}
