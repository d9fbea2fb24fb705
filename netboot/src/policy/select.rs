//! Selecting the group and setup for a machine, and the specificity rules that loading
//! uses to refuse ambiguous policies.
//!
//! Pure functions over a [`Policy`] and [`MachineFacts`]: no IO, no logging (the caller
//! logs the [`Decision`]), no rendering of iPXE scripts.

use super::{Answer, Decision, MachineFacts, Policy, Selector};

/// Weights of each condition kind; the highest total among matching groups wins.
const WEIGHT_MAC: u32 = 8;
const WEIGHT_UUID: u32 = 8;
const WEIGHT_LABEL: u32 = 2;
const WEIGHT_ARCH: u32 = 1;

/// Group name in the decision when the policy has no group at all (only the empty
/// `Policy::default()`; a loaded policy always has a default group).
pub const NO_GROUP: &str = "(none)";

impl Policy {
    /// Picks the most specific group matching `facts` and resolves its setup. Labels come
    /// from `[machine."MAC"]`. Without any matching group the answer is `Ignore`.
    pub fn select(&self, facts: &MachineFacts) -> Decision {
        let labels = self.machines.get(&facts.mac).map(|m| &m.labels);
        let uuid = facts.uuid.as_deref().map(str::to_ascii_lowercase);
        let mut best: Option<(u32, &super::Group)> = None;
        for group in &self.groups {
            if !group.selector.matches(facts, uuid.as_deref(), labels) {
                continue;
            }
            let weight = group.selector.weight();
            // Strictly greater: on a tie (refused at load time) the earlier group wins.
            if best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, group));
            }
        }
        let Some((_, group)) = best else {
            return Decision {
                group: NO_GROUP.into(),
                setup: "ignore".into(),
                answer: Answer::Ignore,
            };
        };
        let answer = match group.setup.as_str() {
            "local" => Answer::Local,
            "wait" => Answer::Wait,
            "ignore" => Answer::Ignore,
            // Validation guarantees the setup exists; if not, sending nothing is safest.
            name => self
                .setups
                .get(name)
                .map_or(Answer::Ignore, |s| s.answer.clone()),
        };
        Decision {
            group: group.name.clone(),
            setup: group.setup.clone(),
            answer,
        }
    }
}

impl Selector {
    /// How specific this selector is: mac 8, uuid 8, each label 2, arch 1; 0 is the
    /// default group.
    pub fn weight(&self) -> u32 {
        let mut w = 0;
        if !self.macs.is_empty() {
            w += WEIGHT_MAC;
        }
        if !self.uuids.is_empty() {
            w += WEIGHT_UUID;
        }
        if !self.arches.is_empty() {
            w += WEIGHT_ARCH;
        }
        let labels = u32::try_from(self.labels.len()).unwrap_or(u32::MAX / WEIGHT_LABEL);
        w + WEIGHT_LABEL * labels
    }

    /// True when some machine could meet both selectors: every condition kind that both
    /// constrain has a value in common (for labels: every key both name, the same value).
    pub fn can_overlap(&self, other: &Selector) -> bool {
        fn common<T: PartialEq>(a: &[T], b: &[T]) -> bool {
            a.is_empty() || b.is_empty() || a.iter().any(|x| b.contains(x))
        }
        common(&self.macs, &other.macs)
            && common(&self.uuids, &other.uuids)
            && common(&self.arches, &other.arches)
            && self
                .labels
                .iter()
                .all(|(k, v)| other.labels.get(k).is_none_or(|w| w == v))
    }

