//! The state the server keeps per machine, folded from its events. Pure: the caller
//! supplies the arrival time.
//!
//! Deliberately absent: storage and history (the server decides how to keep them).

use crate::event::{Event, Stage};
use serde::{Deserialize, Serialize};

/// What `netbootd machines` shows for one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineState {
    /// MAC of the boot NIC, lowercase, colon separated.
    pub mac: String,
    /// The machine's name in the policy, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The setup of the last plan served; set when a plan is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// Stage of the last event; `None` until the first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Progress of the last event that carried progress, while still in that stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    /// Total of that progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    /// The last error reported; kept after later successes so admins can see it, cleared
    /// when the machine reports `booted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Message of the last event that had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Server time (seconds since the Unix epoch) of the last event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_unix: Option<u64>,
}

impl MachineState {
    /// A machine the server has not heard from yet.
    pub fn new(mac: impl Into<String>) -> MachineState {
        MachineState {
            mac: mac.into(),
            ..MachineState::default()
        }
    }

    /// Fold one event that arrived at `now_unix`.
    pub fn apply(&mut self, event: &Event, now_unix: u64) {
        if self.stage != Some(event.stage) {
            self.bytes_done = None;
            self.bytes_total = None;
        }
        self.stage = Some(event.stage);
        if event.bytes_done.is_some() {
            self.bytes_done = event.bytes_done;
        }
        if event.bytes_total.is_some() {
            self.bytes_total = event.bytes_total;
        }
        if let Some(e) = &event.error {
            self.last_error = Some(e.clone());
        } else if event.stage == Stage::Booted {
            self.last_error = None;
        }
        if let Some(m) = &event.message {
            self.last_message = Some(m.clone());
        }
        self.updated_unix = Some(now_unix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_a_boot() {
        let mut s = MachineState::new("52:54:00:00:00:01");
        s.apply(&Event::progress(Stage::Fetch, 5, 10, "debian"), 100);
        assert_eq!((s.bytes_done, s.bytes_total), (Some(5), Some(10)));
        s.apply(&Event::failed(Stage::Fetch, "sha256 mismatch"), 101);
        assert_eq!(s.last_error.as_deref(), Some("sha256 mismatch"));
        assert_eq!(s.bytes_done, Some(5), "progress kept within the same stage");
        s.apply(&Event::stage(Stage::Compose), 102);
        assert_eq!(s.bytes_done, None, "progress cleared on a new stage");
        assert_eq!(s.last_error.as_deref(), Some("sha256 mismatch"));
        s.apply(&Event::stage(Stage::Booted), 103);
        assert_eq!(s.last_error, None);
        assert_eq!(s.stage, Some(Stage::Booted));
        assert_eq!(s.updated_unix, Some(103));
        assert_eq!(s.last_message.as_deref(), Some("debian"));
    }

    #[test]
    fn state_round_trips() {
        let mut s = MachineState::new("52:54:00:00:00:01");
        s.setup = Some("hugepages-a".into());
        s.apply(&Event::progress(Stage::Fetch, 1, 2, "m"), 7);
        let json = serde_json::to_string(&s).expect("ser");
        assert_eq!(
            serde_json::from_str::<MachineState>(&json).expect("parse"),
            s
        );
    }
}
