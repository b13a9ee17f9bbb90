//! A token bucket, shared by the capabilities that limit a plugin's rate
//! (outbound requests, log lines), and [`Admission`] on top of it: what a
//! flood of events may leave in the logs or the audit trail.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Admits events at a rate and counts those it turns away, so a flood is
/// written down as a count rather than event by event.
#[derive(Debug)]
pub struct Admission {
    bucket: TokenBucket,
    dropped: AtomicU64,
}

impl Admission {
    /// `rate` events a second, bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> Admission {
        Admission {
            bucket: TokenBucket::new(rate, burst, Instant::now()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether an event may be written now; if so, how many were turned
    /// away since the last one written.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        match self.bucket.reserve(now, now) {
            Ok(_) => Some(self.dropped.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_then_the_rate_and_the_drops_are_counted() {
        let admission = Admission::new(50, 200);
        let t0 = Instant::now();
        let written = (0..1000).filter(|_| admission.admit(t0).is_some()).count();
        assert_eq!(written, 200);
        // A second later, room for the rate again; the first event written
        // says how many were turned away.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(admission.admit(t1), Some(800));
        assert_eq!(admission.admit(t1), Some(0));
    }

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
