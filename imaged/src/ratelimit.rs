//! Rate limiting for log lines a client can trigger (bad tokens, broken uploads), so a
//! noisy client cannot flood the log. The same rule as netbootd's limiter; imaged keeps
//! its own because netbootd depends on imaged, not the reverse.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `burst` events per `period`; counts what it suppressed.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    period: Duration,
    state: Mutex<(Instant, u32, u64)>,
}

impl RateLimiter {
    pub fn new(burst: u32, period: Duration) -> Self {
        Self {
            burst,
            period,
            state: Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(n)` when the caller may log now (`n` events were suppressed since the last
    /// allowed one); `None` when it must stay silent.
    pub fn allow(&self) -> Option<u64> {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        if now.duration_since(s.0) >= self.period {
            *s = (now, 0, s.2);
        }
        if s.1 < self.burst {
            s.1 += 1;
            let suppressed = s.2;
            s.2 = 0;
            Some(suppressed)
        } else {
            s.2 += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_silence_then_count() {
        let l = RateLimiter::new(2, Duration::from_millis(50));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.allow(), Some(2));
    }
}
