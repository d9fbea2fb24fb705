//! imaged: carte's image store. Content-addressed blobs (`blob`), metadata behind a trait
//! (`meta`), image kinds enforced as contracts (`access`, `store`), bearer-token auth
//! (`token`), the REST API netbootd mounts (`api`) and a blocking client (`client`).
//!
//! imaged knows nothing of DHCP, iPXE or boot policy: netbootd asks it questions (through
//! `ReferenceCheck` it tells imaged which images its setups use) and mounts its router.
//! Building layers from directories, archives and kernels is `build`, not here.

pub mod blob;
pub mod meta;
pub mod model;
