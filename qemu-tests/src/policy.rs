//! Boot policy files the tests write, in the format of README's "Boot policy reference".
//!
//! Only text generation; netbootd's own loader decides whether a file is valid.

use crate::netbootd::{INITRD_PATH, KERNEL_PATH};

/// The command line every boot setup of the tests starts with. `panic=-1` makes a
/// kernel that cannot start the initrd reboot, which `-no-reboot` turns into an exit.
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=-1";

/// A setup named `name` booting the test kernel and initrd with `carte.test=MARKER`.
pub fn boot_setup(name: &str, marker: &str) -> String {
    format!(
        "[setup.{name}]\nkernel  = \"{KERNEL_PATH}\"\ninitrd  = [\"{INITRD_PATH}\"]\n\
         cmdline = \"{BASE_CMDLINE} carte.test={marker}\"\n"
    )
}

/// The default group, giving every machine `setup` (a named or built-in setup).
pub fn default_group(setup: &str) -> String {
    format!("[[group]]\nname  = \"default\"\nsetup = \"{setup}\"\n")
}

/// A whole policy file: one boot setup with `marker`, given to every machine.
pub fn boot_everyone(marker: &str) -> String {
    format!("{}\n{}", boot_setup("test", marker), default_group("test"))
}

/// A whole policy file giving every machine a built-in answer (`local`, `wait`, `ignore`).
pub fn builtin_for_everyone(answer: &str) -> String {
    default_group(answer)
}

/// A whole policy file: every machine gets the image setup `lab`, the newest `linux`
/// kernel image with the busybox system `bb@1` ([`crate::busybox`]), diskless, with an
/// ephemeral machine layer.
pub fn busybox_compose_for_everyone() -> String {
    format!(
        "[setup.lab]\nkernel = \"linux@latest\"\nlayers = [\"bb@1\"]\n\
         machine = \"ephemeral\"\ndisk = \"none\"\ncmdline = \"{BASE_CMDLINE}\"\n{}",
        default_group("lab")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_everyone_names_the_files_the_harness_installs() {
        let p = boot_everyone("full-bios");
        assert_eq!(
            p,
            "[setup.test]\nkernel  = \"kernels/vmlinuz\"\ninitrd  = [\"initrds/test.cpio.gz\"]\n\
             cmdline = \"console=ttyS0 quiet panic=-1 carte.test=full-bios\"\n\n\
             [[group]]\nname  = \"default\"\nsetup = \"test\"\n"
        );
    }
}
