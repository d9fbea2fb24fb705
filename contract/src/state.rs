//! The state the server keeps per machine, folded from its events. Pure: the caller
//! supplies the arrival time.
//!
//! Deliberately absent: storage (the server decides how to keep states). The stage history
//! covers the current boot only.

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
    /// Server time (milliseconds since the Unix epoch) when this boot's iPXE script and
    /// plan were issued; set by the server, not by events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_unix_ms: Option<u64>,
    /// This boot's stages in the order they were entered, with the server time of the
    /// first event of each (events folded with [`MachineState::apply_ms`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StageMark>,
}

/// When a machine entered a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageMark {
    pub stage: Stage,
    /// Server time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl MachineState {
    /// A machine the server has not heard from yet.
    pub fn new(mac: impl Into<String>) -> MachineState {
        MachineState {
            mac: mac.into(),
            ..MachineState::default()
        }
    }

    /// A new boot was issued at `now_ms`: the stage history starts over.
    pub fn begin_boot(&mut self, now_ms: u64) {
        self.issued_unix_ms = Some(now_ms);
        self.history.clear();
    }

    /// Fold one event that arrived at `now_ms` (milliseconds), recording a stage change in
    /// the history.
    pub fn apply_ms(&mut self, event: &Event, now_ms: u64) {
        if self.stage != Some(event.stage) || self.history.is_empty() {
            self.history.push(StageMark {
                stage: event.stage,
                unix_ms: now_ms,
            });
        }
        self.apply(event, now_ms / 1000);
    }

    /// Fold one event that arrived at `now_unix` (seconds); the history is left alone.
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
    fn history_marks_each_stage_once_per_boot() {
        let mut s = MachineState::new("52:54:00:00:00:01");
        s.begin_boot(1_000);
        s.apply_ms(&Event::stage(Stage::Plan), 2_000);
        s.apply_ms(&Event::progress(Stage::Fetch, 1, 2, "a"), 3_000);
        s.apply_ms(&Event::progress(Stage::Fetch, 2, 2, "a"), 4_000);
        s.apply_ms(&Event::stage(Stage::Booted), 5_500);
        let marks: Vec<(Stage, u64)> = s.history.iter().map(|m| (m.stage, m.unix_ms)).collect();
        assert_eq!(
            marks,
            [
                (Stage::Plan, 2_000),
                (Stage::Fetch, 3_000),
                (Stage::Booted, 5_500)
            ]
        );
        assert_eq!(s.updated_unix, Some(5));
        s.begin_boot(9_000);
        assert!(s.history.is_empty());
        s.apply_ms(&Event::stage(Stage::Booted), 9_100);
        assert_eq!(s.history.len(), 1, "the first event of a boot is marked");
    }

    #[test]
    fn state_round_trips() {
        let mut s = MachineState::new("52:54:00:00:00:01");
        s.setup = Some("hugepages-a".into());
        s.begin_boot(6_000);
        s.apply_ms(&Event::progress(Stage::Fetch, 1, 2, "m"), 7_000);
        let json = serde_json::to_string(&s).expect("ser");
        assert_eq!(
            serde_json::from_str::<MachineState>(&json).expect("parse"),
            s
        );
    }
}
