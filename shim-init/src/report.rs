//! Posting events from the target root (best effort, same contract as carte-init): the
//! plan gives the URL and token. Nothing is queued; a failure is printed and dropped.

use carte_contract::Event;
use std::time::Duration;

/// Posts events for this boot.
pub struct Reporter {
    agent: ureq::Agent,
    url: String,
    token: String,
}

impl Reporter {
    /// A reporter for the plan's events URL and token.
    pub fn new(url: &str, token: &str) -> Reporter {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(20)))
            .http_status_as_error(false)
            .user_agent("carte-shim")
            .build()
            .into();
        Reporter {
            agent,
            url: url.to_string(),
            token: token.to_string(),
        }
    }

    /// Post one event; the error says why it was not delivered.
    pub fn post(&self, e: &Event) -> Result<(), String> {
        let body = serde_json::to_vec(e).map_err(|x| format!("encode event: {x}"))?;
        let resp = self
            .agent
            .post(&self.url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|x| format!("post event to {}: {x}", self.url))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            s => Err(format!("post event to {}: server answered {s}", self.url)),
        }
    }
}
