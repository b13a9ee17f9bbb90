//! How fast and how wide one plugin may call out: a token bucket for
//! requests per second and a semaphore for requests in flight, shared by
//! every call of the same plugin version.
//!
//! Over the rate a request waits its turn rather than failing: a connector
//! paging through an API is paced, not broken. Only a wait that would pass
//! the call's deadline fails, as a timeout, before anything is sent.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// The rate and concurrency limits of one plugin version.
#[derive(Debug)]
pub struct Limiter {
    bucket: TokenBucket,
    in_flight: std::sync::Arc<Semaphore>,
    max_concurrent: u32,
    rate: u32,
}

/// Why a request could not get its turn before the deadline.
#[derive(Debug)]
pub enum Throttled {
    /// Waiting for the rate limit would pass the deadline.
    Rate { rate: u32, wait: Duration },
    /// No slot among `max` concurrent requests freed up in time.
    Concurrency { max: u32 },
}

impl std::fmt::Display for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Throttled::Rate { rate, wait } => write!(
                f,
                "the plugin's rate limit of {rate} requests per second would delay this request {} ms, past its deadline (raise http-limits.requests-per-second in grants.toml)",
                wait.as_millis()
            ),
            Throttled::Concurrency { max } => write!(
                f,
                "all {max} of the plugin's concurrent requests stayed busy until the deadline (raise http-limits.max-concurrent in grants.toml)"
            ),
        }
    }
}

impl Limiter {
    /// Limits of `rate` requests a second (bursts of `burst`) and
    /// `max_concurrent` in flight.
    pub fn new(rate: u32, burst: u32, max_concurrent: u32) -> Limiter {
        Limiter {
            bucket: TokenBucket::new(rate, burst, Instant::now()),
            in_flight: std::sync::Arc::new(Semaphore::new(max_concurrent.max(1) as usize)),
            max_concurrent: max_concurrent.max(1),
            rate: rate.max(1),
        }
    }

    /// Waits for a slot and a token, both before `deadline`; the permit
    /// holds the slot until dropped (the hop, redirects included, is done).
    pub async fn admit(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, Throttled> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let permit = tokio::time::timeout(remaining, self.in_flight.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Throttled::Concurrency {
                max: self.max_concurrent,
            })?;
        let wait = self
            .bucket
            .reserve(Instant::now(), deadline)
            .map_err(|wait| Throttled::Rate {
                rate: self.rate,
                wait,
            })?;
        tokio::time::sleep(wait).await;
        Ok(permit)
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
