//! Posting events to the server, best effort: a machine that cannot report still boots.
//! Every event is also printed on the console by the caller; this module only sends.
//!
//! It does not queue or retry: a lost progress event is replaced by the next one.

use carte_contract::Event;

/// Where and how to post.
#[derive(Debug, Clone)]
pub struct Reporter {
    agent: ureq::Agent,
    url: String,
    token: String,
}

impl Reporter {
    /// A reporter posting to `url` with `token`.
    pub fn new(agent: ureq::Agent, url: String, token: String) -> Reporter {
        Reporter { agent, url, token }
    }

    /// Post one event; the error text says why it could not be delivered.
    pub fn post(&self, event: &Event) -> Result<(), String> {
        let body = serde_json::to_vec(event).map_err(|e| format!("encode event: {e}"))?;
        let resp = self
            .agent
            .post(&self.url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| format!("post event to {}: {e}", self.url))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!(
                "post event to {}: server answered {status}",
                self.url
            ))
        }
    }
}
