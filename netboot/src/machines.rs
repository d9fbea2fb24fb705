//! Per-machine boot state: the plan issued with each boot's token, and the
//! [`MachineState`] folded from the machine's events.
//!
//! A new boot (a rendered image-setup script) replaces the machine's plan and token, so a
//! token is good for one boot only. Tokens are kept as sha256 hashes and compared as such.
//! **In memory only**: a restart forgets plans and states (machines then fail to fetch
//! their plan and are booted again); nothing here does IO or knows HTTP.

use std::collections::BTreeMap;
use std::sync::Mutex;

use carte_contract::{Event, MachineState, Mode, Plan, Stage};
use imaged::model::Digest;

use crate::mac::MacAddr;

/// Why a machine request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MachineError {
    #[error("no plan issued for machine {0}")]
    NoPlan(MacAddr),
    #[error("token is not this boot's token for machine {0}")]
    BadToken(MacAddr),
}

struct Record {
    token: Digest,
    plan: Plan,
    state: MachineState,
    flashed: Option<Flashed>,
}

/// A whole-disk image a machine reported written (disk mode): while its setup still
/// flashes this image version, the machine boots it from its disk (`local`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flashed {
    pub setup: String,
    pub image: String,
    pub version: u64,
}

/// The registry; one per daemon, shared by the HTTP routes.
#[derive(Default)]
pub struct Machines {
    inner: Mutex<BTreeMap<MacAddr, Record>>,
}

impl std::fmt::Debug for Machines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machines").finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Machines {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<MacAddr, Record>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Records a new boot of `mac` with `setup`: `plan` (whose `token` is this boot's
    /// token) replaces any earlier one. The machine's state keeps its last error.
    pub fn issue(&self, mac: MacAddr, setup: &str, plan: Plan) {
        let token = imaged::token::hash(&plan.token);
        let mut all = self.lock();
        let (mut state, flashed) = all.remove(&mac).map_or_else(
            || (MachineState::new(mac.to_string()), None),
            |r| (r.state, r.flashed),
        );
        state.setup = Some(setup.to_string());
        state.name.clone_from(&plan.machine.name);
        state.begin_boot(now_ms());
        // A composed boot writes the disk's carte partition: an image flashed before is
        // gone (or this boot fails on it); only a new flash records one again.
        let flashed = flashed.filter(|_| plan.mode == Mode::Disk);
        all.insert(
            mac,
            Record {
                token,
                plan,
                state,
                flashed,
            },
        );
    }

    fn with_record<T>(
        &self,
        mac: MacAddr,
        token: &str,
        f: impl FnOnce(&mut Record) -> T,
    ) -> Result<T, MachineError> {
        let mut all = self.lock();
        let record = all.get_mut(&mac).ok_or(MachineError::NoPlan(mac))?;
        if record.token != imaged::token::hash(token) {
            return Err(MachineError::BadToken(mac));
        }
        Ok(f(record))
    }

    /// The plan of `mac`'s current boot, if `token` is that boot's token.
    pub fn plan(&self, mac: MacAddr, token: &str) -> Result<Plan, MachineError> {
        self.with_record(mac, token, |r| r.plan.clone())
    }

    /// Folds an event of `mac`'s current boot, arrived at `now_ms` (milliseconds since
    /// the Unix epoch), into its state.
    pub fn event(
        &self,
        mac: MacAddr,
        token: &str,
        event: &Event,
        now_ms: u64,
    ) -> Result<(), MachineError> {
        self.with_record(mac, token, |r| {
            r.state.apply_ms(event, now_ms);
            if event.stage == Stage::Flashed && event.error.is_none() && r.plan.mode == Mode::Disk {
                if let (Some(setup), Some(layer)) = (&r.state.setup, r.plan.layers.first()) {
                    r.flashed = Some(Flashed {
                        setup: setup.clone(),
                        image: layer.name.clone(),
                        version: layer.version,
                    });
                }
            }
        })
    }

    /// The image `mac` last reported flashed, if no composed boot came since.
    pub fn flashed(&self, mac: MacAddr) -> Option<Flashed> {
        self.lock().get(&mac).and_then(|r| r.flashed.clone())
    }

    /// Every machine that was issued a plan, by MAC.
    pub fn states(&self) -> Vec<MachineState> {
        self.lock().values().map(|r| r.state.clone()).collect()
    }

    /// The `(image, version)` whose layer has sha256 `digest` in some machine's current
    /// plan: such blobs are served to machines without a store token (they fetch layers
    /// with plain GETs; only a plan, behind the boot token, tells their digests).
    pub fn plan_layer(&self, digest: &Digest) -> Option<(String, u64)> {
        self.lock().values().find_map(|r| {
            r.plan
                .layers
                .iter()
                .chain(r.plan.layers.iter().filter_map(|l| l.restore.as_deref()))
                .chain(&r.plan.machine_restore)
                .find(|l| l.sha256 == digest.as_str())
                .map(|l| (l.name.clone(), l.version))
        })
    }
}

