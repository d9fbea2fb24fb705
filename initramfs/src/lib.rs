//! carte-init: the `/init` of carte's boot initramfs, as a library of one-concept modules
//! that `main.rs` sequences. Every system call goes through [`sys::Sys`], so the boot logic
//! is tested without root.
//!
//! Not here (yet): bringing up the NIC over netlink, disk partitioning, sync-back and
//! disk mode; `main.rs` stops with a clear error for those steps.

pub mod boot;
pub mod cache;
pub mod cmdline;
pub mod compose;
pub mod disk;
pub mod error;
pub mod events;
pub mod fetch;
pub mod http;
pub mod modules;
pub mod net;
pub mod newc;
pub mod plan;
pub mod sys;
