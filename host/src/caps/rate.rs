//! A token bucket, shared by the capabilities that limit a plugin's rate
//! (outbound requests, log lines).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
///
/// Tokens may go negative: each caller reserves its slot in order, so
/// waiting callers are served first come, first served.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst,
            state: Mutex::new((burst, now)),
        }
    }

    /// Reserves one token at `now`: how long the caller waits before it may
    /// send. A reservation that would end after `latest` is not taken.
    pub fn reserve(&self, now: Instant, latest: Instant) -> Result<Duration, Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let refilled = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.burst);
        let after = refilled - 1.0;
        let wait = if after >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-after / self.rate)
        };
        if now + wait > latest {
            *state = (refilled, now);
            return Err(wait);
        }
        *state = (after, now);
        Ok(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_paces() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(60);
        let bucket = TokenBucket::new(4, 2, t0);
        assert_eq!(bucket.reserve(t0, far), Ok(Duration::ZERO));
        assert_eq!(bucket.reserve(t0, far), Ok(Duration::ZERO));
        // The third waits a quarter second, the fourth half a second.
        assert_eq!(bucket.reserve(t0, far), Ok(Duration::from_millis(250)));
        assert_eq!(bucket.reserve(t0, far), Ok(Duration::from_millis(500)));
        // A second later the debt is paid and one token is saved again.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(bucket.reserve(t1, far), Ok(Duration::ZERO));
    }

    #[test]
    fn a_wait_past_the_deadline_is_refused_and_not_reserved() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(1, 1, t0);
        assert_eq!(bucket.reserve(t0, t0), Ok(Duration::ZERO));
        let soon = t0 + Duration::from_millis(100);
        assert_eq!(bucket.reserve(t0, soon), Err(Duration::from_secs(1)));
        // The refused caller took nothing: the next still waits one second.
        let far = t0 + Duration::from_secs(60);
        assert_eq!(bucket.reserve(t0, far), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn saved_tokens_never_exceed_the_burst() {
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        let bucket = TokenBucket::new(4, 3, t0);
        let later = t0 + Duration::from_secs(600);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later, far), Ok(Duration::ZERO));
        }
        assert_eq!(bucket.reserve(later, far), Ok(Duration::from_millis(250)));
    }
}
