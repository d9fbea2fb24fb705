//! netbootd: carte's boot daemon.
//!
//! One process answers DHCP ([`dhcp`], full / proxy / off), serves first-stage iPXE
//! binaries over TFTP ([`tftp`]), and serves iPXE scripts and boot artefacts over HTTP
//! ([`http`]). Which setup a machine boots comes from the live boot policy ([`policy`]).
//! [`daemon`] wires the services together from a [`config::Config`]; [`images`] joins
//! the image store (crate `imaged`, whose API is mounted under `/api/v1`) to the policy.

pub mod arch;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod http;
pub mod images;
pub mod ipxe;
pub mod mac;
pub mod machines;
pub mod plan;
pub mod policy;
pub mod ratelimit;
pub mod tftp;
pub mod transfers;
