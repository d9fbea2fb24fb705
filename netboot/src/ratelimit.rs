//! Rate limiting for log lines a client can trigger (malformed packets, refused paths),
//! so a noisy or hostile client cannot flood the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `burst` events per `period`; counts what it suppressed.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    period: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Instant,
    used: u32,
    suppressed: u64,
}

impl RateLimiter {
    pub fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            state: Mutex::new(State {
                window_start: Instant::now(),
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// Returns `Some(n)` when the caller may log now, where `n` is how many events were
    /// suppressed since the last allowed one; `None` when this event must stay silent.
    pub fn allow(&self) -> Option<u64> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        if now.duration_since(s.window_start) >= self.period {
            s.window_start = now;
            s.used = 0;
        }
        if s.used < self.burst {
            s.used += 1;
            let suppressed = s.suppressed;
            s.suppressed = 0;
            Some(suppressed)
        } else {
            s.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppresses_past_the_burst_and_reports_the_count() {
        let rl = RateLimiter::new(2, Duration::from_secs(3600));
        assert_eq!(rl.allow(), Some(0));
        assert_eq!(rl.allow(), Some(0));
        assert_eq!(rl.allow(), None);
        assert_eq!(rl.allow(), None);
        let rl2 = RateLimiter::new(1, Duration::from_millis(0));
        assert_eq!(rl2.allow(), Some(0));
    }
}
