//! What an API asked when it answered 429 Too Many Requests (or 403 with a
//! `Retry-After`, as GitHub's secondary rate limits do), or 503 Service
//! Unavailable with a `Retry-After` (maintenance): how long to wait
//! (`Retry-After`, in seconds or as an HTTP date).
//!
//! The host sees every response, so it keeps the longest wait a call was
//! asked for, whatever the plugin made of the answer: a sink answering
//! `retry` for each record it could not write, or a plugin failing with an
//! error that carries no delay of its own (JavaScript's `fetch` leaves the
//! header to the plugin). The pipeline then waits that long before it tries
//! those records again, as it waits for a `rate-limited` error's delay,
//! instead of backing off on its own clock into the API's quota. A 503's
//! wait is an outage's: the pipeline backs off at least that long, and the
//! time counts against its retry budget as any backoff does, so a long
//! maintenance still opens the circuit for the operator to see.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The longest `Retry-After` of the 429 (and 503) answers one call got.
/// Shared by the call's two HTTP doors; read and cleared once the call
/// ends. (Also what a sink's calls were asked, across the calls of one
/// write.)
#[derive(Debug, Clone, Default)]
pub struct AskedToWait {
    limited: Arc<AtomicU64>,
    unavailable: Arc<AtomicU64>,
    /// How many times it was taken: the calls of a warm instance so far.
    taken: Arc<AtomicU64>,
    /// Set on a request's copy ([`AskedToWait::for_this_call`]): the call
    /// it was made in, so its answer notes nothing into a later one.
    call: Option<u64>,
}

/// What the API's answers to a call asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// The longest wait a rate limit asked (429, or 403 with `Retry-After`).
    pub limited: Option<Duration>,
    /// The longest wait a 503 asked.
    pub unavailable: Option<Duration>,
}

impl AskedToWait {
    /// Notes one answer: a 429 with a `Retry-After` the host can read, or
    /// a 403 with one (GitHub's secondary rate limits answer so); a 503
    /// with one.
    pub fn note(&self, status: u16, headers: &[(String, String)]) {
        // A wasi:http request a guest left unawaited can be answered after
        // its call ended: what it asked was that call's, not the next one's.
        if self
            .call
            .is_some_and(|call| call != self.taken.load(Ordering::Relaxed))
        {
            return;
        }
        let slot = match status {
            429 | 403 => &self.limited,
            503 => &self.unavailable,
            _ => return,
        };
        let asked = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, value)| retry_after(value, SystemTime::now()));
        if let Some(asked) = asked {
            keep_longest(slot, Some(asked));
        }
    }

    /// Notes what was asked, each wait kept if it is the longest yet.
    pub fn ask(&self, asked: Asked) {
        keep_longest(&self.limited, asked.limited);
        keep_longest(&self.unavailable, asked.unavailable);
    }

    /// A copy for one request of the call now running: its answer is noted
    /// only while that call has not been taken.
    pub fn for_this_call(&self) -> AskedToWait {
        AskedToWait {
            call: Some(self.taken.load(Ordering::Relaxed)),
            ..self.clone()
        }
    }

    /// The longest waits asked since the last take, forgotten for the next
    /// call of a warm instance.
    pub fn take(&self) -> Asked {
        self.taken.fetch_add(1, Ordering::Relaxed);
        let take = |slot: &AtomicU64| match slot.swap(0, Ordering::Relaxed) {
            0 => None,
            millis => Some(Duration::from_millis(millis - 1)),
        };
        Asked {
            limited: take(&self.limited),
            unavailable: take(&self.unavailable),
        }
    }
}

fn keep_longest(slot: &AtomicU64, wait: Option<Duration>) {
    if let Some(wait) = wait {
        // Kept as milliseconds + 1, so that 0 means "not asked".
        let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX - 1);
        slot.fetch_max(millis + 1, Ordering::Relaxed);
    }
}

/// A `Retry-After` value as a wait from `now`: whole seconds, or an HTTP
/// date (one already past is no wait). Anything else is not read.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> Vec<(String, String)> {
        vec![
            ("content-type".into(), "application/json".into()),
            ("Retry-After".into(), value.into()),
        ]
    }

    #[test]
    fn seconds_and_dates_are_read_and_anything_else_is_not() {
        let now = httpdate::parse_http_date("Sun, 06 Dec 2026 18:00:00 GMT").unwrap();
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Sun, 06 Dec 2026 18:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Sun, 06 Dec 2026 17:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for unread in ["", "-1", "1.5", "soon", "Sun, 06 Dec 2026"] {
            assert_eq!(retry_after(unread, now), None, "{unread:?}");
        }
    }

    #[test]
    fn a_call_keeps_the_longest_wait_of_its_429s_until_taken() {
        let asked = AskedToWait::default();
        let limited = |asked: &AskedToWait| asked.take().limited;
        assert_eq!(limited(&asked), None);
        // Other statuses, and a 429 without a readable header, ask nothing.
        asked.note(500, &headers("30"));
        asked.note(200, &headers("30"));
        asked.note(403, &[]);
        asked.note(429, &headers("later"));
        asked.note(429, &[]);
        assert_eq!(asked.take(), Asked::default());
        asked.note(429, &headers("2"));
        asked.clone().note(429, &headers("5"));
        asked.note(429, &headers("0"));
        assert_eq!(limited(&asked), Some(Duration::from_secs(5)));
        asked.note(403, &headers("60"));
        assert_eq!(limited(&asked), Some(Duration::from_secs(60)));
        // Taken, it is forgotten: the next call starts with nothing asked.
        assert_eq!(limited(&asked), None);
        asked.note(429, &headers("0"));
        assert_eq!(limited(&asked), Some(Duration::ZERO));
    }

    #[test]
    fn an_answer_arriving_after_its_call_was_taken_asks_nothing_of_the_next() {
        let asked = AskedToWait::default();
        let first_call = asked.for_this_call();
        first_call.note(429, &headers("5"));
        assert_eq!(asked.take().limited, Some(Duration::from_secs(5)));
        // Answered after the call ended (a request the guest left
        // unawaited): the next call of the warm instance is not held.
        first_call.note(429, &headers("60"));
        first_call.note(503, &headers("60"));
        assert_eq!(asked.take(), Asked::default());
        // A request of the call now running is noted.
        asked.for_this_call().note(429, &headers("7"));
        assert_eq!(asked.take().limited, Some(Duration::from_secs(7)));
    }

    #[test]
    fn a_503s_wait_is_kept_apart_from_a_rate_limits() {
        let asked = AskedToWait::default();
        asked.note(503, &headers("30"));
        asked.note(503, &headers("10"));
        asked.note(429, &headers("2"));
        let taken = asked.take();
        assert_eq!(
            taken,
            Asked {
                limited: Some(Duration::from_secs(2)),
                unavailable: Some(Duration::from_secs(30)),
            }
        );
        // Gathered across calls, each kind keeps its longest.
        let across = AskedToWait::default();
        across.ask(taken);
        across.ask(Asked {
            limited: Some(Duration::from_secs(9)),
            unavailable: None,
        });
        assert_eq!(
            across.take(),
            Asked {
                limited: Some(Duration::from_secs(9)),
                unavailable: Some(Duration::from_secs(30)),
            }
        );
    }
}
