//! Selecting the group and setup for a machine. STUB: being implemented.

use super::{Decision, MachineFacts, Policy};

impl Policy {
    /// Picks the most specific group matching `facts` and resolves its setup.
    pub fn select(&self, facts: &MachineFacts) -> Decision {
        let _ = facts;
        Decision {
            group: "default".into(),
            setup: "ignore".into(),
            answer: super::Answer::Ignore,
        }
    }
}
