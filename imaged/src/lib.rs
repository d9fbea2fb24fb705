//! imaged: carte's image store. Content-addressed blobs (`blob`), metadata behind a trait
//! (`meta`), image kinds enforced as contracts (`access`, `contract`, applied by `store`),
//! bearer tokens (`token`), error lines for the binaries (`report`), the REST API netbootd mounts (`api`) and a blocking client
//! (`client`) the CLI uses.
//!
//! imaged knows nothing of DHCP, iPXE or boot policy: netbootd tells it which images its
//! setups use (`store::ReferenceCheck`) and mounts `api::router`. Building layers from
//! directories, archives and kernels is `build`, not here.

pub mod access;
pub mod api;
pub mod blob;
pub mod build;
pub mod client;
pub mod contract;
pub mod meta;
pub mod model;
mod ratelimit;
pub mod report;
pub mod serve;
pub mod store;
pub mod token;
