//! Events a machine posts while it boots (`POST` [`crate::events_path`]), and the stages
//! they name. The server folds them into a [`crate::MachineState`].
//!
//! Deliberately absent: timestamps (the server stamps events on arrival; a machine in the
//! initramfs has no trustworthy clock).

use serde::{Deserialize, Serialize};

/// Where a machine is in its boot, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// carte-init started: /proc, /sys, /dev, /run mounted, command line read.
    Init,
    /// Loading kernel modules for the hardware found.
    Modules,
    /// Bringing up the boot NIC.
    Network,
    /// Fetching the plan.
    Plan,
    /// Choosing and preparing the local disk.
    Disk,
    /// Opening the layer cache, evicting to make room.
    Cache,
    /// Downloading layers (`bytes_done`/`bytes_total` are set).
    Fetch,
    /// Uploading the machine layer and changed writable layers.
    SyncBack,
    /// Writing a whole-disk image (`disk` mode).
    Flash,
    /// The whole-disk image is written and verified; the machine reboots into it, and the
    /// server answers `local` for it while its setup and image version stay the same.
    Flashed,
    /// Mounting layers and the root overlay.
    Compose,
    /// Switching root and handing over to carte-shim.
    SwitchRoot,
    /// carte-shim's helper fetching lazy layers.
    LazyLayers,
    /// carte-shim's helper running the autostart command.
    Autostart,
    /// The target's init has been exec'd and the helper finished its work.
    Booted,
}

/// One event. `error` is set when the stage failed (the machine will retry); `message` is
/// free text for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The stage this event reports on.
    pub stage: Stage,
    /// Bytes done so far in this stage (fetch, sync-back, flash); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    /// Total bytes expected in this stage, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// Set when the stage failed: the cause, naming the step and path/device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Human-readable detail (which layer, rate, ETA...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Event {
    /// An event that only says the machine reached `stage`.
    pub fn stage(stage: Stage) -> Event {
        Event {
            stage,
            bytes_done: None,
            bytes_total: None,
            error: None,
            message: None,
        }
    }

    /// A failure of `stage` with its cause.
    pub fn failed(stage: Stage, error: impl Into<String>) -> Event {
        Event {
            error: Some(error.into()),
            ..Event::stage(stage)
        }
    }

    /// Progress within `stage`.
    pub fn progress(stage: Stage, done: u64, total: u64, message: impl Into<String>) -> Event {
        Event {
            bytes_done: Some(done),
            bytes_total: Some(total),
            message: Some(message.into()),
            ..Event::stage(stage)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips() {
        for e in [
            Event::stage(Stage::Booted),
            Event::failed(Stage::Fetch, "fetch debian@7: sha256 mismatch"),
            Event::progress(Stage::Fetch, 5, 10, "debian@7 12.0 MB/s"),
        ] {
            let json = serde_json::to_string(&e).expect("serialise");
            let back: Event = serde_json::from_str(&json).expect("parse");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn wire_shape() {
        let json = serde_json::to_string(&Event::failed(Stage::SyncBack, "x")).expect("ser");
        assert_eq!(json, r#"{"stage":"sync_back","error":"x"}"#);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r = serde_json::from_str::<Event>(r#"{"stage":"init","when":1}"#);
        assert!(r.is_err());
        let r = serde_json::from_str::<Event>(r#"{"stage":"teleport"}"#);
        assert!(r.is_err());
    }

    #[test]
    fn stages_are_ordered_as_a_boot() {
        assert!(Stage::Init < Stage::Fetch);
        assert!(Stage::Fetch < Stage::Compose);
        assert!(Stage::SwitchRoot < Stage::Booted);
    }
}
