//! The one HTTP client configuration carte-init uses (ureq, blocking, plain HTTP): short
//! connect and per-read timeouts so a dead server is noticed, no total timeout so a large
//! layer can take as long as it needs, and HTTP errors returned as statuses.
//!
//! It does not retry: callers decide (the fetch pipeline resumes, the plan step backs off).

use std::time::Duration;

/// Timeouts of the agent.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Any single read (headers or body) that stalls longer than this fails.
    pub per_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            per_read: Duration::from_secs(30),
        }
    }
}

/// A new agent with these timeouts.
pub fn agent(t: Timeouts) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(None)
        .timeout_connect(Some(t.connect))
        .timeout_per_read(Some(t.per_read))
        .timeout_recv_response(Some(t.per_read))
        .http_status_as_error(false)
        .user_agent("carte-init")
        .build()
        .into()
}
