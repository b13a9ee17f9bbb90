//! Retrying one step of a run: exponential backoff with jitter inside a total
//! budget; a rate limit waits as long as the third party asked without
//! spending the budget; errors that cannot heal by waiting stop at once.
//!
//! The third party's ask is the plugin's `rate-limited` delay, or else the
//! `Retry-After` of a 429 the host saw answer the call (so a plugin that
//! fails as `transient` on a 429, or says `rate-limited` without reading
//! the header, still waits as asked). A 503's `Retry-After` (maintenance)
//! is not a rate limit: the backoff is at least that long, and spends the
//! budget, so an outage still opens the circuit; it only keeps the retries
//! from knocking sooner than the API said it would be back.

use std::future::Future;
use std::time::Duration;

use crate::operation::FailureKind;
use crate::sandbox::CallError;

use super::config::RetryConfig;
use super::runner::{RunEnd, Stop};

/// The longest a single rate-limit wait may be: an absurd `Retry-After`
/// must not park a pipeline for days.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);

/// How long to wait when a third party asked for `after`: at most 15
/// minutes, so an absurd `Retry-After` does not park a pipeline for days.
pub fn asked(after: Duration) -> Duration {
    after.min(MAX_RATE_LIMIT_WAIT)
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Wait this long (a rate limit), without spending the budget.
    WaitFor(Duration),
    /// Back off and try again, spending the budget.
    Backoff,
    /// Back off at least this long (a 503's `Retry-After`), spending the
    /// budget.
    BackoffAtLeast(Duration),
    /// The host was at its instance limit: back off, without spending the
    /// budget. Nothing failed the third party or the plugin, so no circuit
    /// opens against them for it.
    Saturated,
    /// Waiting will not help: stop the pipeline until an operator acts.
    Stop,
}

impl Verdict {
    /// The shortest backoff it allows: a 503's `Retry-After`, or none.
    fn least_backoff(self) -> Duration {
        match self {
            Verdict::BackoffAtLeast(least) => least,
            _ => Duration::ZERO,
        }
    }
}

/// How a failed call is retried.
pub fn verdict(error: &CallError) -> Verdict {
    match error {
        CallError::Plugin { error, .. } => match error.kind {
            FailureKind::RateLimited | FailureKind::Transient => {
                match (error.retry_after, error.unavailable_for) {
                    (Some(after), _) => Verdict::WaitFor(asked(after)),
                    (None, Some(unavailable)) => Verdict::BackoffAtLeast(asked(unavailable)),
                    (None, None) => Verdict::Backoff,
                }
            }
            FailureKind::Config | FailureKind::Auth | FailureKind::Fatal => Verdict::Stop,
        },
        CallError::Timeout { .. } => Verdict::Backoff,
        CallError::Busy { .. } => Verdict::Saturated,
        CallError::OutOfMemory { .. }
        | CallError::OutOfFuel { .. }
        | CallError::ResourceLimit { .. }
        | CallError::Trap { .. }
        | CallError::Invalid(_)
        | CallError::BrokenAnswer { .. } => Verdict::Stop,
    }
}

/// A wait before a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// How long.
    pub duration: Duration,
    /// Whether the third party asked for it (a rate limit's
    /// `Retry-After`), rather than the pipeline's own backoff.
    pub asked: bool,
    /// Whether it is as long as an unavailable API asked (a 503's
    /// `Retry-After`): a backoff all the same, spending the budget.
    pub unavailable: bool,
}

/// Why a step gave up.
#[derive(Debug)]
pub enum GaveUp {
    /// Backing off spent the budget; the last error.
    Exhausted(CallError),
    /// An error waiting cannot heal.
    Stopped(CallError),
    /// The host is stopping: the wait was cut short.
    Interrupted,
    /// What a wait was spent on ended the run: webhook deliveries handled
    /// while a source read waited to be retried met a sink that is down,
    /// a pause, or a failure that stops the pipeline.
    Meanwhile(RunEnd),
}

