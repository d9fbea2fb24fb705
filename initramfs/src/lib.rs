//! carte-init: the `/init` of carte's boot initramfs, as a library of one-concept modules
//! that `main.rs` sequences. Every system call goes through [`sys::Sys`], so the boot logic
//! is tested without root.
//!
//! Not here: DHCP lease renewal (the lease of the fallback client, [`dhcp`], serves the
//! initramfs only), fsck of the carte filesystem, and sync-back of anything but overlay
//! uppers.

pub mod bench;
pub mod boot;
pub mod cache;
pub mod cmdline;
pub mod compose;
pub mod dhcp;
pub mod disk;
pub mod error;
pub mod events;
pub mod fetch;
pub mod fill;
pub mod flash;
pub mod gpt;
pub mod http;
pub mod modules;
pub mod net;
pub mod newc;
pub mod pack;
pub mod plan;
pub mod restore;
pub mod syncback;
pub mod sys;
#[cfg(test)]
mod testhttp;
