//! The boot's one error type: one variant per boot step, each carrying the path, device
//! or URL involved (mostly through the step module's own error). `main` prints it on the
//! console, posts it as an event, and decides between retrying and rebooting.

use crate::bench::BenchError;
use crate::cache::CacheError;
use crate::cmdline::CmdlineError;
use crate::compose::ComposeError;
use crate::disk::DiskError;
use crate::fetch::FetchError;
use crate::flash::FlashError;
use crate::modules::ModulesError;
use crate::net::NetError;
use crate::plan::PlanError;
use crate::restore::RestoreError;
use crate::sys::Errno;
use carte_contract::Stage;
use std::path::PathBuf;

/// A failed boot step.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("step 1 (early mounts): mount {fstype} on {target}: {errno}")]
    EarlyMount {
        fstype: &'static str,
        target: PathBuf,
        errno: Errno,
    },
    #[error("step 1 (command line): read {path}: {source}")]
    ReadCmdline {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("step 1 (command line): {0}")]
    Cmdline(#[from] CmdlineError),
    #[error("step 2 (modules): {0}")]
    Modules(#[from] ModulesError),
    #[error("step 2 (modules): uname: {0}")]
    KernelRelease(Errno),
    #[error("step 3 (network): {0}")]
    Network(#[from] NetError),
    #[error("step 4 (plan): {0}")]
    Plan(#[from] PlanError),
    #[error("step 5 (disk): {0}")]
    Disk(#[from] DiskError),
    #[error("step 6 (cache): {0}")]
    Cache(#[from] CacheError),
    #[error("step 7 (fetch {layer}): {source}")]
    Fetch { layer: String, source: FetchError },
    #[error("step 5 (disk mode): {0}")]
    Flash(#[from] FlashError),
    #[error("step 5 (disk mode): reboot after flashing: {0}")]
    Reboot(Errno),
    #[error("step 8 (restore an upper from the server): {0}")]
    Restore(#[from] RestoreError),
    #[error("step 9 (compose): {0}")]
    Compose(ComposeError),
    #[error("step 10 (switch root): {0}")]
    SwitchRoot(ComposeError),
    #[error("step 10 (switch root): exec of carte-shim returned")]
    ExecReturned,
    #[error("benchmark mode: {0}")]
    Bench(#[from] BenchError),
}

impl BootError {
    /// The event stage this failure is reported under.
    pub fn stage(&self) -> Stage {
        match self {
            BootError::EarlyMount { .. }
            | BootError::ReadCmdline { .. }
            | BootError::Cmdline(_) => Stage::Init,
            BootError::Modules(_) | BootError::KernelRelease(_) => Stage::Modules,
            BootError::Network(_) => Stage::Network,
            BootError::Plan(_) => Stage::Plan,
            BootError::Disk(_) => Stage::Disk,
            BootError::Cache(_) => Stage::Cache,
            BootError::Fetch { .. } | BootError::Bench(_) => Stage::Fetch,
            BootError::Flash(_) | BootError::Reboot(_) => Stage::Flash,
            BootError::Restore(_) => Stage::SyncBack,
            BootError::Compose(_) => Stage::Compose,
            BootError::SwitchRoot(_) | BootError::ExecReturned => Stage::SwitchRoot,
        }
    }

    /// True when the initramfs is already (partly) gone: only a reboot helps.
    pub fn needs_reboot(&self) -> bool {
        matches!(
            self,
            BootError::SwitchRoot(ComposeError::NoReturn { .. }) | BootError::ExecReturned
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_step_and_path() {
        let e = BootError::EarlyMount {
            fstype: "devtmpfs",
            target: "/dev".into(),
            errno: Errno::ENODEV,
        };
        assert_eq!(
            e.to_string(),
            "step 1 (early mounts): mount devtmpfs on /dev: ENODEV: No such device"
        );
        assert_eq!(e.stage(), Stage::Init);
        assert!(!e.needs_reboot());
        let e = BootError::SwitchRoot(ComposeError::NoReturn {
            step: "chroot",
            path: ".".into(),
            errno: Errno::EPERM,
        });
        assert!(e.needs_reboot());
        assert_eq!(e.stage(), Stage::SwitchRoot);
        let e = BootError::Cmdline(CmdlineError::Missing("carte.server"));
        assert_eq!(
            e.to_string(),
            "step 1 (command line): kernel command line has no carte.server"
        );
    }
}