/// The backoff before attempt `attempt` (0-based): `initial · 2^attempt`,
/// capped at `max`, then scaled by a jitter factor in [0.5, 1.0).
pub fn backoff(config: &RetryConfig, attempt: u32, jitter: f64) -> Duration {
    let base = config
        .initial
        .0
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(config.max.0);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in [0, 1) that differs between calls (jitter need not be
/// cryptographic, only spread out).
pub(super) fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `step` until it succeeds, retrying as [`verdict`] says; `what`
/// names the step in logs.
pub async fn retry<T, F, Fut>(
    config: &RetryConfig,
    what: &str,
    stop: &Stop,
    step: F,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    retry_spending_waits(config, what, step, |wait, _| pause(wait.duration, stop)).await
}

/// Sleeps `wait`, unless the host stops first.
pub async fn pause(wait: Duration, stop: &Stop) -> Result<(), GaveUp> {
    tokio::select! {
        () = tokio::time::sleep(wait) => Ok(()),
        () = stop.wait() => Err(GaveUp::Interrupted),
    }
}

/// [`retry`], each wait spent in `spend` (given the wait and the error it
/// follows), which may do other work meanwhile and ends the retries by
/// failing.
pub async fn retry_spending_waits<T, F, Fut, S, SFut>(
    config: &RetryConfig,
    what: &str,
    mut step: F,
    mut spend: S,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
    S: FnMut(Wait, String) -> SFut,
    SFut: Future<Output = Result<(), GaveUp>>,
{
    let mut spent = Duration::ZERO;
    let mut attempt = 0;
    let mut saturated = 0;
    loop {
        let error = match step().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let verdict = verdict(&error);
        let wait = match verdict {
            Verdict::Stop => return Err(GaveUp::Stopped(error)),
            Verdict::WaitFor(wait) => {
                // Never less than a first backoff: an API answering "retry
                // after 0" for ever must not make a loop of calls.
                let wait = wait.max(config.initial.0);
                tracing::warn!("{what}: {error}; waiting {wait:?} as asked");
                Wait {
                    duration: wait,
                    asked: true,
                    unavailable: false,
                }
            }
            Verdict::Saturated => {
                let wait = backoff(config, saturated, jitter());
                saturated += 1;
                tracing::warn!(
                    "{what}: {error}; retrying in {wait:?} (waits for an instance slot spend no retry budget)"
                );
                Wait {
                    duration: wait,
                    asked: false,
                    unavailable: false,
                }
            }
            Verdict::Backoff | Verdict::BackoffAtLeast(_) => {
                let least = verdict.least_backoff();
                let wait = backoff(config, attempt, jitter()).max(least);
                if spent + wait > config.budget.0 {
                    return Err(GaveUp::Exhausted(error));
                }
                tracing::warn!("{what}: {error}; retrying in {wait:?}");
                spent += wait;
                attempt += 1;
                Wait {
                    duration: wait,
                    asked: false,
                    unavailable: least > Duration::ZERO && wait == least,
                }
            }
        };
        spend(wait, error.to_string()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TextDuration;
    use crate::operation::PluginFailure;

    fn config() -> RetryConfig {
        RetryConfig {
            initial: TextDuration(Duration::from_millis(100)),
            max: TextDuration(Duration::from_secs(1)),
            budget: TextDuration(Duration::from_secs(2)),
            circuit_cooldown: TextDuration(Duration::from_secs(1)),
        }
    }

    fn failure(kind: FailureKind, retry_after: Option<Duration>) -> CallError {
        CallError::Plugin {
            plugin: "p@1".into(),
            error: PluginFailure {
                kind,
                message: "m".into(),
                retry_after,
                unavailable_for: None,
            },
        }
    }

    /// A transient error from a call a 503 answered with `Retry-After:
    /// after`.
    fn unavailable(after: Duration) -> CallError {
        CallError::Plugin {
            plugin: "p@1".into(),
            error: PluginFailure {
                kind: FailureKind::Transient,
                message: "503".into(),
                retry_after: None,
                unavailable_for: Some(after),
            },
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let c = config();
        assert_eq!(backoff(&c, 0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(&c, 0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(&c, 3, 1.0), Duration::from_millis(800));
        assert_eq!(backoff(&c, 4, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&c, 60, 1.0), Duration::from_secs(1));
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn verdicts_follow_the_error_kind() {
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            verdict(&failure(FailureKind::RateLimited, after)),
            Verdict::WaitFor(Duration::from_secs(7))
        );
        assert_eq!(
            verdict(&failure(
                FailureKind::RateLimited,
                Some(Duration::from_secs(1 << 30))
            )),
            Verdict::WaitFor(MAX_RATE_LIMIT_WAIT)
        );
        assert_eq!(
            verdict(&failure(FailureKind::RateLimited, None)),
            Verdict::Backoff
        );
        assert_eq!(
            verdict(&failure(FailureKind::Transient, None)),
            Verdict::Backoff
        );
        // A transient error from a call a 429 answered waits as asked.
        assert_eq!(
            verdict(&failure(FailureKind::Transient, after)),
            Verdict::WaitFor(Duration::from_secs(7))
        );
        for kind in [FailureKind::Config, FailureKind::Auth, FailureKind::Fatal] {
            assert_eq!(verdict(&failure(kind, None)), Verdict::Stop);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_at_its_instance_limit_is_waited_for_without_spending_the_budget() {
        let busy = || CallError::Busy {
            plugin: "p@1".into(),
            reason: "all slots in use".into(),
        };
        assert_eq!(verdict(&busy()), Verdict::Saturated);
        // Far more waits than the budget holds (2 s, waits of up to 1 s),
        // then a transient error that still has the whole budget.
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let result: Result<(), GaveUp> = retry(&config(), "step", &Stop::never(), || {
            calls += 1;
            let n = calls;
            async move {
                if n <= 20 {
                    Err(busy())
                } else {
                    Err(failure(FailureKind::Transient, None))
                }
            }
        })
        .await;
        assert!(matches!(result, Err(GaveUp::Exhausted(_))));
        assert!(
            calls >= 25,
            "the budget was spent on busy waits: {calls} calls"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(10),
            "busy waits back off"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_error_is_retried_until_the_budget_is_spent() {
        let mut calls = 0;
        let result: Result<(), GaveUp> = retry(&config(), "step", &Stop::never(), || {
            calls += 1;
            async { Err(failure(FailureKind::Transient, None)) }
        })
        .await;
        assert!(matches!(result, Err(GaveUp::Exhausted(_))));
        // 50..100, 100..200, 200..400, 400..800 ms fit in 2 s; the caps
        // after that do not all fit: at least 4 retries, at most 8.
        assert!((5..=9).contains(&calls), "{calls} calls");
    }

    /// Retries a step rate-limited `times` times with `after`, then
    /// succeeding: its answer (the call it succeeded at), and the time
    /// spent.
    async fn rate_limited(times: u32, after: Duration) -> (Option<u32>, Duration) {
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let result = retry(&config(), "step", &Stop::never(), || {
            calls += 1;
            let n = calls;
            async move {
                if n <= times {
                    Err(failure(FailureKind::RateLimited, Some(after)))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        (result.ok(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_waits_do_not_spend_the_budget() {
        let (answer, spent) = rate_limited(5, Duration::from_secs(7)).await;
        assert_eq!(answer, Some(6));
        assert_eq!(
            spent,
            Duration::from_secs(35),
            "five waits of 7 s, as asked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_503s_retry_after_is_the_least_backoff_and_spends_the_budget() {
        assert_eq!(
            verdict(&unavailable(Duration::from_secs(1))),
            Verdict::BackoffAtLeast(Duration::from_secs(1))
        );
        // Unavailable for 700 ms each time: two waits fit the 2 s budget,
        // a third does not, however short the backoff.
        let mut waits = Vec::new();
        let result: Result<(), GaveUp> = retry_spending_waits(
            &config(),
            "step",
            || async { Err(unavailable(Duration::from_millis(700))) },
            |wait, _| {
                waits.push(wait);
                async { Ok(()) }
            },
        )
        .await;
        assert!(matches!(result, Err(GaveUp::Exhausted(_))));
        let durations: Vec<Duration> = waits.iter().map(|w| w.duration).collect();
        assert_eq!(durations, [Duration::from_millis(700); 2]);
        assert!(
            waits.iter().all(|w| !w.asked && w.unavailable),
            "an outage is not a rate limit, yet its wait is the API's"
        );
        // A maintenance longer than the budget ends the step at once.
        let mut calls = 0;
        let result: Result<(), GaveUp> = retry(&config(), "step", &Stop::never(), || {
            calls += 1;
            async { Err(unavailable(Duration::from_secs(3600))) }
        })
        .await;
        assert!(matches!(result, Err(GaveUp::Exhausted(_))));
        assert_eq!(calls, 1, "no retry knocks before the API said");
    }

    #[tokio::test(start_paused = true)]
    async fn an_ask_to_retry_at_once_waits_a_first_backoff_and_spends_nothing() {
        // Thirty waits of `initial` (100 ms): 3 s, past the 2 s budget.
        let (answer, spent) = rate_limited(30, Duration::ZERO).await;
        assert_eq!(answer, Some(31));
        assert_eq!(spent, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_wait_is_spent_on_may_end_the_retries() {
        let mut waits = Vec::new();
        let result: Result<(), GaveUp> = retry_spending_waits(
            &config(),
            "step",
            || async { Err(failure(FailureKind::Transient, None)) },
            |wait, _| {
                waits.push(wait);
                async { Err(GaveUp::Meanwhile(RunEnd::Paused)) }
            },
        )
        .await;
        assert!(matches!(result, Err(GaveUp::Meanwhile(RunEnd::Paused))));
        assert_eq!(waits.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_error_stops_at_once() {
        let mut calls = 0;
        let result: Result<(), GaveUp> = retry(&config(), "step", &Stop::never(), || {
            calls += 1;
            async { Err(failure(FailureKind::Config, None)) }
        })
        .await;
        assert!(matches!(result, Err(GaveUp::Stopped(_))));
        assert_eq!(calls, 1);
    }
}
