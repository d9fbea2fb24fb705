//! carte-contract: the types that carte's server (netbootd, imaged) and its machines
//! (carte-init, carte-shim) exchange as JSON: the [`Plan`] served to a machine, the
//! [`Event`]s it posts back, and the [`MachineState`] the server keeps from them.
//!
//! These types exist once, here. The crate is serde only and deliberately does no IO: no
//! HTTP, no files, no clock. Input types reject unknown fields, so a typo on either side is
//! an error and not a silently ignored setting.

mod event;
mod paths;
mod plan;
mod state;

pub use event::{Event, Stage};
pub use paths::{
    events_path, file_name, plan_path, sync_layer_path, sync_machine_path, PLAN_FILE_IN_TARGET,
};
pub use plan::{
    DiskRule, DiskSelect, Encoding, Format, Layer, LayerKind, MachineId, MachineLayerPolicy, Mode,
    Plan, SyncBack, SyncTarget, DEFAULT_INIT,
};
pub use state::{MachineState, StageMark};
