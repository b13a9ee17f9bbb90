//! How fast and how wide one plugin may call out: a token bucket for
//! requests per second and a semaphore for requests in flight, shared by
//! every call of the same plugin version.
//!
//! Over the rate a request waits its turn rather than failing: a connector
//! paging through an API is paced, not broken. Only a wait that would pass
//! the call's deadline fails, as a timeout, before anything is sent.

use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::caps::rate::TokenBucket;

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
        // Not even a zero sleep: it would wait for the timer's next tick
        // (a millisecond) on every request within the rate.
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(permit)
    }
}
