//! The smallest target system the tests compose: busybox and an init that says it runs
//! as PID 1, waits a little (so events can be posted), and powers the machine off.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::{assets, proc};

/// What the target init prints, followed by its pid (`1` when carte switched root right).
pub const INIT_MARKER: &str = "TARGET INIT RUNNING as pid";

/// Writes that system into `root` (a new folder); needs the host's `/bin/busybox`
/// (busybox-static).
pub fn root(root: &Path) -> anyhow::Result<()> {
    for d in ["bin", "sbin", "proc", "sys", "dev", "run", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    let init = root.join("sbin/init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/sh\n/bin/busybox echo \"{INIT_MARKER} $$\"\n\
             /bin/busybox sleep 5\n/bin/busybox poweroff -f\n"
        ),
    )?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// That system as the system image `bb`, built and pushed with `imaged build dir --push`
/// into the store in `data` (work files go below `work`).
pub fn push_image(work: &Path, data: &Path) -> anyhow::Result<()> {
    let tree = work.join("root");
    root(&tree)?;
    proc::run(
        Command::new(assets::imaged_bin()?)
            .args(["build", "dir"])
            .arg(&tree)
            .arg("--out")
            .arg(work.join("bb"))
            .args(["--push", "bb", "--kind", "system", "--data"])
            .arg(data),
    )?;
    Ok(())
}