    /// True when the machine meets every condition; an unknown arch or uuid fails any
    /// condition on it.
    fn matches(
        &self,
        facts: &MachineFacts,
        uuid: Option<&str>,
        labels: Option<&std::collections::BTreeMap<String, String>>,
    ) -> bool {
        (self.macs.is_empty() || self.macs.contains(&facts.mac))
            && (self.arches.is_empty() || facts.arch.is_some_and(|a| self.arches.contains(&a)))
            && (self.uuids.is_empty() || uuid.is_some_and(|u| self.uuids.iter().any(|s| s == u)))
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::arch::ClientArch;
    use crate::mac::MacAddr;
    use crate::policy::{BootSpec, Group, MachineEntry, Setup};

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn group(name: &str, selector: Selector, setup: &str) -> Group {
        Group {
            name: name.into(),
            selector,
            setup: setup.into(),
        }
    }

    const M1: &str = "52:54:00:00:00:01";
    const M2: &str = "52:54:00:00:00:02";
    const M3: &str = "52:54:00:00:00:03";
    const UUID: &str = "4c4c4544-0042-3510-8052-b4c04f4a4b31";

    /// Groups in an order where file order alone would pick wrongly.
    fn policy() -> Policy {
        let hello = Setup {
            name: "hello".into(),
            answer: Answer::Boot(BootSpec {
                kernel: "kernels/vmlinuz".into(),
                initrds: vec!["initrds/hello.cpio.gz".into()],
                cmdline: "console=ttyS0".into(),
            }),
        };
        let parked = Setup {
            name: "parked".into(),
            answer: Answer::Wait,
        };
        let mut machines = BTreeMap::new();
        machines.insert(
            mac(M1),
            MachineEntry {
                labels: labels(&[("rack", "a")]),
                ..MachineEntry::default()
            },
        );
        machines.insert(
            mac(M2),
            MachineEntry {
                labels: labels(&[("rack", "a"), ("role", "db")]),
                ..MachineEntry::default()
            },
        );
        Policy {
            setups: [("hello".into(), hello), ("parked".into(), parked)].into(),
            groups: vec![
                group("default", Selector::default(), "wait"),
                group(
                    "uefi",
                    Selector {
                        arches: vec![ClientArch::EfiX64],
                        ..Selector::default()
                    },
                    "local",
                ),
                group(
                    "rack-a",
                    Selector {
                        labels: labels(&[("rack", "a")]),
                        ..Selector::default()
                    },
                    "hello",
                ),
                group(
                    "rack-a-db",
                    Selector {
                        labels: labels(&[("rack", "a"), ("role", "db")]),
                        ..Selector::default()
                    },
                    "parked",
                ),
                group(
                    "by-uuid",
                    Selector {
                        uuids: vec![UUID.into()],
                        ..Selector::default()
                    },
                    "ignore",
                ),
                group(
                    "m3-bios",
                    Selector {
                        macs: vec![mac(M3)],
                        arches: vec![ClientArch::Bios],
                        ..Selector::default()
                    },
                    "hello",
                ),
            ],
            machines,
        }
    }

    fn check(mac_s: &str, arch: Option<ClientArch>, uuid: Option<&str>, want: (&str, Answer)) {
        let facts = MachineFacts {
            mac: mac(mac_s),
            arch,
            uuid: uuid.map(str::to_string),
        };
        let d = policy().select(&facts);
        assert_eq!(
            (d.group.as_str(), &d.answer),
            (want.0, &want.1),
            "{facts:?}"
        );
    }

    #[test]
    fn most_specific_group_wins() {
        let boot = || match policy().setups["hello"].answer.clone() {
            Answer::Boot(b) => Answer::Boot(b),
            other => panic!("hello is a boot setup, got {other:?}"),
        };
        let bios = Some(ClientArch::Bios);
        let efi = Some(ClientArch::EfiX64);
        // Unknown machine: only the default matches, or the arch group.
        check("52:54:00:00:00:99", bios, None, ("default", Answer::Wait));
        check("52:54:00:00:00:99", None, None, ("default", Answer::Wait));
        check("52:54:00:00:00:99", efi, None, ("uefi", Answer::Local));
        // Labels from [machine]: one label (2) beats arch (1).
        check(M1, efi, None, ("rack-a", boot()));
        // Two labels (4) beat one.
        check(M2, bios, None, ("rack-a-db", Answer::Wait));
        // UUID (8), compared in any case, beats two labels.
        check(M2, bios, Some(UUID), ("by-uuid", Answer::Ignore));
        check(
            M2,
            bios,
            Some(&UUID.to_ascii_uppercase()),
            ("by-uuid", Answer::Ignore),
        );
        // mac + arch (9) needs both; the wrong arch or no arch falls back.
        check(M3, bios, None, ("m3-bios", boot()));
        check(M3, efi, None, ("uefi", Answer::Local));
        check(M3, None, None, ("default", Answer::Wait));
    }

    #[test]
    fn empty_policy_ignores() {
        let d = Policy::default().select(&MachineFacts {
            mac: mac(M1),
            arch: None,
            uuid: None,
        });
        assert_eq!((d.group.as_str(), d.answer), (NO_GROUP, Answer::Ignore));
    }

    #[test]
    fn weights() {
        let sel = Selector {
            macs: vec![mac(M1), mac(M2)],
            uuids: vec![UUID.into()],
            arches: vec![ClientArch::Bios, ClientArch::EfiX64],
            labels: labels(&[("a", "1"), ("b", "2")]),
        };
        assert_eq!(sel.weight(), 8 + 8 + 1 + 4);
        assert_eq!(Selector::default().weight(), 0);
    }

    #[test]
    fn overlap() {
        let s = |macs: &[&str], arches: &[ClientArch], l: &[(&str, &str)]| Selector {
            macs: macs.iter().map(|m| mac(m)).collect(),
            arches: arches.to_vec(),
            labels: labels(l),
            ..Selector::default()
        };
        let table = [
            (s(&[M1], &[], &[]), s(&[M1, M2], &[], &[]), true),
            (s(&[M1], &[], &[]), s(&[M2], &[], &[]), false),
            (
                s(&[], &[], &[("rack", "a")]),
                s(&[], &[], &[("role", "x")]),
                true,
            ),
            (
                s(&[], &[], &[("rack", "a")]),
                s(&[], &[], &[("rack", "b")]),
                false,
            ),
            (
                s(&[M1], &[ClientArch::Bios], &[]),
                s(&[M1], &[ClientArch::EfiX64], &[]),
                false,
            ),
            (s(&[M1], &[], &[]), s(&[], &[ClientArch::Bios], &[]), true),
        ];
        for (a, b, want) in table {
            assert_eq!(a.can_overlap(&b), want, "{a:?} vs {b:?}");
            assert_eq!(b.can_overlap(&a), want, "{b:?} vs {a:?}");
        }
    }
}