/// The table `netbootd machines` prints: one line per machine with its setup, stage,
/// progress and last error.
pub fn table(states: &[MachineState]) -> String {
    let mut out = format!(
        "{:<18} {:<20} {:<12} {:<22} {}\n",
        "MACHINE", "SETUP", "STAGE", "PROGRESS", "LAST ERROR"
    );
    for s in states {
        let stage = s.stage.map_or_else(
            || "-".to_string(),
            |st| {
                serde_json::to_value(st)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            },
        );
        let progress = match (s.bytes_done, s.bytes_total) {
            (Some(d), Some(t)) if t > 0 => format!("{d}/{t} ({}%)", d.saturating_mul(100) / t),
            (Some(d), _) => d.to_string(),
            _ => "-".to_string(),
        };
        let who = s.name.clone().unwrap_or_else(|| s.mac.clone());
        out.push_str(&format!(
            "{:<18} {:<20} {:<12} {:<22} {}\n",
            who,
            s.setup.as_deref().unwrap_or("-"),
            stage,
            progress,
            s.last_error.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// One line per machine with a stage history: when each stage of its current boot began,
/// in seconds after its iPXE script was issued. Machines without history are left out.
pub fn history(states: &[MachineState]) -> String {
    let mut out = String::new();
    for s in states {
        let (Some(start), false) = (s.issued_unix_ms, s.history.is_empty()) else {
            continue;
        };
        let who = s.name.clone().unwrap_or_else(|| s.mac.clone());
        out.push_str(&format!("{who}  script +0.0s"));
        for m in &s.history {
            let stage = serde_json::to_value(m.stage)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let secs = m.unix_ms.saturating_sub(start) as f64 / 1000.0;
            out.push_str(&format!("  {stage} +{secs:.1}s"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use carte_contract::{
        DiskRule, DiskSelect, Encoding, Format, Layer, LayerKind, MachineId, MachineLayerPolicy,
        Mode, Stage,
    };

    fn plan(token: &str, sha: &str) -> Plan {
        Plan {
            machine: MachineId {
                mac: "52:54:00:00:00:01".into(),
                name: None,
            },
            mode: Mode::Compose,
            disk: DiskRule {
                select: DiskSelect::Largest,
                may_wipe: false,
            },
            layers: vec![Layer {
                name: "debian".into(),
                version: 7,
                kind: LayerKind::System,
                format: Format::Erofs,
                encoding: Encoding::None,
                size: 1,
                uncompressed_size: 1,
                sha256: sha.into(),
                sha256_written: sha.into(),
                url: "http://192.0.2.1:8080/boot/blobs/sha256/x".into(),
                mount_point: None,
                lazy: false,
                autostart: None,
                restore: None,
            }],
            machine_layer: MachineLayerPolicy::Persist,
            sync_back: vec![],
            machine_restore: None,
            init: carte_contract::DEFAULT_INIT.into(),
            token: token.into(),
            events_url: "http://192.0.2.1:8080/e".into(),
        }
    }

    #[test]
    fn a_token_is_good_for_its_boot_only() {
        let m = Machines::default();
        let mac: MacAddr = "52:54:00:00:00:01".parse().expect("mac");
        let other: MacAddr = "52:54:00:00:00:02".parse().expect("mac");
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(m.plan(mac, "t1"), Err(MachineError::NoPlan(mac)));
        m.issue(mac, "lab", plan("t1", &a));
        assert_eq!(m.plan(mac, "t1").map(|p| p.token), Ok("t1".to_string()));
        assert_eq!(m.plan(mac, "t2"), Err(MachineError::BadToken(mac)));
        assert_eq!(m.plan(other, "t1"), Err(MachineError::NoPlan(other)));
        let da: Digest = a.parse().expect("digest");
        assert_eq!(m.plan_layer(&da), Some(("debian".into(), 7)));

        m.event(
            mac,
            "t1",
            &Event::failed(Stage::Fetch, "fetch debian@7: boom"),
            10_000,
        )
        .expect("event");
        m.event(
            mac,
            "t1",
            &Event::progress(Stage::Fetch, 5, 9, "debian"),
            11_000,
        )
        .expect("event");
        // The next boot: the old token no longer works, the state carries on.
        m.issue(mac, "lab2", plan("t2", &b));
        assert_eq!(m.plan(mac, "t1"), Err(MachineError::BadToken(mac)));
        assert!(m
            .event(mac, "t1", &Event::stage(Stage::Booted), 12_000)
            .is_err());
        assert_eq!(
            m.plan_layer(&da),
            None,
            "the old plan's layers are no longer served"
        );
        let s = m.states();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].setup.as_deref(), Some("lab2"));
        assert_eq!(s[0].stage, Some(Stage::Fetch));
        assert_eq!((s[0].bytes_done, s[0].bytes_total), (Some(5), Some(9)));
        assert_eq!(s[0].last_error.as_deref(), Some("fetch debian@7: boom"));
        assert_eq!(s[0].updated_unix, Some(11));
        assert!(s[0].history.is_empty(), "the new boot has no stage yet");
    }

    #[test]
    fn a_flashed_image_is_remembered_until_a_composed_boot() {
        let m = Machines::default();
        let mac: MacAddr = "52:54:00:00:00:01".parse().expect("mac");
        let mut disk = plan("t1", &"a".repeat(64));
        disk.mode = Mode::Disk;
        m.issue(mac, "appliance", disk.clone());
        assert_eq!(m.flashed(mac), None);
        m.event(mac, "t1", &Event::failed(Stage::Flashed, "boom"), 1)
            .expect("event");
        assert_eq!(m.flashed(mac), None, "a failed flash records nothing");
        m.event(mac, "t1", &Event::stage(Stage::Flashed), 2)
            .expect("event");
        let want = Flashed {
            setup: "appliance".into(),
            image: "debian".into(),
            version: 7,
        };
        assert_eq!(m.flashed(mac), Some(want.clone()));
        disk.token = "t2".into();
        m.issue(mac, "appliance", disk);
        assert_eq!(m.flashed(mac), Some(want), "a new disk-mode boot keeps it");
        m.issue(mac, "lab", plan("t3", &"b".repeat(64)));
        assert_eq!(m.flashed(mac), None, "a composed boot forgets it");
    }

    #[test]
    fn history_shows_each_stage_after_the_script() {
        let mut s = MachineState::new("52:54:00:00:00:01");
        s.begin_boot(1_000);
        s.apply_ms(&Event::stage(Stage::Plan), 13_500);
        s.apply_ms(&Event::progress(Stage::Fetch, 1, 2, "a"), 14_000);
        s.apply_ms(&Event::stage(Stage::Booted), 30_250);
        assert_eq!(
            history(&[s, MachineState::new("52:54:00:00:00:02")]),
            "52:54:00:00:00:01  script +0.0s  plan +12.5s  fetch +13.0s  booted +29.2s\n"
        );
    }

    #[test]
    fn table_shows_setup_stage_progress_and_error() {
        let mut s = MachineState::new("52:54:00:00:00:01");
        s.setup = Some("lab".into());
        s.apply(&Event::failed(Stage::Fetch, "fetch debian@7: reset"), 1);
        s.apply(&Event::progress(Stage::Fetch, 25, 100, "debian"), 2);
        let t = table(&[s, MachineState::new("52:54:00:00:00:02")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("MACHINE"), "{t}");
        let words: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            words,
            [
                "52:54:00:00:00:01",
                "lab",
                "fetch",
                "25/100",
                "(25%)",
                "fetch",
                "debian@7:",
                "reset"
            ]
        );
        let words: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(words, ["52:54:00:00:00:02", "-", "-", "-", "-"]);
    }
}
