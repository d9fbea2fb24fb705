//! qemu-tests: the end-to-end harness. A [`Lab`] is a private network namespace with a
//! bridge on 192.0.2.0/24; [`Netbootd`] runs the real daemon inside it; a [`Machine`] is a
//! QEMU guest (SeaBIOS or OVMF) whose serial console tests read with bounded timeouts.
//!
//! Every piece removes what it created when dropped, also when a test panics: processes
//! are killed by pid, namespaces deleted, temporary folders removed. The harness does not
//! judge what netbootd answers; the tests in `tests/` do, from what the machine printed.
//! Nothing here sends a packet outside the lab's namespaces.

pub mod accel;
pub mod assets;
pub mod busybox;
pub mod console;
pub mod debian;
pub mod dnsmasq;
pub mod flash_bench;
pub mod host_kernel;
pub mod lab;
pub mod machine;
pub mod netbootd;
pub mod policy;
pub mod prereq;
mod proc;
pub mod timeline;

pub use console::Console;
pub use lab::{Lab, Peer};
pub use machine::{Firmware, Machine, MachineSpec};
pub use netbootd::{DhcpMode, Netbootd};

/// Upper bound for one PXE boot to the test initrd under TCG (SeaBIOS ~30 s, OVMF ~40 s,
/// with room for a loaded CI host).
pub const BOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);
